package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/harness"
)

// clientTimeout bounds one run of an outside client.
const clientTimeout = 60 * time.Second

// TestClients drives a running `twinbox serve` with mail clients that are
// not ours, each as its own OS process, the way users and their programs
// do: swaks, curl, Python's imaplib and mbsync; and with go-smtp's and
// go-imap's clients. Each subtest has a node of its own.
func TestClients(t *testing.T) {
	bin := buildTwinbox(t)
	for _, tc := range []struct {
		name string
		f    func(*testing.T, string)
	}{
		{"swaks", testSwaks},
		{"curl", testCurl},
		{"curl_list_deleted_parent", testCurlListDeletedParent},
		{"imaplib", testImaplib},
		{"mbsync", testMbsync},
		{"go", testGoClients},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, bin)
		})
	}
}

// message is a small text/plain message with CRLF line ends.
func message(subject, body string) []byte {
	return []byte("From: Sender <sender@example.org>\r\nTo: alice@localhost\r\nSubject: " + subject +
		"\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") +
		"@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
}

// checkDelivered asserts that got, a message as IMAP returns it, is the
// bytes sent, byte for byte, after exactly the three trace fields the node
// prepends: Return-Path, Delivered-To and one Received field.
func checkDelivered(t *testing.T, got, sent []byte, from, rcpt string) {
	t.Helper()
	if !bytes.HasSuffix(got, sent) {
		t.Fatalf("the stored message does not end with the bytes sent\ngot:\n%q\nsent:\n%q", got, sent)
	}
	trace := string(got[:len(got)-len(sent)])
	want := "Return-Path: <" + from + ">\r\nDelivered-To: " + rcpt + "\r\nReceived: "
	if !strings.HasPrefix(trace, want) || !strings.HasSuffix(trace, "\r\n") {
		t.Fatalf("trace fields before the message:\n%q\nwant them to start with %q", trace, want)
	}
	lines := strings.Split(strings.TrimSuffix(trace[len(want):], "\r\n"), "\r\n")
	for _, l := range lines[1:] {
		if l == "" || (l[0] != ' ' && l[0] != '\t') {
			t.Fatalf("trace fields before the message:\n%q\nwant Received to be the last field, got line %q", trace, l)
		}
	}
}

func fetch(t *testing.T, c *imapclient.Client, set imap.NumSet, o *imap.FetchOptions) []*imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(set, o).Collect()
	if err != nil {
		t.Fatalf("FETCH %v: %v", set, err)
	}
	return msgs
}

func selectBox(t *testing.T, c *imapclient.Client, box string) *imap.SelectData {
	t.Helper()
	d, err := c.Select(box, nil).Wait()
	if err != nil {
		t.Fatalf("SELECT %s: %v", box, err)
	}
	return d
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// swaksReplies returns the server's reply lines to the first client line
// equal to cmd in a swaks transcript, in the clear or over TLS.
func swaksReplies(transcript []byte, cmd string) []string {
	var replies []string
	found := false
	for _, line := range strings.Split(string(transcript), "\n") {
		line = strings.TrimRight(line, "\r")
		if len(line) < 4 {
			continue
		}
		switch line[:4] {
		case " -> ", " ~> ":
			if found {
				return replies
			}
			found = line[4:] == cmd
		case "<-  ", "<** ", "<~  ", "<~* ":
			if found {
				replies = append(replies, line[4:])
			}
		}
	}
	return replies
}

// expectReplies fails unless the replies to cmd are one line each,
// starting with the wanted prefixes in order.
func expectReplies(t *testing.T, transcript []byte, cmd string, want ...string) {
	t.Helper()
	got := swaksReplies(transcript, cmd)
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.HasPrefix(got[i], want[i])
	}
	if !ok {
		t.Fatalf("swaks: replies to %q are %q, want ones starting %q\n%s", cmd, got, want, transcript)
	}
}

