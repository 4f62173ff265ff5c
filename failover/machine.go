package failover

import (
	"errors"
	"fmt"
	"time"
)

// Role is a node's part in the pair.
type Role uint8

// The roles. A node starts passive and becomes active only through the
// machine (or an operator's command).
const (
	Passive Role = iota + 1
	Active
)

func (r Role) String() string {
	switch r {
	case Passive:
		return "passive"
	case Active:
		return "active"
	}
	return "unknown"
}

// Position is where a node's log ends: its last entry and that entry's
// epoch. Of two logs, the one with the later (LastEpoch, Last) holds
// everything acknowledged (an entry is acknowledged only once both have it).
type Position struct {
	Last, LastEpoch uint64
}

func (p Position) less(q Position) bool {
	if p.LastEpoch != q.LastEpoch {
		return p.LastEpoch < q.LastEpoch
	}
	return p.Last < q.Last
}

// PeerState is what a node says about itself in its heartbeats.
type PeerState struct {
	Node      string   `json:"node"`
	Role      Role     `json:"role"`
	Epoch     uint64   `json:"epoch"`
	Log       Position `json:"log"`
	Preferred bool     `json:"preferred,omitempty"`
	// Standby: the node will not take the active role by itself
	// (an operator's demote, or a switchover in progress).
	Standby bool `json:"standby,omitempty"`
	// Takeover asks the active to hand over to this node (a switchover
	// run on the passive, or auto_failback).
	Takeover bool `json:"takeover,omitempty"`
	// Handover, on a former active, is the log position it handed over
	// at: the peer promotes once its log reaches it, without fencing.
	Handover uint64 `json:"handover,omitempty"`
	// Hears: this node heard its peer within deadtime. An active waits
	// for it before it counts on its passive again: a passive that never
	// heard the active would wait initdead, not deadtime, to take over.
	Hears bool `json:"hears,omitempty"`
	// Leaving: the node is shutting down cleanly and writes nothing
	// (Heartbeat's graceful shutdown): its peer need not fence it. Only
	// a passive says so; an active hands over first.
	Leaving bool `json:"leaving,omitempty"`
	// AheadAlone, on an active: it acknowledged entries alone (its
	// passive was fenced) that the passive has not confirmed. Its passive
	// must not take over by itself: it is outdated (DRBD's word).
	AheadAlone bool `json:"ahead_alone,omitempty"`
}

// Config is the machine's settings (Heartbeat's names).
type Config struct {
	Node string
	// Preferred is the node that takes the active role when both are
	// up and equal (config role = active), and gets it back with
	// AutoFailback.
	Preferred bool
	// Keepalive is the heartbeat interval; Warntime warns of a late
	// path, Deadtime declares the peer dead (no path heard), Initdead
	// is Deadtime at boot, before the peer was first heard.
	Keepalive, Warntime, Deadtime, Initdead time.Duration
	// FenceDelay waits before shooting the peer: set on one node only,
	// so that in a mutual shootout the other node wins.
	FenceDelay time.Duration
	// FenceRetry is the wait before fencing again after a failure.
	FenceRetry time.Duration
	// Fencing is false when no fence device is configured: the peer can
	// then never be confirmed off, so a passive never promotes by itself
	// and an active never continues alone.
	Fencing bool
	// AutoFailback: the preferred node, back and caught up, asks for the
	// active role again.
	AutoFailback bool
	// Paths are the heartbeat paths' names (for warnings and status).
	Paths []string
	// Witness: a witness is configured (package witness). A node then
	// promotes only with the witness's vote for the new epoch, and an
	// active that loses its peer steps down once its lease from the
	// witness (half the deadtime from its last granted ping) runs out.
	Witness bool
}

// Defaults: failover within 3 s of the active's death (deadtime, then
// fencing and promotion).
const (
	DefaultKeepalive  = 200 * time.Millisecond
	DefaultWarntime   = 1 * time.Second
	DefaultDeadtime   = 1500 * time.Millisecond
	DefaultInitdead   = 10 * time.Second
	DefaultFenceRetry = 5 * time.Second
)

