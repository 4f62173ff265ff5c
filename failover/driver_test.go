package failover

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeNode records role changes (a fake of the node, not of anything
// the driver talks to over the network).
type fakeNode struct {
	mu       sync.Mutex
	pos      Position
	role     Role
	epoch    uint64
	degraded bool
	promotes int
}

func (n *fakeNode) Position() Position    { n.mu.Lock(); defer n.mu.Unlock(); return n.pos }
func (n *fakeNode) PeerConfirmed() uint64 { return 0 }
func (n *fakeNode) Promote(_ context.Context, epoch uint64, alone bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.role, n.epoch, n.degraded = Active, epoch, alone
	n.promotes++
	return nil
}
func (n *fakeNode) Demote(context.Context, bool) (uint64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.role = Passive
	return n.pos.Last, nil
}
func (n *fakeNode) SetDegraded(on bool) { n.mu.Lock(); n.degraded = on; n.mu.Unlock() }
func (n *fakeNode) AheadAlone() bool    { return false }
func (n *fakeNode) state() (Role, uint64, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.role, n.epoch, n.promotes
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
		node := &fakeNode{role: Passive, pos: Position{Last: 10, LastEpoch: 1}}
		heard := make(chan Heard)
		state := filepath.Join(t.TempDir(), "failover.json")
		d, err := StartDriver(DriverOptions{Config: Config{Node: "b", Paths: []string{"udp", "nats"}},
			Node: node, Fencer: &fakeFencer{}, StateFile: state}, heard)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		start := time.Now()
		var died time.Time
		for i := 0; i < 10; i++ {
			died = time.Now()
			heard <- Heard{Path: "udp", At: died, Peer: PeerState{Node: "a", Role: Active, Epoch: 1, Log: Position{10, 1}, Preferred: true}}
			time.Sleep(DefaultKeepalive)
		}
		if r, _, _ := node.state(); r != Passive {
			t.Fatal("promoted while the active was heard")
		}
		for {
			if r, _, _ := node.state(); r == Active {
				break
			}
			time.Sleep(10 * time.Millisecond)
			if time.Since(start) > time.Minute {
				t.Fatal("never promoted")
			}
		}
		took := time.Since(died)
		if took < DefaultDeadtime || took > DefaultDeadtime+500*time.Millisecond {
			t.Errorf("promoted %v after the last heartbeat, want just over deadtime %v", took, DefaultDeadtime)
		}
		_, epoch, _ := node.state()
		if epoch != 2 {
			t.Errorf("promoted at epoch %d, want 2 (not preferred: even)", epoch)
		}
		if e, _, err := LoadState(state); err != nil || e != 2 {
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
			node := &fakeNode{role: Passive, pos: Position{Last: 10, LastEpoch: 1}}
			d, err := StartDriver(DriverOptions{Config: Config{Node: "b", Paths: []string{"udp"}, Initdead: 2 * time.Second},
				Node: node, Fencer: &timeoutFencer{f, 3 * time.Second}}, make(chan Heard))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			// initdead 2s, then fencing fails (at once, or after its 3s
			// timeout) and is retried every 5s.
			time.Sleep(16 * time.Second)
			synctest.Wait()
			if r, _, n := node.state(); r != Passive || n != 0 {
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
	f       Fencer
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
	node := &fakeNode{role: Passive, pos: Position{Last: 10, LastEpoch: 1}}
	d, err := StartDriver(DriverOptions{Config: Config{Node: "a", Preferred: true, Paths: []string{"udp"}},
		Node: node, OnPromote: "echo cannot mount /srv/system >&2; exit 3"}, make(chan Heard))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Command(context.Background(), CmdPromoteForce); err != nil {
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
	if r, _, n := node.state(); r != Passive || n != 1 || s.Role != "passive" || !s.Standby {
		t.Errorf("after a failed on_promote: node %v, status %+v; want passive and standby", r, s)
	}
}
