package pair_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/failover/failovertest"
	"github.com/twinbox/twinbox/internal/harness"
	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/internal/tlscert"
	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// bound is how long a test waits for the pair to get somewhere; every
// wait polls.
const bound = 30 * time.Second

// testPair is two nodes of a pair in this process, on temporary data
// directories, with real embedded NATS servers on loopback (TLS and the
// link's password) and no automatic failover: the tests change roles as
// the failover driver would.
type testPair struct {
	t     testing.TB
	cfgs  [2]pair.Config
	nodes [2]*pair.Pair
	mu    sync.Mutex
	next  atomic.Int64 // message numbers
	acked map[string]ackedWrite
}

// ackedWrite is where an acknowledged delivery landed.
type ackedWrite struct {
	uidValidity, uid uint32
	blob             store.BlobID
}

const testUser = "alice"

// newTestPair opens two passive nodes following each other; mutate, if
// set, changes their configurations first.
func newTestPair(t testing.TB, mutate func(i int, c *pair.Config)) *testPair {
	t.Helper()
	tcp, _, err := harness.FreeLoopback(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := t.TempDir()
	certFile, keyFile := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	if err := tlscert.SelfSigned(tlsDir, certFile, keyFile, "localhost"); err != nil {
		t.Fatal(err)
	}
	lg := slog.New(slog.NewTextHandler(tbWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tc, err := tlscert.Load(certFile, keyFile, "", "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	ca := x509.NewCertPool()
	ca.AppendCertsFromPEM(pem)
	p := &testPair{t: t, acked: map[string]ackedWrite{}}
	for i, name := range []string{"a", "b"} {
		p.cfgs[i] = pair.Config{Dir: t.TempDir(), Name: name, Role: pair.Passive,
			NATSAddr: tcp[i], PeerNATS: tcp[1-i], LinkPassword: "link-secret", LinkTLS: tc, LinkCA: ca,
			PeerTimeout: 2 * time.Second, ShutdownTimeout: 5 * time.Second, Logger: lg.With("node", name)}
		if mutate != nil {
			mutate(i, &p.cfgs[i])
		}
		p.Start(i)
	}
	t.Cleanup(func() {
		for i := range p.nodes {
			p.Stop(i)
		}
	})
	return p
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) {
	w.tb.Log(string(b))
	return len(b), nil
}

// Node, Write, Holds, Stop and Start make a testPair a
// failovertest.Pair.

func (p *testPair) Node(i int) failover.Node { return p.nodes[i] }

// Start opens node i on its data directory (a passive following the
// other).
func (p *testPair) Start(i int) {
	p.t.Helper()
	n, err := pair.Open(context.Background(), p.cfgs[i])
	if err != nil {
		p.t.Fatalf("open node %d: %v", i, err)
	}
	p.nodes[i] = n
}

// Stop closes node i without a handover, as a crash would leave it (its
// log and store are whatever they were).
func (p *testPair) Stop(i int) {
	if n := p.nodes[i]; n != nil {
		if err := n.Close(context.Background()); err != nil {
			p.t.Errorf("close node %d: %v", i, err)
		}
		p.nodes[i] = nil
	}
}

// deliver is a message with a number of its own.
func (p *testPair) deliver() *store.Deliver {
	n := p.next.Add(1)
	raw := fmt.Appendf(nil, "From: carol@example.org\r\nMessage-ID: <%d@test>\r\nSubject: m%d\r\n\r\nbody %d\r\n", n, n, n)
	return &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: time.Now().UnixNano(),
		Targets: []store.Target{{User: testUser, Mailbox: "INBOX"}}}
}

// Write delivers one message on node i (creating the user first where
// needed) and records where an acknowledged one landed.
func (p *testPair) Write(ctx context.Context, i int) (string, error) {
	n := p.nodes[i]
	if n == nil {
		return "", errors.New("node down")
	}
	if ok, _ := n.HasUser(testUser); !ok {
		res, err := n.Write(ctx, &store.CreateUser{User: testUser, UIDValidity: 7}, nil)
		if err != nil {
			return "", err
		}
		if res.Err != nil && !errors.Is(res.Err, store.ErrUserExists) {
			return "", res.Err
		}
	}
	d := p.deliver()
	res, err := n.Write(ctx, d, nil)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return "", err
	}
	id := string(d.Body.ID[:])
	pl := res.Placed[0]
	p.mu.Lock()
	p.acked[id] = ackedWrite{pl.UIDValidity, pl.UID, d.Body.ID}
	p.mu.Unlock()
	return id, nil
}

// Holds reports whether node i has the acknowledged write id under the
// same UIDVALIDITY and UID, with the same body.
func (p *testPair) Holds(i int, id string) (bool, error) {
	n := p.nodes[i]
	if n == nil {
		return false, errors.New("node down")
	}
	p.mu.Lock()
	w, ok := p.acked[id]
	p.mu.Unlock()
	if !ok {
		return false, fmt.Errorf("%x was never acknowledged", id)
	}
	mb, err := n.Mailbox(testUser, "INBOX")
	if err != nil {
		return false, nil
	}
	if mb.UIDValidity != w.uidValidity {
		return false, fmt.Errorf("UIDVALIDITY %d, the write got %d", mb.UIDValidity, w.uidValidity)
	}
	msgs, err := n.Messages(testUser, "INBOX", []uint32{w.uid})
	if err != nil || len(msgs) == 0 {
		return false, err
	}
	if msgs[0].Body != w.blob {
		return false, fmt.Errorf("UID %d holds another message", w.uid)
	}
	return true, nil
}

// holdAll checks every acknowledged write on every node that is up, and
// that the up nodes' stores are identical once they reach the same
// position.
func (p *testPair) holdAll() {
	p.t.Helper()
	p.mu.Lock()
	ids := make([]string, 0, len(p.acked))
	for id := range p.acked {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	for i, n := range p.nodes {
		if n == nil {
			continue
		}
		for _, id := range ids {
			poll.EventuallyNil(p.t, bound, fmt.Sprintf("node %d to hold every acknowledged write", i), func() error {
				ok, err := p.Holds(i, id)
				if err == nil && !ok {
					err = fmt.Errorf("UID %d missing", p.acked[id].uid)
				}
				return err
			})
		}
	}
	if p.nodes[0] != nil && p.nodes[1] != nil {
		poll.EventuallyNil(p.t, bound, "identical stores", func() error {
			da, err := p.nodes[0].Digest()
			if err != nil {
				return err
			}
			db, err := p.nodes[1].Digest()
			if err != nil {
				return err
			}
			if da.Applied != db.Applied || da.Store != db.Store {
				return fmt.Errorf("a at %d (%s), b at %d (%s)", da.Applied, da.Store, db.Applied, db.Store)
			}
			return nil
		})
	}
}

// TestFailoverNodeConformance: the real pair passes the suite the
// failover driver's fake passes.
func TestFailoverNodeConformance(t *testing.T) {
	failovertest.Run(t, func(t *testing.T) failovertest.Pair {
		return newTestPair(t, func(_ int, c *pair.Config) { c.PeerTimeout = 500 * time.Millisecond })
	})
}

// load writes from several goroutines until stop, counting refusals.
func (p *testPair) load(i int, writers int) (stop func() (acked, refused int)) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var ok, bad atomic.Int64
	for range writers {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := p.Write(context.Background(), i); err != nil {
					bad.Add(1)
					if p.nodes[i] == nil || !p.nodes[i].State().Writable {
						return
					}
					continue
				}
				ok.Add(1)
			}
		})
	}
	return func() (int, int) {
		close(done)
		wg.Wait()
		return int(ok.Load()), int(bad.Load())
	}
}

