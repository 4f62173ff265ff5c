package failovertest

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/twinbox/twinbox/failover"
)

// FakePair is two fake nodes of a pair that replicate synchronously in
// memory, with no goroutine of their own (so the driver's tests run it in
// a synctest bubble). Its logs hold an epoch per entry; a write on the
// active reaches a live passive at once. It passes the conformance suite
// (Run), which is what keeps it honest.
type FakePair struct {
	mu    sync.Mutex
	nodes [2]*FakeNode
}

// FakeNode is one node of a FakePair; it is a failover.Node.
type FakeNode struct {
	p        *FakePair
	i        int
	up       bool
	role     failover.Role
	epoch    uint64
	log      []uint64 // the epoch of each entry
	degraded bool
	// confirmed is, on the active, the last entry the passive holds;
	// aloneUpTo the last one acknowledged without it.
	confirmed, aloneUpTo uint64
	promotes, demotes    int
}

var _ failover.Node = (*FakeNode)(nil)

// NewFakePair returns two passive nodes, both up, with empty logs.
func NewFakePair() *FakePair {
	p := &FakePair{}
	for i := range p.nodes {
		p.nodes[i] = &FakeNode{p: p, i: i, up: true, role: failover.Passive}
	}
	return p
}

// Fake returns node i.
func (p *FakePair) Fake(i int) *FakeNode { return p.nodes[i] }

// Node returns node i (Pair).
func (p *FakePair) Node(i int) failover.Node { return p.nodes[i] }

// SetLog gives node i a log of n entries at epoch, as if it had them
// before (a test's starting position).
func (n *FakeNode) SetLog(last, epoch uint64) {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	n.log = make([]uint64, last)
	for i := range n.log {
		n.log[i] = epoch
	}
	n.epoch = max(n.epoch, epoch)
}

// State reports the node's role, epoch and how many promotions it had.
func (n *FakeNode) State() (role failover.Role, epoch uint64, promotes int) {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	return n.role, n.epoch, n.promotes
}

func (n *FakeNode) peer() *FakeNode { return n.p.nodes[1-n.i] }

// Position is the log's end and its epoch.
func (n *FakeNode) Position() failover.Position {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	pos := failover.Position{Last: uint64(len(n.log)), LastEpoch: n.epoch}
	if len(n.log) > 0 {
		pos.LastEpoch = max(pos.LastEpoch, n.log[len(n.log)-1])
	}
	return pos
}

// PeerConfirmed is, on an active, the passive's confirmed position.
func (n *FakeNode) PeerConfirmed() uint64 {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	if n.role != failover.Active {
		return 0
	}
	return n.confirmed
}

// Promote makes the node write at epoch.
func (n *FakeNode) Promote(_ context.Context, epoch uint64, alone bool) error {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	switch {
	case !n.up:
		return errors.New("fake: node down")
	case n.role == failover.Active:
		return errors.New("fake: already active")
	}
	n.role, n.epoch, n.degraded = failover.Active, max(n.epoch, epoch), alone
	n.confirmed, n.aloneUpTo = 0, 0
	n.promotes++
	if p := n.peer(); p.up && p.role == failover.Passive {
		n.confirmed = p.follow(n)
	}
	return nil
}

// Demote gives up the active role; a handover first needs the peer to
// hold every entry.
func (n *FakeNode) Demote(_ context.Context, handover bool) (uint64, error) {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	if n.role != failover.Active {
		return 0, errors.New("fake: not active")
	}
	p := n.peer()
	if handover && (!p.up || p.follow(n) < uint64(len(n.log))) {
		return 0, errors.New("fake: the peer did not confirm every entry")
	}
	n.role, n.degraded = failover.Passive, false
	n.demotes++
	if p.up && p.role == failover.Active {
		n.follow(p)
	}
	if handover {
		return uint64(len(n.log)), nil
	}
	return 0, nil
}

// SetDegraded makes the active acknowledge alone, or not.
func (n *FakeNode) SetDegraded(on bool) {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	if n.role == failover.Active {
		n.degraded = on
	}
}

// AheadAlone: the active acknowledged entries alone that the passive
// has not confirmed.
func (n *FakeNode) AheadAlone() bool {
	n.p.mu.Lock()
	defer n.p.mu.Unlock()
	return n.role == failover.Active && n.confirmed < n.aloneUpTo
}

// follow makes n (a live passive) take the active's log: what it lacks,
// or all of it when n's log is not a prefix (a diverged tail, which a
// real node sets aside and rebuilds). It returns n's log end.
func (n *FakeNode) follow(active *FakeNode) uint64 {
	prefix := len(n.log) <= len(active.log)
	for i := 0; prefix && i < len(n.log); i++ {
		prefix = n.log[i] == active.log[i]
	}
	if !prefix {
		n.log = nil
	}
	n.log = append(n.log, active.log[len(n.log):]...)
	n.epoch = max(n.epoch, active.epoch)
	return uint64(len(n.log))
}

// Write makes one write on node i (Pair); its id is the entry's
// sequence and epoch.
func (p *FakePair) Write(_ context.Context, i int) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[i]
	if !n.up || n.role != failover.Active {
		return "", errors.New("fake: not the active")
	}
	n.log = append(n.log, n.epoch)
	seq := uint64(len(n.log))
	id := strconv.FormatUint(seq, 10) + "@" + strconv.FormatUint(n.epoch, 10)
	if peer := n.peer(); peer.up && peer.role == failover.Passive {
		n.confirmed = peer.follow(n)
		return id, nil
	}
	if n.degraded {
		n.aloneUpTo = seq
		return id, nil
	}
	// Applied here, but the passive never confirmed it: not acknowledged.
	return "", errors.New("fake: the passive did not confirm the write")
}

// Holds reports whether node i holds the write id.
func (p *FakePair) Holds(i int, id string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var seq, epoch uint64
	for k, c := range id {
		if c == '@' {
			var err error
			if seq, err = strconv.ParseUint(id[:k], 10, 64); err == nil {
				epoch, err = strconv.ParseUint(id[k+1:], 10, 64)
			}
			if err != nil {
				return false, err
			}
		}
	}
	n := p.nodes[i]
	return seq >= 1 && uint64(len(n.log)) >= seq && n.log[seq-1] == epoch, nil
}

// Stop takes node i down without a handover.
func (p *FakePair) Stop(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[i]
	n.up, n.role, n.degraded = false, failover.Passive, false
}

// Start brings node i back as a passive, following an active peer.
func (p *FakePair) Start(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[i]
	n.up = true
	if a := n.peer(); a.up && a.role == failover.Active {
		a.confirmed = n.follow(a)
	}
}
