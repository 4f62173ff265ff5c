package imap_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

// TestListDelimiter (R1): LIST "" "" names the hierarchy delimiter and
// the root.
func TestListDelimiter(t *testing.T) {
	e := prototest.Start(t, nil)
	s := loginRaw(t, e, "alice")
	if u := s.ok(`LIST "" ""`); !has(u, `* LIST (\Noselect) "/" ""`) {
		t.Errorf(`LIST "" "": %q`, u)
	}
}

// TestRecent (R2): a message is \Recent in one session only, the first to
// select the mailbox read-write after it arrived; EXAMINE and STATUS show
// it without taking it; SEARCH RECENT, NEW and OLD follow.
func TestRecent(t *testing.T) {
	e := prototest.Start(t, nil)
	send(t, e, msg("r1", "x"), "alice@localhost")
	send(t, e, msg("r2", "x"), "alice@localhost")
	a := loginRaw(t, e, "alice")
	if u := a.ok("EXAMINE INBOX"); !has(u, "* 2 RECENT") {
		t.Errorf("EXAMINE: %q", u)
	}
	a.ok("CLOSE")
	if u := a.ok("STATUS INBOX (MESSAGES RECENT)"); !has(u, `* STATUS INBOX (MESSAGES 2 RECENT 2)`) {
		t.Errorf("STATUS after EXAMINE: %q", u)
	}
	if u := a.ok("SELECT INBOX"); !has(u, "* 2 RECENT") {
		t.Errorf("SELECT: %q", u)
	}
	if u := a.ok("FETCH 1 FLAGS"); !has(u, `* 1 FETCH (FLAGS (\Recent))`) {
		t.Errorf("FETCH FLAGS: %q", u)
	}
	b := loginRaw(t, e, "alice")
	if u := b.ok("SELECT INBOX"); !has(u, "* 0 RECENT") {
		t.Errorf("second session's SELECT: %q", u)
	}
	if u := b.ok("STATUS INBOX (RECENT)"); !has(u, `* STATUS INBOX (RECENT 0)`) {
		t.Errorf("STATUS after SELECT: %q", u)
	}
	// A new message goes to one of the two sessions only.
	send(t, e, msg("r3", "x"), "alice@localhost")
	ua, ub := a.ok("NOOP"), b.ok("NOOP")
	if !has(ua, "* 3 EXISTS") || !has(ub, "* 3 EXISTS") {
		t.Fatalf("NOOP after a delivery: %q, %q", ua, ub)
	}
	if has(ua, "* 3 RECENT") == has(ub, "* 1 RECENT") {
		t.Errorf("the new message is recent in both or neither: %q, %q", ua, ub)
	}
	if u := a.ok("SEARCH RECENT"); !has(u, "* SEARCH 1 2 3") && !has(u, "* SEARCH 1 2") {
		t.Errorf("SEARCH RECENT: %q", u)
	}
	a.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
	if u := a.ok("SEARCH NEW"); !has(u, "* SEARCH 2 3") && !has(u, "* SEARCH 2") {
		t.Errorf("SEARCH NEW: %q", u)
	}
	if u := b.ok("SEARCH OLD"); !has(u, "* SEARCH 1 2 3") && !has(u, "* SEARCH 1 2") {
		t.Errorf("SEARCH OLD in the session with no recent message: %q", u)
	}
}

