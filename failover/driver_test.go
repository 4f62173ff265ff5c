package failover_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/failover/failovertest"
)

// newFake returns the node a driver test drives: node 1 of a fake pair
// whose other node is down (the test plays its heartbeats), with a log
// of 10 entries at epoch 1.
func newFake() *failovertest.FakeNode {
	fp := failovertest.NewFakePair()
	fp.Stop(0)
	n := fp.Fake(1)
	n.SetLog(10, 1)
	return n
}

// TestFakePairConformance keeps the fake honest: it passes the same
// suite as the real pair (pair's TestFailoverNodeConformance).
func TestFakePairConformance(t *testing.T) {
	failovertest.Run(t, func(*testing.T) failovertest.Pair { return failovertest.NewFakePair() })
}

type fakeFencer struct {
	err   error
	hang  bool
	calls int
	mu    sync.Mutex
}

func (f *fakeFencer) Fence(ctx context.Context) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.err
}

// TestDriverPromotesAfterDeadtime: heartbeats stop, the driver fences and
// promotes in about deadtime, persisting the epoch first; the time is a
// synctest bubble's, so nothing sleeps for real.
func TestDriverPromotesAfterDeadtime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		node := newFake()
		heard := make(chan failover.Heard)
		state := filepath.Join(t.TempDir(), "failover.json")
		d, err := failover.StartDriver(failover.DriverOptions{Config: failover.Config{Node: "b", Paths: []string{"udp", "nats"}},
			Node: node, Fencer: &fakeFencer{}, StateFile: state}, heard)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		start := time.Now()
		var died time.Time
		for i := 0; i < 10; i++ {
			died = time.Now()
			heard <- failover.Heard{Path: "udp", At: died, Peer: failover.PeerState{Node: "a", Role: failover.Active, Epoch: 1, Log: failover.Position{10, 1}, Preferred: true}}
			time.Sleep(failover.DefaultKeepalive)
		}
		if r, _, _ := node.State(); r != failover.Passive {
			t.Fatal("promoted while the active was heard")
		}
		for {
			if r, _, _ := node.State(); r == failover.Active {
				break
			}
			time.Sleep(10 * time.Millisecond)
			if time.Since(start) > time.Minute {
				t.Fatal("never promoted")
			}
		}
		took := time.Since(died)
		if took < failover.DefaultDeadtime || took > failover.DefaultDeadtime+500*time.Millisecond {
			t.Errorf("promoted %v after the last heartbeat, want just over deadtime %v", took, failover.DefaultDeadtime)
		}
		_, epoch, _ := node.State()
		if epoch != 2 {
			t.Errorf("promoted at epoch %d, want 2 (not preferred: even)", epoch)
		}
		if e, _, err := failover.LoadState(state); err != nil || e != 2 {
			t.Errorf("state file epoch %d (%v), want 2", e, err)
		}
		synctest.Wait()
		if s := d.Status(); s.Role != "active" || !s.Degraded {
			t.Errorf("status %+v, want active and degraded", s)
		}
	})
}

// TestDriverNoPromotionWithoutFence: a failing or hanging fence agent
// keeps the passive passive, and the status says why.
func TestDriverNoPromotionWithoutFence(t *testing.T) {
	for _, f := range []*fakeFencer{{err: errors.New("agent exited 1")}, {hang: true}} {
		synctest.Test(t, func(t *testing.T) {
			node := newFake()
			d, err := failover.StartDriver(failover.DriverOptions{Config: failover.Config{Node: "b", Paths: []string{"udp"}, Initdead: 2 * time.Second},
				Node: node, Fencer: &timeoutFencer{f, 3 * time.Second}}, make(chan failover.Heard))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			// initdead 2s, then fencing fails (at once, or after its 3s
			// timeout) and is retried every 5s.
			time.Sleep(16 * time.Second)
			synctest.Wait()
			if r, _, n := node.State(); r != failover.Passive || n != 0 {
				t.Fatalf("promoted without a confirmed fence")
			}
			s := d.Status()
			if !strings.Contains(s.Reason, "fencing failed") {
				t.Errorf("status reason %q does not say fencing failed", s.Reason)
			}
			f.mu.Lock()
			calls := f.calls
			f.mu.Unlock()
			if calls < 2 {
				t.Errorf("fence tried %d times in 16s, want retries", calls)
			}
		})
	}
}

type timeoutFencer struct {
	f       failover.Fencer
	timeout time.Duration
}

func (t *timeoutFencer) Fence(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return t.f.Fence(ctx)
}

// TestDriverHookFailureStepsDown: an on_promote hook that fails makes the
// node step down again and stay standby, saying why.
func TestDriverHookFailureStepsDown(t *testing.T) {
	node := newFake()
	d, err := failover.StartDriver(failover.DriverOptions{Config: failover.Config{Node: "a", Preferred: true, Paths: []string{"udp"}},
		Node: node, OnPromote: "echo cannot mount /srv/system >&2; exit 3"}, make(chan failover.Heard))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Command(context.Background(), failover.CmdPromoteForce); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.Status().Reason, "cannot mount") {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v never told the hook's failure", d.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s := d.Status()
	if r, _, n := node.State(); r != failover.Passive || n != 1 || s.Role != "passive" || !s.Standby {
		t.Errorf("after a failed on_promote: node %v, status %+v; want passive and standby", r, s)
	}
}

// restoringFencer counts the peer powered on again.
type restoringFencer struct {
	fakeFencer
	restored atomic.Int32
}

func (f *restoringFencer) Restore(context.Context) error {
	f.restored.Add(1)
	return nil
}

// TestDriverRestoresTheFencedPeer: with a fence action that can power the
// peer on again (reboot), the driver does so once this node is active
// after a takeover.
func TestDriverRestoresTheFencedPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		node := newFake()
		f := &restoringFencer{}
		d, err := failover.StartDriver(failover.DriverOptions{Config: failover.Config{Node: "b", Paths: []string{"udp"}, Initdead: 2 * time.Second},
			Node: node, Fencer: f}, make(chan failover.Heard))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		time.Sleep(5 * time.Second) // initdead passes in the bubble's time
		synctest.Wait()
		if r, _, _ := node.State(); r != failover.Active {
			t.Fatalf("not promoted after initdead: %v", r)
		}
		if n := f.restored.Load(); n != 1 {
			t.Fatalf("the fenced peer was powered on %d times, want once", n)
		}
	})
}
