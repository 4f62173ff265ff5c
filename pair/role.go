package pair

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/replog"
)

// Frontend is a protocol server the node drives by its role: it takes
// writes or refuses them, pointing clients at hint (where to write: the
// service address, Config.WriteHint). The node calls it when it is
// attached and at every change, in order.
type Frontend interface {
	SetReadOnly(readOnly bool, hint string)
}

// Drainer is a frontend that can stop taking new transactions and let
// those in flight finish while it keeps serving (SMTP and LMTP: 421 to
// new ones). A demotion drains before writes stop.
type Drainer interface {
	Drain(ctx context.Context) error
}

// Kicker is a frontend whose sessions can be ended while it keeps
// serving (IMAP: BYE). A demotion, and a resync that replaces the store,
// kick the sessions: their state belongs to the role or store they had.
type Kicker interface {
	Kick(ctx context.Context, reason string) error
}

// Availability is a frontend that can refuse to serve anything at all
// while the node does not know its data is current (a new node, or one
// whose store is being rebuilt from the active's).
type Availability interface {
	SetAvailable(ok bool, why string)
}

// State is the node's role at one moment, as plain data.
type State struct {
	Role  Role   `json:"role"`
	Epoch uint64 `json:"epoch"`
	// Writable: writes are taken now (an active in the middle of a
	// demotion is not).
	Writable bool `json:"writable"`
	// Serving: reads are served (a node rebuilding its store serves
	// nothing); Waiting says what it waits for.
	Serving bool   `json:"serving"`
	Waiting string `json:"waiting,omitempty"`
}

// state is the role at one moment. It is never changed in place: a
// change stores a new one. ctx is cancelled when the role it stands for
// ends (an active that loses the role, a passive that is promoted).
type state struct {
	role     Role
	epoch    uint64
	writable bool
	why      string // why writes are refused
	// term numbers the commit path: a write admitted under one term is
	// refused by a flush under another (the log of another epoch, or the
	// store of a node that is no longer the active).
	term    uint64
	primary *commitPath
	serving bool
	waiting string
	ctx     context.Context
	cancel  context.CancelFunc
}

// commitPath is the active's: the log's writer.
type commitPath = replog.Primary

func (s *state) public() State {
	return State{Role: s.role, Epoch: s.epoch, Writable: s.writable, Serving: s.serving, Waiting: s.waiting}
}

// refusal is a write's error while writes are refused.
func (s *state) refusal() error {
	if s.role == Passive {
		return fmt.Errorf("%w: %s", protocols.ErrReadOnly, s.why)
	}
	return fmt.Errorf("%w: %s", protocols.ErrUnavailable, s.why)
}

// roles is the one owner of the role: the current state, the frontends
// it drives and the subscribers it tells.
type roles struct {
	cur       atomic.Pointer[state]
	mu        sync.Mutex // orders changes and their announcements
	frontends []Frontend
	subs      map[chan State]struct{}
	terms     uint64
	hint      string // where clients should write instead
}

func (r *roles) get() *state { return r.cur.Load() }

// set makes s the role, tells the frontends and subscribers, and ends the
// previous role's context unless s continues it (same ctx).
func (r *roles) set(s *state) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cur.Swap(s)
	if old != nil && old.ctx != s.ctx && old.cancel != nil {
		old.cancel()
	}
	for _, f := range r.frontends {
		announce(f, s, r.hint)
	}
	pub := s.public()
	for ch := range r.subs {
		select {
		case <-ch: // drop the stale one: the latest state wins
		default:
		}
		ch <- pub
	}
}

// announce tells one frontend the state.
func announce(f Frontend, s *state, hint string) {
	if a, ok := f.(Availability); ok {
		a.SetAvailable(s.serving, s.waiting)
	}
	f.SetReadOnly(!s.writable, hint)
}

// nextTerm returns a new commit path number.
func (r *roles) nextTerm() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.terms++
	return r.terms
}

// newState returns a state with a context of its own, derived from the
// node's lifetime.
func (p *Pair) newState(s state) *state {
	s.ctx, s.cancel = context.WithCancel(p.ctx)
	return &s
}

// continued returns s with change applied, keeping its context (the
// same role, with writes turned on or off).
func continued(s *state, change func(*state)) *state {
	c := *s
	change(&c)
	return &c
}

// Attach makes fs the node's frontends: each is told the current role at
// once and every change from then on. A frontend that is also a
// protocols.Notifier is told every applied change (IDLE).
func (p *Pair) Attach(fs ...Frontend) {
	p.roles.mu.Lock()
	defer p.roles.mu.Unlock()
	s := p.roles.get()
	for _, f := range fs {
		p.roles.frontends = append(p.roles.frontends, f)
		if s != nil {
			announce(f, s, p.roles.hint)
		}
		if n, ok := f.(protocols.Notifier); ok {
			p.pub.add(n)
		}
	}
}