// TestSelectUnseenAndKeywords (R3, R9): SELECT tells the first unseen
// message, and FLAGS and PERMANENTFLAGS list the mailbox's keywords; a
// keyword another session adds is announced with FLAGS.
func TestSelectUnseenAndKeywords(t *testing.T) {
	e := prototest.Start(t, nil)
	for i := range 3 {
		send(t, e, msg(fmt.Sprintf("k%d", i), "x"), "alice@localhost")
	}
	a := loginRaw(t, e, "alice")
	a.ok("SELECT INBOX")
	a.ok("STORE 1 +FLAGS.SILENT (\\Seen $Label1)")
	b := loginRaw(t, e, "alice")
	u := b.ok("SELECT INBOX")
	for _, want := range []string{
		`* OK [UNSEEN 2] First unseen`,
		`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Label1)`,
		`* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Label1 \*)] Flags permitted`,
	} {
		if !has(u, want) {
			t.Errorf("SELECT: no %q in %q", want, u)
		}
	}
	a.ok("STORE 2 +FLAGS.SILENT (Thunderbird)")
	u = b.ok("NOOP")
	if !has(u, `* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Label1 Thunderbird)`) ||
		!hasPrefix(u, `* 2 FETCH (UID 2 FLAGS (Thunderbird`) {
		t.Errorf("the other session after a new keyword: %q", u)
	}
	// A keyword that arrives while nobody has the mailbox selected is
	// listed at the next SELECT (the server remembers keywords between
	// selections, from the changes it is told of).
	a.ok("CLOSE")
	b.ok("CLOSE")
	m := msg("kw", "x")
	a.send(fmt.Sprintf("t90 APPEND INBOX (Appended) {%d+}\r\n%s\r\n", len(m), m))
	a.until("t90")
	if u := b.ok("SELECT INBOX"); !has(u, `* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Label1 Appended Thunderbird)`) {
		t.Errorf("SELECT after an APPEND with a keyword: %q", u)
	}
	a.ok("SELECT INBOX")
	// The session that stored it is told too, before its FETCH.
	u = a.ok("STORE 3 +FLAGS (NewOne)")
	if len(u) < 2 || !strings.HasPrefix(u[0], `* FLAGS (`) || !strings.Contains(u[0], "NewOne") || !hasPrefix(u, "* 3 FETCH") {
		t.Errorf("STORE of a new keyword: %q", u)
	}
}

// TestClientErrorsAreBad (R6 and the attacker's list): malformed input is
// answered BAD (or NO for a refusal), never NO [SERVERBUG], and the
// session goes on.
func TestClientErrorsAreBad(t *testing.T) {
	e := prototest.Start(t, nil)
	send(t, e, msg("x", "x"), "alice@localhost")
	s := loginRaw(t, e, "alice")
	s.ok("SELECT INBOX")
	deep := strings.Repeat("NOT ", 1000) + "ALL"
	nested := strings.Repeat("(", 1000) + "ALL" + strings.Repeat(")", 1000)
	big := strings.Repeat("1,", 650000) + "1"
	for _, cmd := range []string{
		`CREATE "a&b"`, `CREATE "&Jjo"`, `SELECT "&AGE-"`,
		"FETCH 0 FLAGS", "FETCH 1:5 FLAGS", "UID FETCH 0 FLAGS", "FETCH 1 (FLAGS", "FETCH 1 BODY[99.TEXT.X]",
		"SEARCH " + deep, "SEARCH " + nested, "FETCH " + big + " FLAGS",
		"STORE 1 +FLAGS (\\*)", "SEARCH FROBNICATE", "CREATE \"a\x01b\"", "NOOP extra",
	} {
		_, tagged := s.do(cmd)
		if !strings.Contains(tagged, " BAD ") && !strings.Contains(tagged, " NO ") || strings.Contains(tagged, "SERVERBUG") {
			t.Errorf("%.40s: %q", cmd, tagged)
		}
	}
	// A LIST pattern that is not modified UTF-7 matches nothing (as in
	// Dovecot; imaptest's atoms test expects OK).
	for _, cmd := range []string{`LIST "" "&"`, `LIST "" "a&b"`, "LIST \"\" !#$$&'+,-.0123456789:;<=>?@^_`|[}%*"} {
		if u := s.ok(cmd); len(u) != 0 {
			t.Errorf("%s: %q", cmd, u)
		}
	}
	s.ok("NOOP")
}

