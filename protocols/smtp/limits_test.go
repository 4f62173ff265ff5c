package smtp_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/protocols/internal/prototest"
	"github.com/twinbox/twinbox/protocols/smtp"
	"github.com/twinbox/twinbox/protocols/users"
	"github.com/twinbox/twinbox/store"
)

// syncBuffer collects a server's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// serveWith starts another SMTP (or LMTP) server on e's node with the
// options set changes, until the test ends, and returns it and its
// address. Its log goes to logs when that is not nil.
func serveWith(t testing.TB, e *prototest.Env, lmtp bool, logs io.Writer, set func(*smtp.Options)) (*smtp.Server, string) {
	t.Helper()
	pw, err := users.Open(e.Passwd, nil)
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = io.Discard
	}
	o := &smtp.Options{Reader: e.Node, Writer: e.Node, Users: users.Directory{File: pw, Guard: e.Guard},
		LMTP: lmtp, Hostname: "mx.test", LocalDomains: []string{"localhost"},
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if set != nil {
		set(o)
	}
	srv, err := smtp.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// dialFrom connects to addr from the loopback address from (127.0.0.2...)
// and returns the first line the server says.
func dialFrom(t *testing.T, from, addr string) (*raw, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.within(stepBound)
	return c, c.reply()
}

// wantEOF fails unless the server closed c's connection after what c has
// read (a reset counts: the server closed with the client's data unread).
func wantEOF(t *testing.T, c *raw, what string) {
	t.Helper()
	if l, err := c.r.ReadString('\n'); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("%s: read %q, %v; want the connection closed", what, l, err)
	}
}

func TestConnectionLimitOverall(t *testing.T) {
	e := prototest.Start(t, nil)
	for _, lmtp := range []bool{false, true} {
		t.Run(map[bool]string{false: "SMTP", true: "LMTP"}[lmtp], func(t *testing.T) {
			srv, addr := serveWith(t, e, lmtp, nil, func(o *smtp.Options) {
				o.MaxConnections, o.MaxConnectionsPerAddr, o.LimitLoopback = 3, 3, true
			})
			// Three connections from three addresses take every slot.
			var open []*raw
			for _, from := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
				c, l := dialFrom(t, from, addr)
				if !strings.HasPrefix(l, "220 ") {
					t.Fatalf("connection from %s: %q, want 220", from, l)
				}
				open = append(open, c)
			}
			c, l := dialFrom(t, "127.0.0.4", addr)
			if !strings.HasPrefix(l, "421 4.7.0 ") || !strings.Contains(l, "Too many connections") {
				t.Errorf("a fourth connection: %q, want 421 4.7.0", l)
			}
			wantEOF(t, c, "the fourth connection after its 421")
			if n := srv.Connections(); n != 3 {
				t.Errorf("%d connections counted, want 3", n)
			}
			// A slot freed is a slot taken again.
			open[0].cmd("QUIT")
			poll.Eventually(t, 10*time.Second, "the server to count the closed connection", func() bool { return srv.Connections() == 2 })
			if _, l := dialFrom(t, "127.0.0.4", addr); !strings.HasPrefix(l, "220 ") {
				t.Errorf("a connection once one closed: %q, want 220", l)
			}
		})
	}
}

func TestConnectionLimitPerAddress(t *testing.T) {
	e := prototest.Start(t, nil)
	var logs syncBuffer
	_, addr := serveWith(t, e, false, &logs, func(o *smtp.Options) {
		o.MaxConnections, o.MaxConnectionsPerAddr, o.LimitLoopback = 10, 2, true
	})
	for range 2 {
		if _, l := dialFrom(t, "127.0.0.1", addr); !strings.HasPrefix(l, "220 ") {
			t.Fatalf("connection within the limit: %q", l)
		}
	}
	for i := range 5 {
		c, l := dialFrom(t, "127.0.0.1", addr)
		if !strings.HasPrefix(l, "421 4.7.0 ") || !strings.Contains(l, "your address") {
			t.Errorf("connection %d over the per-address limit: %q, want 421 4.7.0", i+3, l)
		}
		wantEOF(t, c, "a connection over the per-address limit")
	}
	// Another address is not held back.
	if _, l := dialFrom(t, "127.0.0.2", addr); !strings.HasPrefix(l, "220 ") {
		t.Errorf("connection from another address: %q, want 220", l)
	}
	// Five refusals in a row are one log line, not five.
	if n := strings.Count(logs.String(), "connection refused over a limit"); n != 1 {
		t.Errorf("%d log lines for 5 refusals, want 1:\n%s", n, logs.String())
	}
}

