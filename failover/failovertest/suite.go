// Package failovertest is the conformance suite of failover.Node: what
// the failover driver may count on from a node of a pair, run against
// every implementation (the real pair.Pair and FakePair, the fake the
// driver's own tests use), so that the fake cannot drift from the real
// thing. Litestream's replica client suite is the model.
package failovertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/internal/poll"
)

// Pair is two nodes of a pair, as the suite drives them. Both start
// passive, following each other, with nothing written.
type Pair interface {
	// Node is node i (0 or 1).
	Node(i int) failover.Node
	// Write makes one write on node i. A nil error is an
	// acknowledgement (as a client would get one): id then names what
	// was written, for Holds.
	Write(ctx context.Context, i int) (id string, err error)
	// Holds reports whether node i holds the write id, as acknowledged.
	Holds(i int, id string) (bool, error)
	// Stop ends node i without a handover (a crash, or a power-off by a
	// fence device); Start brings it back on its data as a passive.
	Stop(i int)
	Start(i int)
}

// Bound is how long the suite waits for a node to catch up or a write to
// be refused; generous, as every wait polls.
const Bound = 30 * time.Second

// Run runs the suite; newPair makes a fresh pair for each test.
func Run(t *testing.T, newPair func(t *testing.T) Pair) {
	t.Run("PromoteThenWrite", func(t *testing.T) { testPromote(t, newPair(t)) })
	t.Run("Switchover", func(t *testing.T) { testSwitchover(t, newPair(t)) })
	t.Run("RoleErrors", func(t *testing.T) { testRoleErrors(t, newPair(t)) })
	t.Run("PassiveDies", func(t *testing.T) { testPassiveDies(t, newPair(t)) })
	t.Run("ActiveDies", func(t *testing.T) { testActiveDies(t, newPair(t)) })
}

// acked writes n acknowledged writes on node i.
func acked(t *testing.T, p Pair, i, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		id, err := p.Write(context.Background(), i)
		if err != nil {
			t.Fatalf("write on node %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// holdAll checks that every node in nodes holds every id.
func holdAll(t *testing.T, p Pair, ids []string, nodes ...int) {
	t.Helper()
	for _, i := range nodes {
		for _, id := range ids {
			poll.EventuallyNil(t, Bound, "node to hold an acknowledged write", func() error {
				ok, err := p.Holds(i, id)
				if err == nil && !ok {
					err = errors.New("missing")
				}
				return err
			})
		}
	}
}

// caughtUp waits until node j's log reaches node i's end.
func caughtUp(t *testing.T, p Pair, i, j int) {
	t.Helper()
	want := p.Node(i).Position()
	poll.Eventually(t, Bound, "the passive to reach the active's log end", func() bool {
		got := p.Node(j).Position()
		return got.Last >= want.Last && got.LastEpoch >= want.LastEpoch
	})
}

func testPromote(t *testing.T, p Pair) {
	a, b := p.Node(0), p.Node(1)
	if err := a.Promote(context.Background(), 1, false); err != nil {
		t.Fatalf("promote a passive: %v", err)
	}
	ids := acked(t, p, 0, 5)
	pos := a.Position()
	if pos.LastEpoch != 1 || pos.Last < 5 {
		t.Errorf("after 5 writes at epoch 1 the active is at %+v", pos)
	}
	caughtUp(t, p, 0, 1)
	poll.Eventually(t, Bound, "the active to see the passive's confirmation", func() bool {
		return a.PeerConfirmed() >= pos.Last
	})
	if b.PeerConfirmed() != 0 {
		t.Errorf("a passive reports a confirmed position %d", b.PeerConfirmed())
	}
	if a.AheadAlone() {
		t.Error("an active that acknowledged nothing alone says it is ahead alone")
	}
	holdAll(t, p, ids, 0, 1)
}

func testSwitchover(t *testing.T, p Pair) {
	a, b := p.Node(0), p.Node(1)
	if err := a.Promote(context.Background(), 1, false); err != nil {
		t.Fatal(err)
	}
	ids := acked(t, p, 0, 5)
	at, err := a.Demote(context.Background(), true)
	if err != nil {
		t.Fatalf("handover with a live passive: %v", err)
	}
	if last := a.Position().Last; at != last {
		t.Errorf("handover at %d, the old active's log ends at %d", at, last)
	}
	if got := b.Position().Last; got < at {
		t.Errorf("the handover returned before the passive had %d (it has %d)", at, got)
	}
	if _, err := p.Write(context.Background(), 0); err == nil {
		t.Error("a demoted node acknowledged a write")
	}
	if err := b.Promote(context.Background(), 2, false); err != nil {
		t.Fatalf("promote the other node: %v", err)
	}
	ids = append(ids, acked(t, p, 1, 5)...)
	caughtUp(t, p, 1, 0)
	if e := a.Position().LastEpoch; e != 2 {
		t.Errorf("the old active follows at epoch %d, want 2", e)
	}
	holdAll(t, p, ids, 0, 1)
}

func testRoleErrors(t *testing.T, p Pair) {
	a := p.Node(0)
	if _, err := a.Demote(context.Background(), false); err == nil {
		t.Error("demote of a passive succeeded")
	}
	if err := a.Promote(context.Background(), 1, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Promote(context.Background(), 3, false); err == nil {
		t.Error("promote of an active succeeded")
	}
	if _, err := p.Write(context.Background(), 1); err == nil {
		t.Error("a passive acknowledged a write")
	}
}

func testPassiveDies(t *testing.T, p Pair) {
	a := p.Node(0)
	if err := a.Promote(context.Background(), 1, false); err != nil {
		t.Fatal(err)
	}
	ids := acked(t, p, 0, 3)
	caughtUp(t, p, 0, 1)
	p.Stop(1)
	// Sync replication: nothing is acknowledged without the passive.
	if _, err := p.Write(context.Background(), 0); err == nil {
		t.Fatal("a write was acknowledged with the passive down and the active not degraded")
	}
	// A handover to a dead peer fails, and the node stays active.
	if _, err := a.Demote(context.Background(), true); err == nil {
		t.Fatal("a handover to a dead passive succeeded")
	}
	// Fenced: the active goes on alone and says it is ahead.
	a.SetDegraded(true)
	alone := acked(t, p, 0, 3)
	if !a.AheadAlone() {
		t.Error("an active that acknowledged alone does not say it is ahead alone")
	}
	p.Start(1)
	caughtUp(t, p, 0, 1)
	poll.Eventually(t, Bound, "the returned passive to confirm what was acknowledged alone", func() bool {
		return !a.AheadAlone()
	})
	a.SetDegraded(false)
	ids = append(ids, alone...)
	ids = append(ids, acked(t, p, 0, 2)...)
	holdAll(t, p, ids, 0, 1)
}

func testActiveDies(t *testing.T, p Pair) {
	a, b := p.Node(0), p.Node(1)
	if err := a.Promote(context.Background(), 1, false); err != nil {
		t.Fatal(err)
	}
	ids := acked(t, p, 0, 5)
	p.Stop(0)
	// Everything acknowledged is on the passive already (protocol C).
	holdAll(t, p, ids, 1)
	if err := b.Promote(context.Background(), 2, true); err != nil {
		t.Fatalf("promote the survivor: %v", err)
	}
	ids = append(ids, acked(t, p, 1, 3)...)
	p.Start(0)
	b.SetDegraded(false)
	caughtUp(t, p, 1, 0)
	ids = append(ids, acked(t, p, 1, 2)...)
	holdAll(t, p, ids, 0, 1)
}
