package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/twinbox/twinbox/failover/witness"
	"github.com/twinbox/twinbox/internal/fsutil"
)

// Node is what the driver changes: the node's replication role.
type Node interface {
	// Position is the local log's end (cheap: called every tick).
	Position() Position
	// PeerConfirmed is, on an active, the passive's confirmed position.
	PeerConfirmed() uint64
	// Promote applies the whole local log, then writes at epoch
	// (acknowledging alone if alone: the peer is fenced).
	Promote(ctx context.Context, epoch uint64, alone bool) error
	// Demote drains (SMTP 421, transactions in flight finish or fail
	// temporarily, IMAP BYE) and follows the peer. With handover it
	// first waits until the peer confirmed every entry, and returns the
	// position; if that fails it stays active and says why.
	Demote(ctx context.Context, handover bool) (uint64, error)
	// SetDegraded makes the active acknowledge alone, or not.
	SetDegraded(on bool)
	// AheadAlone: as the active, it acknowledged entries alone that the
	// passive has not confirmed yet.
	AheadAlone() bool
}

// Fencer shoots the peer and confirms it is off (fence.Fence with the
// configured device and timeout).
type Fencer interface {
	Fence(ctx context.Context) error
}

// Restorer is a Fencer that can power the fenced peer on again (the
// fence action reboot: off, then on). The driver restores the peer once
// this node is active after a takeover, so that the peer comes back as
// the passive instead of racing this node's promotion.
type Restorer interface {
	Restore(ctx context.Context) error
}

// DriverOptions configure a Driver.
type DriverOptions struct {
	Config Config
	Node   Node
	// Fencer is nil when no fence device is configured.
	Fencer Fencer
	// OnPromote and OnDemote are shell commands run after a promotion
	// and a demotion (drbdadm primary, mount, a service address), with
	// TWINBOX_ROLE, TWINBOX_EPOCH and TWINBOX_NODE set; HookTimeout
	// bounds each (a timeout is a failure).
	OnPromote, OnDemote string
	HookTimeout         time.Duration
	// StateFile keeps the epoch and the operator's standby across
	// restarts (fsynced before a promotion writes anything).
	StateFile string
	// Announce sends a heartbeat at once.
	Announce func()
	// Witness, when set, is asked for every promotion and pinged every
	// keepalive (Config.Witness).
	Witness *witness.Client
	Logger  *slog.Logger
}

// DefaultHookTimeout bounds on_promote and on_demote.
const DefaultHookTimeout = 30 * time.Second

// Driver runs a Machine: it feeds it ticks, heartbeats and results, and
// carries out its actions (fencing, role changes, hooks) in goroutines of
// its own, so the machine never waits on I/O.
type Driver struct {
	opts DriverOptions
	lg   *slog.Logger
	heat <-chan Heard

	results  chan any
	commands chan command
	stop     context.CancelFunc
	ctx      context.Context
	wg       sync.WaitGroup

	mu      sync.Mutex // guards what Status and Self read
	m       *Machine
	status  Status
	self    PeerState
	hookErr string

	pingNow chan struct{} // a ping to the witness at once (the role changed)

	persistMu sync.Mutex // one writer of the state file at a time
	persisted persistedState
}

type command struct {
	c     Command
	reply chan error
}

// persistedState is the StateFile.
type persistedState struct {
	Epoch   uint64 `json:"epoch"`
	Standby bool   `json:"standby"`
}

// LoadState reads a driver's state file: the highest epoch this node
// knew and the operator's standby. A missing file is the zero state.
func LoadState(path string) (epoch uint64, standby bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var s persistedState
	if err := json.Unmarshal(b, &s); err != nil {
		return 0, false, fmt.Errorf("failover: state file %s: %w", path, err)
	}
	return s.Epoch, s.Standby, nil
}

func saveState(path string, s persistedState) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, append(b, '\n'), 0o600)
}