// EnsureDefaults fills the zero timings with their defaults.
func (c *Config) EnsureDefaults() {
	if c.Keepalive <= 0 {
		c.Keepalive = DefaultKeepalive
	}
	if c.Deadtime <= 0 {
		c.Deadtime = DefaultDeadtime
	}
	if c.Warntime <= 0 || c.Warntime > c.Deadtime {
		c.Warntime = min(DefaultWarntime, c.Deadtime)
	}
	if c.Initdead < c.Deadtime {
		c.Initdead = max(DefaultInitdead, c.Deadtime)
	}
	if c.FenceRetry <= 0 {
		c.FenceRetry = DefaultFenceRetry
	}
}

// Validate reports every problem of the timing settings at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Keepalive <= 0 {
		errs = append(errs, fmt.Errorf("keepalive: %v must be positive", c.Keepalive))
	}
	if c.Deadtime < 2*c.Keepalive {
		errs = append(errs, fmt.Errorf("deadtime: %v must be at least twice keepalive (%v)", c.Deadtime, c.Keepalive))
	}
	if c.Warntime < c.Keepalive || c.Warntime > c.Deadtime {
		errs = append(errs, fmt.Errorf("warntime: %v must be between keepalive (%v) and deadtime (%v)", c.Warntime, c.Keepalive, c.Deadtime))
	}
	if c.Initdead < c.Deadtime {
		errs = append(errs, fmt.Errorf("initdead: %v must be at least deadtime (%v)", c.Initdead, c.Deadtime))
	}
	if c.FenceDelay < 0 {
		errs = append(errs, fmt.Errorf("fence_delay: %v must not be negative", c.FenceDelay))
	}
	return errors.Join(errs...)
}

// Inputs.

// Tick is the passing of time, with the node's own log position and, on
// an active, the position its passive confirmed.
type Tick struct {
	Now           time.Time
	Local         Position
	PeerConfirmed uint64
	AheadAlone    bool
}

// Heard is a verified heartbeat from the peer on one path.
type Heard struct {
	Path string
	At   time.Time
	Peer PeerState
	// Boot and Counter order the peer's heartbeats across paths (its
	// process's boot, and a counter it raises with every heartbeat): a
	// state older than one already heard (a slow path delivering late)
	// keeps the peer alive but does not replace what is known of it.
	// Counter 0 is unordered (always taken).
	Boot, Counter uint64
}

// WitnessReply is the witness's answer to a ping (Promote false) or to a
// request for the active role at Epoch, or Err when none came.
type WitnessReply struct {
	Promote bool
	Epoch   uint64
	// Sent is when the answered request left this node: a granted lease
	// runs from there.
	Sent    time.Time
	Granted bool
	// Holder and HolderEpoch are the witness's state.
	Holder      string
	HolderEpoch uint64
	Why         string
	Err         error
}

// FenceDone is the end of a fencing attempt: nil means the peer is
// confirmed off.
type FenceDone struct{ Err error }

// PromoteDone is the end of a promotion: on success this node writes at
// Epoch.
type PromoteDone struct {
	Epoch uint64
	Err   error
}

// DemoteDone is the end of a demotion. Handover is the log position the
// peer must reach to take over (0 when none was made). On an error the
// node is still active (a handover that could not flush to the peer).
type DemoteDone struct {
	Handover uint64
	Err      error
}

// Command is an operator's command.
type Command uint8

// The operator's commands.
const (
	// CmdSwitchover hands the active role to the peer (planned, no loss).
	CmdSwitchover Command = iota + 1
	// CmdPromote on a passive clears standby and asks for the active
	// role (a switchover if the peer is active).
	CmdPromote
	// CmdPromoteForce makes this node active now, without fencing: the
	// operator vouches that the peer is not writing.
	CmdPromoteForce
	// CmdDemote gives up the active role (handing over if the peer is
	// up) and stays standby until a promote.
	CmdDemote
)

func (c Command) String() string {
	return map[Command]string{CmdSwitchover: "switchover", CmdPromote: "promote",
		CmdPromoteForce: "promote --force", CmdDemote: "demote"}[c]
}

// Actions.

// Action is what the driver must do.
type Action interface{ action() }

// Fence asks the driver to shoot the peer and confirm it is off.
type Fence struct{}

// Promote asks the driver to persist Epoch, apply the whole local log,
// open for writes and run the on_promote hook. Alone: the peer is
// fenced or gone, so acknowledge without it (degraded).
type Promote struct {
	Epoch uint64
	Alone bool
}