// TestUnknownCommandBeforeLogin: answered BAD; the connection stays.
func TestUnknownCommandBeforeLogin(t *testing.T) {
	e := prototest.Start(t, nil)
	s := dialRaw(t, e)
	if _, tagged := s.do("FROBNICATE"); !strings.Contains(tagged, " BAD ") {
		t.Errorf("unknown command before login: %q", tagged)
	}
	if _, tagged := s.do("SELECT INBOX"); !strings.Contains(tagged, " BAD ") {
		t.Errorf("SELECT before login: %q", tagged)
	}
	s.ok("LOGIN alice " + prototest.Password)
}

// TestTagPlusRefused: "+" cannot be in a tag (it is the continuation
// request's).
func TestTagPlusRefused(t *testing.T) {
	e := prototest.Start(t, nil)
	s := dialRaw(t, e)
	s.send("+ NOOP\r\na+b NOOP\r\n")
	for range 2 {
		if l := s.line(); !strings.HasPrefix(l, "* BAD") {
			t.Errorf("a tag with +: %q", l)
		}
	}
	s.ok("NOOP")
}

// TestID (RFC 2971): ID is answered before and after login.
func TestID(t *testing.T) {
	e := prototest.Start(t, nil)
	s := dialRaw(t, e)
	if u := s.ok(`ID ("name" "test" "version" "1")`); !hasPrefix(u, `* ID ("name" "Twinbox"`) {
		t.Errorf("ID: %q", u)
	}
	s.ok("LOGIN alice " + prototest.Password)
	if u := s.ok(`ID NIL`); !hasPrefix(u, `* ID (`) {
		t.Errorf("ID NIL: %q", u)
	}
	if _, tagged := s.do(`ID ("odd")`); !strings.Contains(tagged, " BAD ") {
		t.Errorf("ID with an odd list: %q", tagged)
	}
}

// TestOversizedNonSyncLiteral: a non-synchronizing literal above the
// limit is never read as commands: the session is closed.
func TestOversizedNonSyncLiteral(t *testing.T) {
	e := prototest.Start(t, &prototest.Options{MaxMessageSize: 1 << 20})
	s := loginRaw(t, e, "alice")
	s.ok("SELECT INBOX")
	// The "literal" carries commands; none may run.
	payload := "x1 CREATE Injected\r\nx2 STORE 1:* +FLAGS (\\Deleted)\r\n"
	s.send(fmt.Sprintf("t9 APPEND INBOX {%d+}\r\n%s", 60000000, payload))
	var got []string
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			break
		}
		got = append(got, strings.TrimRight(l, "\r\n"))
	}
	if !hasPrefix(got, "t9 NO [TOOBIG]") || !hasPrefix(got, "* BYE") || hasPrefix(got, "x1") || hasPrefix(got, "x2") {
		t.Errorf("oversized APPEND literal+: %q", got)
	}
	if _, err := e.Node.Store().Mailbox("alice", "Injected"); err == nil {
		t.Error("the literal's CREATE ran")
	}
	// A synchronizing one is refused before it is sent; the session goes on.
	s = loginRaw(t, e, "alice")
	s.send("t1 APPEND INBOX {60000000}\r\n")
	if _, tagged := s.until("t1"); !strings.HasPrefix(tagged, "t1 NO [TOOBIG]") {
		t.Errorf("oversized synchronizing APPEND: %q", tagged)
	}
	s.ok("NOOP")
	// A literal+ small enough is consumed with the command that failed.
	s.send("t2 FROBNICATE {20+}\r\nx3 CREATE Injected\r\n\r\n")
	if _, tagged := s.until("t2"); !strings.HasPrefix(tagged, "t2 BAD") {
		t.Errorf("unknown command with a literal+: %q", tagged)
	}
	s.ok("NOOP")
	if _, err := e.Node.Store().Mailbox("alice", "Injected"); err == nil {
		t.Error("the literal's CREATE ran")
	}
}