// State returns the role now.
func (p *Pair) State() State { return p.roles.get().public() }

// Subscribe returns a channel that receives the role at once and after
// every change (only the latest is kept for a slow reader), and a func
// that ends the subscription.
func (p *Pair) Subscribe() (<-chan State, func()) {
	ch := make(chan State, 1)
	p.roles.mu.Lock()
	if p.roles.subs == nil {
		p.roles.subs = map[chan State]struct{}{}
	}
	p.roles.subs[ch] = struct{}{}
	ch <- p.roles.get().public()
	p.roles.mu.Unlock()
	return ch, func() {
		p.roles.mu.Lock()
		delete(p.roles.subs, ch)
		p.roles.mu.Unlock()
	}
}

// WritableCtx returns a context derived from ctx that is cancelled when
// the node stops taking writes in its current role (an active demoted, a
// node closing); ok is false, and the context already cancelled, when the
// node does not take writes now. LiteFS's PrimaryCtx is the model.
func (p *Pair) WritableCtx(ctx context.Context) (_ context.Context, ok bool) {
	s := p.roles.get()
	out, cancel := context.WithCancel(ctx)
	if !s.writable {
		cancel()
		return out, false
	}
	context.AfterFunc(s.ctx, cancel)
	return out, true
}

// becomeActive makes this node the writer at epoch: the store takes the
// rest of the local log first (NewPrimary), then writes go through the
// log. Called under changeMu with the follower stopped.
func (p *Pair) becomeActive(ctx context.Context, epoch uint64, alone bool) error {
	c := &p.cfg
	st := p.loc.Load().st
	primary, err := replog.NewPrimary(ctx, p.log, st, p.nc, &replog.PrimaryOptions{
		Epoch: epoch, Async: c.Async, PeerTimeout: c.PeerTimeout, Logger: p.lg,
		OnApplied: p.applied, Observe: c.ObserveReplication,
	})
	if err != nil {
		return err
	}
	p.alone.set(alone)
	primary.SetDegraded(alone)
	stopServe, err := replog.ServeResync(p.nc, st, p.lay.Tmp(), p.lg)
	if err != nil {
		primary.Close()
		return err
	}
	stopMerges, err := p.serveMerges()
	if err != nil {
		stopServe()
		primary.Close()
		return err
	}
	p.primary, p.stopServe, p.stopMerges = primary, stopServe, stopMerges
	p.roles.set(p.newState(state{role: Active, epoch: epoch, writable: true, term: p.roles.nextTerm(),
		primary: primary, serving: true}))
	p.afterWritable()
	return nil
}

// becomePassive makes this node follow the peer's log and serve reads
// only. The follower runs until stopFollowing; it reconnects, and
// rebuilds the store from the active's when it cannot follow (a diverged
// or trimmed position). Called under changeMu.
func (p *Pair) becomePassive(epoch uint64) {
	p.roles.set(p.newState(state{role: Passive, epoch: epoch, why: "this node is the passive; write to " + p.cfg.WriteHint,
		waiting: "checking this node's log against the active's (" + p.cfg.PeerNATS + ")"}))
	ctx, stop := context.WithCancel(p.ctx)
	f := &following{stop: stop, done: make(chan struct{}), epoch: epoch}
	p.follow.Store(f)
	go func() {
		defer close(f.done)
		p.runFollower(ctx, f)
	}()
}

// stopFollowing stops the follower and waits for it (its applier
// included: the store then has every entry it applied). Under changeMu.
func (p *Pair) stopFollowing() {
	if f := p.follow.Swap(nil); f != nil {
		f.stop()
		<-f.done
	}
}

// stopWriting ends the active's write path: pending waits for the
// passive fail (the clients retry), and the checkpoint service stops.
// Under changeMu.
func (p *Pair) stopWriting() {
	if p.primary != nil {
		p.primary.Close()
		p.primary = nil
	}
	if p.stopServe != nil {
		p.stopServe()
		p.stopServe = nil
	}
	if p.stopMerges != nil {
		p.stopMerges()
		p.stopMerges = nil
	}
}

// Promote stops following, applies the whole local log and opens for
// writes at epoch (acknowledging alone if alone: the peer is fenced).
func (p *Pair) Promote(ctx context.Context, epoch uint64, alone bool) error {
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	s := p.roles.get()
	switch {
	case p.closing.Load():
		return errors.New("pair: closing")
	case s.role == Active:
		return errors.New("pair: already active")
	case s.role == Standalone:
		return errors.New("pair: a standalone node has no role to change")
	case p.needResync.Load():
		return errors.New("pair: this node's store is being rebuilt from the active's (it diverged or fell behind the log); it cannot take the active role until then")
	}
	p.stopFollowing()
	if err := p.becomeActive(ctx, epoch, alone); err != nil {
		// Stay a passive rather than nothing.
		p.becomePassive(s.epoch)
		return err
	}
	return nil
}

