package witness

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/heartbeat"
)

var key = []byte("witness-test-key-0123456789")

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dead := 1500 * time.Millisecond
	type step struct {
		node    string
		req     Request
		seen    time.Duration // when the holder was last heard, before now
		granted bool
		holder  string
		epoch   uint64
	}
	cases := []struct {
		name  string
		start State
		steps []step
	}{
		{"a new witness gives the role to the first to ask", State{}, []step{
			{node: "a", req: Request{Want: Promote, Epoch: 1}, granted: true, holder: "a", epoch: 1},
			{node: "b", req: Request{Want: Promote, Epoch: 2}, seen: 100 * time.Millisecond, holder: "a", epoch: 1},
		}},
		{"a holder heard recently keeps the role; silent for deadtime, it loses it", State{Holder: "a", Epoch: 3}, []step{
			{node: "b", req: Request{Want: Promote, Epoch: 4}, seen: dead - time.Millisecond, holder: "a", epoch: 3},
			{node: "b", req: Request{Want: Promote, Epoch: 4}, seen: dead, granted: true, holder: "b", epoch: 4},
			// The former holder, back, is stale.
			{node: "a", req: Request{Want: Ping, Epoch: 3, Active: true}, holder: "b", epoch: 4},
			{node: "a", req: Request{Want: Promote, Epoch: 4}, holder: "b", epoch: 4},
		}},
		{"pings renew the holder's lease and a passive holder releases the role", State{Holder: "a", Epoch: 3}, []step{
			{node: "a", req: Request{Want: Ping, Epoch: 3, Active: true}, granted: true, holder: "a", epoch: 3},
			{node: "b", req: Request{Want: Ping, Epoch: 3}, holder: "a", epoch: 3},
			{node: "a", req: Request{Want: Ping, Epoch: 3}, holder: "", epoch: 3},
			{node: "b", req: Request{Want: Promote, Epoch: 4}, granted: true, holder: "b", epoch: 4},
		}},
		{"an active ping adopts an empty role, not an older epoch", State{Epoch: 5}, []step{
			{node: "a", req: Request{Want: Ping, Epoch: 3, Active: true}, holder: "", epoch: 5},
			{node: "b", req: Request{Want: Ping, Epoch: 6, Active: true}, granted: true, holder: "b", epoch: 6},
		}},
		{"a promotion to an epoch not after the witness's is refused", State{Holder: "a", Epoch: 5}, []step{
			{node: "b", req: Request{Want: Promote, Epoch: 5}, seen: time.Hour, holder: "a", epoch: 5},
			{node: "a", req: Request{Want: Promote, Epoch: 5}, granted: true, holder: "a", epoch: 5},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := c.start
			for i, s := range c.steps {
				var rep Reply
				st, rep = decide(st, s.node, s.req, t0.Add(-s.seen), t0, dead)
				if rep.Granted != s.granted || st.Holder != s.holder || st.Epoch != s.epoch {
					t.Fatalf("step %d (%s %+v): granted %t, state %+v (%s); want granted %t, holder %q epoch %d",
						i, s.node, s.req, rep.Granted, st, rep.Why, s.granted, s.holder, s.epoch)
				}
				if !rep.Granted && rep.Why == "" {
					t.Errorf("step %d: refused without a reason", i)
				}
			}
		})
	}
}

func TestPayloadsRoundTripAndRefuseNoise(t *testing.T) {
	r := Request{Want: Promote, Epoch: 7, Active: true}
	if got, err := decodeRequest(r.encode()); err != nil || got != r {
		t.Fatalf("request: %+v, %v", got, err)
	}
	rep := Reply{Boot: 1, Counter: 2, Granted: true, Holder: "a", Epoch: 9, Why: "because"}
	if got, err := decodeReply(rep.encode()); err != nil || got != rep {
		t.Fatalf("reply: %+v, %v", got, err)
	}
	for _, b := range [][]byte{nil, []byte("TBW1q"), append(r.encode(), 0), rep.encode()[:20], []byte("TBW1qXXXXXXXXXXXXXXXXX")} {
		if _, err := decodeRequest(b); err == nil {
			t.Errorf("request %q accepted", b)
		}
		if _, err := decodeReply(b); err == nil {
			t.Errorf("reply %q accepted", b)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Request{Want: Ping, Epoch: 1}.encode())
	f.Add(Reply{Holder: "a", Why: "x"}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeRequest(b)
		_, _ = decodeReply(b)
	})
}