// TestAppendTrailingBytes: bytes after APPEND's literal make the command
// BAD and store nothing.
func TestAppendTrailingBytes(t *testing.T) {
	e := prototest.Start(t, nil)
	s := loginRaw(t, e, "alice")
	m := msg("trail", "x")
	s.send(fmt.Sprintf("t1 APPEND INBOX {%d+}\r\n%s junk\r\n", len(m), m))
	if _, tagged := s.until("t1"); !strings.HasPrefix(tagged, "t1 BAD") {
		t.Errorf("APPEND with bytes after the literal: %q", tagged)
	}
	if info, _ := e.Node.Store().Mailbox("alice", "INBOX"); info.Messages != 0 {
		t.Errorf("the message was stored: %+v", info)
	}
	s.send(fmt.Sprintf("t2 APPEND INBOX (\\Seen) {%d+}\r\n%s\r\n", len(m), m))
	if _, tagged := s.until("t2"); !strings.HasPrefix(tagged, "t2 OK [APPENDUID ") {
		t.Errorf("APPEND: %q", tagged)
	}
}

// TestReadOnlyNode: on a read-only node every SELECT answers [READ-ONLY]
// and every write is refused.
func TestReadOnlyNode(t *testing.T) {
	const hint = "active.test:993"
	e := prototest.Start(t, nil)
	send(t, e, msg("ro", "x"), "alice@localhost")
	s := loginRaw(t, e, "alice")
	e.IMAP.SetReadOnly(true, hint)
	u := s.ok("SELECT INBOX")
	if !has(u, "* OK [PERMANENTFLAGS ()] Read-only mailbox") {
		t.Errorf("SELECT on a read-only node: %q", u)
	}
	m := msg("no", "x")
	for _, cmd := range []string{
		"STORE 1 +FLAGS (\\Flagged)", "EXPUNGE", "UID EXPUNGE 1", "COPY 1 Archive", "MOVE 1 Archive",
		"CREATE New", "DELETE Archive", "RENAME Archive Old", "SUBSCRIBE Archive",
		fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(m), m),
	} {
		if _, tagged := s.do(cmd); !strings.Contains(tagged, " NO ") {
			t.Errorf("%.30q on a read-only node: %q", cmd, tagged)
		}
	}
	s.send("t99 SELECT INBOX\r\n")
	if _, tagged := s.until("t99"); !strings.HasPrefix(tagged, "t99 OK [READ-ONLY]") {
		t.Errorf("SELECT on a read-only node: %q", tagged)
	}
	s.ok("FETCH 1 BODY[]")
	msgs, _ := e.Node.Store().Messages("alice", "INBOX", nil)
	if len(msgs) != 1 || len(msgs[0].Flags) != 0 {
		t.Errorf("a read-only node changed the mailbox: %+v", msgs)
	}
}

// TestDeadClientDoesNotHoldShutdown: a client that stops reading in the
// middle of a large FETCH is cut when Shutdown's context ends.
func TestDeadClientDoesNotHoldShutdown(t *testing.T) {
	e := prototest.Start(t, nil)
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), 32<<10)
	for i := range 8 {
		send(t, e, append(msg(fmt.Sprintf("big%d", i), "x"), big...), "alice@localhost")
	}
	s := loginRaw(t, e, "alice")
	s.ok("SELECT INBOX")
	s.send("t1 FETCH 1:* BODY.PEEK[]\r\n") // and never read
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	e.IMAP.Shutdown(ctx)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Shutdown took %v with a client that does not read", d)
	}
}

