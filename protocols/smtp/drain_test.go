package smtp_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

// startDrain runs Drain until it returns, on its own goroutine.
func startDrain(ctx context.Context, e *prototest.Env) <-chan error {
	done := make(chan error, 1)
	go func() { done <- e.SMTP.Drain(ctx) }()
	return done
}

// greeting is the first line a new connection to addr reads.
func greeting(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	l, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

// wantClosed fails unless the server closed c's connection after what c
// has read. A connection cut in the middle of DATA may end with a reset
// (the server closed it with the client's data unread).
func wantClosed(t *testing.T, c *raw, what string) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if l, err := c.r.ReadString('\n'); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%s: read %q, %v; want the connection closed", what, l, err)
	}
}

// TestDrainClosesSessionsProperlyAndServesAgain: an idle session gets 421
// at once; one in the middle of DATA completes its transaction with 250,
// then gets 421; a connection made during the drain is greeted with 421,
// and one greeted before is answered 421 at EHLO; once Drain returns, a
// new connection gets 220 and delivers.
func TestDrainClosesSessionsProperlyAndServesAgain(t *testing.T) {
	e := prototest.Start(t, nil)
	idle := dialRaw(t, e.SMTPAddr)
	idle.cmd("EHLO idle.test")
	greeted := dialRaw(t, e.SMTPAddr) // no EHLO yet
	busy := inData(t, e.SMTPAddr, "EHLO busy.test", "alice@localhost")
	io.WriteString(busy.conn, "Subject: in flight\r\n\r\nstarted before the drain\r\n")
	poll.Eventually(t, 10*time.Second, "both sessions counted", func() bool { return e.SMTP.Sessions() == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := startDrain(ctx, e)
	if l := idle.reply(); !strings.HasPrefix(l, "421 4.3.0 ") {
		t.Errorf("idle session: %q, want 421 4.3.0", l)
	}
	wantClosed(t, idle, "idle session after its 421")

	// The drain has begun: new connections are turned away.
	c, err := gosmtp.Dial(e.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var se *gosmtp.SMTPError
	if err := c.Hello("new.test"); !errors.As(err, &se) || se.Code != 421 ||
		se.EnhancedCode != (gosmtp.EnhancedCode{4, 3, 0}) || !strings.Contains(se.Message, "try again") {
		t.Errorf("connection during the drain: %v, want a 421 4.3.0 greeting that says to try again", err)
	}
	if l := greeted.cmd("EHLO greeted.test"); !strings.HasPrefix(l, "421 4.3.0 ") {
		t.Errorf("EHLO during the drain: %q, want 421 4.3.0", l)
	}
	wantClosed(t, greeted, "session greeted before the drain, after its 421")

	if l := busy.cmd("."); !strings.HasPrefix(l, "250") {
		t.Errorf("transaction in flight: %q, want 250", l)
	}
	if l := busy.reply(); !strings.HasPrefix(l, "421 4.3.0 ") {
		t.Errorf("after its transaction: %q, want 421 4.3.0", l)
	}
	wantClosed(t, busy, "session after its transaction and 421")
	if err := <-done; err != nil {
		t.Errorf("Drain: %v", err)
	}
	if n := len(inbox(t, e, "alice")); n != 1 {
		t.Errorf("alice has %d messages, want the one in flight", n)
	}

	// Drained, the server serves as before.
	if l := greeting(t, e.SMTPAddr); !strings.HasPrefix(l, "220 ") {
		t.Errorf("greeting after the drain: %q, want 220", l)
	}
	c2, err := gosmtp.Dial(e.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.SendMail("a@example.org", []string{"alice@localhost"}, strings.NewReader(message)); err != nil {
		t.Fatalf("delivery after the drain: %v", err)
	}
	if n := len(inbox(t, e, "alice")); n != 2 {
		t.Errorf("alice has %d messages after the drain, want 2", n)
	}
}

// TestDrainCutsTransactionsWhenItsContextEnds: a transaction still in
// progress when Drain's context ends gets 421 and is closed, unacknowledged
// and undelivered, and Drain says so.
func TestDrainCutsTransactionsWhenItsContextEnds(t *testing.T) {
	e := prototest.Start(t, nil)
	idle := dialRaw(t, e.SMTPAddr)
	idle.cmd("EHLO idle.test")
	busy := inData(t, e.SMTPAddr, "EHLO busy.test", "alice@localhost")
	io.WriteString(busy.conn, "Subject: stalled\r\n\r\nnever ends\r\n")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startDrain(ctx, e)
	if l := idle.reply(); !strings.HasPrefix(l, "421") {
		t.Fatalf("idle session: %q, want 421", l)
	}
	cancel()
	if l := busy.reply(); !strings.HasPrefix(l, "421 4.3.0 ") {
		t.Errorf("transaction when the drain's context ended: %q, want 421 4.3.0", l)
	}
	wantClosed(t, busy, "cut session")
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Drain: %v, want the context's error", err)
	}
	if n := len(inbox(t, e, "alice")); n != 0 {
		t.Errorf("alice has %d messages, want none: the transaction was cut", n)
	}
	c := dial(t, e.SMTPAddr, false)
	if err := c.SendMail("a@example.org", []string{"alice@localhost"}, strings.NewReader(message)); err != nil {
		t.Fatalf("delivery after the drain: %v", err)
	}
}

// TestLMTPDrainAnswersEachRecipientThen421: an LMTP transaction in flight
// gets its per-recipient replies, then 421.
func TestLMTPDrainAnswersEachRecipientThen421(t *testing.T) {
	e := prototest.Start(t, nil)
	c := inData(t, e.LMTPAddr, "LHLO client.test", "alice@localhost", "bob@localhost")
	io.WriteString(c.conn, "Subject: lmtp in flight\r\n\r\nhello\r\n")
	poll.Eventually(t, 10*time.Second, "the session counted", func() bool { return e.LMTP.Sessions() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.LMTP.Drain(ctx) }()
	// No idle session shows that the drain began: new connections do.
	poll.Eventually(t, 10*time.Second, "the drain to begin", func() bool {
		return strings.HasPrefix(greeting(t, e.LMTPAddr), "421 4.3.0 ")
	})
	for i, l := range []string{c.cmd("."), c.reply()} {
		who := []string{"alice", "bob"}[i]
		if !strings.HasPrefix(l, "250") || !strings.Contains(l, who+"@localhost") {
			t.Errorf("%s: %q, want 250", who, l)
		}
	}
	if l := c.reply(); !strings.HasPrefix(l, "421 4.3.0 ") {
		t.Errorf("after the transaction: %q, want 421 4.3.0", l)
	}
	if err := <-done; err != nil {
		t.Errorf("Drain: %v", err)
	}
}

// inData opens a session that is inside DATA: hello, MAIL FROM, a RCPT
// per recipient, DATA answered 354.
func inData(t *testing.T, addr, hello string, rcpts ...string) *raw {
	t.Helper()
	c := dialRaw(t, addr)
	c.cmd(hello)
	c.cmd("MAIL FROM:<a@example.org>")
	for _, r := range rcpts {
		c.cmd("RCPT TO:<" + r + ">")
	}
	if l := c.cmd("DATA"); !strings.HasPrefix(l, "354") {
		t.Fatalf("DATA: %q", l)
	}
	return c
}