func listen(t *testing.T, state string) *Server {
	t.Helper()
	s, err := Listen(ServerOptions{Listen: "127.0.0.1:0", Key: key, StateFile: state, Deadtime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ask(t *testing.T, c *Client, r Request) Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rep, sent, err := c.Ask(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if sent.IsZero() {
		t.Error("no send time")
	}
	return rep
}

// TestServerKeepsItsVoteAcrossARestart: a real witness on a UDP socket,
// two clients; the grant is on disk before it is answered, so a
// restarted witness (its deadtime long) refuses the other node.
func TestServerKeepsItsVoteAcrossARestart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "witness.json")
	s := listen(t, state)
	a, err := Dial(s.Addr(), "a", key)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if rep := ask(t, a, Request{Want: Promote, Epoch: 1}); !rep.Granted || rep.Holder != "a" {
		t.Fatalf("first promotion: %+v", rep)
	}
	s.Close()
	s2 := listen(t, state)
	b, err := Dial(s2.Addr(), "b", key)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if rep := ask(t, b, Request{Want: Promote, Epoch: 2}); rep.Granted || rep.Holder != "a" || rep.Epoch != 1 {
		t.Fatalf("b's promotion after a restart of the witness: %+v", rep)
	}
	if got := s2.State(); got != (State{Holder: "a", Epoch: 1}) {
		t.Fatalf("state after restart: %+v", got)
	}
}

// TestServerRefusesForgedAndReplayed: a request sealed with another key,
// or a copy of one already answered, gets no answer and changes nothing.
func TestServerRefusesForgedAndReplayed(t *testing.T) {
	s := listen(t, filepath.Join(t.TempDir(), "witness.json"))
	conn, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	now := time.Now()
	forged, _ := heartbeat.Seal([]byte("another-key-of-the-right-size"), &heartbeat.Message{Node: "b", Boot: 1, Counter: 1, Sent: now,
		Payload: Request{Want: Promote, Epoch: 9}.encode()})
	if out := s.handle(forged, now); out != nil {
		t.Error("a forged request was answered")
	}
	good, _ := heartbeat.Seal(key, &heartbeat.Message{Node: "b", Boot: 1, Counter: 1, Sent: now, Payload: Request{Want: Promote, Epoch: 9}.encode()})
	if out := s.handle(good, now); out == nil {
		t.Fatal("a good request was not answered")
	}
	if out := s.handle(good, now); out != nil {
		t.Error("a replayed request was answered")
	}
	stale, _ := heartbeat.Seal(key, &heartbeat.Message{Node: "a", Boot: 1, Counter: 1, Sent: now.Add(-time.Hour), Payload: Request{Want: Promote, Epoch: 11}.encode()})
	if out := s.handle(stale, now); out != nil {
		t.Error("a stale request was answered")
	}
	hb, _ := heartbeat.Seal(key, &heartbeat.Message{Node: "a", Boot: 2, Counter: 1, Sent: now, Payload: []byte(`{"node":"a"}`)})
	if out := s.handle(hb, now); out != nil {
		t.Error("a heartbeat was answered as a request")
	}
	if got := s.State(); got != (State{Holder: "b", Epoch: 9}) {
		t.Fatalf("state: %+v", got)
	}
}

// TestClientWithoutWitness: no answer ends with ctx, as ErrNoAnswer.
func TestClientWithoutWitness(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // a silent peer
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := Dial(pc.LocalAddr().String(), "a", key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := c.Ask(ctx, Request{Want: Ping}); err == nil {
		t.Fatal("an answer from nobody")
	}
}

// TestClientNameNotResolvableYet: a witness name that does not resolve
// at start is a witness that does not answer, not an error.
func TestClientNameNotResolvableYet(t *testing.T) {
	c, err := Dial("no-such-witness.invalid:8424", "a", key)
	if err != nil {
		t.Fatalf("a name that does not resolve yet: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := c.Ask(ctx, Request{Want: Ping}); err == nil {
		t.Fatal("an answer from a witness that does not resolve")
	}
	if _, err := Dial("no-port", "a", key); err == nil {
		t.Fatal("an address without a port accepted")
	}
}