// Demote asks the driver to drain (SMTP 421, transactions in flight
// finish, IMAP BYE), run on_demote and follow the peer. Handover: first
// flush every entry to the peer and report the position.
type Demote struct {
	Handover bool
	Reason   string
}

// SetDegraded tells the active to acknowledge without the passive (it is
// fenced) or to wait for it again (it caught up).
type SetDegraded struct{ On bool }

// AskWitness asks the witness for the active role at Epoch; the driver
// answers with a WitnessReply.
type AskWitness struct{ Epoch uint64 }

// Announce asks for a heartbeat at once (the state changed).
type Announce struct{}

// Event is something worth a log line.
type Event struct {
	Warn bool
	Msg  string
}

func (Fence) action()       {}
func (Promote) action()     {}
func (Demote) action()      {}
func (SetDegraded) action() {}
func (AskWitness) action()  {}
func (Announce) action()    {}
func (Event) action()       {}

type busy uint8

const (
	idle busy = iota
	fencing
	promoting
	demoting
)

type fenceState uint8

const (
	fenceNone fenceState = iota
	fenceWaiting
	fenceRunning
	fenceConfirmed
	fenceFailed
)

// Machine decides the node's role. It does no I/O and reads no clock:
// every input carries its time. Not safe for concurrent use (the driver
// owns it).
type Machine struct {
	cfg   Config
	role  Role
	epoch uint64
	busy  busy
	now   time.Time

	local         Position
	peerConfirmed uint64
	aheadAlone    bool

	observeFrom time.Time // peer silence counts from here (boot, a pause of ours)
	lastTick    time.Time
	heard       map[string]time.Time
	late        map[string]bool
	everHeard   bool
	peer        PeerState
	// The heartbeat the peer's state came from (Heard.Boot, Counter).
	peerBoot, peerCounter uint64
	peerDead              bool

	fence      fenceState
	fenceAt    time.Time // when a waiting fence runs, or a failed one retries
	fenceErr   string
	conflictAt uint64 // a higher epoch seen active while we were fencing or active

	degraded       bool
	leaving        bool // this node is shutting down: no role change
	peerLeft       bool // the peer said it is leaving, and nothing since
	standby        bool // operator's: no automatic promotion
	standbyHandoff bool // after a handover, until the peer is active
	handover       uint64
	takeoverUntil  time.Time
	handoverAfter  time.Time // no new handover before (one just failed)
	reason         string

	// With a witness: the epoch it granted this node, the end of this
	// node's lease as the active, whether a request is out, when the next
	// may go, and why the last was refused.
	vote       uint64
	leaseUntil time.Time
	asking     bool
	askAfter   time.Time
	witnessWhy string
	// leaseForced: an operator forced this node active; it holds the
	// role without a lease until it is passive again.
	leaseForced bool
}

// New returns a machine for a node starting passive at now, with the
// highest epoch it knows (persisted) and its operator standby flag.
func New(cfg Config, now time.Time, epoch uint64, standby bool) *Machine {
	cfg.EnsureDefaults()
	return &Machine{cfg: cfg, role: Passive, epoch: epoch, now: now, lastTick: now, observeFrom: now,
		heard: map[string]time.Time{}, late: map[string]bool{}, standby: standby}
}

// Step feeds one input and returns the actions to take, in order.
func (m *Machine) Step(in any) []Action {
	var out []Action
	switch in := in.(type) {
	case Tick:
		out = m.tick(in)
	case Heard:
		out = m.heardFrom(in)
	case FenceDone:
		out = m.fenceDone(in)
	case PromoteDone:
		out = m.promoteDone(in)
	case DemoteDone:
		out = m.demoteDone(in)
	case WitnessReply:
		out = m.witnessReply(in)
	default:
		panic(fmt.Sprintf("failover: unknown input %T", in))
	}
	return append(out, m.decide()...)
}