// StartDriver starts a driver for a node starting passive; heard carries
// the peer's verified heartbeats.
func StartDriver(opts DriverOptions, heard <-chan Heard) (*Driver, error) {
	if opts.Node == nil {
		return nil, errors.New("failover: no node to drive")
	}
	opts.Config.Fencing = opts.Fencer != nil
	opts.Config.Witness = opts.Witness != nil
	opts.Config.EnsureDefaults()
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if opts.HookTimeout <= 0 {
		opts.HookTimeout = DefaultHookTimeout
	}
	if opts.Announce == nil {
		opts.Announce = func() {}
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	var epoch uint64
	var standby bool
	if opts.StateFile != "" {
		var err error
		if epoch, standby, err = LoadState(opts.StateFile); err != nil {
			return nil, err
		}
	}
	d := &Driver{opts: opts, lg: lg.With("component", "failover"), heat: heard,
		results: make(chan any, 4), commands: make(chan command)}
	pos := opts.Node.Position()
	d.m = New(opts.Config, time.Now(), max(epoch, pos.LastEpoch), standby)
	d.m.local = pos // what the first heartbeats say, before the first tick
	d.persisted = persistedState{Epoch: epoch, Standby: standby}
	d.publish()
	d.ctx, d.stop = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.run()
	if opts.Witness != nil {
		d.pingNow = make(chan struct{}, 1)
		d.wg.Go(d.pingWitness)
	}
	return d, nil
}

// tickEvery is how often the machine looks at the time: a tenth of the
// usual deadtime, well inside the 3 s failover budget.
func (d *Driver) tickEvery() time.Duration {
	return max(10*time.Millisecond, min(d.opts.Config.Keepalive/2, 100*time.Millisecond))
}

func (d *Driver) run() {
	defer d.wg.Done()
	t := time.NewTicker(d.tickEvery())
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case now := <-t.C:
			// Heartbeats that arrived before this tick count first: after
			// a pause of this process they are queued, and the peer must
			// not be judged on the clock alone.
			d.drainHeard()
			d.step(Tick{Now: now, Local: d.opts.Node.Position(), PeerConfirmed: d.opts.Node.PeerConfirmed(),
				AheadAlone: d.opts.Node.AheadAlone()})
		case h := <-d.heat:
			d.step(h)
		case r := <-d.results:
			d.step(r)
		case c := <-d.commands:
			d.mu.Lock()
			acts, err := d.m.Command(c.c)
			d.mu.Unlock()
			c.reply <- err
			d.do(acts)
		}
	}
}

func (d *Driver) drainHeard() {
	for {
		select {
		case h := <-d.heat:
			d.step(h)
		default:
			return
		}
	}
}

func (d *Driver) step(in any) {
	d.mu.Lock()
	acts := d.m.Step(in)
	d.mu.Unlock()
	d.do(acts)
}

// do carries out actions; the slow ones in goroutines that report back.
func (d *Driver) do(acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case Event:
			if a.Warn {
				d.lg.Warn(a.Msg)
			} else {
				d.lg.Info(a.Msg)
			}
		case Announce:
			d.opts.Announce()
			if d.pingNow != nil {
				select {
				case d.pingNow <- struct{}{}:
				default:
				}
			}
		case AskWitness:
			d.spawn(func(ctx context.Context) any {
				ctx, cancel := context.WithTimeout(ctx, d.opts.Config.Deadtime)
				defer cancel()
				return d.askWitness(ctx, witness.Request{Want: witness.Promote, Epoch: a.Epoch})
			})
		case SetDegraded:
			d.opts.Node.SetDegraded(a.On)
			if a.On {
				d.restorePeer()
			}
		case Fence:
			d.spawn(func(ctx context.Context) any {
				t0 := time.Now()
				err := d.opts.Fencer.Fence(ctx)
				d.lg.Info("fence agent done", "took", time.Since(t0).Round(time.Millisecond), "err", err)
				return FenceDone{Err: err}
			})
		case Promote:
			d.spawn(func(ctx context.Context) any { return d.promote(ctx, a) })
		case Demote:
			d.spawn(func(ctx context.Context) any { return d.demote(ctx, a) })
		}
	}
	d.publish()
}

