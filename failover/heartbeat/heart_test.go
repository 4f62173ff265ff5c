package heartbeat_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/twinbox/twinbox/failover/heartbeat"
)

// waitFor polls cond until it holds, failing the test after a bound.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			tb.Fatalf("timed out waiting for %s", what)
		case <-poll.C:
		}
	}
}

// testLogger routes logs to t.Log.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ tb testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// udpPair returns two UDP paths on 127.0.0.1 sending to each other.
func udpPair(tb testing.TB) (a, b *heartbeat.UDPPath) {
	tb.Helper()
	cb, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	a, err = heartbeat.ListenUDP("127.0.0.1:0", cb.LocalAddr().String())
	if err != nil {
		cb.Close()
		tb.Fatal(err)
	}
	if a.LocalAddr().Port == 0 {
		tb.Fatalf("LocalAddr %v has no port", a.LocalAddr())
	}
	b, err = heartbeat.NewUDPPath(cb, a.LocalAddr().String())
	if err != nil {
		a.Close()
		cb.Close()
		tb.Fatal(err)
	}
	// Closed by their Heart; closing again is harmless.
	tb.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func startHeart(tb testing.TB, o heartbeat.Options) *heartbeat.Heart {
	tb.Helper()
	if o.Key == nil {
		o.Key = testKey
	}
	if o.Keepalive == 0 {
		o.Keepalive = 10 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = testLogger(tb).With("test_node", o.Node)
	}
	h, err := heartbeat.Start(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := h.Close(); err != nil {
			tb.Errorf("Close %s: %v", o.Node, err)
		}
	})
	return h
}

func payload(s string) func() []byte { return func() []byte { return []byte(s) } }

func stats(h *heartbeat.Heart, path string) heartbeat.PathStats { return h.Stats()[path] }

// drain returns what is queued on h.Received without waiting.
func drain(h *heartbeat.Heart) []heartbeat.Received {
	var out []heartbeat.Received
	for {
		select {
		case r, ok := <-h.Received():
			if !ok {
				return out
			}
			out = append(out, r)
		default:
			return out
		}
	}
}

func TestUDPHearts(t *testing.T) {
	pa, pb := udpPair(t)
	a := startHeart(t, heartbeat.Options{Node: "alpha", Paths: []heartbeat.Path{pa}, Payload: payload("from alpha")})
	b := startHeart(t, heartbeat.Options{Node: "beta", Paths: []heartbeat.Path{pb}, Payload: payload("from beta")})

	waitFor(t, "three heartbeats each way", func() bool {
		sa, sb := stats(a, "udp"), stats(b, "udp")
		return sa.Received >= 3 && sb.Received >= 3 && sa.Sent >= 3 && sb.Sent >= 3
	})
	for _, c := range []struct {
		h    *heartbeat.Heart
		from string
	}{{a, "beta"}, {b, "alpha"}} {
		r := <-c.h.Received()
		if r.Path != "udp" || r.Msg.Node != c.from || string(r.Msg.Payload) != "from "+c.from || r.At.IsZero() {
			t.Errorf("received %+v (payload %q), want from %s on udp", r, r.Msg.Payload, c.from)
		}
		s := stats(c.h, "udp")
		if s.LastReceived.IsZero() || len(s.Rejected) != 0 || s.LastError != "" || s.SendErrors != 0 {
			t.Errorf("stats %+v: want a last reception, no rejections or errors", s)
		}
	}
	if ra, rb := <-a.Received(), <-b.Received(); ra.Msg.Boot != b.Boot() || rb.Msg.Boot != a.Boot() {
		t.Errorf("boots: alpha heard %x, beta is %x; beta heard %x, alpha is %x", ra.Msg.Boot, b.Boot(), rb.Msg.Boot, a.Boot())
	}
}

func startNATS(tb testing.TB) *server.Server {
	tb.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		tb.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		tb.Fatal("nats-server did not start")
	}
	tb.Cleanup(s.Shutdown)
	return s
}

func connect(tb testing.TB, s *server.Server) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