func (m *Machine) tick(t Tick) []Action {
	var out []Action
	// A tick far behind the last one means this process was paused
	// (SIGSTOP, a VM freeze) or starved: heartbeats queued meanwhile
	// may not be read yet, so the peer's silence counts from now.
	if t.Now.Sub(m.lastTick) > m.cfg.Deadtime/2 {
		m.observeFrom = t.Now
		out = append(out, Event{Warn: true, Msg: fmt.Sprintf("no tick for %v (paused?): judging the peer afresh", t.Now.Sub(m.lastTick).Round(time.Millisecond))})
	}
	m.now, m.lastTick = t.Now, t.Now
	m.local, m.peerConfirmed, m.aheadAlone = t.Local, t.PeerConfirmed, t.AheadAlone
	for _, p := range m.cfg.Paths {
		at, ok := m.heard[p]
		late := m.everHeard && (!ok || m.now.Sub(at) > m.cfg.Warntime)
		if late && !m.late[p] {
			out = append(out, Event{Warn: true, Msg: fmt.Sprintf("heartbeat path %s late (warntime %v)", p, m.cfg.Warntime)})
		} else if !late && m.late[p] {
			out = append(out, Event{Msg: fmt.Sprintf("heartbeat path %s back", p)})
		}
		m.late[p] = late
	}
	return out
}

func (m *Machine) heardFrom(h Heard) []Action {
	if h.At.After(m.now) {
		m.now = h.At
	}
	m.heard[h.Path] = h.At
	if m.everHeard && h.Counter != 0 && h.Boot == m.peerBoot && h.Counter <= m.peerCounter {
		return nil // alive, but an older state than the one known
	}
	m.everHeard = true
	m.peer, m.peerBoot, m.peerCounter = h.Peer, h.Boot, h.Counter
	var out []Action
	if m.peerDead {
		m.peerDead = false
		out = append(out, Event{Msg: fmt.Sprintf("peer %s is back (%s, epoch %d)", h.Peer.Node, h.Peer.Role, h.Peer.Epoch)})
	}
	if h.Peer.Role == Active && h.Peer.Epoch > m.epoch && (m.role == Active || m.busy == promoting || m.busy == fencing) {
		m.conflictAt = h.Peer.Epoch
	}
	// A peer heard alive is not fenced, whatever a device said before.
	if m.fence != fenceRunning && m.fence != fenceNone {
		m.fence, m.fenceErr = fenceNone, ""
	}
	left := m.peerLeft
	m.peerLeft = false
	if h.Peer.Leaving && h.Peer.Role == Passive {
		// A clean shutdown: it stopped writing for good and exits, as
		// good as confirmed off.
		m.peerLeft = true
		if m.fence != fenceRunning {
			m.fence = fenceConfirmed
		}
		if !left {
			out = append(out, Event{Msg: fmt.Sprintf("peer %s is shutting down cleanly", h.Peer.Node)})
		}
	}
	return out
}

// Leave marks this node as shutting down: it changes role no more, and
// says Leaving in its heartbeats once it is passive.
func (m *Machine) Leave() { m.leaving = true }

func (m *Machine) fenceDone(d FenceDone) []Action {
	m.busy = idle
	if d.Err != nil {
		m.fence, m.fenceErr = fenceFailed, d.Err.Error()
		m.fenceAt = m.now.Add(m.cfg.FenceRetry)
		return []Action{Event{Warn: true, Msg: "fencing the peer failed; not taking over: " + d.Err.Error()}}
	}
	m.fence, m.fenceErr = fenceConfirmed, ""
	return []Action{Event{Msg: "peer fenced (confirmed off)"}}
}

func (m *Machine) promoteDone(d PromoteDone) []Action {
	m.busy = idle
	if d.Err != nil {
		// Do not try again by ourselves: an operator looks first.
		m.standby = true
		m.reason = "promotion failed: " + d.Err.Error()
		return []Action{Event{Warn: true, Msg: m.reason + " (standby until `twinbox promote`)"}, Announce{}}
	}
	m.role, m.epoch = Active, max(m.epoch, d.Epoch)
	m.handover, m.takeoverUntil, m.standbyHandoff = 0, time.Time{}, false
	m.degraded = m.fence == fenceConfirmed || m.peerDead
	m.reason = ""
	return []Action{Event{Msg: fmt.Sprintf("active at epoch %d", m.epoch)}, Announce{}}
}

func (m *Machine) demoteDone(d DemoteDone) []Action {
	m.busy = idle
	if d.Err != nil {
		m.standbyHandoff = false
		m.handoverAfter = m.now.Add(m.cfg.FenceRetry)
		return []Action{Event{Warn: true, Msg: "demotion failed; still active: " + d.Err.Error()}, Announce{}}
	}
	m.role, m.degraded, m.conflictAt, m.leaseForced = Passive, false, 0, false
	m.handover = d.Handover
	m.standbyHandoff = d.Handover != 0
	return []Action{Event{Msg: fmt.Sprintf("passive, following the peer (handover at %d)", d.Handover)}, Announce{}}
}