// TestSwitchoverUnderLoad: a handover while writers write loses nothing
// acknowledged; writes refused meanwhile are told to retry.
func TestSwitchoverUnderLoad(t *testing.T) {
	p := newTestPair(t, nil)
	a, b := p.nodes[0], p.nodes[1]
	if err := a.Promote(context.Background(), 1, false); err != nil {
		t.Fatal(err)
	}
	stop := p.load(0, 8)
	poll.Eventually(t, bound, "some writes", func() bool { return a.Status(context.Background()).Writes >= 50 })
	at, err := a.Demote(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	acked, refused := stop()
	if err := b.Promote(context.Background(), 2, false); err != nil {
		t.Fatal(err)
	}
	if pos := b.Position(); pos.Last < at {
		t.Fatalf("promoted at %d, the handover was at %d", pos.Last, at)
	}
	stop = p.load(1, 4)
	poll.Eventually(t, bound, "writes on the new active", func() bool { return b.Status(context.Background()).Writes >= 20 })
	acked2, _ := stop()
	t.Logf("acknowledged %d then %d; %d refused during the handover", acked, acked2, refused)
	p.holdAll()
	if s := a.State(); s.Role != pair.Passive || s.Writable {
		t.Errorf("the old active is %+v", s)
	}
}

// TestActiveCrashWithUnconfirmedTail: the active writes while its passive
// is down (nothing acknowledged: the writes stay in its log), then dies;
// the passive takes over at a new epoch. When the former active comes
// back, its log has a tail the new active never had: it sets the tail
// aside and rebuilds its store from the new active's, in this process,
// and ends up identical.
func TestActiveCrashWithUnconfirmedTail(t *testing.T) {
	p := newTestPair(t, func(_ int, c *pair.Config) { c.PeerTimeout = 300 * time.Millisecond })
	if err := p.nodes[0].Promote(context.Background(), 1, false); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := p.Write(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	}
	p.holdAll()
	p.Stop(1)
	for range 3 {
		if _, err := p.Write(context.Background(), 0); !errors.Is(err, protocols.ErrUnavailable) {
			t.Fatalf("a write without the passive: %v, want a temporary failure", err)
		}
	}
	// Nothing the passive does not hold is visible: no client can have
	// seen a UID of these writes, which the new active will give to others.
	if mb, err := p.nodes[0].Mailbox(testUser, "INBOX"); err != nil || mb.Messages != 5 || mb.UIDNext != 6 {
		t.Fatalf("the active shows %d messages, UIDNEXT %d (%v): writes the passive never confirmed are visible", mb.Messages, mb.UIDNext, err)
	}
	p.Stop(0)
	p.Start(1)
	if err := p.nodes[1].Promote(context.Background(), 2, true); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := p.Write(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
	}
	p.Start(0)
	p.nodes[1].SetDegraded(false)
	poll.Eventually(t, bound, "the former active to rejoin", func() bool {
		r := p.nodes[0].Status(context.Background()).Replication
		return r != nil && r.Rejoins == 1 && p.nodes[0].State().Serving
	})
	if r := p.nodes[0].Status(context.Background()).Replication; r.Resyncs != 0 {
		t.Errorf("the former active copied the whole store (%d resyncs) for a tail of 3 entries", r.Resyncs)
	}
	p.holdAll()
	diverged, err := os.ReadDir(p.nodes[0].Layout().Diverged())
	if err != nil || len(diverged) == 0 {
		t.Errorf("the diverged tail was not set aside: %v %v", diverged, err)
	}
	// The rebuilt node follows: a write on the active reaches it.
	if _, err := p.Write(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	p.holdAll()
}

// TestWipedPassiveResyncs: a passive whose disk was replaced starts
// empty, after the active trimmed its log; it rebuilds its store from a
// checkpoint of the active's, in process, and follows from there.
func TestWipedPassiveResyncs(t *testing.T) {
	p := newTestPair(t, func(_ int, c *pair.Config) {
		c.LogKeep, c.LogTrimEvery = 1, 20*time.Millisecond
	})
	a := p.nodes[0]
	if err := a.Promote(context.Background(), 1, false); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := p.Write(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	}
	p.holdAll()
	p.Stop(1)
	a.SetDegraded(true)
	for range 10 {
		if _, err := p.Write(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	}
	poll.Eventually(t, bound, "the active to trim its log", func() bool {
		return a.Status(context.Background()).Replication.LogFirst > 20
	})
	if err := os.RemoveAll(p.cfgs[1].Dir); err != nil {
		t.Fatal(err)
	}
	p.Start(1)
	a.SetDegraded(false)
	poll.Eventually(t, bound, "the wiped passive to rebuild its store", func() bool {
		r := p.nodes[1].Status(context.Background()).Replication
		return r != nil && r.Resyncs == 1
	})
	p.holdAll()
	if _, err := p.Write(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	p.holdAll()
}

// TestStandaloneWritesAndTellsChanges: a standalone node writes at once
// and tells its frontends every change, with the writer's origin.
func TestStandaloneWritesAndTellsChanges(t *testing.T) {
	n, err := pair.Open(context.Background(), pair.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	f := &recorder{}
	n.Attach(f)
	if s := f.last(); s.readOnly {
		t.Errorf("a standalone node told its frontend it is read-only")
	}
	ctx := context.Background()
	if _, err := n.Write(ctx, &store.CreateUser{User: testUser, UIDValidity: 1}, "me"); err != nil {
		t.Fatal(err)
	}
	// Told before Write returned.
	if got := f.changes(); len(got) != 1 || got[0].Origin != "me" {
		t.Errorf("changes told: %+v, want the user's creation with its origin", got)
	}
	if err := n.Promote(ctx, 1, false); err == nil {
		t.Error("a standalone node was promoted")
	}
}

// recorder is a frontend that records what it is told.
type recorder struct {
	mu   sync.Mutex
	sets []roState
	seen []protocols.Change
}

type roState struct {
	readOnly bool
	hint     string
}

func (r *recorder) SetReadOnly(on bool, hint string) {
	r.mu.Lock()
	r.sets = append(r.sets, roState{on, hint})
	r.mu.Unlock()
}

func (r *recorder) Notify(c protocols.Change) {
	r.mu.Lock()
	r.seen = append(r.seen, c)
	r.mu.Unlock()
}

func (r *recorder) last() roState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sets[len(r.sets)-1]
}

func (r *recorder) changes() []protocols.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]protocols.Change(nil), r.seen...)
}

// TestSplitBrainMerged: both nodes acknowledge alone (a fence that lied):
// a at epoch 1, then b at epoch 2. When a comes back it finds its tail
// diverged, plans a merge of what it acknowledged, takes the tail back in
// place and follows b; the merge re-applies a's deliveries on b through
// b's write path. Every acknowledged message is then on both nodes
// exactly once, under the same UIDVALIDITY, and no UID a client saw on
// either side names another message.
func TestSplitBrainMerged(t *testing.T) {
	p := newTestPair(t, func(_ int, c *pair.Config) { c.PeerTimeout = 300 * time.Millisecond })
	a := p.nodes[0]
	if err := a.Promote(context.Background(), 1, false); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := p.Write(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	}
	p.holdAll()
	uidValidity := func(i int) uint32 {
		mb, err := p.nodes[i].Mailbox(testUser, "INBOX")
		if err != nil {
			t.Fatal(err)
		}
		return mb.UIDValidity
	}
	v0 := uidValidity(0)
	p.Stop(1)
	a.SetDegraded(true) // "fenced" b
	var alone []string
	for range 4 {
		id, err := p.Write(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		alone = append(alone, id)
	}
	p.Stop(0) // the partition: b never hears of a's writes
	p.Start(1)
	b := p.nodes[1]
	if err := b.Promote(context.Background(), 2, true); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := p.Write(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
	}
	seenOnA := map[string]ackedWrite{}
	p.mu.Lock()
	for _, id := range alone {
		seenOnA[id] = p.acked[id]
	}
	p.mu.Unlock()
	// The heal: a comes back as a passive of b.
	p.Start(0)
	a = p.nodes[0]
	poll.Eventually(t, bound, "the merge to finish", func() bool {
		m := a.Status(context.Background()).Merge
		return m != nil && m.Pending == 0 && m.Applied >= 4 && a.State().Serving
	})
	b.SetDegraded(false)
	poll.EventuallyNil(t, bound, "identical stores", func() error {
		da, _ := a.Digest()
		db, _ := b.Digest()
		if da.Store != db.Store {
			return fmt.Errorf("a at %d, b at %d", da.Applied, db.Applied)
		}
		return nil
	})
	for i := range 2 {
		if got := uidValidity(i); got != v0 {
			t.Errorf("node %d: UIDVALIDITY %d, was %d", i, got, v0)
		}
		msgs, err := p.nodes[i].Messages(testUser, "INBOX", nil)
		if err != nil {
			t.Fatal(err)
		}
		count := map[store.BlobID]int{}
		byUID := map[uint32]store.BlobID{}
		for _, m := range msgs {
			count[m.Body]++
			byUID[m.UID] = m.Body
		}
		p.mu.Lock()
		for id, w := range p.acked {
			if count[w.blob] != 1 {
				t.Errorf("node %d holds an acknowledged message %d times", i, count[w.blob])
			}
			if body, ok := byUID[w.uid]; ok && body != w.blob {
				t.Errorf("node %d: UID %d, seen by a client, now names another message", i, w.uid)
			}
			_ = id
		}
		p.mu.Unlock()
		for id, w := range seenOnA {
			if body, ok := byUID[w.uid]; ok && body != w.blob {
				t.Errorf("node %d: UID %d that a's client saw (%x) names another message", i, w.uid, id[:4])
			}
		}
	}
	m := a.Status(context.Background()).Merge
	msgs, _ := b.Messages(testUser, "INBOX", nil)
	var uids []uint32
	for _, mm := range msgs {
		uids = append(uids, mm.UID)
	}
	t.Logf("merge %+v; UIDs on b %v; a's client saw %v", *m, uids, func() (u []uint32) {
		for _, w := range seenOnA {
			u = append(u, w.uid)
		}
		return
	}())
	if len(msgs) != 3+4+5 || m.Found < 4 || m.Acked < 4 || m.Applied < 4 {
		t.Errorf("b holds %d messages, want 12; merge %+v", len(msgs), *m)
	}
}
