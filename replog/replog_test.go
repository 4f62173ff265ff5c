package replog_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

const user, pass = "twinbox", "link-secret"

// node is one side of a pair: an embedded NATS server with its log, and a
// Pebble store.
type node struct {
	srv *server.Server
	nc  *nats.Conn
	log *replog.Log
	st  *store.Store
}

func newNode(t *testing.T, name string) *node {
	t.Helper()
	dir := t.TempDir()
	srv, err := replog.StartServer(replog.ServerOptions{Name: name, Dir: filepath.Join(dir, "nats"),
		Addr: "127.0.0.1:0", User: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := replog.Connect(srv, user, pass, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	l, err := replog.OpenLog(ctx, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(dir, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(ctx) })
	return &node{srv: srv, nc: nc, log: l, st: st}
}

// dialPeer connects to another node's server as the passive does.
func dialPeer(t *testing.T, n *node) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.srv.ClientURL(), nats.UserInfo(user, pass), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func deliver(i int) store.Op {
	raw := []byte(fmt.Sprintf("From: a@example.org\r\nSubject: m%d\r\n\r\nbody %d\r\n", i, i))
	return &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: time.Now().UnixNano(),
		Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}, {User: "bob", Mailbox: "INBOX"}}}
}

// commit commits ops and waits until they are applied (the passive
// confirmed them).
func commit(t *testing.T, p *replog.Primary, ops ...store.Op) []replog.Committed {
	t.Helper()
	res, err := p.Commit(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	results(t, res)
	return res
}

// results waits for committed operations to apply (the passive confirmed
// them) and fails the test on any refusal.
func results(t *testing.T, cs []replog.Committed) []store.Result {
	t.Helper()
	out := make([]store.Result, len(cs))
	for i, c := range cs {
		r, err := c.Result(context.Background())
		if err != nil {
			t.Fatalf("entry %d: %v", c.Seq, err)
		}
		if r.Err != nil {
			t.Fatalf("entry %d refused: %v", c.Seq, r.Err)
		}
		out[i] = r
	}
	return out
}

func digest(t *testing.T, st *store.Store) store.Digest {
	t.Helper()
	d, err := st.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPairReplicatesAndConfirms(t *testing.T) {
	ctx := context.Background()
	a, b := newNode(t, "a"), newNode(t, "b")
	p, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, PeerTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// No passive yet: applied here, but the client must retry.
	res, err := p.Commit(ctx, []store.Op{&store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitPeer(ctx, res[0].Seq); !errors.Is(err, replog.ErrPeerTimeout) {
		t.Fatalf("commit without a passive: peer %v, want ErrPeerTimeout", err)
	}

	fctx, stop := context.WithCancel(ctx)
	f, err := replog.NewFollower(ctx, b.log, b.st, dialPeer(t, a), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	for i := 0; i < 50; i++ {
		for _, r := range commit(t, p, deliver(i)) {
			if err := p.WaitPeer(ctx, r.Seq); err != nil {
				t.Fatalf("delivery %d not confirmed: %v", i, err)
			}
		}
	}
	// Confirmed means durable in the passive's log; the store follows.
	poll.Eventually(t, 20*time.Second, "the passive to apply", func() bool { return b.st.AppliedSeq() == a.st.AppliedSeq() })
	if da, db := digest(t, a.st), digest(t, b.st); da.Store != db.Store {
		t.Fatalf("digests differ at %d: %x vs %x", da.Applied, da.Store, db.Store)
	}
	la, _ := a.log.State(ctx)
	lb, _ := b.log.State(ctx)
	if la.First != lb.First || la.Last != lb.Last {
		t.Errorf("logs differ: active %+v, passive %+v", la, lb)
	}

	// Retention never trims what the passive has not confirmed.
	pos, _ := p.PeerPosition()
	if err := p.Retain(ctx, 10); err != nil {
		t.Fatal(err)
	}
	// Whole records go: the log starts at most 10 entries below the
	// passive's position, and past its beginning.
	if s, _ := a.log.State(ctx); s.First > pos-10+1 || s.First <= 1 {
		t.Errorf("after Retain(10) with the passive at %d the log starts at %d", pos, s.First)
	}

	// The passive goes away: commits are applied here but not confirmed;
	// when it returns it catches up to identical.
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	res, err = p.Commit(ctx, []store.Op{deliver(100)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res[0].Result(ctx); !errors.Is(err, replog.ErrPeerTimeout) {
		t.Errorf("commit while the passive is down: %v", err)
	}
	if p, _ := a.st.Mailbox("alice", "INBOX"); p.Messages != 50 {
		t.Errorf("a delivery the passive does not hold is visible on the active (%d messages)", p.Messages)
	}
	f2, err := replog.NewFollower(ctx, b.log, b.st, dialPeer(t, a), nil)
	if err != nil {
		t.Fatal(err)
	}
	fctx2, stop2 := context.WithCancel(ctx)
	defer stop2()
	go f2.Run(fctx2)
	commit(t, p, deliver(101))
	poll.Eventually(t, 20*time.Second, "the passive to catch up", func() bool { return b.st.AppliedSeq() == a.st.AppliedSeq() })
	if da, db := digest(t, a.st), digest(t, b.st); da.Store != db.Store {
		t.Fatalf("digests differ after catch-up")
	}
}

// TestStaleWriterCannotFork: a second writer on the same log with an old
// idea of its end fails instead of appending.
func TestStaleWriterCannotFork(t *testing.T) {
	ctx := context.Background()
	a := newNode(t, "a")
	p1, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, Async: true})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, Async: true})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, p1, &store.CreateUser{User: "alice"})
	if _, err := p2.Commit(ctx, []store.Op{&store.CreateUser{User: "bob"}}); !errors.Is(err, replog.ErrStaleWriter) {
		t.Fatalf("stale writer: %v, want ErrStaleWriter", err)
	}
	if _, err := p2.Commit(ctx, []store.Op{&store.CreateUser{User: "bob"}}); err == nil {
		t.Fatal("a stopped writer wrote")
	}
	if s, _ := a.log.State(ctx); s.Last != 1 {
		t.Errorf("log ends at %d, want 1", s.Last)
	}
}

// TestOlderEpochRefused: a passive that has seen epoch 2 refuses entries
// of epoch 1.
func TestOlderEpochRefused(t *testing.T) {
	ctx := context.Background()
	a, b := newNode(t, "a"), newNode(t, "b")
	p, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, Async: true})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, p, &store.CreateUser{User: "alice"})
	f, err := replog.NewFollower(ctx, b.log, b.st, dialPeer(t, a), &replog.FollowerOptions{Epoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := f.Run(rctx); !errors.Is(err, replog.ErrStaleEpoch) {
		t.Fatalf("follower: %v, want ErrStaleEpoch", err)
	}
	if b.st.AppliedSeq() != 0 {
		t.Errorf("the passive applied an entry of an older epoch")
	}
}

func TestDecodeEntryRefusesBadInput(t *testing.T) {
	e := replog.Entry{Epoch: 3, Seq: 9, Time: 1, Op: &store.CreateUser{User: "alice"}}
	b := e.Encode()
	got, err := replog.DecodeEntry(b)
	if err != nil || got.Seq != 9 || got.Epoch != 3 {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	b[0] = 2
	if _, err := replog.DecodeEntry(b); !errors.Is(err, replog.ErrVersion) {
		t.Errorf("other version: %v", err)
	}
	for _, bad := range [][]byte{nil, {1}, {1, 0, 0}, append([]byte{1}, make([]byte, 30)...)} {
		if _, err := replog.DecodeEntry(bad); err == nil {
			t.Errorf("decoded %x", bad)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	e := replog.Entry{Epoch: 1, Seq: 1, Op: &store.CreateUser{User: "a"}}
	f.Add(e.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := replog.DecodeEntry(b)
		if err == nil {
			if _, err := replog.DecodeEntry(e.Encode()); err != nil {
				t.Fatalf("re-encoded entry does not decode: %v", err)
			}
		}
	})
}

// TestLinkIsPrivate: a client without the link's credentials can neither
// read the log nor publish to it.
func TestLinkIsPrivate(t *testing.T) {
	a := newNode(t, "a")
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo(user, "wrong")}, {nats.UserInfo("intruder", pass)}} {
		nc, err := nats.Connect(a.srv.ClientURL(), append(opts, nats.NoReconnect())...)
		if err == nil {
			nc.Publish(replog.Subject, []byte("forged"))
			nc.Close()
			t.Fatalf("connected without the link's credentials (%d options)", len(opts))
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(err.Error(), "Authorization") {
			t.Errorf("refused with %v, want an authorization error", err)
		}
	}
	if s, _ := a.log.State(context.Background()); s.Last != 0 {
		t.Errorf("the log holds %d entries", s.Last)
	}
}

// TestLargeMessageReplicates: a 50 MB message crosses the link and is the
// same on both nodes.
func TestLargeMessageReplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 50 MB")
	}
	ctx := context.Background()
	a, b, p := startPair(t, 60*time.Second)
	commit(t, p, &store.CreateUser{User: "alice"})
	raw := make([]byte, 0, 50_000_000)
	raw = append(raw, "From: a@example.org\r\nSubject: big\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"...)
	line := []byte(strings.Repeat("QUJD", 19) + "\r\n")
	for len(raw)+len(line) <= cap(raw) {
		raw = append(raw, line...)
	}
	op := &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: time.Now().UnixNano(),
		Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}
	if err := a.st.Admit(op); err != nil {
		t.Fatal(err)
	}
	res := commit(t, p, op)
	if err := p.WaitPeer(ctx, res[0].Seq); err != nil {
		t.Fatalf("50 MB message not confirmed: %v", err)
	}
	poll.Eventually(t, 20*time.Second, "the passive to apply", func() bool { return b.st.AppliedSeq() == a.st.AppliedSeq() })
	msgs, err := b.st.Messages("alice", "INBOX", nil)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("passive: %v %v", msgs, err)
	}
	got, err := b.st.Literal(msgs[0])
	if err != nil || len(got) != len(raw) || !bytes.Equal(got, raw) {
		t.Fatalf("passive's copy: %d bytes, %v", len(got), err)
	}
}