// TestLoopbackIsExemptFromThePerAddressLimit: by default a local client
// (an MTA in front, a benchmark) is held only by the overall limit.
func TestLoopbackIsExemptFromThePerAddressLimit(t *testing.T) {
	e := prototest.Start(t, nil)
	_, addr := serveWith(t, e, false, nil, func(o *smtp.Options) {
		o.MaxConnections, o.MaxConnectionsPerAddr = 4, 1
	})
	for i := range 4 {
		if _, l := dialFrom(t, "127.0.0.1", addr); !strings.HasPrefix(l, "220 ") {
			t.Fatalf("loopback connection %d: %q, want 220", i+1, l)
		}
	}
	if _, l := dialFrom(t, "127.0.0.1", addr); !strings.HasPrefix(l, "421 4.7.0 Too many connections,") {
		t.Errorf("past the overall limit: %q, want 421 4.7.0", l)
	}
}

func TestIdleTimeout(t *testing.T) {
	e := prototest.Start(t, nil)
	_, addr := serveWith(t, e, false, nil, func(o *smtp.Options) { o.ReadTimeout = 300 * time.Millisecond })
	c := dialRaw(t, addr)
	c.cmd("EHLO client.test")
	// Say nothing: the server gives up on its own.
	if l := c.reply(); !strings.HasPrefix(l, "421 4.4.2 ") {
		t.Errorf("idle session: %q, want 421 4.4.2", l)
	}
	wantEOF(t, c, "idle session after its 421")
}

func TestTransactionDeadline(t *testing.T) {
	e := prototest.Start(t, nil)
	_, addr := serveWith(t, e, false, nil, func(o *smtp.Options) {
		o.ReadTimeout = 20 * time.Second // not what ends it
		o.TransactionTimeout = 300 * time.Millisecond
	})
	c := dialRaw(t, addr)
	c.cmd("EHLO client.test")
	c.cmd("MAIL FROM:<a@example.org>")
	c.cmd("RCPT TO:<alice@localhost>")
	if l := c.reply(); !strings.HasPrefix(l, "421 4.4.2 ") || !strings.Contains(l, "Transaction time limit") {
		t.Errorf("transaction past its deadline: %q, want 421 4.4.2", l)
	}
	wantEOF(t, c, "session after its transaction's 421")
	if n := len(inbox(t, e, "alice")); n != 0 {
		t.Errorf("alice has %d messages", n)
	}
}

// slowly writes one byte of data every interval until the connection
// fails, and reports how many it wrote.
func slowly(c *raw, data string, every time.Duration) <-chan int {
	n := make(chan int, 1)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := range len(data) {
			if _, err := c.conn.Write([]byte{data[i]}); err != nil {
				n <- i
				return
			}
			<-tick.C
		}
		n <- len(data)
	}()
	return n
}

func TestDataSlowloris(t *testing.T) {
	e := prototest.Start(t, nil)
	body := "Subject: slow\r\n\r\n" + strings.Repeat("x", 4000) + "\r\n.\r\n"
	for _, tc := range []struct {
		name string
		set  func(*smtp.Options)
		pace time.Duration
	}{
		// 20 bytes/s against a minimum of 1000: cut once the free
		// first 300 ms are spent.
		{"below the minimum rate", func(o *smtp.Options) {
			o.ReadTimeout, o.DataMinRate, o.DataTimeout = 300*time.Millisecond, 1000, time.Minute
		}, 50 * time.Millisecond},
		// Fast enough for the rate (200 bytes/s against 1), but the
		// whole message must arrive within 500 ms.
		{"past the total deadline", func(o *smtp.Options) {
			o.ReadTimeout, o.DataMinRate, o.DataTimeout = 20*time.Second, 1, 500*time.Millisecond
		}, 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := serveWith(t, e, false, nil, tc.set)
			// The same settings take a message sent at once.
			ok := inData(t, addr, "EHLO client.test", "carol@localhost")
			if l := ok.cmd(body[:len(body)-2]); !strings.HasPrefix(l, "250") {
				t.Fatalf("a message sent at once: %q", l)
			}
			c := inData(t, addr, "EHLO client.test", "alice@localhost")
			wrote := slowly(c, body, tc.pace)
			if l := c.reply(); !strings.HasPrefix(l, "421 4.4.2 ") {
				t.Errorf("slow DATA: %q, want 421 4.4.2", l)
			}
			wantEOF(t, c, "slow DATA after its 421")
			if n := <-wrote; n == len(body) {
				t.Errorf("the whole slow message was read")
			}
			if n := len(inbox(t, e, "alice")); n != 0 {
				t.Errorf("alice has %d messages from a cut DATA", n)
			}
		})
	}
}

// foldedHeader is a header of about n bytes: a Subject folded over lines.
func foldedHeader(n int) string {
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nSubject: big")
	for b.Len() < n {
		b.WriteString("\r\n\t" + strings.Repeat("y", 76))
	}
	b.WriteString("\r\n")
	return b.String()
}

// manyFields is a header of n fields.
func manyFields(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-F-%d: %d\r\n", i, i)
	}
	return b.String()
}

func TestHeaderLimits(t *testing.T) {
	e := prototest.Start(t, nil)
	_, addr := serveWith(t, e, false, nil, func(o *smtp.Options) { o.MaxHeaderBytes, o.MaxHeaderFields = 64<<10, 100 })
	for _, tc := range []struct {
		name, header     string
		noBlank, refused bool
	}{
		{"header above the byte limit", foldedHeader(200 << 10), false, true},
		{"header within the byte limit", foldedHeader(60 << 10), false, false},
		{"one field too many", manyFields(101), false, true},
		{"as many fields as allowed", manyFields(100), false, false},
		{"no blank line, all header", foldedHeader(200 << 10), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(inbox(t, e, "bob"))
			c := inData(t, addr, "EHLO client.test", "bob@localhost")
			msg := tc.header + "\r\nbody\r\n"
			if tc.noBlank {
				msg = tc.header
			}
			if _, err := io.WriteString(c.conn, msg+".\r\n"); err != nil {
				t.Fatal(err)
			}
			l := c.reply()
			if tc.refused != strings.HasPrefix(l, "552 5.3.4 ") {
				t.Fatalf("reply %q; refused %v", l, tc.refused)
			}
			// One reply to DATA: the next line answers NOOP.
			if l := c.cmd("NOOP"); !strings.HasPrefix(l, "250") {
				t.Errorf("after the reply to DATA: %q, want NOOP's 250", l)
			}
			want := before
			if !tc.refused {
				want++
			}
			if n := len(inbox(t, e, "bob")); n != want {
				t.Errorf("bob has %d messages, want %d", n, want)
			}
		})
	}
	t.Run("defaults refuse a 2 MB header", func(t *testing.T) {
		c := inData(t, e.SMTPAddr, "EHLO client.test", "bob@localhost")
		go io.WriteString(c.conn, foldedHeader(2<<20)+"\r\nbody\r\n.\r\n")
		if l := c.reply(); !strings.HasPrefix(l, "552 5.3.4 ") || !strings.Contains(l, "header") {
			t.Errorf("2 MB header: %q, want 552 5.3.4", l)
		}
		if l := c.cmd("NOOP"); !strings.HasPrefix(l, "250") {
			t.Errorf("after the reply to DATA: %q, want NOOP's 250", l)
		}
	})
}

// TestHeaderFieldsAdmittedAreSearchable: with the default limits, every
// field of an admitted message is found by a header search, the 10 000th
// included, and a message of 10 001 fields is refused (issue 14, D15).
func TestHeaderFieldsAdmittedAreSearchable(t *testing.T) {
	e := prototest.Start(t, nil)
	c := inData(t, e.SMTPAddr, "EHLO client.test", "carol@localhost")
	if l := c.cmd(manyFields(9999) + "X-Last: the 10000th\r\n\r\nbody\r\n."); !strings.HasPrefix(l, "250") {
		t.Fatalf("10 000 fields: %q", l)
	}
	uids, err := e.Node.Store().Search("carol", store.Inbox, &store.Criteria{Header: []store.HeaderMatch{{Name: "X-Last", Value: "10000th"}}})
	if err != nil || len(uids) != 1 {
		t.Errorf("SEARCH HEADER X-Last: %v, %v; want the message", uids, err)
	}
	c.cmd("MAIL FROM:<a@example.org>")
	c.cmd("RCPT TO:<carol@localhost>")
	c.cmd("DATA")
	if l := c.cmd(manyFields(10000) + "X-Last: the 10001st\r\n\r\nbody\r\n."); !strings.HasPrefix(l, "552 5.3.4 ") {
		t.Errorf("10 001 fields: %q, want 552 5.3.4", l)
	}
}

func TestEnvelopeControlCharacters(t *testing.T) {
	e := prototest.Start(t, nil)
	c := dialRaw(t, e.SMTPAddr)
	c.cmd("EHLO client.test")
	for _, cmd := range []string{
		"MAIL FROM:<\"a\rX-Injected: yes\r\"@example.org>",
		"MAIL FROM:<a\rX-Injected: yes@example.org>",
		"MAIL FROM:<a\x00b@example.org>",
		"MAIL FROM:<\"a\\\x00b\"@example.org>",
		"MAIL FROM:<a@exam\rple.org>",
		"MAIL FROM:<a@example.org\x00>",
	} {
		if l := c.cmd(cmd); !strings.HasPrefix(l, "501 5.5.2 ") {
			t.Errorf("%q: %q, want 501 5.5.2", cmd, l)
		}
	}
	// LF ends the command line, so the address is cut: refused too (the
	// rest of the line is then a command of its own).
	if l := c.cmd("MAIL FROM:<\"a\nX-Injected: yes\"@example.org>"); !strings.HasPrefix(l, "501 5.5.2 ") {
		t.Errorf("MAIL with LF: %q, want 501 5.5.2", l)
	}
	c.reply() // the rest of the line, answered as an unknown command
	for _, cmd := range []string{"MAIL FROM:<a@b(c>", "MAIL FROM:<a@" + strings.Repeat("d", 300) + ">"} {
		if l := c.cmd(cmd); !strings.HasPrefix(l, "501 5.1.7 ") {
			t.Errorf("%.40q: %q, want 501 5.1.7", cmd, l)
		}
	}
	if l := c.cmd("MAIL FROM:<\"odd \\\"sender\\\\\"@example.org>"); !strings.HasPrefix(l, "250") {
		t.Fatalf("a quoted sender: %q", l)
	}
	for _, cmd := range []string{"RCPT TO:<\"alice\r\"@localhost>", "RCPT TO:<alice\x00@localhost>", "RCPT TO:<alice@localhost\r>"} {
		if l := c.cmd(cmd); !strings.HasPrefix(l, "501 5.5.2 ") {
			t.Errorf("%q: %q, want 501 5.5.2", cmd, l)
		}
	}
	c.cmd("RCPT TO:<alice@localhost>")
	c.cmd("DATA")
	if l := c.cmd("Subject: x\r\n\r\nbody\r\n."); !strings.HasPrefix(l, "250") {
		t.Fatal(l)
	}
	msgs := inbox(t, e, "alice")
	if len(msgs) != 1 {
		t.Fatalf("alice has %d messages", len(msgs))
	}
	got := string(msgs[0])
	if strings.Contains(got, "X-Injected") {
		t.Errorf("an injected field was stored:\n%q", got)
	}
	if !strings.HasPrefix(got, "Return-Path: <\"odd \\\"sender\\\\\"@example.org>\r\nDelivered-To: alice@localhost\r\nReceived: from client.test ([127.0.0.1])\r\n\tby mx.test (Twinbox) with ESMTP\r\n\tfor <alice@localhost>; ") {
		t.Errorf("the server's lines:\n%q", got)
	}
}

func TestMessageOfExactlyTheSizeLimit(t *testing.T) {
	const limit = 64 << 10
	e := prototest.Start(t, &prototest.Options{MaxMessageSize: limit})
	message := func(size int) string {
		head := "From: a@example.org\r\nSubject: exact\r\n\r\n"
		line := strings.Repeat("z", 98) + "\r\n"
		body := strings.Repeat(line, (size-len(head))/len(line))
		m := head + body
		return m[:len(m)-2] + strings.Repeat("q", size-len(m)) + "\r\n"
	}
	c := dialRaw(t, e.SMTPAddr)
	c.cmd("EHLO client.test")
	for _, tc := range []struct {
		size int
		ok   bool
	}{{limit, true}, {limit + 1, false}} {
		msg := message(tc.size)
		if len(msg) != tc.size {
			t.Fatalf("built %d bytes, want %d", len(msg), tc.size)
		}
		l := c.cmd(fmt.Sprintf("MAIL FROM:<a@example.org> SIZE=%d", tc.size))
		if !tc.ok {
			if !strings.HasPrefix(l, "552 5.3.4 ") {
				t.Errorf("MAIL SIZE=%d: %q, want 552 5.3.4", tc.size, l)
			}
			c.cmd("MAIL FROM:<a@example.org>") // without SIZE: refused after DATA
		} else if !strings.HasPrefix(l, "250") {
			t.Fatalf("MAIL SIZE=%d: %q", tc.size, l)
		}
		c.cmd("RCPT TO:<bob@localhost>")
		c.cmd("DATA")
		l = c.cmd(msg + ".")
		if tc.ok != strings.HasPrefix(l, "250") || !tc.ok && !strings.HasPrefix(l, "552 5.3.4 ") {
			t.Errorf("a message of %d bytes against a limit of %d: %q", tc.size, limit, l)
		}
	}
	msgs := inbox(t, e, "bob")
	if len(msgs) != 1 || !strings.HasSuffix(string(msgs[0]), message(limit)) {
		t.Fatalf("bob has %d messages; want the one of exactly the limit, stored whole", len(msgs))
	}
}

func TestLongLineInData(t *testing.T) {
	e := prototest.Start(t, nil) // lines up to 64 KiB
	for _, tc := range []struct {
		addr, hello string
		rcpts       []string
	}{
		{e.SMTPAddr, "EHLO client.test", []string{"alice@localhost"}},
		{e.LMTPAddr, "LHLO client.test", []string{"alice@localhost", "bob@localhost"}},
	} {
		t.Run(tc.hello[:4], func(t *testing.T) {
			c := inData(t, tc.addr, tc.hello, tc.rcpts...)
			go io.WriteString(c.conn, "Subject: long\r\n\r\n"+strings.Repeat("w", 100<<10)+"\r\nmore\r\n.\r\n")
			// One permanent reply (for LMTP, one per recipient), then the
			// connection closes: nothing more is said.
			for _, r := range tc.rcpts {
				l := c.reply()
				if !strings.HasPrefix(l, "552 5.3.4 ") || !strings.Contains(l, "line too long") {
					t.Errorf("100 KB line: %q, want 552 5.3.4", l)
				}
				if len(tc.rcpts) > 1 && !strings.Contains(l, r) {
					t.Errorf("LMTP reply %q does not name %s", l, r)
				}
			}
			wantEOF(t, c, "after the reply to a long line")
			if n := len(inbox(t, e, "alice")); n != 0 {
				t.Errorf("alice has %d messages", n)
			}
		})
	}
}