// pingWitness tells the witness this node's role and epoch every
// keepalive, and at once after a role change; the answers renew the
// active's lease (Config.Witness).
func (d *Driver) pingWitness() {
	t := time.NewTicker(d.opts.Config.Keepalive)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		case <-d.pingNow:
		}
		self := d.Self()
		ctx, cancel := context.WithTimeout(d.ctx, d.opts.Config.Keepalive*2)
		r := d.askWitness(ctx, witness.Request{Want: witness.Ping, Epoch: self.Epoch, Active: self.Role == Active})
		cancel()
		select {
		case d.results <- r:
		case <-d.ctx.Done():
			return
		}
	}
}

// askWitness asks the witness and turns its answer into the machine's
// input.
func (d *Driver) askWitness(ctx context.Context, req witness.Request) WitnessReply {
	rep, sent, err := d.opts.Witness.Ask(ctx, req)
	if err != nil {
		return WitnessReply{Promote: req.Want == witness.Promote, Epoch: req.Epoch, Err: err}
	}
	return WitnessReply{Promote: req.Want == witness.Promote, Epoch: req.Epoch, Sent: sent, Granted: rep.Granted,
		Holder: rep.Holder, HolderEpoch: rep.Epoch, Why: rep.Why}
}

func (d *Driver) spawn(f func(ctx context.Context) any) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		r := f(d.ctx)
		select {
		case d.results <- r:
		case <-d.ctx.Done():
		}
	}()
}

func (d *Driver) promote(ctx context.Context, a Promote) PromoteDone {
	t0 := time.Now()
	// The epoch is on disk before anything is written at it.
	if err := d.persist(func(s *persistedState) { s.Epoch = max(s.Epoch, a.Epoch); s.Standby = false }); err != nil {
		return PromoteDone{Err: fmt.Errorf("persist epoch %d: %w", a.Epoch, err)}
	}
	if err := d.opts.Node.Promote(ctx, a.Epoch, a.Alone); err != nil {
		return PromoteDone{Err: err}
	}
	d.lg.Warn("promoted: this node is the active", "epoch", a.Epoch, "alone", a.Alone, "took", time.Since(t0).Round(time.Millisecond))
	if err := d.hook(ctx, "on_promote", d.opts.OnPromote, "active", a.Epoch); err != nil {
		// Without its system volume or service address the node must
		// not go on as the active: step down and say why.
		if _, derr := d.opts.Node.Demote(ctx, false); derr != nil {
			err = errors.Join(err, fmt.Errorf("and stepping down failed: %w", derr))
		}
		return PromoteDone{Err: err}
	}
	if a.Alone {
		d.restorePeer()
	}
	return PromoteDone{Epoch: a.Epoch}
}

// restorePeer powers the fenced peer on again, in the background, when
// the fence device can (Restorer): this node has taken what it fenced
// for (the active role, or acknowledging alone), and the peer comes back
// as the passive.
func (d *Driver) restorePeer() {
	r, ok := d.opts.Fencer.(Restorer)
	if !ok {
		return
	}
	d.wg.Go(func() {
		if err := r.Restore(d.ctx); err != nil {
			d.lg.Warn("powering the fenced peer on again failed; it stays off", "err", err)
		} else {
			d.lg.Info("powered the fenced peer on again (fence action reboot)")
		}
	})
}

func (d *Driver) demote(ctx context.Context, a Demote) DemoteDone {
	t0 := time.Now()
	at, err := d.opts.Node.Demote(ctx, a.Handover)
	if err != nil {
		return DemoteDone{Err: err}
	}
	d.lg.Warn("demoted: this node is a passive", "reason", a.Reason, "handover", at, "took", time.Since(t0).Round(time.Millisecond))
	if err := d.hook(ctx, "on_demote", d.opts.OnDemote, "passive", d.Status().Epoch); err != nil {
		d.lg.Error("on_demote failed; the node is passive all the same", "err", err)
	}
	return DemoteDone{Handover: at}
}