// TestBodyTravelsOnce: a body the stores already hold is sent as a
// reference, and the passive links it like the active.
func TestBodyTravelsOnce(t *testing.T) {
	ctx := context.Background()
	a, b, p := startPair(t, 10*time.Second)
	commit(t, p, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"})
	noise := make([]byte, 200_000)
	rand.NewChaCha8([32]byte{7}).Read(noise)
	for i := range noise {
		noise[i] = 'a' + noise[i]%26
	}
	raw := append([]byte("From: a@example.org\r\nSubject: once\r\n\r\n"), noise...)
	op := func() store.Op {
		return &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: 1,
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}
	}
	commit(t, p, op())
	commit(t, p, op())
	first, err := a.log.Get(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.log.Get(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	if d := second.Op.(*store.Deliver); !d.Body.Stored {
		t.Fatal("the second delivery of the same body carried it again")
	}
	if n1, n2 := len(first.Encode()), len(second.Encode()); n2 > 1000 || n1 < 1000 {
		t.Errorf("entries of %d and %d bytes", n1, n2)
	}
	poll.Eventually(t, 20*time.Second, "the passive to apply", func() bool { return b.st.AppliedSeq() == a.st.AppliedSeq() })
	if da, db := digest(t, a.st), digest(t, b.st); da.Store != db.Store {
		t.Fatal("digests differ")
	}
	msgs, _ := b.st.Messages("alice", "INBOX", nil)
	if len(msgs) != 2 || msgs[0].Body != msgs[1].Body {
		t.Fatalf("passive: %+v", msgs)
	}
}

// TestCollectThenRedeliverInOneCommit: a body nobody references any more
// is delivered again in the same commit as the Collect that deletes it.
// The delivery must carry the body, not a reference to what the Collect
// before it removes (which would fail it with ErrMissingBlob on both
// nodes), and both stores end identical.
func TestCollectThenRedeliverInOneCommit(t *testing.T) {
	ctx := context.Background()
	a, b, p := startPair(t, 10*time.Second)
	commit(t, p, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"})
	commit(t, p, deliver(1))
	for _, u := range []string{"alice", "bob"} {
		commit(t, p, &store.StoreFlags{User: u, Mailbox: "INBOX", UIDs: []uint32{1}, Action: store.FlagsAdd, Flags: []string{`\Deleted`}},
			&store.Expunge{User: u, Mailbox: "INBOX", All: true})
	}
	cs, err := p.Commit(ctx, []store.Op{&store.Collect{Before: math.MaxInt64}, deliver(1)})
	if err != nil {
		t.Fatal(err)
	}
	res := results(t, cs)
	if res[0].Collected == 0 {
		t.Fatalf("the Collect collected nothing: %+v", res[0])
	}
	poll.Eventually(t, 20*time.Second, "the passive to apply", func() bool { return b.st.AppliedSeq() == a.st.AppliedSeq() })
	if da, db := digest(t, a.st), digest(t, b.st); da.Store != db.Store {
		t.Fatal("digests differ")
	}
	for _, n := range []*node{a, b} {
		msgs, err := n.st.Messages("alice", "INBOX", nil)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("alice's INBOX: %+v, %v", msgs, err)
		}
		if rep, err := n.st.Verify(ctx); err != nil || !rep.OK() {
			t.Fatalf("verify: %v %v", err, rep.Problems)
		}
	}
}

// TestResyncFromCheckpoint: a passive whose position was trimmed from the
// active's log takes a checkpoint of the active's store and follows the
// log from there to identical.
func TestResyncFromCheckpoint(t *testing.T) {
	ctx := context.Background()
	a := newNode(t, "a")
	p, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, Async: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stop, err := replog.ServeResync(a.nc, a.st, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	commit(t, p, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"})
	for i := 0; i < 40; i++ {
		commit(t, p, deliver(i))
	}
	if err := a.log.Trim(ctx, 30); err != nil {
		t.Fatal(err)
	}
	remote := dialPeer(t, a)
	need, err := replog.NeedsResync(ctx, remote, 0)
	if err != nil || !need {
		t.Fatalf("a new passive after trimming: needs resync %v, %v", need, err)
	}
	b := newNode(t, "b")
	f, err := replog.NewFollower(ctx, b.log, b.st, remote, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(ctx); !errors.Is(err, replog.ErrLogTrimmed) {
		t.Fatalf("following a trimmed log: %v, want ErrLogTrimmed", err)
	}

	dir := filepath.Join(t.TempDir(), "store")
	var progress strings.Builder
	applied, err := replog.Resync(ctx, remote, dir, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if applied != a.st.AppliedSeq() || !strings.Contains(progress.String(), "100%") {
		t.Fatalf("checkpoint at %d (active at %d); progress %q", applied, a.st.AppliedSeq(), progress.String())
	}
	st, err := store.Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	commit(t, p, deliver(100)) // the log moves on after the checkpoint
	c := newNode(t, "c")       // a fresh local log
	f2, err := replog.NewFollower(ctx, c.log, st, remote, nil)
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go f2.Run(fctx)
	poll.Eventually(t, 20*time.Second, "the resynced passive to catch up", func() bool { return st.AppliedSeq() == a.st.AppliedSeq() })
	if da, db := digest(t, a.st), digest(t, st); da.Store != db.Store {
		t.Fatal("digests differ after resync")
	}
}

// startPair runs an active (sync, with this peer timeout) and a passive
// that follows it until the test ends.
func startPair(t *testing.T, peerTimeout time.Duration) (a, b *node, p *replog.Primary) {
	t.Helper()
	ctx := context.Background()
	a, b = newNode(t, "a"), newNode(t, "b")
	p, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, PeerTimeout: peerTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	f, err := replog.NewFollower(ctx, b.log, b.st, dialPeer(t, a), nil)
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.Run(fctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return a, b, p
}

// TestPeerTimeoutMeasuresProgress: a write waits as long as the passive
// shows progress (a large operation's records being written), and fails
// after PeerTimeout only when it shows none.
func TestPeerTimeoutMeasuresProgress(t *testing.T) {
	ctx := context.Background()
	a := newNode(t, "a")
	p, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, PeerTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	report := func(pos, activity uint64) {
		b := make([]byte, 24)
		binary.BigEndian.PutUint64(b, pos)
		binary.BigEndian.PutUint64(b[8:], 1)
		binary.BigEndian.PutUint64(b[16:], activity)
		if err := a.nc.Publish(replog.PositionSubject, b); err != nil {
			t.Error(err)
		}
	}
	cs, err := p.Commit(ctx, []store.Op{&store.CreateUser{User: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	// A busy passive: activity every 50 ms for three PeerTimeouts, then
	// the position.
	go func() {
		for i := uint64(1); i <= 60; i++ {
			report(0, i)
			time.Sleep(50 * time.Millisecond)
		}
		report(cs[0].Seq, 61)
	}()
	if _, err := cs[0].Result(ctx); err != nil {
		t.Fatalf("a write while the passive shows progress: %v", err)
	}
	// A silent passive: the write fails after PeerTimeout.
	cs, err = p.Commit(ctx, []store.Op{&store.CreateUser{User: "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs[0].Result(ctx); !errors.Is(err, replog.ErrPeerTimeout) {
		t.Fatalf("a write with a silent passive: %v, want ErrPeerTimeout", err)
	}
}

// TestActiveFailsAfterPushing: the active pushes a record to the passive
// and then fails to store it (its JetStream stops before the append
// lands, as in a crash between sending and storing). No client is
// acknowledged; the passive holds the entry in its log but does not apply
// it. Then either the passive takes over, and the entry, durable there, is
// part of the new history (its sender was told nothing and retries, and a
// retried delivery is recognised), or a later writer on the old active
// writes something else at that place, and the passive sets its copy
// aside and follows: both stores end equal.
func TestActiveFailsAfterPushing(t *testing.T) {
	for _, takeover := range []bool{true, false} {
		t.Run(map[bool]string{true: "the passive takes over", false: "a later writer without it"}[takeover], func(t *testing.T) {
			ctx := context.Background()
			a, b, p := startPair(t, 2*time.Second)
			results(t, commit(t, p, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"}))
			for i := range 3 {
				results(t, commit(t, p, deliver(i)))
			}
			// The active's stream refuses the next record (full, discard
			// new): its append fails after the push went out.
			js, err := jetstream.New(a.nc)
			if err != nil {
				t.Fatal(err)
			}
			stream, err := js.Stream(ctx, replog.StreamName)
			if err != nil {
				t.Fatal(err)
			}
			info, err := stream.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			full := info.Config
			full.MaxMsgs, full.Discard = int64(info.State.Msgs), jetstream.DiscardNew
			if _, err := js.UpdateStream(ctx, full); err != nil {
				t.Fatal(err)
			}
			before := a.st.AppliedSeq()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			cs, err := p.Commit(cctx, []store.Op{&store.CreateUser{User: "pushed"}})
			cancel()
			if err == nil {
				t.Fatalf("a commit whose append cannot land succeeded: %+v", cs)
			}
			pushed := before + 1
			// The passive has it in its log, not in its store.
			poll.Eventually(t, 30*time.Second, "the passive to hold the pushed entry", func() bool {
				s, err := b.log.State(ctx)
				return err == nil && s.Last >= pushed
			})
			if got := b.st.AppliedSeq(); got >= pushed {
				t.Fatalf("the passive applied an entry the active never stored (applied %d)", got)
			}
			if ok, _ := b.st.HasUser("pushed"); ok {
				t.Fatal("the passive shows an entry the active never stored")
			}
			if _, err := p.Commit(ctx, []store.Op{&store.CreateUser{User: "after"}}); err == nil {
				t.Fatal("the writer went on after losing a pushed entry: it would number it again at its epoch")
			}
			p.Close()
			if takeover {
				// b's follower ends (startPair's cleanup) before b writes.
				nb, err := replog.NewPrimary(ctx, b.log, b.st, b.nc, &replog.PrimaryOptions{Epoch: 2})
				if err != nil {
					t.Fatal(err)
				}
				defer nb.Close()
				if ok, _ := b.st.HasUser("pushed"); !ok {
					t.Fatal("the new active did not apply the entry durable in its log")
				}
				return
			}
			if _, err := js.UpdateStream(ctx, info.Config); err != nil {
				t.Fatal(err)
			}
			p3, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 3, PeerTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer p3.Close()
			results(t, commit(t, p3, &store.CreateUser{User: "other"}))
			poll.Eventually(t, 30*time.Second, "the passive to follow the later writer", func() bool {
				ok, _ := b.st.HasUser("other")
				return ok
			})
			if ok, _ := b.st.HasUser("pushed"); ok {
				t.Fatal("the passive applied the pushed entry the later writer does not have")
			}
			if da, db := digest(t, a.st), digest(t, b.st); !reflect.DeepEqual(da, db) {
				t.Fatalf("stores differ:\n%+v\n%+v", da, db)
			}
		})
	}
}