// Command applies an operator's command; an error says why it cannot be
// done now.
func (m *Machine) Command(c Command) ([]Action, error) {
	if m.busy == promoting || m.busy == demoting {
		return nil, errors.New("failover: a role change is in progress")
	}
	alive := m.peerAlive()
	switch c {
	case CmdSwitchover:
		switch {
		case !alive:
			return nil, errors.New("failover: the peer is not heard: nothing to switch over to")
		case m.role == Active && m.peer.Role == Passive:
			m.busy = demoting
			m.standbyHandoff = true
			return []Action{Demote{Handover: true, Reason: "switchover"}}, nil
		case m.role == Passive && m.peer.Role == Active:
			m.standby = false
			m.takeoverUntil = m.now.Add(10 * time.Second)
			return []Action{Announce{}}, nil
		}
		return nil, fmt.Errorf("failover: cannot switch over: this node is %s and the peer %s", m.role, m.peer.Role)
	case CmdPromote:
		if m.role == Active {
			return nil, errors.New("failover: already active")
		}
		m.standby, m.reason = false, ""
		if alive && m.peer.Role == Active {
			m.takeoverUntil = m.now.Add(10 * time.Second)
			return []Action{Announce{}}, nil
		}
		return m.decide(), nil
	case CmdPromoteForce:
		if m.role == Active {
			return nil, errors.New("failover: already active")
		}
		m.standby, m.reason = false, ""
		// The operator's word stands for the witness's vote (the witness
		// may be the thing that is lost), and for its lease.
		m.vote, m.leaseForced = m.nextEpoch(), true
		return m.promote(!alive, "forced by the operator"), nil
	case CmdDemote:
		m.standby = true
		if m.role == Passive {
			return []Action{Announce{}}, nil
		}
		m.busy = demoting
		return []Action{Demote{Handover: alive && m.peer.Role == Passive, Reason: "demoted by the operator"}}, nil
	}
	return nil, fmt.Errorf("failover: unknown command %d", c)
}

// peerAlive: some path was heard within deadtime (initdead before the
// peer was first heard), counting from boot or our last pause.
func (m *Machine) peerAlive() bool {
	if m.peerLeft {
		return false
	}
	limit := m.cfg.Deadtime
	if !m.everHeard {
		limit = m.cfg.Initdead
	}
	return m.now.Sub(m.lastHeard()) <= limit
}

// heardRecently: a path was actually heard within deadtime (not merely
// the benefit of the doubt at boot).
// lastHeard is when the peer was last heard on any path (or when this
// node began to listen).
func (m *Machine) lastHeard() time.Time {
	last := m.observeFrom
	for _, at := range m.heard {
		if at.After(last) {
			last = at
		}
	}
	return last
}

func (m *Machine) heardRecently() bool {
	for _, at := range m.heard {
		if m.now.Sub(at) <= m.cfg.Deadtime {
			return true
		}
	}
	return false
}

// nextEpoch is the epoch of a promotion: above every epoch known, and of
// this node's parity (the preferred node's are odd), so that the two
// nodes can never write the same epoch even if both promote.
func (m *Machine) nextEpoch() uint64 {
	e := max(m.epoch, m.peer.Epoch, m.local.LastEpoch, m.peer.Log.LastEpoch) + 1
	want := uint64(0)
	if m.cfg.Preferred {
		want = 1
	}
	if e%2 != want {
		e++
	}
	return e
}

// lease is how long a ping the witness granted lets an active that lost
// its peer go on: half the witness's deadtime, so that it has stopped
// before the witness can give the role to the other node.
func (m *Machine) lease() time.Duration { return m.cfg.Deadtime / 2 }

