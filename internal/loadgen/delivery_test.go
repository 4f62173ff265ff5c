package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// mailSink is a go-smtp backend that keeps count of what it accepted and
// refuses what the test says to refuse.
type mailSink struct {
	// rcptErr, when set, decides the RCPT reply; dataErr, when set, the
	// final reply for one recipient (LMTP) or the message (SMTP, with the
	// first recipient).
	rcptErr func(to string) error
	dataErr func(to string, n int) error

	// arrived, when set, receives the message count after each message;
	// hold, when set, blocks DATA until it is closed.
	arrived chan<- int
	hold    <-chan struct{}

	mu       sync.Mutex
	messages int            // accepted for at least one recipient
	rcpts    map[string]int // deliveries per recipient
	ids      map[string]bool
	bodies   [][]byte
}

func (b *mailSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{sink: b}, nil }

type sinkSession struct {
	sink  *mailSink
	rcpts []string
}

func (s *sinkSession) Reset()                                         { s.rcpts = nil }
func (s *sinkSession) Logout() error                                  { return nil }
func (s *sinkSession) Mail(from string, opts *smtp.MailOptions) error { return nil }

func (s *sinkSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.sink.rcptErr != nil {
		if err := s.sink.rcptErr(to); err != nil {
			return err
		}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

// read takes in one message and returns its sequence number (from 1).
func (s *sinkSession) read(r io.Reader) (int, []byte, error) {
	body, err := io.ReadAll(r)
	if err != nil {
		return 0, nil, err
	}
	b := s.sink
	b.mu.Lock()
	n := len(b.bodies) + 1
	b.bodies = append(b.bodies, body)
	b.mu.Unlock()
	return n, body, nil
}

func (s *sinkSession) accept(n int, body []byte, to []string) {
	if len(to) == 0 {
		return
	}
	b := s.sink
	b.mu.Lock()
	b.messages++
	for _, r := range to {
		b.rcpts[r]++
	}
	if m, err := mail.ReadMessage(bytes.NewReader(body)); err == nil {
		b.ids[m.Header.Get("Message-ID")] = true
	}
	count := b.messages
	b.mu.Unlock()
	if b.arrived != nil {
		b.arrived <- count
	}
	if b.hold != nil {
		<-b.hold
	}
}

func (s *sinkSession) Data(r io.Reader) error {
	n, body, err := s.read(r)
	if err != nil {
		return err
	}
	if s.sink.dataErr != nil {
		if err := s.sink.dataErr(s.rcpts[0], n); err != nil {
			return err
		}
	}
	s.accept(n, body, s.rcpts)
	return nil
}

func (s *sinkSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	n, body, err := s.read(r)
	if err != nil {
		return err
	}
	// Count first, then reply, as a store acknowledges only what it
	// holds: the client may read the counts as soon as it has the replies.
	var ok []string
	errs := make([]error, len(s.rcpts))
	for i, to := range s.rcpts {
		if s.sink.dataErr != nil {
			errs[i] = s.sink.dataErr(to, n)
		}
		if errs[i] == nil {
			ok = append(ok, to)
		}
	}
	s.accept(n, body, ok)
	for i, to := range s.rcpts {
		status.SetStatus(to, errs[i])
	}
	return nil
}

// startSink runs a go-smtp server for sink on a random loopback port and
// returns its address.
func startSink(tb testing.TB, sink *mailSink, lmtp bool) string {
	tb.Helper()
	sink.rcpts = map[string]int{}
	sink.ids = map[string]bool{}
	srv := smtp.NewServer(sink)
	srv.LMTP = lmtp
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ErrorLog = newTBLogger(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		// Shutdown waits for every connection's goroutine, so none logs
		// after the test; the clients have closed theirs by now.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("smtp server shutdown: %v", err)
			srv.Close()
		}
		<-done
	})
	return ln.Addr().String()
}

// tbLogger routes a server's log to the test's log until the test has
// ended: the servers' Close does not wait for every connection goroutine,
// and a test may not log after it returned.
type tbLogger struct {
	tb   testing.TB
	mu   sync.Mutex
	done bool
}

func newTBLogger(tb testing.TB) *tbLogger {
	l := &tbLogger{tb: tb}
	tb.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return l
}

func (l *tbLogger) Printf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.tb.Logf(format, v...)
	}
}

func (l *tbLogger) Println(v ...any) { l.Printf("%s", fmt.Sprintln(v...)) }

func refuse(code int, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 1, 1}, Message: msg}
}

func runDelivery(tb testing.TB, cfg DeliveryConfig) *DeliveryResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := RunDelivery(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if res.Interrupted {
		tb.Fatal("run interrupted")
	}
	return res
}