func testSwaks(t *testing.T, bin string) {
	swaks := need(t, "swaks")
	needPerl(t, "Net::SSLeay") // swaks -tls
	n := startNode(t, bin)
	n.addUser(t, "alice", "alice-pw")
	n.addUser(t, "bob", "bob-pw")
	// swaks takes several recipients as one comma-separated --to; given
	// twice, the last --to wins.
	common := []string{"--from", "a@example.org", "--body", "one body, sent by swaks"}

	r := run(t, clientTimeout, nil, nil, swaks, append([]string{"--server", n.smtp,
		"--to", "alice@localhost,bob@localhost", "--header", "Subject: swaks over SMTP"}, common...)...)
	if r.code != 0 {
		t.Fatalf("swaks over SMTP: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	expectReplies(t, r.stdout, "RCPT TO:<alice@localhost>", "250 ")
	expectReplies(t, r.stdout, "RCPT TO:<bob@localhost>", "250 ")
	expectReplies(t, r.stdout, ".", "250 ")

	// LMTP refuses the unknown recipient alone and answers the end of
	// data once for each recipient it accepted.
	r = run(t, clientTimeout, nil, nil, swaks, append([]string{"--protocol", "LMTP", "--server", n.lmtp,
		"--to", "alice@localhost,nobody@localhost", "--header", "Subject: swaks over LMTP"}, common...)...)
	expectReplies(t, r.stdout, "RCPT TO:<alice@localhost>", "250 ")
	expectReplies(t, r.stdout, "RCPT TO:<nobody@localhost>", "550 5.1.1 ")
	expectReplies(t, r.stdout, ".", "250 ")
	if got := swaksReplies(r.stdout, "."); !strings.Contains(got[0], "alice@localhost") {
		t.Errorf("swaks over LMTP: reply to the end of data %q does not name alice@localhost", got[0])
	}
	t.Logf("swaks over LMTP with an unknown recipient: exit %d", r.code)

	r = run(t, clientTimeout, nil, nil, swaks, append([]string{"-tls", "--server", n.smtp,
		"--to", "alice@localhost", "--header", "Subject: swaks with STARTTLS"}, common...)...)
	if r.code != 0 || !bytes.Contains(r.stdout, []byte("=== TLS started")) {
		t.Fatalf("swaks -tls: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	expectReplies(t, r.stdout, "STARTTLS", "220 ")
	expectReplies(t, r.stdout, ".", "250 ")

	// What IMAP shows: the three messages in order, each with the
	// Received field of the protocol it came by (RFC 3848 names).
	c := n.login(t, "alice")
	if d := selectBox(t, c, "INBOX"); d.NumMessages != 3 {
		t.Fatalf("alice's INBOX holds %d messages, want 3", d.NumMessages)
	}
	received := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Received"}, Peek: true}
	text := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Peek: true}
	opts := &imap.FetchOptions{Envelope: true, BodySection: []*imap.FetchItemBodySection{received, text}}
	msgs := fetch(t, c, imap.SeqSetNum(1, 2, 3), opts)
	want := []struct{ subject, with string }{
		{"swaks over SMTP", "with ESMTP"}, {"swaks over LMTP", "with LMTP"}, {"swaks with STARTTLS", "with ESMTPS"}}
	if len(msgs) != len(want) {
		t.Fatalf("FETCH 1:3 returned %d messages", len(msgs))
	}
	for i, m := range msgs {
		rcv := string(m.FindBodySection(received))
		if m.Envelope.Subject != want[i].subject || !regexp.MustCompile(`\b`+want[i].with+`\b`).MatchString(rcv) {
			t.Errorf("message %d: subject %q, %q; want %q with %q", i+1, m.Envelope.Subject, rcv, want[i].subject, want[i].with)
		}
		if !bytes.Contains(m.FindBodySection(text), []byte("one body, sent by swaks")) {
			t.Errorf("message %d: body %q", i+1, m.FindBodySection(text))
		}
	}
	aliceText := msgs[0].FindBodySection(text)

	c = n.login(t, "bob")
	if d := selectBox(t, c, "INBOX"); d.NumMessages != 1 {
		t.Fatalf("bob's INBOX holds %d messages, want the one sent over SMTP", d.NumMessages)
	}
	msgs = fetch(t, c, imap.SeqSetNum(1), opts)
	if len(msgs) != 1 || msgs[0].Envelope.Subject != "swaks over SMTP" || !bytes.Equal(msgs[0].FindBodySection(text), aliceText) {
		t.Fatalf("bob's message differs from alice's copy: %+v", msgs)
	}
}

// listLine is one mailbox of curl's LIST output.
var listLine = regexp.MustCompile(`(?m)^\* LIST \(([^)]*)\) "/" "?([^"\r]*)"?\r?$`)

func testCurl(t *testing.T, bin string) {
	curl := need(t, "curl")
	n := startNode(t, bin)
	n.addUser(t, "alice", "alice-pw")
	auth := []string{"-sS", "-u", "alice:alice-pw"} // len == cap: each append copies
	curlOK := func(args ...string) []byte {
		t.Helper()
		r := run(t, clientTimeout, nil, nil, curl, args...)
		if r.code != 0 {
			t.Fatalf("curl %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}

	hello, other := message("hello from curl", "first body"), message("something else", "second body, over STARTTLS")
	curlOK("-sS", "smtp://"+n.smtp, "--mail-from", "sender@example.org", "--mail-rcpt", "alice@localhost", "-T", writeFile(t, "hello.eml", hello))
	curlOK("-sS", "--ssl-reqd", "--cacert", n.CertFile(), "smtp://"+n.smtp,
		"--mail-from", "sender@example.org", "--mail-rcpt", "alice@localhost", "-T", writeFile(t, "other.eml", other))

	boxes := map[string]string{}
	for _, m := range listLine.FindAllStringSubmatch(string(curlOK(append(auth, "imap://"+n.imap+"/")...)), -1) {
		boxes[m[2]] = m[1]
	}
	for box, attr := range map[string]string{"INBOX": "", "Sent": `\Sent`, "Drafts": `\Drafts`, "Trash": `\Trash`, "Junk": `\Junk`, "Archive": `\Archive`} {
		attrs, ok := boxes[box]
		if !ok || (attr != "" && !slices.Contains(strings.Fields(attrs), attr)) {
			t.Errorf("curl LIST: %s has attributes %q (listed: %v), want %s", box, attrs, ok, attr)
		}
	}

	checkDelivered(t, curlOK(append(auth, "imap://"+n.imap+"/INBOX;UID=1")...), hello, "sender@example.org", "alice@localhost")
	if got := curlOK(append(auth, "imap://"+n.imap+"/INBOX?SUBJECT%20hello")...); string(got) != "* SEARCH 1\r\n" {
		t.Errorf("curl SEARCH SUBJECT hello: %q, want %q", got, "* SEARCH 1\r\n")
	}
	if got := curlOK(append(auth, "--ssl-reqd", "--cacert", n.CertFile(), "imap://"+n.imap+"/INBOX?SUBJECT%20else")...); string(got) != "* SEARCH 2\r\n" {
		t.Errorf("curl SEARCH SUBJECT else over STARTTLS: %q, want %q", got, "* SEARCH 2\r\n")
	}
	checkDelivered(t, curlOK(append(auth, "-k", "imaps://"+n.imaps+"/INBOX;UID=2")...), other, "sender@example.org", "alice@localhost")
	if got := curlOK(append(auth, "--cacert", n.CertFile(), "imaps://"+n.imaps+"/")...); len(listLine.FindAll(got, -1)) != 6 {
		t.Errorf("curl LIST over imaps: %q, want 6 mailboxes", got)
	}
}

// testCurlListDeletedParent is RFC 3501 6.3.4's example: a name with an
// inferior may be deleted, and afterwards LIST "" "*" shows the inferior
// alone while LIST "" "%" still shows the deleted level, as \Noselect (or,
// with LIST-EXTENDED, \NonExistent), so a client that walks the hierarchy
// level by level still finds the inferior.
func testCurlListDeletedParent(t *testing.T, bin string) {
	curl := need(t, "curl")
	n := startNode(t, bin)
	n.addUser(t, "alice", "alice-pw")
	// imapCmd runs one command with curl and returns its exit code and the
	// mailboxes it listed.
	imapCmd := func(cmd string) (int, map[string][]string) {
		t.Helper()
		r := run(t, clientTimeout, nil, nil, curl, "-sS", "-u", "alice:alice-pw", "imap://"+n.imap+"/", "-X", cmd)
		boxes := map[string][]string{}
		for _, m := range listLine.FindAllStringSubmatch(string(r.stdout), -1) {
			boxes[m[2]] = strings.Fields(m[1])
		}
		return r.code, boxes
	}
	if code, _ := imapCmd("CREATE p/q"); code != 0 {
		t.Fatalf("curl -X 'CREATE p/q': exit %d", code)
	}
	if _, boxes := imapCmd(`LIST "" "%"`); boxes["p"] == nil {
		t.Fatalf(`LIST "" "%%" after CREATE p/q lists %v, want p among them`, boxes)
	}
	if code, _ := imapCmd("DELETE p"); code != 0 {
		t.Skipf("the node refuses to delete a name with inferiors (curl exit %d), which RFC 3501 allows", code)
	}
	if _, boxes := imapCmd(`LIST "" "*"`); boxes["p/q"] == nil || boxes["p"] != nil {
		t.Fatalf(`LIST "" "*" after DELETE p lists %v, want p/q and not p`, boxes)
	}
	_, boxes := imapCmd(`LIST "" "%"`)
	attrs, ok := boxes["p"]
	if !ok {
		t.Fatalf(`after CREATE p/q and DELETE p, LIST "" "%%" omits p (got %v); `+
			`RFC 3501 6.3.4 and 6.3.8 want * LIST (\Noselect) "/" "p"`, slices.Sorted(maps.Keys(boxes)))
	}
	if !slices.ContainsFunc(attrs, func(a string) bool {
		return strings.EqualFold(a, `\Noselect`) || strings.EqualFold(a, `\NonExistent`)
	}) {
		t.Fatalf(`LIST "" "%%" after DELETE p lists p with %v, want \Noselect or \NonExistent`, attrs)
	}
}

func testImaplib(t *testing.T, bin string) {
	python := need(t, "python3")
	n := startNode(t, bin)
	n.addUser(t, "pat", "pat-pw")
	sent := message("python hello", "from Go to Python")
	n.send(t, sent, "sender@example.org", "pat@localhost")

	host, port, _ := net.SplitHostPort(n.imap)
	ctx, cancel := context.WithTimeout(t.Context(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "testdata/imap_session.py", host, port, "pat", "pat-pw", writeFile(t, "sent.eml", sent))
	cmd.Env = harness.Env()
	cmd.WaitDelay = time.Second
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
	}()
	// expect waits for the script to print want; on anything else it
	// reports how the script ended.
	expect := func(want string) {
		t.Helper()
		select {
		case got, ok := <-lines:
			if ok && got == want {
				return
			}
			for range lines {
			}
			err := cmd.Wait()
			t.Fatalf("imap_session.py: printed %q (open: %v), want %q; exit: %v\n%s", got, ok, want, err, stderr.String())
		case <-ctx.Done():
			t.Fatalf("imap_session.py: no %q within %v\n%s", want, clientTimeout, stderr.String())
		}
	}

	expect("IDLING")
	n.send(t, message("while idling", "pushed to an idle client"), "sender@example.org", "pat@localhost")
	if _, err := io.WriteString(stdin, "delivered\n"); err != nil {
		t.Fatal(err)
	}
	expect("DONE")
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("imap_session.py: %v\n%s", err, stderr.String())
	}
	t.Logf("imap_session.py:\n%s", stderr.String())
}

// maildirName is a Maildir file name mbsync gave a message: the server's
// UID and the flags after ":2,".
var maildirName = regexp.MustCompile(`,U=(\d+)(?::2,([A-Z]*))?$`)

// maildirFile is one message file of the local Maildir.
type maildirFile struct {
	path, flags string
}

func testMbsync(t *testing.T, bin string) {
	mbsync := need(t, "mbsync")
	n := startNode(t, bin)
	n.addUser(t, "mia", "mia-pw")
	sent := [][]byte{message("first for mbsync", "one"), message("second for mbsync", "two"), message("third for mbsync", "three")}
	for _, m := range sent {
		n.send(t, m, "sender@example.org", "mia@localhost")
	}

	home := t.TempDir()
	maildir := filepath.Join(home, "Mail")
	if err := os.Mkdir(maildir, 0o700); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(n.imap)
	tmpl := template.Must(template.ParseFiles("testdata/mbsyncrc.tmpl"))
	var cfg bytes.Buffer
	if err := tmpl.Execute(&cfg, map[string]string{
		"Host": host, "Port": port, "User": "mia", "Pass": n.users["mia"], "CertFile": n.CertFile(), "Maildir": maildir,
	}); err != nil {
		t.Fatal(err)
	}
	cfgFile := writeFile(t, "mbsyncrc", cfg.Bytes())
	mbsyncRun := func(why string) {
		t.Helper()
		r := run(t, clientTimeout, []string{"HOME=" + home}, nil, mbsync, "-c", cfgFile, "twinbox")
		if r.code != 0 {
			t.Fatalf("mbsync (%s): exit %d\n%s%s", why, r.code, r.stdout, r.stderr)
		}
	}
	// local lists the Maildir's messages by UID.
	inbox := filepath.Join(maildir, "INBOX")
	local := func() map[uint32]maildirFile {
		t.Helper()
		files := map[uint32]maildirFile{}
		for _, sub := range []string{"new", "cur"} {
			ents, err := os.ReadDir(filepath.Join(inbox, sub))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				m := maildirName.FindStringSubmatch(e.Name())
				if m == nil {
					t.Fatalf("Maildir file %s/%s has no UID", sub, e.Name())
				}
				var uid uint32
				fmt.Sscan(m[1], &uid)
				files[uid] = maildirFile{filepath.Join(inbox, sub, e.Name()), m[2]}
			}
		}
		return files
	}
	c := n.login(t, "mia")
	selectBox(t, c, "INBOX")
	peek := &imap.FetchItemBodySection{Peek: true}
	// server returns UID → (flags, bytes) of the INBOX.
	server := func() map[imap.UID]*imapclient.FetchMessageBuffer {
		t.Helper()
		if err := c.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
		msgs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{
			UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{peek}}).Collect()
		if err != nil {
			t.Fatalf("FETCH 1:*: %v", err)
		}
		byUID := map[imap.UID]*imapclient.FetchMessageBuffer{}
		for _, m := range msgs {
			// \Recent is this session's (it selected first), not stored.
			m.Flags = slices.DeleteFunc(m.Flags, func(f imap.Flag) bool { return f == `\Recent` })
			byUID[m.UID] = m
		}
		return byUID
	}

	// Down: the three messages, each file the server's bytes with LF line
	// ends (mbsync's Maildir convention) and mbsync's own X-TUID field.
	mbsyncRun("first")
	files, onServer := local(), server()
	if len(files) != 3 || len(onServer) != 3 {
		t.Fatalf("after the first sync: %d local files, %d messages on the server; want 3 and 3", len(files), len(onServer))
	}
	for uid, f := range files {
		got, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		m, ok := onServer[imap.UID(uid)]
		if !ok {
			t.Fatalf("local UID %d is not on the server", uid)
		}
		want := bytes.ReplaceAll(m.FindBodySection(peek), []byte("\r\n"), []byte("\n"))
		if body, ok := withoutTUID(got); !ok || !bytes.Equal(body, want) {
			t.Errorf("UID %d: the Maildir file is not the server's message plus one X-TUID field\nfile:\n%q\nserver:\n%q", uid, got, want)
		}
		if f.flags != "" || len(m.Flags) != 0 {
			t.Errorf("UID %d: flags %q in the Maildir, %v on the server; want none", uid, f.flags, m.Flags)
		}
	}

	// Up: a flag set in the Maildir, by renaming the file into cur/ with
	// ":2,F", reaches the server.
	f := files[1]
	if err := os.Rename(f.path, filepath.Join(inbox, "cur", strings.SplitN(filepath.Base(f.path), ":2,", 2)[0]+":2,F")); err != nil {
		t.Fatal(err)
	}
	mbsyncRun("local \\Flagged")
	if flags := server()[1].Flags; !slices.Equal(flags, []imap.Flag{imap.FlagFlagged}) {
		t.Fatalf("after a sync of the local F flag, UID 1 has %v on the server, want [\\Flagged]", flags)
	}

	// Down: \Seen set over IMAP renames the file with S.
	if err := c.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	mbsyncRun("server \\Seen")
	if files := local(); files[2].flags != "S" || files[1].flags != "F" || files[3].flags != "" {
		t.Fatalf("after a sync of \\Seen on UID 2, the Maildir has %v", files)
	}

	// Up: a message put into new/ is APPENDed: the file's bytes and,
	// again, mbsync's X-TUID field.
	appended := message("written into the Maildir", "by hand")
	if err := os.WriteFile(filepath.Join(inbox, "new", "1795000000.1_1.test"), appended, 0o600); err != nil {
		t.Fatal(err)
	}
	mbsyncRun("local new message")
	onServer = server()
	if len(onServer) != 4 || onServer[4] == nil {
		t.Fatalf("after a sync of a new local message the server has UIDs %v, want 1..4", slices.Sorted(maps.Keys(onServer)))
	}
	got := onServer[4].FindBodySection(peek)
	if body, ok := withoutTUID(got); !ok || !bytes.Equal(body, appended) {
		t.Fatalf("the APPENDed message is not the file's bytes plus one X-TUID field\nserver:\n%q\nfile:\n%q", got, appended)
	}
	if files := local(); len(files) != 4 || !strings.HasPrefix(filepath.Base(files[4].path), "1795000000.1_1.test,U=4") {
		t.Fatalf("after the upload the Maildir has %v, want the file renamed with U=4", files)
	}

	// Down: an expunge on the server removes the file.
	if err := c.Store(imap.UIDSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	mbsyncRun("server expunge")
	if files := local(); len(files) != 3 || files[3].path != "" {
		t.Fatalf("after a sync of an expunge of UID 3 the Maildir has %v", files)
	}
}

// tuidField is the header field mbsync adds to every message it copies, in
// either direction, to find the copy again after a crash.
var tuidField = regexp.MustCompile(`(?m)^X-TUID: [A-Za-z0-9+/]{12}\r?\n`)

// withoutTUID removes the X-TUID field from msg's header; ok is false
// unless msg has exactly one, in its header.
func withoutTUID(msg []byte) (_ []byte, ok bool) {
	locs := tuidField.FindAllIndex(msg, -1)
	if len(locs) != 1 {
		return msg, false
	}
	at, end := locs[0][0], locs[0][1]
	if head := msg[:at]; bytes.Contains(head, []byte("\n\n")) || bytes.Contains(head, []byte("\r\n\r\n")) {
		return msg, false
	}
	return slices.Concat(msg[:at], msg[end:]), true
}

func testGoClients(t *testing.T, bin string) {
	n := startNode(t, bin)
	n.addUser(t, "alice", "alice-pw")
	n.addUser(t, "bob", "bob-pw")
	raw := message("go clients", "one message, two mailboxes")

	c, err := gosmtp.Dial(n.smtp)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Errorf("SMTP EHLO does not offer STARTTLS")
	}
	if err := c.SendMail("sender@example.org", []string{"alice@localhost", "bob@localhost"}, bytes.NewReader(raw)); err != nil {
		t.Fatalf("SMTP: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	body := &imap.FetchItemBodySection{Peek: true}
	text := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText, Peek: true}
	var texts [][]byte
	validity := map[string]uint32{}
	for _, user := range []string{"alice", "bob"} {
		c := n.login(t, user)
		d := selectBox(t, c, "INBOX")
		if d.NumMessages != 1 || d.UIDNext != 2 || d.UIDValidity == 0 {
			t.Fatalf("%s: SELECT INBOX: %d messages, UIDNEXT %d, UIDVALIDITY %d; want 1, 2, non-zero", user, d.NumMessages, d.UIDNext, d.UIDValidity)
		}
		validity[user] = d.UIDValidity
		msgs := fetch(t, c, imap.UIDSetNum(1), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{body, text}})
		if len(msgs) != 1 || msgs[0].UID != 1 {
			t.Fatalf("%s: UID FETCH 1: %+v", user, msgs)
		}
		checkDelivered(t, msgs[0].FindBodySection(body), raw, "sender@example.org", user+"@localhost")
		texts = append(texts, msgs[0].FindBodySection(text))
		if err := c.Logout().Wait(); err != nil {
			t.Errorf("%s: LOGOUT: %v", user, err)
		}
	}
	if !bytes.Equal(texts[0], texts[1]) || !bytes.HasSuffix(raw, texts[0]) {
		t.Fatalf("BODY[TEXT] of the two copies: %q and %q; want both the sent body", texts[0], texts[1])
	}

	// A second message, over STARTTLS trusting the node's certificate,
	// and read over implicit TLS: UIDNEXT moves, UIDVALIDITY does not.
	c, err = gosmtp.DialStartTLS(n.smtp, n.tlsConfig(t))
	if err != nil {
		t.Fatalf("SMTP STARTTLS: %v", err)
	}
	second := message("go clients again", "over TLS")
	if err := c.SendMail("sender@example.org", []string{"alice@localhost"}, bytes.NewReader(second)); err != nil {
		t.Fatalf("SMTP over STARTTLS: %v", err)
	}
	c.Quit()
	ic, err := imapclient.DialTLS(n.imaps, &imapclient.Options{TLSConfig: n.tlsConfig(t)})
	if err != nil {
		t.Fatalf("IMAPS: %v", err)
	}
	defer ic.Close()
	if err := ic.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	d := selectBox(t, ic, "INBOX")
	if d.NumMessages != 2 || d.UIDNext != 3 || d.UIDValidity != validity["alice"] {
		t.Fatalf("SELECT INBOX after a second message: %d messages, UIDNEXT %d, UIDVALIDITY %d; want 2, 3, %d", d.NumMessages, d.UIDNext, d.UIDValidity, validity["alice"])
	}
	msgs := fetch(t, ic, imap.UIDSetNum(2), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{body}})
	if len(msgs) != 1 {
		t.Fatalf("UID FETCH 2: %d messages", len(msgs))
	}
	checkDelivered(t, msgs[0].FindBodySection(body), second, "sender@example.org", "alice@localhost")
	if err := ic.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
}