func TestNATSAndUDP(t *testing.T) {
	sa, sb := startNATS(t), startNATS(t)
	na, err := heartbeat.NewNATSPath(connect(t, sa), connect(t, sb), "alpha", "beta")
	if err != nil {
		t.Fatal(err)
	}
	nb, err := heartbeat.NewNATSPath(connect(t, sb), connect(t, sa), "beta", "alpha")
	if err != nil {
		t.Fatal(err)
	}
	ua, ub := udpPair(t)
	a := startHeart(t, heartbeat.Options{Node: "alpha", Paths: []heartbeat.Path{na, ua}, Payload: payload("A")})
	b := startHeart(t, heartbeat.Options{Node: "beta", Paths: []heartbeat.Path{nb, ub}, Payload: payload("B")})

	waitFor(t, "heartbeats both ways on both paths", func() bool {
		return stats(a, "nats").Received >= 3 && stats(a, "udp").Received >= 3 &&
			stats(b, "nats").Received >= 3 && stats(b, "udp").Received >= 3
	})
	seen := map[string]bool{}
	for _, r := range drain(b) {
		if r.Msg.Node != "alpha" || string(r.Msg.Payload) != "A" {
			t.Fatalf("beta received %+v", r.Msg)
		}
		seen[r.Path] = true
	}
	if !seen["nats"] || !seen["udp"] {
		t.Errorf("beta's deliveries came on %v, want both paths", seen)
	}

	// Beta's NATS server goes: alpha cannot publish to beta, beta hears
	// nothing on nats, but UDP still carries alpha's heartbeats.
	sb.Shutdown()
	waitFor(t, "alpha's nats sends to fail", func() bool { return stats(a, "nats").LastError != "" })
	drain(b)
	udp0 := stats(b, "udp").Received
	waitFor(t, "beta to keep hearing alpha on udp", func() bool { return stats(b, "udp").Received >= udp0+5 })
	waitFor(t, "a delivery on udp", func() bool {
		for _, r := range drain(b) {
			if r.Path == "udp" && r.Msg.Node == "alpha" {
				return true
			}
		}
		return false
	})
	// Alpha still hears beta on both: beta publishes on alpha's server.
	n0, u0 := stats(a, "nats").Received, stats(a, "udp").Received
	waitFor(t, "alpha to keep hearing beta on both paths", func() bool {
		return stats(a, "nats").Received >= n0+3 && stats(a, "udp").Received >= u0+3
	})
	if s := stats(a, "nats"); s.SendErrors == 0 || !strings.Contains(s.LastError, "nats") {
		t.Errorf("alpha's nats stats %+v: want send errors", s)
	}
}

func TestWrongKeyDeliversNothing(t *testing.T) {
	pa, pb := udpPair(t)
	a := startHeart(t, heartbeat.Options{Node: "alpha", Key: otherKey, Paths: []heartbeat.Path{pa}})
	b := startHeart(t, heartbeat.Options{Node: "beta", Paths: []heartbeat.Path{pb}})

	waitFor(t, "rejections under signature", func() bool {
		return stats(b, "udp").Rejected["signature"] >= 3 && stats(a, "udp").Rejected["signature"] >= 3
	})
	for _, h := range []*heartbeat.Heart{a, b} {
		if got := drain(h); len(got) != 0 {
			t.Errorf("delivered %d messages under a wrong key: %+v", len(got), got[0])
		}
		if s := stats(h, "udp"); s.Received != 0 || !s.LastReceived.IsZero() {
			t.Errorf("stats %+v: nothing should count as received", s)
		}
	}
}

func TestSendNow(t *testing.T) {
	pa, pb := udpPair(t)
	a := startHeart(t, heartbeat.Options{Node: "alpha", Keepalive: time.Hour, Paths: []heartbeat.Path{pa}})
	b := startHeart(t, heartbeat.Options{Node: "beta", Keepalive: time.Hour, Paths: []heartbeat.Path{pb}})

	waitFor(t, "the first round at Start", func() bool { return stats(b, "udp").Received == 1 })
	for want := uint64(2); want <= 4; want++ {
		a.SendNow()
		waitFor(t, "a round on SendNow", func() bool { return stats(b, "udp").Received == want })
	}
	if s := stats(a, "udp"); s.Received != 1 {
		t.Errorf("alpha received %d, want beta's first round only", s.Received)
	}
}