func (m *Machine) witnessReply(r WitnessReply) []Action {
	if r.Promote {
		m.asking = false
	}
	if r.Err != nil {
		m.witnessWhy = "no answer from the witness"
		if r.Promote {
			m.askAfter = m.now.Add(m.cfg.Keepalive)
		}
		return nil
	}
	var out []Action
	if r.Holder != m.cfg.Node && r.HolderEpoch > m.epoch {
		if m.role == Active || m.busy == promoting {
			// The witness gave the role to the peer at a later epoch:
			// this node is stale.
			m.conflictAt = r.HolderEpoch
		} else {
			m.epoch = r.HolderEpoch // asks for a later epoch from now on
		}
	}
	switch {
	case r.Granted && r.Promote:
		m.vote, m.witnessWhy = r.Epoch, ""
		m.leaseUntil = r.Sent.Add(m.lease())
	case r.Granted && m.role == Active && r.Epoch == m.epoch:
		m.witnessWhy = ""
		if t := r.Sent.Add(m.lease()); t.After(m.leaseUntil) {
			m.leaseUntil = t
		}
	case !r.Granted:
		m.witnessWhy = r.Why
		if r.Promote {
			m.askAfter = m.now.Add(m.cfg.Keepalive)
			out = append(out, Event{Msg: fmt.Sprintf("the witness refused epoch %d: %s", r.Epoch, r.Why)})
		}
	}
	return out
}

func (m *Machine) promote(alone bool, why string) []Action {
	if m.cfg.Witness {
		e := m.nextEpoch()
		if m.vote != e {
			m.reason = fmt.Sprintf("%s; waiting for the witness's vote for epoch %d", why, e)
			if m.witnessWhy != "" {
				m.reason += " (" + m.witnessWhy + ")"
			}
			if m.asking || m.now.Before(m.askAfter) {
				return nil
			}
			m.asking = true
			return []Action{AskWitness{Epoch: e}}
		}
	}
	m.busy = promoting
	return []Action{Event{Msg: "promoting: " + why}, Promote{Epoch: m.nextEpoch(), Alone: alone}}
}

// decide is the policy, run after every input.
func (m *Machine) decide() []Action {
	if m.busy == promoting || m.busy == demoting || m.leaving {
		return nil
	}
	var out []Action
	alive := m.peerAlive()
	if !alive && !m.peerDead && m.busy == idle {
		m.peerDead = true
		if m.peerLeft {
			out = append(out, Event{Msg: fmt.Sprintf("peer %s left (a clean shutdown)", m.peer.Node)})
		} else {
			out = append(out, Event{Warn: true, Msg: fmt.Sprintf("peer %s declared dead: no heartbeat on any path", orUnknown(m.peer.Node))})
		}
	}
	if m.conflictAt > m.epoch && m.role == Active && m.busy == idle {
		m.busy = demoting
		m.conflictAt = 0
		return append(out, Event{Warn: true, Msg: "role conflict: the peer is active at a later epoch; stepping down"},
			Demote{Reason: "the peer is active at a later epoch"})
	}
	if m.busy == fencing {
		return out
	}
	if m.role == Active {
		return append(out, m.decideActive(alive)...)
	}
	return append(out, m.decidePassive(alive)...)
}

func (m *Machine) decideActive(alive bool) []Action {
	if m.cfg.Witness && !m.leaseForced && !m.now.Before(m.leaseUntil) && m.now.Sub(m.lastHeard()) > m.lease() {
		// Cut off from the peer and from the witness: the witness gives
		// the role to the peer once this node has been silent for its
		// deadtime, so this node stops first, well before that: its lease
		// is over and the peer was not heard for as long (a quorum lost).
		m.busy = demoting
		why := "peer not heard and no lease from the witness"
		if m.witnessWhy != "" {
			why += " (" + m.witnessWhy + ")"
		}
		return []Action{Event{Warn: true, Msg: why + ": stepping down so that only one node can be active"}, Demote{Reason: why}}
	}
	if alive {
		m.reason = ""
		switch {
		case m.peer.Role == Active && m.peer.Epoch == m.epoch && m.peer.Node < m.cfg.Node:
			// Both active at one epoch cannot come from the machine (epochs
			// have a node's parity); if an operator made it, one yields.
			m.busy = demoting
			return []Action{Event{Warn: true, Msg: "role conflict at the same epoch; stepping down"}, Demote{Reason: "role conflict"}}
		case m.peer.Role == Active && m.peer.Epoch < m.epoch:
			m.reason = fmt.Sprintf("peer claims active at stale epoch %d; it must step down", m.peer.Epoch)
		case m.peer.Role == Passive && m.peer.Takeover && m.heardRecently() && !m.now.Before(m.handoverAfter):
			m.busy = demoting
			return []Action{Event{Msg: "the peer asks to take over: handing over"}, Demote{Handover: true, Reason: "switchover to the peer"}}
		case m.degraded && m.peer.Role == Passive && m.peer.Hears && m.peerConfirmed+catchUpSlack >= m.local.Last:
			m.degraded = false
			return []Action{Event{Msg: "the passive caught up: acknowledging with both nodes again"}, SetDegraded{On: false}}
		}
		return nil
	}
	if m.degraded {
		return nil
	}
	// DRBD's resource-and-stonith: writes wait for the peer (and fail
	// after peer_timeout) until it is confirmed off.
	if out, done := m.fenceStep(); !done {
		m.reason = "peer lost: writes wait until it is fenced (" + m.fenceStatus() + ")"
		return out
	}
	m.degraded = true
	m.reason = ""
	return []Action{Event{Warn: true, Msg: "the peer is fenced: acknowledging on this node alone (degraded)"}, SetDegraded{On: true}}
}

