package smtp_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/protocols/internal/prototest"
	"github.com/twinbox/twinbox/protocols/users"
	"github.com/twinbox/twinbox/store"
)

const message = "From: a@example.org\r\nTo: alice@localhost\r\nSubject: hi\r\n\r\nHello.\r\n"

// inbox returns the literals (prefix + body) in a user's INBOX.
func inbox(t *testing.T, e *prototest.Env, user string) [][]byte {
	t.Helper()
	st := e.Node.Store()
	msgs, err := st.Messages(user, store.Inbox, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range msgs {
		lit, err := st.Literal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, lit)
	}
	return out
}

func dial(t *testing.T, addr string, lmtp bool) *gosmtp.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var c *gosmtp.Client
	if lmtp {
		c = gosmtp.NewClientLMTP(conn)
	} else {
		c = gosmtp.NewClient(conn)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func code(err error) int {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestSMTPDeliversOnceToEveryRecipient(t *testing.T) {
	e := prototest.Start(t, nil)
	c := dial(t, e.SMTPAddr, false)
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"alice@localhost", "bob@example.test", "Carol@LOCALHOST"} {
		err := c.Rcpt(to, nil)
		if to == "Carol@LOCALHOST" {
			// Local parts are case-sensitive; carol exists, Carol not.
			if code(err) != 550 {
				t.Errorf("RCPT %s: %v, want 550", to, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("RCPT %s: %v", to, err)
		}
	}
	var se *gosmtp.SMTPError
	if err := c.Rcpt("nobody@localhost", nil); !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (gosmtp.EnhancedCode{5, 1, 1}) {
		t.Errorf("unknown user: %v, want 550 5.1.1", err)
	}
	if err := c.Rcpt("alice@elsewhere.org", nil); code(err) != 550 {
		t.Errorf("relay: %v, want 550", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, message)
	if err := w.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	a, b := inbox(t, e, "alice"), inbox(t, e, "bob")
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("alice has %d, bob %d messages", len(a), len(b))
	}
	if !bytes.HasSuffix(a[0], []byte(message)) || !bytes.HasPrefix(a[0], []byte("Return-Path: <a@example.org>\r\nDelivered-To: alice@localhost\r\nReceived: from client.test ([127.0.0.1])\r\n\tby mx.test (Twinbox) with ESMTP;")) {
		t.Errorf("alice's message:\n%q", a[0])
	}
	if !bytes.Contains(b[0], []byte("Delivered-To: bob@example.test\r\n")) {
		t.Errorf("bob's message:\n%q", b[0])
	}
	am, _ := e.Node.Store().Messages("alice", store.Inbox, nil)
	bm, _ := e.Node.Store().Messages("bob", store.Inbox, nil)
	if am[0].Body != bm[0].Body {
		t.Errorf("two bodies stored for one transaction")
	}
	if n := len(inbox(t, e, "carol")); n != 0 {
		t.Errorf("carol got %d messages", n)
	}
}

func TestLMTPAnswersEachRecipientInOrder(t *testing.T) {
	e := prototest.Start(t, nil)
	c := dialRaw(t, e.LMTPAddr)
	c.cmd("LHLO client.test")
	c.cmd("MAIL FROM:<a@example.org>")
	if l := c.cmd("RCPT TO:<nobody@localhost>"); !strings.HasPrefix(l, "550 5.1.1") {
		t.Errorf("unknown recipient: %q", l)
	}
	rcpts := []string{"bob@localhost", "alice@localhost", "alice@localhost"}
	for _, r := range rcpts {
		if l := c.cmd("RCPT TO:<" + r + ">"); !strings.HasPrefix(l, "250") {
			t.Fatalf("RCPT %s: %q", r, l)
		}
	}
	if l := c.cmd("DATA"); !strings.HasPrefix(l, "354") {
		t.Fatal(l)
	}
	io.WriteString(c.conn, message+".\r\n")
	for _, r := range rcpts {
		if l := c.reply(); !strings.HasPrefix(l, "250") || !strings.Contains(l, r) {
			t.Errorf("reply for %s: %q", r, l)
		}
	}
	// The same recipient twice gets one copy.
	if n := len(inbox(t, e, "alice")); n != 1 {
		t.Errorf("alice has %d messages", n)
	}
	if n := len(inbox(t, e, "bob")); n != 1 {
		t.Errorf("bob has %d messages", n)
	}
}

// raw is a line-level SMTP conversation, for what a library client would
// not send.
type raw struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// stepBound bounds one step of a raw conversation: a hang fails the test
// instead of stalling it.
const stepBound = 20 * time.Second

// dialRaw connects to addr and reads the greeting. The connection's
// deadline is stepBound from now; a step that needs another bound sets it
// with within.
func dialRaw(t testing.TB, addr string) *raw {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.within(stepBound)
	c.reply() // greeting
	return c
}

// within bounds what follows (reads and writes) to d from now.
func (c *raw) within(d time.Duration) {
	c.conn.SetDeadline(time.Now().Add(d))
}

// reply reads one (possibly multi-line) reply and returns its last line.
// It keeps the deadline the caller set.
func (c *raw) reply() string {
	c.t.Helper()
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read reply: %v (%q)", err, l)
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

func (c *raw) cmd(line string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

func TestSMTPBadInput(t *testing.T) {
	const limit = 1 << 20
	e := prototest.Start(t, &prototest.Options{MaxMessageSize: limit, MaxLineLength: 2000})

	t.Run("unknown command", func(t *testing.T) {
		c := dialRaw(t, e.SMTPAddr)
		if l := c.cmd("XFRB now"); !strings.HasPrefix(l, "500") {
			t.Errorf("unknown command: %q", l)
		}
		// Not even shaped like a command: a syntax error.
		if l := c.cmd("FROBNICATE now"); !strings.HasPrefix(l, "50") {
			t.Errorf("malformed command: %q", l)
		}
		if l := c.cmd("RCPT TO:<alice@localhost>"); !strings.HasPrefix(l, "5") {
			t.Errorf("RCPT before MAIL: %q", l)
		}
	})

	t.Run("declared size above the limit", func(t *testing.T) {
		c := dialRaw(t, e.SMTPAddr)
		c.cmd("EHLO client.test")
		if l := c.cmd(fmt.Sprintf("MAIL FROM:<a@example.org> SIZE=%d", 100<<20)); !strings.HasPrefix(l, "552") {
			t.Errorf("MAIL with SIZE above the limit: %q", l)
		}
	})

	t.Run("100 MB message streamed to a 1 MB limit", func(t *testing.T) {
		c := dialRaw(t, e.SMTPAddr)
		c.cmd("EHLO client.test")
		c.cmd("MAIL FROM:<a@example.org>")
		c.cmd("RCPT TO:<alice@localhost>")
		if l := c.cmd("DATA"); !strings.HasPrefix(l, "354") {
			t.Fatal(l)
		}
		// 100 MB through a -race build on a busy CI machine can take
		// longer than the usual step bound; this only guards a hang.
		c.within(3 * time.Minute)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		line := strings.Repeat("y", 998) + "\r\n"
		chunk := []byte(strings.Repeat(line, 1000)) // 1 MB
		done := make(chan error, 1)
		go func() {
			for i := 0; i < 100; i++ {
				if _, err := c.conn.Write(chunk); err != nil {
					done <- err
					return
				}
			}
			_, err := io.WriteString(c.conn, ".\r\n")
			done <- err
		}()
		if l := c.reply(); !strings.HasPrefix(l, "552") {
			t.Errorf("oversized message: %q", l)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		// The server held at most about the limit, not the 100 MB.
		if grown := int64(after.TotalAlloc - before.TotalAlloc); grown > 40<<20 {
			t.Errorf("allocated %d MB while refusing a 100 MB message", grown>>20)
		}
		if l := c.cmd("NOOP"); !strings.HasPrefix(l, "250") {
			t.Errorf("session after 552: %q", l)
		}
	})

	t.Run("disconnect mid-DATA stores nothing", func(t *testing.T) {
		before := e.Node.Store().AppliedSeq()
		c := dialRaw(t, e.SMTPAddr)
		c.cmd("EHLO client.test")
		c.cmd("MAIL FROM:<a@example.org>")
		c.cmd("RCPT TO:<carol@localhost>")
		c.cmd("DATA")
		io.WriteString(c.conn, "Subject: half\r\n\r\nthe first half of a message\r\n")
		c.conn.Close()
		// Once the server has noticed (its session count falls), nothing
		// may have been written.
		poll.Eventually(t, 10*time.Second, "the server to drop the session", func() bool { return e.SMTP.Sessions() == 0 })
		if got := e.Node.Store().AppliedSeq(); got != before {
			t.Errorf("applied sequence moved from %d to %d", before, got)
		}
		if n := len(inbox(t, e, "carol")); n != 0 {
			t.Errorf("carol has %d messages", n)
		}
	})

	t.Run("smuggling shapes stay one message", func(t *testing.T) {
		for i, end := range []string{"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n"} {
			c := dialRaw(t, e.SMTPAddr)
			c.cmd("EHLO client.test")
			c.cmd("MAIL FROM:<a@example.org>")
			c.cmd("RCPT TO:<carol@localhost>")
			c.cmd("DATA")
			smuggled := fmt.Sprintf("Subject: outer %d\r\n\r\nbody%sMAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n", i, end)
			if _, err := io.WriteString(c.conn, smuggled); err != nil {
				t.Fatal(err)
			}
			if l := c.reply(); !strings.HasPrefix(l, "250") {
				t.Fatalf("end %q: %q", end, l)
			}
			if l := c.cmd("QUIT"); !strings.HasPrefix(l, "221") {
				t.Errorf("end %q: after the message: %q (a smuggled command was run)", end, l)
			}
		}
		if n := len(inbox(t, e, "bob")); n != 0 {
			t.Errorf("bob got %d smuggled messages", n)
		}
		if n := len(inbox(t, e, "carol")); n != 4 {
			t.Errorf("carol has %d messages, want 4 whole ones", n)
		}
	})

	t.Run("over-long line", func(t *testing.T) {
		c := dialRaw(t, e.SMTPAddr)
		if l := c.cmd("EHLO " + strings.Repeat("h", 5000)); !strings.HasPrefix(l, "500") {
			t.Errorf("5000-byte line: %q", l)
		}
	})
}

// TestShutdownIsGraceful: idle sessions get 421 and a transaction in
// flight completes with 250 before the server stops.
func TestShutdownIsGraceful(t *testing.T) {
	e := prototest.Start(t, nil)
	idle := dialRaw(t, e.SMTPAddr)
	idle.cmd("EHLO idle.test")
	busy := inData(t, e.SMTPAddr, "EHLO busy.test", "alice@localhost")
	io.WriteString(busy.conn, "Subject: in flight\r\n\r\nstarted before shutdown\r\n")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- e.SMTP.Shutdown(ctx)
	}()
	if l := idle.reply(); !strings.HasPrefix(l, "421") {
		t.Errorf("idle session: %q, want 421", l)
	}
	if l := busy.cmd("."); !strings.HasPrefix(l, "250") {
		t.Errorf("transaction in flight: %q, want 250", l)
	}
	if l := busy.reply(); !strings.HasPrefix(l, "421") {
		t.Errorf("after its transaction: %q, want 421", l)
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if n := len(inbox(t, e, "alice")); n != 1 {
		t.Errorf("alice has %d messages, want the one in flight", n)
	}
	if _, err := net.DialTimeout("tcp", e.SMTPAddr, time.Second); err == nil {
		t.Errorf("still accepting after shutdown")
	}
}

// TestNewUserGetsMailAtOnce: a user added to the passwd-file, not yet in
// the store, receives mail: the first delivery creates the user.
func TestNewUserGetsMailAtOnce(t *testing.T) {
	e := prototest.Start(t, nil)
	if err := users.Add(e.Passwd, "dave", "dave-pw", &users.EditOptions{Cost: 4}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.Node.Store().HasUser("dave"); ok {
		t.Fatal("dave is in the store before any delivery")
	}
	c := dial(t, e.SMTPAddr, false)
	if err := c.SendMail("a@example.org", []string{"dave@localhost", "alice@localhost"}, strings.NewReader(message)); err != nil {
		t.Fatalf("delivery to a new user: %v", err)
	}
	if n := len(inbox(t, e, "dave")); n != 1 {
		t.Errorf("dave has %d messages", n)
	}
	if n := len(inbox(t, e, "alice")); n != 1 {
		t.Errorf("alice has %d messages", n)
	}
}