// A consumer that does not read: the receivers go on, the oldest
// messages are dropped, and what is queued is the newest, in order.
func TestSlowConsumer(t *testing.T) {
	pa, pb := udpPair(t)
	startHeart(t, heartbeat.Options{Node: "alpha", Keepalive: time.Millisecond, Paths: []heartbeat.Path{pa}})
	b, err := heartbeat.Start(heartbeat.Options{Node: "beta", Key: testKey, Keepalive: time.Hour, Paths: []heartbeat.Path{pb}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "many more heartbeats than the queue holds", func() bool { return stats(b, "udp").Received >= 300 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	s := stats(b, "udp")
	var queued []heartbeat.Received
	for r := range b.Received() {
		queued = append(queued, r)
	}
	if s.Dropped == 0 || uint64(len(queued))+s.Dropped != s.Received {
		t.Errorf("received %d = dropped %d + queued %d does not hold", s.Received, s.Dropped, len(queued))
	}
	for i := 1; i < len(queued); i++ {
		if queued[i].Msg.Counter <= queued[i-1].Msg.Counter {
			t.Fatalf("queue out of order: counter %d after %d", queued[i].Msg.Counter, queued[i-1].Msg.Counter)
		}
	}
	if last := queued[len(queued)-1].Msg.Counter; last < 300 {
		t.Errorf("the newest queued is counter %d, want the latest (>= 300)", last)
	}
}

// failingPath fails every send.
type failingPath struct{ ch chan []byte }

func (p *failingPath) Name() string           { return "failing" }
func (p *failingPath) Send([]byte) error      { return errors.New("boom") }
func (p *failingPath) Receive() <-chan []byte { return p.ch }
func (p *failingPath) Close() error           { close(p.ch); return nil }

// stuckPath blocks in Send until closed.
type stuckPath struct {
	ch     chan []byte
	closed chan struct{}
	once   sync.Once
	sends  atomic.Int64
}

func (p *stuckPath) Name() string { return "stuck" }
func (p *stuckPath) Send([]byte) error {
	p.sends.Add(1)
	<-p.closed
	return errors.New("closed")
}
func (p *stuckPath) Receive() <-chan []byte { return p.ch }
func (p *stuckPath) Close() error {
	p.once.Do(func() { close(p.closed); close(p.ch) })
	return nil
}

func TestOnePathFailingOrStuckDoesNotStopTheOther(t *testing.T) {
	pa, pb := udpPair(t)
	failing := &failingPath{ch: make(chan []byte)}
	stuck := &stuckPath{ch: make(chan []byte), closed: make(chan struct{})}
	a := startHeart(t, heartbeat.Options{Node: "alpha", Paths: []heartbeat.Path{stuck, failing, pa}})
	b := startHeart(t, heartbeat.Options{Node: "beta", Paths: []heartbeat.Path{pb}})

	waitFor(t, "udp to deliver beside a failing and a stuck path", func() bool {
		return stats(b, "udp").Received >= 5 && stats(a, "failing").SendErrors >= 5
	})
	if s := stats(a, "failing"); s.LastError != "boom" || s.LastErrorAt.IsZero() || s.Sent != 0 {
		t.Errorf("failing path stats %+v", s)
	}
	if n := stuck.sends.Load(); n != 1 {
		t.Errorf("stuck path entered Send %d times, want once", n)
	}
	if err := a.Close(); err != nil { // unblocks the stuck Send
		t.Fatal(err)
	}
}

// countHandler counts log records by their "reason" attribute.
type countHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// lines returns the "suppressed" attribute of each record with the reason.
func (h *countHandler) lines(reason string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []int64
	for _, r := range h.records {
		var got string
		var suppressed int64
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "reason":
				got = a.Value.String()
			case "suppressed":
				suppressed = int64(a.Value.Uint64())
			}
			return true
		})
		if got == reason {
			out = append(out, suppressed)
		}
	}
	return out
}