// TestLsubParentAndChildInfo (R7 CHILDINFO, R8): LSUB with "%" names the
// unsubscribed parent of a subscribed mailbox \Noselect; LIST (SUBSCRIBED
// RECURSIVEMATCH) names it with CHILDINFO.
func TestLsubParentAndChildInfo(t *testing.T) {
	e := prototest.Start(t, nil)
	s := loginRaw(t, e, "alice")
	s.ok("CREATE p/c")
	s.ok("SUBSCRIBE p/c")
	if u := s.ok(`LSUB "" "p%"`); !has(u, `* LSUB (\Noselect) "/" "p"`) {
		t.Errorf(`LSUB "" "p%%": %q`, u)
	}
	if u := s.ok(`LSUB "" "p/%"`); !has(u, `* LSUB () "/" "p/c"`) {
		t.Errorf(`LSUB "" "p/%%": %q`, u)
	}
	u := s.ok(`LIST (SUBSCRIBED RECURSIVEMATCH) "" "p%"`)
	if !has(u, `* LIST (\HasChildren) "/" "p" ("CHILDINFO" ("SUBSCRIBED"))`) {
		t.Errorf(`LIST (SUBSCRIBED RECURSIVEMATCH) "" "p%%": %q`, u)
	}
	if _, tagged := s.do(`LIST (RECURSIVEMATCH) "" "%"`); !strings.Contains(tagged, " BAD ") {
		t.Errorf("RECURSIVEMATCH alone: %q", tagged)
	}
}

// TestEnvelopeGroupsRoutesComments (R4, R5): ENVELOPE keeps group
// markers and puts a source route in the adl; SEARCH FROM finds an
// address whose addr-spec has comments in it.
func TestEnvelopeGroupsRoutesComments(t *testing.T) {
	e := prototest.Start(t, nil)
	hdr := func(h string) []byte {
		return []byte("Date: Thu, 15 Feb 2007 01:02:03 +0200\r\n" + h + "\r\n\r\nbody\r\n")
	}
	send(t, e, hdr("From: user@domain (Real Name)\r\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\nCc: group:;, group2: (foo) ;"), "alice@localhost")
	send(t, e, hdr("From: <@route:user@domain>"), "alice@localhost")
	send(t, e, hdr("From: <user-from (comment)@ (comment) domain.org>"), "alice@localhost")
	s := loginRaw(t, e, "alice")
	s.ok("SELECT INBOX")
	u := s.ok("FETCH 1:2 ENVELOPE")
	want1 := `* 1 FETCH (ENVELOPE ("Thu, 15 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) ((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) ((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) NIL NIL NIL))`
	want2 := `* 2 FETCH (ENVELOPE ("Thu, 15 Feb 2007 01:02:03 +0200" NIL ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) NIL NIL NIL NIL NIL))`
	if !has(u, want1) || !has(u, want2) {
		t.Errorf("FETCH ENVELOPE:\n%s\nwant\n%s\n%s", strings.Join(u, "\n"), want1, want2)
	}
	if u := s.ok("SEARCH FROM user-from@domain.org"); !has(u, "* SEARCH 3") {
		t.Errorf("SEARCH FROM an address with comments: %q", u)
	}
	if u := s.ok("SEARCH FROM \"real name\""); !has(u, "* SEARCH 1") {
		t.Errorf("SEARCH FROM a name from a comment: %q", u)
	}
}

// TestExistsBeforeItsFetch: a session told of a new message and of a
// flag change to it at once gets EXISTS first (imaptest's stress found
// the FETCH first: "seq too high").
func TestExistsBeforeItsFetch(t *testing.T) {
	e := prototest.Start(t, nil)
	a := loginRaw(t, e, "alice")
	a.ok("SELECT INBOX")
	b := loginRaw(t, e, "alice")
	b.ok("SELECT INBOX")
	m := msg("new", "x")
	b.send(fmt.Sprintf("t9 APPEND INBOX {%d+}\r\n%s\r\n", len(m), m))
	b.until("t9")
	b.ok("NOOP")
	b.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
	u := a.ok("NOOP")
	if len(u) < 2 || u[0] != "* 1 EXISTS" || !hasPrefix(u, "* 1 FETCH (UID 1 FLAGS (") {
		t.Errorf("NOOP after another session's APPEND and STORE: %q", u)
	}
}