// hook runs a role change's shell command; a failure or a timeout is an
// error with the command's last output.
func (d *Driver) hook(ctx context.Context, name, script, role string, epoch uint64) error {
	d.mu.Lock()
	d.hookErr = ""
	d.mu.Unlock()
	if script == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.HookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), "TWINBOX_ROLE="+role, "TWINBOX_EPOCH="+strconv.FormatUint(epoch, 10),
		"TWINBOX_NODE="+d.opts.Config.Node)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		d.lg.Info(name+" done", "command", script)
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v", d.opts.HookTimeout)
	}
	tail := bytes.TrimSpace(out.Bytes())
	if len(tail) > 300 {
		tail = tail[len(tail)-300:]
	}
	err = fmt.Errorf("failover: %s %q: %w: %s", name, script, err, tail)
	d.mu.Lock()
	d.hookErr = err.Error()
	d.mu.Unlock()
	d.lg.Error(name+" failed", "err", err)
	return err
}

// persist updates the state file (fsynced) if the state changed.
func (d *Driver) persist(change func(*persistedState)) error {
	d.persistMu.Lock()
	defer d.persistMu.Unlock()
	s := d.persisted
	change(&s)
	if d.opts.StateFile == "" || s == d.persisted {
		return nil
	}
	if err := saveState(d.opts.StateFile, s); err != nil {
		return err
	}
	d.persisted = s
	return nil
}

// publish copies what Status and Self report, and keeps the state file
// up with epochs learnt from the peer and the operator's standby.
func (d *Driver) publish() {
	d.mu.Lock()
	d.status = d.m.Status()
	d.self = d.m.Self()
	epoch, standby := d.m.Epoch(), d.m.standby
	d.mu.Unlock()
	if err := d.persist(func(s *persistedState) { s.Epoch = max(s.Epoch, epoch); s.Standby = standby }); err != nil {
		d.lg.Error("persist the failover state", "err", err)
	}
}

// Command runs an operator's command; the error says why it cannot be
// done now.
func (d *Driver) Command(ctx context.Context, c Command) error {
	r := command{c: c, reply: make(chan error, 1)}
	select {
	case d.commands <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.ctx.Done():
		return errors.New("failover: stopped")
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Leave is a clean shutdown (Heartbeat's): an active hands over to a
// live passive first (a switchover, bounded by ctx), then the node says
// it is leaving, so its peer goes on without fencing it. It reports
// whether the node ended passive; an active that could not hand over
// stays silent about leaving, and its peer will fence it as for a crash.
func (d *Driver) Leave(ctx context.Context) bool {
	// No automatic role change from now on: a node that handed over must
	// not take the role back because its peer is leaving too.
	d.mu.Lock()
	d.m.Leave()
	d.mu.Unlock()
	if d.Status().Role == "active" {
		if err := d.Command(ctx, CmdSwitchover); err != nil {
			d.lg.Warn("shutting down as the active without a handover", "why", err)
			return false
		}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for d.Status().Role == "active" || d.Status().Busy != "" {
			select {
			case <-ctx.Done():
				d.lg.Warn("shutting down as the active: the handover did not finish", "err", ctx.Err())
				return false
			case <-t.C:
			}
		}
	}
	d.publish()
	d.opts.Announce()
	return true
}

// Status is the machine's state, with the last hook failure.
func (d *Driver) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.status
	if d.hookErr != "" {
		s.Reason = joinReason(s.Reason, d.hookErr)
	}
	return s
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// Self is what the node says in its heartbeats.
func (d *Driver) Self() PeerState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.self
}

// Close stops the driver and waits for what it started (a fence agent or
// a role change in progress is cancelled).
func (d *Driver) Close() {
	d.stop()
	d.wg.Wait()
}