func TestRejectionLogIsRateLimited(t *testing.T) {
	junk, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	pb, err := heartbeat.ListenUDP("127.0.0.1:0", junk.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	logs := &countHandler{}
	b := startHeart(t, heartbeat.Options{
		Node: "beta", Keepalive: time.Hour, Paths: []heartbeat.Path{pb},
		Logger: slog.New(logs), Now: func() time.Time { return time.Unix(0, clock.Load()) },
	})

	flood := func(n int) {
		t.Helper()
		for range n {
			if _, err := junk.WriteToUDP([]byte("not a heartbeat"), pb.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
	}
	flood(50)
	waitFor(t, "50 format rejections and a line", func() bool {
		return stats(b, "udp").Rejected["format"] >= 50 && len(logs.lines("format")) >= 1
	})
	if got := logs.lines("format"); len(got) != 1 {
		t.Fatalf("50 rejections within 10 s logged %d lines, want 1", len(got))
	}
	clock.Add(int64(11 * time.Second))
	flood(1)
	// Each datagram is verified and then logged by one goroutine, with the
	// clock read before: the 51st line comes after the 50 others' turns.
	waitFor(t, "a second line", func() bool { return len(logs.lines("format")) >= 2 })
	if got := logs.lines("format"); len(got) != 2 || got[1] != 49 {
		t.Fatalf("after 11 s: lines with suppressed counts %v, want [0 49]", got)
	}
	if n := stats(b, "udp").Rejected["format"]; n != 51 {
		t.Errorf("rejected %d, want 51 (no more, no fewer)", n)
	}
}

func TestStartErrors(t *testing.T) {
	pa, _ := udpPair(t)
	_, err := heartbeat.Start(heartbeat.Options{Key: []byte("short"), Keepalive: -1, Paths: []heartbeat.Path{pa, pa, nil}})
	if err == nil {
		t.Fatal("Start accepted no node, a short key, a negative keepalive and bad paths")
	}
	for _, want := range []string{"node", "key: 5 bytes, at least 16", "keepalive", `name "udp" used twice`, "paths[2]: nil"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := heartbeat.Start(heartbeat.Options{Node: "a", Key: testKey}); err == nil || !strings.Contains(err.Error(), "paths") {
		t.Errorf("no paths: %v", err)
	}
	// Too large a payload fails the round on every path, visibly.
	h := startHeart(t, heartbeat.Options{Node: "alpha", Paths: []heartbeat.Path{pa},
		Payload: func() []byte { return bytes.Repeat([]byte("x"), heartbeat.MaxPayload+1) }})
	waitFor(t, "the payload error", func() bool { return strings.Contains(stats(h, "udp").LastError, "payload") })
}

func TestNATSPathErrors(t *testing.T) {
	nc := connect(t, startNATS(t))
	for _, c := range []struct{ self, peer string }{{"a.b", "c"}, {"a", "*"}, {"", "b"}, {"a", "a"}, {"a b", "c"}} {
		if _, err := heartbeat.NewNATSPath(nc, nc, c.self, c.peer); err == nil {
			t.Errorf("NewNATSPath(self %q, peer %q) accepted", c.self, c.peer)
		}
	}
	if _, err := heartbeat.NewNATSPath(nil, nc, "a", "b"); err == nil {
		t.Error("NewNATSPath accepted a nil connection")
	}
	p, err := heartbeat.NewNATSPath(nc, nc, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Send([]byte("x")); err == nil {
		t.Error("Send after Close succeeded")
	}
	if _, ok := <-p.Receive(); ok {
		t.Error("Receive not closed by Close")
	}
}

// TestUDPPeerNotResolvableYet: a peer name that does not resolve at start
// (its container not up) makes sends fail, not the path.
func TestUDPPeerNotResolvableYet(t *testing.T) {
	p, err := heartbeat.ListenUDP("127.0.0.1:0", "no-such-peer.invalid:8423")
	if err != nil {
		t.Fatalf("a peer name that does not resolve yet: %v", err)
	}
	defer p.Close()
	if err := p.Send([]byte("x")); err == nil {
		t.Fatal("a send to a name that does not resolve succeeded")
	}
	if _, err := heartbeat.ListenUDP("127.0.0.1:0", "no-port"); err == nil {
		t.Fatal("a peer address without a port accepted")
	}
}

// TestLazyAddr: a name resolves when asked; one that does not is looked
// up again only after a pause; a missing port is refused at once.
func TestLazyAddr(t *testing.T) {
	a, err := heartbeat.NewLazyAddr("127.0.0.1:8423")
	if err != nil {
		t.Fatal(err)
	}
	if ua, err := a.Resolve(); err != nil || ua.Port != 8423 {
		t.Fatalf("resolve: %v, %v", ua, err)
	}
	b, err := heartbeat.NewLazyAddr("no-such-peer.invalid:8423")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Resolve(); err == nil {
		t.Fatal("an unresolvable name resolved")
	}
	if _, err := b.Resolve(); err == nil || !strings.Contains(err.Error(), "does not resolve yet") {
		t.Fatalf("a second lookup at once: %v, want the pause", err)
	}
	for _, bad := range []string{"no-port", "host:", "host:0"} {
		if _, err := heartbeat.NewLazyAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