func TestDeliveryCountsWhatTheServerAccepted(t *testing.T) {
	for _, lmtp := range []bool{false, true} {
		t.Run(map[bool]string{false: "smtp", true: "lmtp"}[lmtp], func(t *testing.T) {
			sink := &mailSink{}
			addr := startSink(t, sink, lmtp)
			cfg := DeliveryConfig{
				Conn:        Conn{Target: addr},
				Limits:      Limits{Count: 60},
				LMTP:        lmtp,
				Sessions:    4,
				MessageSize: 3000,
				Recipients:  3,
				Users:       Users{Count: 5},
			}
			res := runDelivery(t, cfg)
			if res.Delivered != 60 || res.Failed != 0 || res.RecipientsDelivered != 180 || res.RecipientsFailed != 0 {
				t.Errorf("delivered %d failed %d, recipients %d/%d; want 60, 0, 180/0",
					res.Delivered, res.Failed, res.RecipientsDelivered, res.RecipientsFailed)
			}
			sink.mu.Lock()
			defer sink.mu.Unlock()
			if sink.messages != 60 {
				t.Errorf("server accepted %d messages, want 60", sink.messages)
			}
			total := 0
			for to, n := range sink.rcpts {
				if !strings.HasPrefix(to, "user") || !strings.HasSuffix(to, "@localhost") {
					t.Errorf("recipient %q outside user1..user5@localhost", to)
				}
				total += n
			}
			if total != 180 || len(sink.rcpts) != 5 {
				t.Errorf("server delivered %d times to %d users, want 180 to 5", total, len(sink.rcpts))
			}
			if len(sink.ids) != 60 {
				t.Errorf("%d distinct Message-IDs in 60 messages", len(sink.ids))
			}
			if res.Bytes != 60*3000 || res.Latency.Samples != 60 || res.Latency.Max < res.Latency.P50 {
				t.Errorf("bytes %d, latency %+v", res.Bytes, res.Latency)
			}
			for _, body := range sink.bodies {
				// The server strips the final CRLF.CRLF's dot; the
				// message itself is exactly the asked size.
				if len(body) != 3000 {
					t.Fatalf("server got %d bytes, want 3000", len(body))
				}
			}
		})
	}
}

func TestDeliveryCountsRefusals(t *testing.T) {
	t.Run("smtp rcpt 550", func(t *testing.T) {
		sink := &mailSink{rcptErr: func(to string) error {
			if to == "user3@localhost" {
				return refuse(550, "no such user")
			}
			return nil
		}}
		addr := startSink(t, sink, false)
		res := runDelivery(t, DeliveryConfig{
			Conn: Conn{Target: addr}, Limits: Limits{Count: 200},
			Sessions: 3, MessageSize: 500, Users: Users{Count: 4},
		})
		if res.Delivered+res.Failed != 200 || res.Failed == 0 || res.Failures["550"] != res.Failed {
			t.Errorf("delivered %d failed %d failures %v; want 200 in all, every failure a 550", res.Delivered, res.Failed, res.Failures)
		}
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if int64(sink.messages) != res.Delivered || sink.rcpts["user3@localhost"] != 0 {
			t.Errorf("server accepted %d (user3: %d), client counted %d", sink.messages, sink.rcpts["user3@localhost"], res.Delivered)
		}
	})
	t.Run("lmtp per-recipient 552", func(t *testing.T) {
		sink := &mailSink{dataErr: func(to string, n int) error {
			if to == "user2@localhost" {
				return refuse(552, "mailbox full")
			}
			return nil
		}}
		addr := startSink(t, sink, true)
		res := runDelivery(t, DeliveryConfig{
			Conn: Conn{Target: addr}, Limits: Limits{Count: 100}, LMTP: true,
			Sessions: 3, MessageSize: 500, Recipients: 2, Users: Users{Count: 4},
		})
		sink.mu.Lock()
		defer sink.mu.Unlock()
		total := 0
		for _, n := range sink.rcpts {
			total += n
		}
		if res.Delivered+res.Failed != 100 || res.Failed == 0 || res.Failures["552"] != res.Failed {
			t.Errorf("delivered %d failed %d failures %v", res.Delivered, res.Failed, res.Failures)
		}
		if int64(total) != res.RecipientsDelivered || res.RecipientsDelivered+res.RecipientsFailed != 200 {
			t.Errorf("server delivered %d recipients; client counted %d delivered, %d failed",
				total, res.RecipientsDelivered, res.RecipientsFailed)
		}
		if res.RecipientsFailed != res.Failed {
			t.Errorf("%d recipients failed in %d messages; one refused user per failed message", res.RecipientsFailed, res.Failed)
		}
	})
	t.Run("421 reconnects", func(t *testing.T) {
		sink := &mailSink{dataErr: func(to string, n int) error {
			if n%10 == 0 {
				return refuse(421, "closing")
			}
			return nil
		}}
		addr := startSink(t, sink, false)
		res := runDelivery(t, DeliveryConfig{
			Conn: Conn{Target: addr}, Limits: Limits{Count: 100},
			Sessions: 2, MessageSize: 500, Users: Users{Count: 4},
		})
		// Every 421 drops the connection; the next transaction, if there
		// is one, reconnects.
		if res.Failed != 10 || res.Failures["421"] != 10 || res.Delivered != 90 || res.Reconnects < 8 || res.Reconnects > 10 {
			t.Errorf("delivered %d failed %d failures %v reconnects %d; want 90, 10, 421 ×10, 8 to 10",
				res.Delivered, res.Failed, res.Failures, res.Reconnects)
		}
	})
}