// TestBDATWithinAndOverTheLimits: CHUNKING goes through the same reader:
// a message in chunks is stored whole, and one over the size limit is
// refused once, at its last chunk, with the session going on.
func TestBDATWithinAndOverTheLimits(t *testing.T) {
	e := prototest.Start(t, &prototest.Options{MaxMessageSize: 1000})
	c := dialRaw(t, e.SMTPAddr)
	c.cmd("EHLO client.test")
	head := "Subject: chunks\r\n\r\n"
	if l := c.cmd(fmt.Sprintf("MAIL FROM:<a@example.org> SIZE=%d", 1000)); !strings.HasPrefix(l, "250") {
		t.Fatal(l)
	}
	c.cmd("RCPT TO:<carol@localhost>")
	body := head + strings.Repeat("b", 1000-len(head))
	if _, err := io.WriteString(c.conn, fmt.Sprintf("BDAT %d\r\n%s", 500, body[:500])); err != nil {
		t.Fatal(err)
	}
	if l := c.reply(); !strings.HasPrefix(l, "250") {
		t.Fatalf("first chunk: %q", l)
	}
	if _, err := io.WriteString(c.conn, fmt.Sprintf("BDAT %d LAST\r\n%s", 500, body[500:])); err != nil {
		t.Fatal(err)
	}
	if l := c.reply(); !strings.HasPrefix(l, "250") {
		t.Fatalf("a 1000-byte message in two chunks, limit 1000: %q", l)
	}
	c.cmd("MAIL FROM:<a@example.org>")
	c.cmd("RCPT TO:<carol@localhost>")
	if _, err := io.WriteString(c.conn, fmt.Sprintf("BDAT %d LAST\r\n%sx", 1001, body)); err != nil {
		t.Fatal(err)
	}
	if l := c.reply(); !strings.HasPrefix(l, "552 5.3.4 ") {
		t.Errorf("a 1001-byte chunk: %q, want 552 5.3.4", l)
	}
	if l := c.cmd("NOOP"); !strings.HasPrefix(l, "250") {
		t.Errorf("after the refused chunk: %q", l)
	}
	msgs := inbox(t, e, "carol")
	if len(msgs) != 1 || !strings.HasSuffix(string(msgs[0]), body) {
		t.Errorf("carol has %d messages; want the one in chunks, whole", len(msgs))
	}
}

// TestBytesInFlightAreBounded: the messages a server holds at once are
// bounded; one that does not fit is refused 452 4.3.1 (the sender retries)
// and fits once the others are done.
func TestBytesInFlightAreBounded(t *testing.T) {
	e := prototest.Start(t, nil)
	srv, addr := serveWith(t, e, false, nil, func(o *smtp.Options) { o.MaxBytesInFlight = 64 << 10 })
	msg := "Subject: held\r\n\r\n" + strings.Repeat(strings.Repeat("a", 98)+"\r\n", 400) // 40 KB
	a := inData(t, addr, "EHLO a.test", "alice@localhost")
	if _, err := io.WriteString(a.conn, msg); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "the first message's bytes to be held", func() bool { return srv.BytesInFlight() >= 40<<10 })
	b := inData(t, addr, "EHLO b.test", "bob@localhost")
	if l := b.cmd(msg + "."); !strings.HasPrefix(l, "452 4.3.1 ") {
		t.Errorf("a second message past the budget: %q, want 452 4.3.1", l)
	}
	if l := b.cmd("NOOP"); !strings.HasPrefix(l, "250") {
		t.Errorf("after the reply to DATA: %q, want NOOP's 250", l)
	}
	if l := a.cmd("."); !strings.HasPrefix(l, "250") {
		t.Fatalf("the first message: %q", l)
	}
	if n := srv.BytesInFlight(); n != 0 {
		t.Errorf("%d bytes still counted once both are done", n)
	}
	b.cmd("MAIL FROM:<a@example.org>")
	b.cmd("RCPT TO:<bob@localhost>")
	b.cmd("DATA")
	if l := b.cmd(msg + "."); !strings.HasPrefix(l, "250") {
		t.Errorf("the second message once the first is done: %q", l)
	}
	if len(inbox(t, e, "alice")) != 1 || len(inbox(t, e, "bob")) != 1 {
		t.Errorf("alice and bob should have one message each")
	}
}