// Demote gives up the active role properly: SMTP and LMTP stop taking new
// transactions (421) and let those in flight finish, then writes stop,
// the last ones are confirmed by the peer (with handover, every entry:
// the position is returned), IMAP sessions get BYE, and the node follows
// the peer. A handover the peer cannot confirm leaves the node active.
func (p *Pair) Demote(ctx context.Context, handover bool) (uint64, error) {
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	s := p.roles.get()
	primary := p.primary
	if s.role != Active || primary == nil {
		return 0, errors.New("pair: not active")
	}
	why := "this node is handing over; write to " + p.cfg.WriteHint
	dctx, cancel := context.WithTimeout(ctx, p.cfg.ShutdownTimeout)
	defer cancel()
	readOnly := continued(s, func(s *state) { s.writable, s.why = false, why })
	if !handover {
		// Stepping down because another node is active: nothing more may
		// be acknowledged here, at once.
		p.roles.set(readOnly)
		p.stopWriting()
	}
	p.drain(dctx)
	p.roles.set(readOnly)
	if err := p.inflight.wait(dctx); err != nil {
		p.lg.Warn("writes still in flight when demoting", "err", err)
	}
	var at uint64
	if handover {
		last, _ := primary.Last()
		if err := waitPeer(dctx, primary, last, p.cfg.PeerTimeout); err != nil {
			p.roles.set(s)
			return 0, fmt.Errorf("pair: handover: the peer did not confirm entry %d: %w", last, err)
		}
		at = last
		p.stopWriting()
	}
	p.kick(dctx, "[UNAVAILABLE] this node is no longer the active; reconnect")
	p.becomePassive(s.epoch)
	return at, nil
}

// drain lets every Drainer frontend finish its transactions in flight.
func (p *Pair) drain(ctx context.Context) {
	var wg sync.WaitGroup
	for _, f := range p.frontendsNow() {
		if d, ok := f.(Drainer); ok {
			wg.Go(func() {
				if err := d.Drain(ctx); err != nil {
					p.lg.Warn("drain", "err", err)
				}
			})
		}
	}
	wg.Wait()
}

// kick ends the sessions of every Kicker frontend.
func (p *Pair) kick(ctx context.Context, reason string) {
	for _, f := range p.frontendsNow() {
		if k, ok := f.(Kicker); ok {
			if err := k.Kick(ctx, reason); err != nil {
				p.lg.Warn("end sessions", "err", err)
			}
		}
	}
}

func (p *Pair) frontendsNow() []Frontend {
	p.roles.mu.Lock()
	defer p.roles.mu.Unlock()
	return append([]Frontend(nil), p.roles.frontends...)
}

// waitPeer waits until the passive confirmed seq, at most timeout.
func waitPeer(ctx context.Context, primary *replog.Primary, seq uint64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if pos, _ := primary.PeerPosition(); pos >= seq {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// The rest of failover.Node.

// Position is the local log's end and its epoch.
// It never waits for a role change in progress (the driver calls it
// every tick).
func (p *Pair) Position() failover.Position {
	s := p.roles.get()
	if s.primary != nil {
		seq, e := s.primary.Last()
		return failover.Position{Last: seq, LastEpoch: e}
	}
	if f := p.follow.Load(); f != nil {
		if fs, ok := f.status(); ok {
			return failover.Position{Last: fs.Position, LastEpoch: max(fs.Epoch, s.epoch)}
		}
	}
	return failover.Position{Last: p.loc.Load().st.AppliedSeq(), LastEpoch: s.epoch}
}

// PeerConfirmed is, on an active, the passive's confirmed position.
func (p *Pair) PeerConfirmed() uint64 {
	if pr := p.activePrimary(); pr != nil {
		pos, _ := pr.PeerPosition()
		return pos
	}
	return 0
}

// SetDegraded makes the active acknowledge alone (its peer is fenced), or
// wait for the peer again.
func (p *Pair) SetDegraded(on bool) {
	if pr := p.activePrimary(); pr != nil {
		p.alone.set(on)
		pr.SetDegraded(on)
	}
}

// AheadAlone reports whether the active acknowledged entries alone that
// its passive has not confirmed.
func (p *Pair) AheadAlone() bool {
	pr := p.activePrimary()
	return pr != nil && pr.AheadAlone()
}

// activePrimary is the log's writer while the node is active.
func (p *Pair) activePrimary() *replog.Primary {
	return p.roles.get().primary
}
