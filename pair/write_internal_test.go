package pair

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

func newStandalone(tb testing.TB) *Pair {
	tb.Helper()
	ctx := context.Background()
	p, err := Open(ctx, Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close(ctx) })
	if _, err := p.Write(ctx, &store.CreateUser{User: "alice"}, nil); err != nil {
		tb.Fatal(err)
	}
	return p
}

func mailboxOp(name string) store.Op { return &store.CreateMailbox{User: "alice", Name: name} }

func hasMailbox(tb testing.TB, p *Pair, name string) bool {
	tb.Helper()
	_, err := p.Mailbox("alice", name)
	if err != nil && !errors.Is(err, store.ErrNoMailbox) {
		tb.Fatal(err)
	}
	return err == nil
}

// readOnly makes the node refuse writes, as a demotion does, keeping the
// role.
func (p *Pair) readOnly(why string) {
	p.roles.set(continued(p.roles.get(), func(s *state) { s.writable, s.why = false, why }))
}

// TestFlushRefusesWritesTheRoleNoLongerAllows: a write admitted before a
// change whose flush starts after it is refused, uncommitted: all of a
// batch once writes stopped, and those admitted for a commit path (term)
// that was replaced.
func TestFlushRefusesWritesTheRoleNoLongerAllows(t *testing.T) {
	ctx := context.Background()
	p := newStandalone(t)
	old := p.roles.get().term
	p.roles.set(continued(p.roles.get(), func(s *state) { s.term = p.roles.nextTerm() }))
	cur := p.roles.get().term
	out, err := p.flush(ctx, []admitted{{op: mailboxOp("A"), term: old}, {op: mailboxOp("B"), term: cur}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(out[0].refused, protocols.ErrUnavailable) || out[1].refused != nil {
		t.Errorf("after a new term: refused %v and %v, want the old term's write only", out[0].refused, out[1].refused)
	}
	if hasMailbox(t, p, "A") || !hasMailbox(t, p, "B") {
		t.Errorf("committed A %v (want false), B %v (want true)", hasMailbox(t, p, "A"), hasMailbox(t, p, "B"))
	}
	p.readOnly("demoted")
	out, err = p.flush(ctx, []admitted{{op: mailboxOp("C"), term: cur}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(out[0].refused, protocols.ErrUnavailable) || hasMailbox(t, p, "C") {
		t.Errorf("a flush after writes stopped: refused %v, committed %v", out[0].refused, hasMailbox(t, p, "C"))
	}
}

// TestWritesStopWhileAFlushRuns: a flush already running when writes
// stop completes; a write queued behind it is refused, uncommitted; the
// wait for writes in flight returns once both have returned.
func TestWritesStopWhileAFlushRuns(t *testing.T) {
	ctx := context.Background()
	p := newStandalone(t)
	// Hold the first flush once it has read the role.
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	p.flushHook = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { _, err := p.Write(ctx, mailboxOp("First"), nil); first <- err }()
	<-entered
	go func() { _, err := p.Write(ctx, mailboxOp("Second"), nil); second <- err }()
	poll.Eventually(t, 10*time.Second, "the second write to queue", func() bool { return p.inflight.count() >= 2 })
	p.readOnly("demoted")
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := p.inflight.wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting with a write in its flush: %v, want the context's deadline", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("the write whose flush had begun: %v, want success", err)
	}
	if err := <-second; !errors.Is(err, protocols.ErrUnavailable) {
		t.Errorf("the write queued behind it: %v, want a temporary refusal", err)
	}
	if err := p.inflight.wait(ctx); err != nil {
		t.Errorf("wait: %v", err)
	}
	if !hasMailbox(t, p, "First") || hasMailbox(t, p, "Second") {
		t.Errorf("First applied %v (want true), Second applied %v (want false)", hasMailbox(t, p, "First"), hasMailbox(t, p, "Second"))
	}
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// TestTermChangesWhileWriting: the commit path changes again and again
// while writers run (run it with -race). Every write either succeeds and
// is in the store, or is refused as temporarily unavailable and is not:
// none is lost or committed twice.
func TestTermChangesWhileWriting(t *testing.T) {
	ctx := context.Background()
	p := newStandalone(t)
	const writers, each = 8, 40
	var (
		wg              sync.WaitGroup
		ok, unavailable atomic.Int64
		stop            = make(chan struct{})
		swaps           = make(chan int)
	)
	go func() {
		i := 0
		for {
			select {
			case <-stop:
				swaps <- i
				return
			default:
			}
			i++
			p.roles.set(continued(p.roles.get(), func(s *state) { s.term = p.roles.nextTerm() }))
			runtime.Gosched()
		}
	}()
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("w%d-%d", w, i)
				_, err := p.Write(ctx, mailboxOp(name), nil)
				switch {
				case err == nil:
					ok.Add(1)
					if !hasMailbox(t, p, name) {
						t.Errorf("%s acknowledged but not in the store", name)
					}
				case errors.Is(err, protocols.ErrUnavailable):
					unavailable.Add(1)
					if hasMailbox(t, p, name) {
						t.Errorf("%s refused (%v) but in the store", name, err)
					}
				default:
					t.Errorf("%s: %v", name, err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	t.Logf("%d term changes; %d writes committed, %d refused for a changed path", <-swaps, ok.Load(), unavailable.Load())
	if ok.Load()+unavailable.Load() != writers*each {
		t.Fatalf("%d + %d outcomes for %d writes", ok.Load(), unavailable.Load(), writers*each)
	}
	if got := p.Status(ctx).Writes; got != uint64(ok.Load())+1 {
		t.Errorf("%d writes counted, %d acknowledged (and the user's creation)", got, ok.Load())
	}
}

// TestSyncUsersCreatesEveryUserInFewCommits: the users of a passwd-file
// the store lacks are all created, concurrently, so that group commit
// takes many per fsync (and, on an active, per wait for the passive).
func TestSyncUsersCreatesEveryUserInFewCommits(t *testing.T) {
	ctx := context.Background()
	p, err := Open(ctx, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if _, err := p.Write(ctx, &store.CreateUser{User: "user0"}, nil); err != nil {
		t.Fatal(err)
	}
	users := make([]string, 500)
	for i := range users {
		users[i] = fmt.Sprintf("user%d", i)
	}
	before := p.Status(ctx).Commit
	p.SyncUsers(ctx, users)
	for _, u := range users {
		if ok, err := p.HasUser(u); err != nil || !ok {
			t.Fatalf("%s not in the store after SyncUsers (%v)", u, err)
		}
	}
	after := p.Status(ctx).Commit
	created, batches := after.Requests-before.Requests, after.Batches-before.Batches
	if created != 499 {
		t.Errorf("%d users written, want the 499 missing ones", created)
	}
	if batches >= created/2 {
		t.Errorf("%d users in %d commits: written one after the other", created, batches)
	}
	p.SyncUsers(ctx, users)
	if again := p.Status(ctx).Commit.Requests - after.Requests; again != 0 {
		t.Errorf("a second SyncUsers wrote %d times", again)
	}
}
