package node_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/node"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// TestSyncUsersCreatesEveryUserInFewCommits: the users of a passwd-file
// the store lacks are all created, and concurrently, so that group commit
// takes many per fsync (and, on an active, per wait for the passive).
func TestSyncUsersCreatesEveryUserInFewCommits(t *testing.T) {
	ctx := context.Background()
	n, err := node.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if _, err := n.Write(ctx, &store.CreateUser{User: "user0"}, nil); err != nil {
		t.Fatal(err)
	}
	users := make([]string, 500)
	for i := range users {
		users[i] = fmt.Sprintf("user%d", i)
	}
	before := n.Stats().Commit
	n.SyncUsers(ctx, users)
	for _, u := range users {
		if ok, err := n.Store().HasUser(u); err != nil || !ok {
			t.Fatalf("%s not in the store after SyncUsers (%v)", u, err)
		}
	}
	after := n.Stats().Commit
	created, batches := after.Requests-before.Requests, after.Batches-before.Batches
	if created != 499 {
		t.Errorf("%d users written, want the 499 missing ones", created)
	}
	if batches >= created/2 {
		t.Errorf("%d users in %d commits: written one after the other", created, batches)
	}
	// Nothing left to do: a second pass writes nothing.
	n.SyncUsers(ctx, users)
	if again := n.Stats().Commit.Requests - after.Requests; again != 0 {
		t.Errorf("a second SyncUsers wrote %d times", again)
	}
}

func newTestNode(tb testing.TB) *node.Local {
	tb.Helper()
	ctx := context.Background()
	n, err := node.Open(ctx, tb.TempDir(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close(ctx) })
	if _, err := n.Write(ctx, &store.CreateUser{User: "alice"}, nil); err != nil {
		tb.Fatal(err)
	}
	return n
}

// storeCommit is the standalone write path, counting the writes it
// commits in *count.
func storeCommit(n *node.Local, count *atomic.Int64) node.CommitFunc {
	return func(ctx context.Context, ops []store.Op) ([]node.Outcome, error) {
		res, err := n.Store().ApplyNext(ctx, store.Now(), ops...)
		if err != nil {
			return nil, err
		}
		count.Add(int64(len(ops)))
		out := make([]node.Outcome, len(res))
		for i, r := range res {
			out[i].Result = r
		}
		return out, nil
	}
}

func mailboxOp(name string) store.Op {
	return &store.CreateMailbox{User: "alice", Name: name}
}

func hasMailbox(tb testing.TB, n *node.Local, name string) bool {
	tb.Helper()
	_, err := n.Mailbox("alice", name)
	if err != nil && !errors.Is(err, store.ErrNoMailbox) {
		tb.Fatal(err)
	}
	return err == nil
}

// TestSetReadOnlyAtRuntime: writes are refused with protocols.ErrReadOnly
// (and the reason) while the node is read-only, and go through again
// after SetWritable.
func TestSetReadOnlyAtRuntime(t *testing.T) {
	ctx := context.Background()
	n := newTestNode(t)
	if n.ReadOnly() {
		t.Fatal("a new node is read-only")
	}
	n.SetReadOnly("demoted; write to the other node")
	if !n.ReadOnly() {
		t.Fatal("ReadOnly is false after SetReadOnly")
	}
	_, err := n.Write(ctx, mailboxOp("Refused"), nil)
	if !errors.Is(err, protocols.ErrReadOnly) || !strings.Contains(err.Error(), "demoted; write to the other node") {
		t.Fatalf("write on a read-only node: %v, want protocols.ErrReadOnly with the reason", err)
	}
	if hasMailbox(t, n, "Refused") {
		t.Error("a refused write was applied")
	}
	if got := n.Stats().WriteFailures; got != 0 {
		t.Errorf("a refusal counted as %d write failures", got)
	}
	n.SetWritable()
	if _, err := n.Write(ctx, mailboxOp("Accepted"), nil); err != nil {
		t.Fatalf("write after SetWritable: %v", err)
	}
	if !hasMailbox(t, n, "Accepted") {
		t.Error("the write after SetWritable is not in the store")
	}
}

// TestSwitchWhileAWriteWaitsForItsFlush: a flush already running when the
// node becomes read-only completes; a write queued behind it is refused,
// uncommitted; WaitWrites returns once both have returned.
func TestSwitchWhileAWriteWaitsForItsFlush(t *testing.T) {
	ctx := context.Background()
	n := newTestNode(t)
	var committed atomic.Int64
	inner := storeCommit(n, &committed)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	n.UseCommit(func(ctx context.Context, ops []store.Op) ([]node.Outcome, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return inner(ctx, ops)
	})
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { _, err := n.Write(ctx, mailboxOp("First"), nil); first <- err }()
	<-entered // First's flush is running
	go func() { _, err := n.Write(ctx, mailboxOp("Second"), nil); second <- err }()

	n.SetReadOnly("demoted")
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := n.WaitWrites(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitWrites with a write in its flush: %v, want the context's deadline", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- n.WaitWrites(ctx) }()
	close(release)
	if err := <-first; err != nil {
		t.Errorf("the write whose flush had begun: %v, want success", err)
	}
	// Second was refused at the role check or at its flush; either way
	// with the read-only error, and it was not applied.
	if err := <-second; !errors.Is(err, protocols.ErrReadOnly) {
		t.Errorf("the write queued behind it: %v, want protocols.ErrReadOnly", err)
	}
	if err := <-waited; err != nil {
		t.Errorf("WaitWrites: %v", err)
	}
	if !hasMailbox(t, n, "First") || hasMailbox(t, n, "Second") {
		t.Errorf("First applied %v (want true), Second applied %v (want false)", hasMailbox(t, n, "First"), hasMailbox(t, n, "Second"))
	}
	if got := committed.Load(); got != 1 {
		t.Errorf("%d writes committed, want 1", got)
	}
}

// TestUseCommitWhileWriting: the commit path is swapped again and again
// while writers run (run it with -race). Every write either succeeds,
// committed through exactly one path, or is refused as temporarily
// unavailable and not committed: none is lost or committed twice.
func TestUseCommitWhileWriting(t *testing.T) {
	ctx := context.Background()
	n := newTestNode(t)
	var a, b atomic.Int64
	paths := []node.CommitFunc{storeCommit(n, &a), storeCommit(n, &b)}
	n.UseCommit(paths[0])

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
			n.UseCommit(paths[i%2])
			runtime.Gosched()
		}
	}()
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("w%d-%d", w, i)
				_, err := n.Write(ctx, mailboxOp(name), nil)
				switch {
				case err == nil:
					ok.Add(1)
					if !hasMailbox(t, n, name) {
						t.Errorf("%s acknowledged but not in the store", name)
					}
				case errors.Is(err, protocols.ErrUnavailable):
					unavailable.Add(1)
					if hasMailbox(t, n, name) {
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
	t.Logf("%d swaps; %d writes committed, %d refused for a changed path; %d through one path, %d through the other",
		<-swaps, ok.Load(), unavailable.Load(), a.Load(), b.Load())
	if ok.Load()+unavailable.Load() != writers*each {
		t.Fatalf("%d + %d outcomes for %d writes", ok.Load(), unavailable.Load(), writers*each)
	}
	if got := a.Load() + b.Load(); got != ok.Load() {
		t.Errorf("%d writes committed through the paths, %d acknowledged", got, ok.Load())
	}
	if err := n.WaitWrites(ctx); err != nil {
		t.Errorf("WaitWrites with no writer: %v", err)
	}
}