func TestDeliveryEndsOnCancel(t *testing.T) {
	arrived := make(chan int, 100)
	hold := make(chan struct{})
	sink := &mailSink{arrived: arrived, hold: hold}
	addr := startSink(t, sink, true)
	t.Cleanup(func() { close(hold) }) // runs before the server's Close
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type out struct {
		res *DeliveryResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := RunDelivery(ctx, DeliveryConfig{
			Conn: Conn{Target: addr}, Limits: Limits{Duration: time.Hour}, LMTP: true,
			Sessions: 2, MessageSize: 500,
		})
		done <- out{res, err}
	}()
	<-arrived // a transaction is in flight and the server holds it
	cancel()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatal(o.err)
		}
		if !o.res.Interrupted || o.res.Delivered != 0 {
			t.Errorf("interrupted %v, delivered %d; want true, 0 (held messages never got their reply)", o.res.Interrupted, o.res.Delivered)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunDelivery did not return within 10 s of cancel")
	}
}

func TestDeliveryErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, err = RunDelivery(context.Background(), DeliveryConfig{Conn: Conn{Target: closed}, Limits: Limits{Count: 1}})
	if err == nil || !strings.Contains(err.Error(), closed) {
		t.Errorf("closed port: err = %v, want one naming %s", err, closed)
	}

	_, err = RunDelivery(context.Background(), DeliveryConfig{
		Conn: Conn{Target: "nohost", TLS: TLSStartTLS}, LMTP: true,
		Sessions: -1, Recipients: 51,
	})
	for _, want := range []string{`Conn.Target = "nohost"`, "Sessions = -1", "Recipients = 51", "STARTTLS"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("invalid config: err = %v, want it to name %s", err, want)
		}
	}
}

func TestMessageShape(t *testing.T) {
	rng := newTestRand()
	g := newMessageGen(0, "localhost", rng)
	ids := map[string]bool{}
	var buf bytes.Buffer
	for _, size := range []int{1, 300, 401, 402, 479, 480, 481, 1000, 10240, 100000} {
		for seq := range uint64(20) {
			g.size = size
			msg := g.build(&buf, rng, 1, uint64(size)*100+seq, "user1@localhost")
			m, err := mail.ReadMessage(bytes.NewReader(msg))
			if err != nil {
				t.Fatalf("size %d: %v\n%s", size, err, msg)
			}
			id := m.Header.Get("Message-ID")
			if ids[id] {
				t.Fatalf("Message-ID %s repeated", id)
			}
			ids[id] = true
			if len(msg) != size && size > 400 {
				t.Fatalf("asked %d bytes, got %d", size, len(msg))
			}
			if !bytes.HasSuffix(msg, []byte("\r\n")) {
				t.Fatalf("size %d: does not end in CRLF", size)
			}
			for i, line := range strings.Split(strings.TrimSuffix(string(msg), "\r\n"), "\r\n") {
				if len(line) > 78 || strings.ContainsAny(line, "\r\n") || strings.HasPrefix(line, ".") {
					t.Fatalf("size %d, line %d: %q", size, i, line)
				}
			}
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	l := summarize(d)
	if l.P50 != 50*time.Millisecond || l.P90 != 90*time.Millisecond || l.P99 != 99*time.Millisecond || l.Max != 100*time.Millisecond {
		t.Errorf("%+v", l)
	}
	if one := summarize([]time.Duration{7}); one.P50 != 7 || one.P99 != 7 {
		t.Errorf("%+v", one)
	}
	if (summarize(nil) != Latency{}) {
		t.Error("empty")
	}
}

func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }
