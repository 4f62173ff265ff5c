package imap_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/testmail"
	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

func login(t testing.TB, e *prototest.Env, user string, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(e.IMAPAddr, &imapclient.Options{UnilateralDataHandler: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, prototest.Password).Wait(); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

// send delivers raw over SMTP to the recipients.
func send(t *testing.T, e *prototest.Env, raw []byte, to ...string) {
	t.Helper()
	c, err := gosmtp.Dial(e.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("sender@example.org", to, bytes.NewReader(raw)); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.Quit()
}

func msg(subject, body string) []byte {
	return []byte("From: Sender <sender@example.org>\r\nTo: alice@localhost\r\nSubject: " + subject +
		"\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + subject + "@example.org>\r\n\r\n" + body + "\r\n")
}

func fetchAll(t *testing.T, c *imapclient.Client, set imap.NumSet, o *imap.FetchOptions) []*imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(set, o).Collect()
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	return msgs
}

func TestSessionEndToEnd(t *testing.T) {
	e := prototest.Start(t, nil)
	c := login(t, e, "alice", nil)

	boxes, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	uses := map[string]imap.MailboxAttr{}
	for _, b := range boxes {
		for _, a := range b.Attrs {
			if a == imap.MailboxAttrSent || a == imap.MailboxAttrTrash || a == imap.MailboxAttrArchive ||
				a == imap.MailboxAttrDrafts || a == imap.MailboxAttrJunk {
				uses[b.Mailbox] = a
			}
		}
	}
	if len(uses) != 5 || uses["Trash"] != imap.MailboxAttrTrash {
		t.Fatalf("special-use folders after first login: %v", uses)
	}

	corpus := testmail.Corpus(t)
	var raw []byte
	for _, name := range sortedNames(corpus) {
		if m := corpus[name]; bytes.Contains(m, []byte("multipart/mixed")) {
			raw = m
			break
		}
	}
	if raw == nil {
		t.Fatal("no multipart/mixed message in the corpus")
	}
	send(t, e, raw, "alice@localhost", "bob@localhost")
	send(t, e, msg("second", "hello again"), "alice@localhost")

	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 2 || sel.UIDNext != 3 || sel.UIDValidity == 0 {
		t.Fatalf("SELECT: %+v", sel)
	}
	body := &imap.FetchItemBodySection{Peek: true}
	got := fetchAll(t, c, imap.SeqSetNum(1), &imap.FetchOptions{
		UID: true, Flags: true, Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		RFC822Size: true, BodySection: []*imap.FetchItemBodySection{body},
	})
	if len(got) != 1 {
		t.Fatalf("fetch 1: %d messages", len(got))
	}
	m := got[0]
	lit := m.FindBodySection(body)
	// BODY[] is the per-recipient headers, the Received header, then the
	// exact bytes received.
	if !bytes.HasSuffix(lit, raw) || !bytes.HasPrefix(lit, []byte("Return-Path: <sender@example.org>\r\nDelivered-To: alice@localhost\r\nReceived: ")) {
		t.Fatalf("BODY[] is not the received bytes with trace headers:\n%.300q", lit)
	}
	if m.RFC822Size != int64(len(lit)) {
		t.Errorf("RFC822.SIZE %d, BODY[] %d bytes", m.RFC822Size, len(lit))
	}
	if m.Envelope == nil || m.Envelope.Subject == "" {
		t.Errorf("no envelope: %+v", m.Envelope)
	}
	if mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart); !ok || mp.Subtype != "mixed" || len(mp.Children) < 2 {
		t.Errorf("BODYSTRUCTURE: %#v", m.BodyStructure)
	}
	if slices.Contains(m.Flags, imap.FlagSeen) {
		t.Errorf("BODY.PEEK set \\Seen")
	}

	// A header field and a part, and a FETCH without PEEK that sets \Seen.
	subj := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}}
	got = fetchAll(t, c, imap.SeqSetNum(2), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{subj}})
	if s := string(got[0].FindBodySection(subj)); s != "Subject: second\r\n\r\n" {
		t.Errorf("BODY[HEADER.FIELDS (SUBJECT)] = %q", s)
	}
	got = fetchAll(t, c, imap.SeqSetNum(2), &imap.FetchOptions{Flags: true})
	if !slices.Contains(got[0].Flags, imap.FlagSeen) {
		t.Errorf("BODY[] without PEEK did not set \\Seen: %v", got[0].Flags)
	}

	// STORE, COPY (a link: the same body), MOVE, EXPUNGE.
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged, "$Important"}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	got = fetchAll(t, c, imap.SeqSetNum(1), &imap.FetchOptions{Flags: true})
	if !slices.Contains(got[0].Flags, imap.FlagFlagged) || !slices.Contains(got[0].Flags, "$Important") {
		t.Errorf("flags after STORE: %v", got[0].Flags)
	}
	cp, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if cp.UIDValidity == 0 || cp.DestUIDs.String() != "1" {
		t.Errorf("COPYUID: %+v", cp)
	}
	st := e.Node.Store()
	inbox, _ := st.Messages("alice", "INBOX", []uint32{1})
	arch, _ := st.Messages("alice", "Archive", []uint32{1})
	if len(inbox) != 1 || len(arch) != 1 || inbox[0].Body != arch[0].Body {
		t.Errorf("COPY did not link the same body: %v %v", inbox, arch)
	}
	var expunged []uint32
	mv, err := c.Move(imap.SeqSetNum(2), "Trash").Wait()
	if err != nil {
		t.Fatal(err)
	}
	if mv.DestUIDs == nil {
		t.Errorf("MOVE without COPYUID")
	}
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	expunged, err = c.Expunge().Collect()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(expunged, []uint32{1}) {
		t.Errorf("EXPUNGE reported %v", expunged)
	}
	status, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, UIDNext: true, Size: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if *status.NumMessages != 0 || status.UIDNext != 3 || *status.Size != 0 {
		t.Errorf("STATUS INBOX after move and expunge: %+v", status)
	}
	tr, err := c.Status("Trash", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *tr.NumMessages != 1 {
		t.Errorf("STATUS Trash: %+v %v", tr, err)
	}

	// Bob got his own copy of the link, with his own Delivered-To.
	b := login(t, e, "bob", nil)
	if _, err := b.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	got = fetchAll(t, b, imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{body}})
	if lit := got[0].FindBodySection(body); !bytes.Contains(lit, []byte("Delivered-To: bob@localhost\r\n")) || !bytes.HasSuffix(lit, raw) {
		t.Errorf("bob's copy:\n%.200q", lit)
	}

	// SEARCH, ESEARCH-style options through the library.
	if _, err := c.Select("Trash", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	sr, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "second"}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if uids := sr.AllUIDs(); len(uids) != 1 {
		t.Errorf("UID SEARCH SUBJECT second: %v", uids)
	}
}

// TestIdlePushesDeliveries: a delivery reaches an idling client without it
// polling.
func TestIdlePushesDeliveries(t *testing.T) {
	e := prototest.Start(t, nil)
	exists := make(chan uint32, 10)
	c := login(t, e, "alice", &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		},
	})
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	send(t, e, msg("idle", "wake up"), "alice@localhost")
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("EXISTS %d, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no EXISTS while idling")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestSequenceNumbersWhileOthersExpunge: a session keeps its own view of
// sequence numbers until it may be told of expunges.
func TestSequenceNumbersWhileOthersExpunge(t *testing.T) {
	e := prototest.Start(t, nil)
	for i := 1; i <= 5; i++ {
		send(t, e, msg(fmt.Sprintf("m%d", i), "x"), "alice@localhost")
	}
	var mu sync.Mutex
	var aExpunged []uint32
	a := login(t, e, "alice", &imapclient.UnilateralDataHandler{Expunge: func(seq uint32) {
		mu.Lock()
		aExpunged = append(aExpunged, seq)
		mu.Unlock()
	}})
	b := login(t, e, "alice", nil)
	for _, c := range []*imapclient.Client{a, b} {
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	// B deletes messages 2 and 4.
	if _, err := b.Store(imap.SeqSetNum(2, 4), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	// A's FETCH may not be told of expunges: seq 5 is still UID 5 for A.
	got := fetchAll(t, a, imap.SeqSetNum(5), &imap.FetchOptions{UID: true})
	if len(got) != 1 || got[0].SeqNum != 5 || got[0].UID != 5 {
		t.Fatalf("A's FETCH 5 before NOOP: %+v", got)
	}
	mu.Lock()
	if len(aExpunged) != 0 {
		t.Errorf("EXPUNGE sent during FETCH: %v", aExpunged)
	}
	mu.Unlock()
	if err := a.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	// Highest first, each valid when sent: 4 then 2.
	if !slices.Equal(aExpunged, []uint32{4, 2}) {
		t.Errorf("A was told EXPUNGE %v, want [4 2]", aExpunged)
	}
	mu.Unlock()
	got = fetchAll(t, a, imap.SeqSetNum(3), &imap.FetchOptions{UID: true})
	if len(got) != 1 || got[0].UID != 5 {
		t.Fatalf("A's FETCH 3 after NOOP: %+v", got)
	}
}

// TestBadInput: each refusal is clear and changes nothing.
func TestBadInput(t *testing.T) {
	e := prototest.Start(t, nil)
	send(t, e, msg("bobs", "private"), "bob@localhost")

	// A wrong password is refused and slowed.
	c, err := imapclient.DialInsecure(e.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Login("alice", "wrong").Wait()
	var ie *imap.Error
	if !asIMAPError(err, &ie) || ie.Type != imap.StatusResponseTypeNo {
		t.Fatalf("wrong password: %v", err)
	}
	if e.Slept.Load() == 0 || e.Guard.Stats().Failures != 1 {
		t.Errorf("failed login not slowed or counted: slept %v, %+v", time.Duration(e.Slept.Load()), e.Guard.Stats())
	}

	a := login(t, e, "alice", nil)
	// Mailbox names that try to reach bob's mail.
	for _, name := range []string{"../bob/INBOX", "bob/INBOX", "/bob/INBOX", "~bob/INBOX", "#shared/bob", "INBOX/../../bob"} {
		if _, err := a.Select(name, nil).Wait(); err == nil {
			t.Errorf("SELECT %q succeeded", name)
		}
		if _, err := a.Status(name, &imap.StatusOptions{NumMessages: true}).Wait(); err == nil {
			t.Errorf("STATUS %q succeeded", name)
		}
	}
	if n, _ := e.Node.Store().Mailbox("bob", "INBOX"); n.Messages != 1 {
		t.Errorf("bob's INBOX changed: %+v", n)
	}

	// Raw protocol: unknown commands, a huge literal, a long line.
	conn, err := net.Dial("tcp", e.IMAPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	readLine := func() string {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (so far %q)", err, l)
		}
		return l
	}
	readLine() // greeting
	fmt.Fprintf(conn, "a1 LOGIN alice %s\r\n", prototest.Password)
	if l := readLine(); !strings.HasPrefix(l, "a1 OK") {
		t.Fatalf("login: %q", l)
	}
	fmt.Fprintf(conn, "a2 FROBNICATE\r\n")
	if l := readLine(); !strings.HasPrefix(l, "a2 BAD") {
		t.Errorf("unknown command: %q", l)
	}
	// A 1 GB synchronizing literal for a mailbox name is refused without
	// being read. (go-imap's server then waits for the end of the command
	// line before answering; the empty line ends it.)
	fmt.Fprintf(conn, "a3 CREATE {1000000000}\r\n\r\n")
	if l := readLine(); !strings.HasPrefix(l, "a3 NO") && !strings.HasPrefix(l, "a3 BAD") {
		t.Errorf("huge literal: %q", l)
	}
	// APPEND above the limit is refused before the literal is sent.
	fmt.Fprintf(conn, "a4 APPEND INBOX {%d}\r\n", int64(100)<<20)
	if l := readLine(); !strings.HasPrefix(l, "a4 NO") {
		t.Errorf("APPEND of 100 MB: %q", l)
	}
	// A command line longer than the server takes is refused.
	fmt.Fprintf(conn, "a5 SELECT %s\r\n", strings.Repeat("x", 1<<20))
	// (go-imap answers NO [SERVERBUG] and closes the connection.)
	if l := readLine(); !strings.HasPrefix(l, "a5 NO") && !strings.HasPrefix(l, "a5 BAD") && !strings.HasPrefix(l, "* BYE") {
		t.Errorf("1 MiB command line: %q", l)
	}
	conn.Close()
	conn, err = net.Dial("tcp", e.IMAPAddr)
	if err != nil {
		t.Fatal(err)
	}
	r = bufio.NewReader(conn)
	readLine()
	fmt.Fprintf(conn, "a5 NOOP\r\n")
	if l := readLine(); !strings.HasPrefix(l, "a5 OK") {
		t.Errorf("session after refusals: %q", l)
	}
}

func asIMAPError(err error, target **imap.Error) bool {
	ie, ok := err.(*imap.Error)
	if ok {
		*target = ie
	}
	return ok
}

func sortedNames(m map[string][]byte) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// TestShutdownSaysBye: every session, idle or idling, is told BYE.
func TestShutdownSaysBye(t *testing.T) {
	e := prototest.Start(t, nil)
	var conns []*bufio.Reader
	for i, cmd := range []string{"a2 NOOP", "a2 IDLE"} {
		conn, err := net.Dial("tcp", e.IMAPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(conn)
		r.ReadString('\n')
		fmt.Fprintf(conn, "a1 LOGIN alice %s\r\na1b SELECT INBOX\r\n%s\r\n", prototest.Password, cmd)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("session %d: %v", i, err)
			}
			if strings.HasPrefix(l, "a2 OK") || strings.HasPrefix(l, "+ ") {
				break
			}
		}
		conns = append(conns, r)
	}
	if err := e.IMAP.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, r := range conns {
		l, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(l, "* BYE") {
			t.Errorf("session %d after shutdown: %q, %v", i, l, err)
		}
	}
}

// TestExamineIsReadOnly: writes to a mailbox selected with EXAMINE are
// refused and change nothing; CLOSE closes it without expunging.
func TestExamineIsReadOnly(t *testing.T) {
	e := prototest.Start(t, nil)
	send(t, e, msg("ro", "x"), "alice@localhost")
	c := login(t, e, "alice", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect(); err == nil {
		t.Error("STORE on an EXAMINEd mailbox succeeded")
	}
	if _, err := c.Expunge().Collect(); err == nil {
		t.Error("EXPUNGE on an EXAMINEd mailbox succeeded")
	}
	// A FETCH of BODY[] does not set \Seen either.
	fetchAll(t, c, imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}})
	if err := c.Unselect().Wait(); err != nil { // UNSELECT
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.UnselectAndExpunge().Wait(); err != nil { // CLOSE
		t.Errorf("CLOSE of an EXAMINEd mailbox: %v", err)
	}
	msgs, _ := e.Node.Store().Messages("alice", "INBOX", nil)
	if len(msgs) != 1 || !slices.Contains(msgs[0].Flags, `\Deleted`) || slices.Contains(msgs[0].Flags, `\Seen`) || slices.Contains(msgs[0].Flags, `\Flagged`) {
		t.Errorf("read-only session changed the mailbox: %+v", msgs)
	}
}

// TestPlainLoginNeedsTLSBeyondLoopback: a password in clear text is
// refused from an address that is not loopback.
func TestPlainLoginNeedsTLSBeyondLoopback(t *testing.T) {
	var host string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			host = ipn.IP.String()
			break
		}
	}
	if host == "" {
		t.Skip("no non-loopback IPv4 address on this machine")
	}
	e := prototest.Start(t, &prototest.Options{IMAPHost: host})
	c, err := imapclient.DialInsecure(e.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Login("alice", prototest.Password).Wait()
	var ie *imap.Error
	if !asIMAPError(err, &ie) || ie.Code != imap.ResponseCodePrivacyRequired {
		t.Fatalf("plain-text login from %s: %v, want NO [PRIVACYREQUIRED]", host, err)
	}
	if e.Guard.Stats().Failures+e.Guard.Stats().Successes != 0 {
		t.Errorf("the password was checked: %+v", e.Guard.Stats())
	}
}

// TestIdleSeesEveryKindOfChange: a session idling on INBOX is told of
// another session's flag change (FETCH FLAGS), of new mail (EXISTS), of
// an expunge (EXPUNGE), of mail after that, of a copy and of a move out,
// in that order and with the right sequence numbers; the hub takes short
// paths for all of them, and its view must stay the store's.
func TestIdleSeesEveryKindOfChange(t *testing.T) {
	e := prototest.Start(t, nil)
	for i := 1; i <= 3; i++ {
		send(t, e, msg(fmt.Sprintf("m%d", i), "x"), "alice@localhost")
	}
	events := make(chan string, 20)
	watcher := login(t, e, "alice", &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				events <- fmt.Sprintf("EXISTS %d", *d.NumMessages)
			}
		},
		Expunge: func(seq uint32) { events <- fmt.Sprintf("EXPUNGE %d", seq) },
		Fetch: func(m *imapclient.FetchMessageData) {
			for item := m.Next(); item != nil; item = m.Next() {
				if f, ok := item.(imapclient.FetchItemDataFlags); ok {
					// \Recent is this session's: it selected first.
					flags := slices.DeleteFunc(f.Flags, func(f imap.Flag) bool { return f == `\Recent` })
					events <- fmt.Sprintf("FETCH %d %v", m.SeqNum, flags)
				}
			}
		},
	})
	if _, err := watcher.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := watcher.Idle()
	if err != nil {
		t.Fatal(err)
	}
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-events:
			if got != want {
				t.Fatalf("idling session told %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("idling session not told %q", want)
		}
	}

	writer := login(t, e, "alice", nil)
	if _, err := writer.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	expect(`FETCH 2 [\Flagged]`)
	send(t, e, msg("m4", "x"), "alice@localhost")
	expect("EXISTS 4")
	if _, err := writer.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	expect(`FETCH 1 [\Deleted]`)
	if _, err := writer.Expunge().Collect(); err != nil {
		t.Fatal(err)
	}
	expect("EXPUNGE 1")
	send(t, e, msg("m5", "x"), "alice@localhost")
	expect("EXISTS 4")
	if _, err := writer.Copy(imap.UIDSetNum(2), "INBOX").Wait(); err != nil {
		t.Fatal(err)
	}
	expect("EXISTS 5")
	if _, err := writer.Move(imap.UIDSetNum(4), "Archive").Wait(); err != nil { // the third message
		t.Fatal(err)
	}
	expect("EXPUNGE 3")
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	// The watcher's view is the store's: UIDs 2, 3, 5, 6 in order.
	got := fetchAll(t, watcher, imap.SeqSetNum(1, 2, 3, 4), &imap.FetchOptions{UID: true, Flags: true})
	var uids []imap.UID
	for _, m := range got {
		uids = append(uids, m.UID)
	}
	if !slices.Equal(uids, []imap.UID{2, 3, 5, 6}) || !slices.Contains(got[0].Flags, imap.FlagFlagged) || !slices.Contains(got[3].Flags, imap.FlagFlagged) {
		t.Fatalf("watcher's FETCH 1:4: %+v", got)
	}
	select {
	case extra := <-events:
		t.Errorf("idling session also told %q", extra)
	default:
	}
}