// catchUpSlack is how far behind the passive may be when a degraded
// active starts waiting for it again.
const catchUpSlack = 64

func (m *Machine) decidePassive(alive bool) []Action {
	if alive {
		m.reason = ""
		if m.peer.Role == Active {
			if m.peer.Epoch > m.epoch {
				// The peer took over: this node's handover is done.
				m.standbyHandoff, m.handover = false, 0
			}
			m.epoch = max(m.epoch, m.peer.Epoch)
			return nil
		}
		if m.peer.Role != Passive || !m.heardRecently() {
			return nil // not heard yet: initdead
		}
		// Both passive: a handover, or an election.
		if m.peer.Handover != 0 {
			if m.standby || m.standbyHandoff {
				// standbyHandoff: this node has just handed over itself;
				// the peer's handover is an old one.
				m.reason = "standby: not taking the handover"
				return nil
			}
			if m.local.Last < m.peer.Handover {
				m.reason = fmt.Sprintf("taking over at %d once the log is there (at %d)", m.peer.Handover, m.local.Last)
				return nil
			}
			return m.promote(false, fmt.Sprintf("the peer handed over at %d", m.peer.Handover))
		}
		if m.standby || m.standbyHandoff {
			m.reason = "standby"
			return nil
		}
		if m.peer.Standby || m.winsElection() {
			return m.promote(false, "both nodes passive; this one has the later log or is preferred")
		}
		m.reason = "both passive: waiting for the peer to take the active role"
		return nil
	}
	if m.standby {
		m.reason = "standby: the peer is lost but this node does not take over"
		return nil
	}
	if m.peer.Role == Active && m.peer.AheadAlone {
		m.reason = "the active was acknowledging writes this node lacks when last heard (this node is outdated): " +
			"not taking over; `twinbox promote --force` if the active is lost for good"
		return nil
	}
	out, done := m.fenceStep()
	if !done {
		m.reason = "peer lost: not taking over until it is fenced (" + m.fenceStatus() + ")"
		return out
	}
	return m.promote(true, "the peer is dead and fenced")
}

// winsElection: of two live passives, the one with the later log takes
// the active role; on equal logs the preferred node, then the lower name.
func (m *Machine) winsElection() bool {
	me, peer := m.local, m.peer.Log
	switch {
	case me != peer:
		return peer.less(me)
	case m.cfg.Preferred != m.peer.Preferred:
		return m.cfg.Preferred
	}
	return m.cfg.Node < m.peer.Node
}

// fenceStep advances fencing the peer; done once it is confirmed off.
func (m *Machine) fenceStep() (out []Action, done bool) {
	if !m.cfg.Fencing {
		return nil, false
	}
	switch m.fence {
	case fenceConfirmed:
		return nil, true
	case fenceNone:
		m.fence = fenceWaiting
		m.fenceAt = m.now.Add(m.cfg.FenceDelay)
		if m.cfg.FenceDelay > 0 {
			out = append(out, Event{Msg: fmt.Sprintf("fencing the peer in %v (fence_delay)", m.cfg.FenceDelay)})
		}
		fallthrough
	case fenceWaiting, fenceFailed:
		if !m.now.Before(m.fenceAt) {
			m.fence, m.busy = fenceRunning, fencing
			out = append(out, Event{Warn: true, Msg: "fencing the peer"}, Fence{})
		}
	}
	return out, false
}

func (m *Machine) fenceStatus() string {
	switch {
	case !m.cfg.Fencing:
		return "no fence device configured"
	case m.fence == fenceFailed:
		return "fencing failed: " + m.fenceErr
	case m.fence == fenceRunning:
		return "fencing"
	case m.fence == fenceWaiting:
		return "fence delay"
	}
	return "fenced"
}

