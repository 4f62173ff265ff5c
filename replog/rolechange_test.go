package replog_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// runFollower runs a follower of peer on n until the test ends or it
// stops by itself; the returned channel has its result.
func runFollower(t *testing.T, n, peer *node, opts *replog.FollowerOptions) (*replog.Follower, func() error) {
	t.Helper()
	ctx := context.Background()
	f, err := replog.NewFollower(ctx, n.log, n.st, dialPeer(t, peer), opts)
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	var result error
	var ended bool
	wait := func() error {
		if !ended {
			stop()
			result, ended = <-done, true
		}
		return result
	}
	t.Cleanup(func() { wait() })
	return f, wait
}

// TestRoleChangeSetsAsideDivergedTail: the active writes entries its
// passive never receives, then loses the role; the passive is promoted at
// a later epoch and writes on. Following the new active, the former one
// finds its tail is not in the new log: it stops with ErrDiverged and
// sets the tail aside (nothing silently dropped), instead of appending the
// new active's entries after its own. A later epoch's entries are also
// accepted by the follower only in order (the promoted node follows on
// from its own log), and the old writer's waits end with ErrNotActive.
func TestRoleChangeSetsAsideDivergedTail(t *testing.T) {
	ctx := context.Background()
	a, b := newNode(t, "a"), newNode(t, "b")
	pa, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, PeerTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fb, stopB := runFollower(t, b, a, nil)
	commit(t, pa, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"})
	for i := 0; i < 20; i++ {
		for _, r := range commit(t, pa, deliver(i)) {
			if err := pa.WaitPeer(ctx, r.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	common := fb.Status().Position

	// The active writes on; the passive is gone. A wait in progress ends
	// when the writer is closed (the node lost the role).
	tail, err := pa.Commit(ctx, []store.Op{deliver(100), deliver(101), deliver(102)})
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- pa.WaitPeer(ctx, tail[2].Seq) }()
	pa.Close()
	if err := <-waited; !errors.Is(err, replog.ErrNotActive) {
		t.Fatalf("wait of a closed writer: %v, want ErrNotActive", err)
	}
	if _, err := pa.Commit(ctx, []store.Op{deliver(103)}); !errors.Is(err, replog.ErrNotActive) {
		t.Fatalf("commit after close: %v, want ErrNotActive", err)
	}

	// b takes over at epoch 2 and writes past a's tail.
	pb, err := replog.NewPrimary(ctx, b.log, b.st, b.nc, &replog.PrimaryOptions{Epoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	pb.SetDegraded(true) // a is "fenced"
	for i := 200; i < 205; i++ {
		for _, r := range commit(t, pb, deliver(i)) {
			if err := pb.WaitPeer(ctx, r.Seq); err != nil {
				t.Fatalf("degraded wait: %v", err)
			}
		}
	}
	if last, epoch := pb.Last(); last != common+5 || epoch != 2 {
		t.Fatalf("new active's last entry %d/%d, want %d/2", last, epoch, common+5)
	}

	// a follows b: its tail (never confirmed, so never applied: a's store
	// is at the common position) is set aside, the log starts afresh, and a
	// follows b to identical, without a copy of b's store.
	if got := a.st.AppliedSeq(); got != common {
		t.Fatalf("a's store applied %d, but only %d were confirmed", got, common)
	}
	dir := t.TempDir()
	fa, _ := runFollower(t, a, b, &replog.FollowerOptions{DivergedDir: dir, Epoch: 1})
	poll.Eventually(t, 20*time.Second, "a to follow b", func() bool { return a.st.AppliedSeq() == common+5 })
	if da, db := digest(t, a.st), digest(t, b.st); da.Store != db.Store {
		t.Fatal("digests differ after the rejoin")
	}
	if st := fa.Status(); st.Rejoins != 1 || st.Err != nil {
		t.Fatalf("follower status %+v, want one rejoin and no error", st)
	}
	files, err := filepath.Glob(filepath.Join(dir, "diverged-*.log"))
	if err != nil || len(files) != 1 {
		t.Fatalf("diverged files %v (%v), want one", files, err)
	}
	set, rerr := replog.ReadDiverged(files[0])
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(set) != 3 || set[0].Seq != common+1 || set[0].Epoch != 1 {
		t.Fatalf("set aside %d entries from %d, want 3 from %d", len(set), set[0].Seq, common+1)
	}
	for k, e := range set {
		d, ok := e.Op.(*store.Deliver)
		if !ok || d.Body.Meta.Envelope.Subject != "m10"+string(rune('0'+k)) {
			t.Errorf("entry %d set aside is %T, not delivery %d", e.Seq, e.Op, 100+k)
		}
	}
}

// TestFollowerCatchesUpAcrossEpochs: a passive that was behind when the
// active changed follows the new active from where it was, across the
// epoch boundary, to identical digests.
func TestFollowerCatchesUpAcrossEpochs(t *testing.T) {
	ctx := context.Background()
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")
	pa, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, Async: true})
	if err != nil {
		t.Fatal(err)
	}
	_, stopB := runFollower(t, b, a, nil)
	_, stopC := runFollower(t, c, a, nil)
	commit(t, pa, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"})
	for i := 2; i < 10; i++ {
		commit(t, pa, deliver(i))
	}
	poll.Eventually(t, 20*time.Second, "both passives", func() bool { return b.st.AppliedSeq() == 10 && c.st.AppliedSeq() == 10 })
	stopC()
	for i := 10; i < 15; i++ {
		commit(t, pa, deliver(i))
	}
	poll.Eventually(t, 20*time.Second, "b", func() bool { return b.st.AppliedSeq() == 15 })
	stopB()
	pa.Close()
	pb, err := replog.NewPrimary(ctx, b.log, b.st, b.nc, &replog.PrimaryOptions{Epoch: 2, Async: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	for i := 15; i < 20; i++ {
		commit(t, pb, deliver(i))
	}
	runFollower(t, c, b, nil)
	poll.Eventually(t, 20*time.Second, "c to follow b across the epochs", func() bool { return c.st.AppliedSeq() == 20 })
	if db, dc := digest(t, b.st), digest(t, c.st); db.Store != dc.Store {
		t.Fatal("digests differ")
	}
	// A writer below the log's last epoch is refused.
	if _, err := replog.NewPrimary(ctx, c.log, c.st, c.nc, &replog.PrimaryOptions{Epoch: 1}); !errors.Is(err, replog.ErrStaleEpoch) {
		t.Fatalf("a writer at epoch 1 over a log at epoch 2: %v, want ErrStaleEpoch", err)
	}
}

// TestAloneTailTakenBackInPlace: a former active that acknowledged entries
// alone (its peer "fenced") while the other node took over at a later
// epoch: on rejoining it tells OnDiverged which entries it acknowledged,
// takes them back in place (store.Rollback), and follows the new active
// to identical, without a copy of its store.
func TestAloneTailTakenBackInPlace(t *testing.T) {
	ctx := context.Background()
	a, b := newNode(t, "a"), newNode(t, "b")
	pa, err := replog.NewPrimary(ctx, a.log, a.st, a.nc, &replog.PrimaryOptions{Epoch: 1, PeerTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fb, stopB := runFollower(t, b, a, nil)
	commit(t, pa, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"})
	for i := 0; i < 5; i++ {
		commit(t, pa, deliver(i))
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	common := fb.Status().Position
	pa.SetDegraded(true)
	for i := 100; i < 103; i++ {
		commit(t, pa, deliver(i)) // acknowledged alone: applied tentatively
	}
	if !pa.AheadAlone() {
		t.Fatal("the active acknowledged alone but does not say so")
	}
	pa.Close()
	pb, err := replog.NewPrimary(ctx, b.log, b.st, b.nc, &replog.PrimaryOptions{Epoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	pb.SetDegraded(true)
	for i := 200; i < 205; i++ {
		commit(t, pb, deliver(i))
	}
	var seen replog.Diverged
	fa, _ := runFollower(t, a, b, &replog.FollowerOptions{DivergedDir: t.TempDir(), Epoch: 1,
		OnDiverged: func(_ context.Context, d replog.Diverged) error {
			seen = d
			// The store still holds the tail here.
			if mb, err := a.st.Mailbox("alice", "INBOX"); err != nil || mb.Messages != 8 {
				t.Errorf("OnDiverged sees %d messages in alice's INBOX (%v), want the 8 with the tail", mb.Messages, err)
			}
			return nil
		}})
	poll.Eventually(t, 20*time.Second, "a to follow b", func() bool { return a.st.AppliedSeq() == common+5 })
	if da, db := digest(t, a.st), digest(t, b.st); da.Store != db.Store {
		t.Fatal("digests differ after the rejoin")
	}
	if seen.From != common+1 || seen.To != common+3 || len(seen.Acked) != 3 {
		t.Fatalf("OnDiverged saw %+v, want entries %d..%d, all 3 acknowledged", seen, common+1, common+3)
	}
	if st := fa.Status(); st.Rejoins != 1 || st.Err != nil {
		t.Fatalf("follower status %+v, want one rejoin", st)
	}
}