func orUnknown(s string) string {
	if s == "" {
		return "(never heard)"
	}
	return s
}

// Status is the machine's state for people and metrics.
type Status struct {
	Role     string               `json:"role"`
	Epoch    uint64               `json:"epoch"`
	Busy     string               `json:"busy,omitempty"`
	Peer     string               `json:"peer"` // alive, late, dead, unknown
	PeerRole string               `json:"peer_role,omitempty"`
	PeerNode string               `json:"peer_node,omitempty"`
	Heard    map[string]time.Time `json:"heard"`
	Fencing  string               `json:"fencing"`
	Degraded bool                 `json:"degraded,omitempty"`
	Standby  bool                 `json:"standby,omitempty"`
	// Outdated: as a passive, the active last said it acknowledged
	// writes this node lacks; it will not take over by itself.
	Outdated bool   `json:"outdated,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Witness, when one is configured: "lease until <time>" on an
	// active that holds one, or why the witness last refused or did not
	// answer.
	Witness string `json:"witness,omitempty"`
}

// Status reports the state.
func (m *Machine) Status() Status {
	s := Status{Role: m.role.String(), Epoch: m.epoch, Heard: map[string]time.Time{},
		Degraded: m.degraded || (m.role == Active && m.aheadAlone), Standby: m.standby || m.standbyHandoff, Reason: m.reason, PeerNode: m.peer.Node}
	s.Outdated = m.role == Passive && m.peer.Role == Active && m.peer.AheadAlone
	s.Busy = map[busy]string{fencing: "fencing", promoting: "promoting", demoting: "demoting"}[m.busy]
	for p, at := range m.heard {
		s.Heard[p] = at
	}
	switch {
	case !m.everHeard && m.peerAlive():
		s.Peer = "unknown"
	case !m.peerAlive():
		s.Peer = "dead"
	case m.late[firstLate(m.late)]:
		s.Peer = "late"
	default:
		s.Peer = "alive"
	}
	if m.everHeard {
		s.PeerRole = m.peer.Role.String()
	}
	s.Fencing = map[fenceState]string{fenceNone: "none", fenceWaiting: "waiting (fence_delay)", fenceRunning: "running",
		fenceConfirmed: "peer confirmed off", fenceFailed: "failed: " + m.fenceErr}[m.fence]
	if !m.cfg.Fencing {
		s.Fencing = "no fence device"
	}
	if m.cfg.Witness {
		switch {
		case m.role == Active && m.leaseForced:
			s.Witness = "forced active by the operator: no lease"
		case m.role == Active && m.now.Before(m.leaseUntil):
			s.Witness = "lease until " + m.leaseUntil.UTC().Format(time.RFC3339Nano)
		case m.witnessWhy != "":
			s.Witness = m.witnessWhy
		default:
			s.Witness = "no lease"
		}
	}
	return s
}

func firstLate(late map[string]bool) string {
	for p, l := range late {
		if l {
			return p
		}
	}
	return ""
}

// Self is what this node says about itself in its heartbeats.
func (m *Machine) Self() PeerState {
	return PeerState{Node: m.cfg.Node, Role: m.role, Epoch: m.epoch, Log: m.local, Preferred: m.cfg.Preferred,
		Standby: m.standby || m.standbyHandoff, Takeover: m.wantsTakeover(), Handover: m.handover,
		Hears: m.heardRecently(), Leaving: m.leaving && m.role == Passive && m.busy == idle,
		AheadAlone: m.role == Active && m.aheadAlone}
}

func (m *Machine) wantsTakeover() bool {
	if m.role != Passive || m.standby || m.busy != idle {
		return false
	}
	if m.now.Before(m.takeoverUntil) {
		return true
	}
	// auto_failback: the preferred node, caught up, takes its role back.
	return m.cfg.AutoFailback && m.cfg.Preferred && m.peer.Role == Active && !m.peer.Preferred &&
		m.heardRecently() && m.local.Last >= m.peer.Log.Last && m.local.Last > 0
}

// Role is the node's current role.
func (m *Machine) Role() Role { return m.role }

// Epoch is the highest epoch this node knows.
func (m *Machine) Epoch() uint64 { return m.epoch }
