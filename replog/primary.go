package replog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twinbox/twinbox/store"
)

// DefaultPeerTimeout is how long a synchronous commit waits for the
// passive's confirmation before the client is told to retry.
const DefaultPeerTimeout = 5 * time.Second

// PrimaryOptions configure the active's write path.
type PrimaryOptions struct {
	// Epoch is this active's epoch, stored in every entry it writes.
	Epoch uint64
	// Async acknowledges once the local log and store have the change,
	// without waiting for the passive (an explicit opt-in; the default
	// waits, DRBD's protocol C).
	Async bool
	// PeerTimeout bounds the wait for the passive; 0 means
	// DefaultPeerTimeout.
	PeerTimeout time.Duration
	// OnApplied, if set, is told of every applied entry in log order:
	// the log's tail applied by NewPrimary, then every commit's (under
	// the commit's lock, so it must be quick and must not call back).
	OnApplied AppliedFunc
	Logger    *slog.Logger
}

// AppliedFunc is told of an entry applied to the store, with its result
// and the tag its writer gave it (CommitTagged; nil otherwise).
type AppliedFunc func(e *Entry, res *store.Result, tag any)

// Committed is the outcome of one operation of a commit.
type Committed struct {
	store.Result
	// Seq is the log entry where the operation applied: WaitPeer(Seq)
	// tells when the passive holds it.
	Seq uint64
}

// Primary is the active's write path: every change is appended to the
// local log (fsynced), applied to the store, and confirmed by the passive.
type Primary struct {
	log  *Log
	st   *store.Store
	nc   *nats.Conn
	opts PrimaryOptions
	lg   *slog.Logger

	mu         sync.Mutex // one commit at a time: numbering, appending, applying
	next       uint64
	lastEpoch  uint64 // epoch of the entry before next
	lastRecord uint64 // the log's last record as this writer knows it
	broken     error

	// degraded: the passive is fenced, acknowledge on this node alone.
	degraded atomic.Bool
	// aloneUpTo is the last entry acknowledged while degraded: until the
	// passive confirms it, the passive lacks acknowledged writes.
	aloneUpTo atomic.Uint64
	closed    chan struct{} // closed by Close: waits for the passive end
	closeOne  sync.Once

	appends, appendNanos     atomic.Uint64 // local log appends (one per commit) and their time
	peerWaits, peerWaitNanos atomic.Uint64 // confirmed waits for the passive and their time

	posMu   sync.Mutex
	peerPos uint64
	peerAt  time.Time
	posCh   chan struct{} // closed when peerPos advances
	sub     *nats.Subscription
}

// NewPrimary makes this node the writer of the log at the given epoch. It
// first brings the store up to the log (entries appended but not applied
// before a crash), and listens for the passive's positions on nc (a
// connection to this node's server).
func NewPrimary(ctx context.Context, l *Log, st *store.Store, nc *nats.Conn, opts *PrimaryOptions) (*Primary, error) {
	p := &Primary{log: l, st: st, nc: nc, posCh: make(chan struct{}), closed: make(chan struct{})}
	if opts != nil {
		p.opts = *opts
	}
	if p.opts.PeerTimeout <= 0 {
		p.opts.PeerTimeout = DefaultPeerTimeout
	}
	p.lg = p.opts.Logger
	if p.lg == nil {
		p.lg = slog.New(slog.DiscardHandler)
	}
	p.lg = p.lg.With("component", "replog", "role", "active")
	next, last, err := catchUp(ctx, l, st, p.opts.OnApplied)
	if err != nil {
		return nil, err
	}
	p.next, p.lastRecord = next, last
	p.lastEpoch = p.opts.Epoch
	if next > 1 {
		if e, err := l.Get(ctx, next-1); err == nil {
			p.lastEpoch = e.Epoch
		} else if !errors.Is(err, ErrNoSuchEntry) {
			return nil, err
		}
	}
	if p.lastEpoch > p.opts.Epoch {
		return nil, fmt.Errorf("%w: the log's last entry has epoch %d, above this writer's %d", ErrStaleEpoch, p.lastEpoch, p.opts.Epoch)
	}
	p.sub, err = nc.Subscribe(PositionSubject, p.onPosition)
	if err != nil {
		return nil, fmt.Errorf("replog: subscribe to positions: %w", err)
	}
	return p, nil
}

// catchUp applies the local log's entries the store lacks and returns the
// next sequence to write and the log's last record. An empty log (a new
// node, or a standalone node's store now replicated) starts after the
// store's position.
func catchUp(ctx context.Context, l *Log, st *store.Store, onApplied AppliedFunc) (next, lastRecord uint64, err error) {
	state, err := l.State(ctx)
	if err != nil {
		return 0, 0, err
	}
	applied := st.AppliedSeq()
	if state.Last == 0 {
		return applied + 1, state.LastRecord, nil
	}
	if state.Last < applied {
		return 0, 0, fmt.Errorf("%w: the store has applied %d but the log ends at %d", ErrGap, applied, state.Last)
	}
	if state.First > applied+1 {
		return 0, 0, fmt.Errorf("%w: the store is at %d, the log starts at %d", ErrLogTrimmed, applied, state.First)
	}
	err = l.Replay(ctx, applied+1, state.Last, func(e *Entry) error {
		res, err := st.Apply(ctx, e.storeEntry())
		if err != nil {
			return fmt.Errorf("replog: catch up entry %d: %w", e.Seq, err)
		}
		if onApplied != nil {
			onApplied(e, &res[0], nil)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return state.Last + 1, state.LastRecord, nil
}

func (p *Primary) onPosition(m *nats.Msg) {
	if len(m.Data) < 8 {
		return
	}
	pos := binary.BigEndian.Uint64(m.Data)
	p.posMu.Lock()
	p.peerAt = time.Now()
	if pos > p.peerPos {
		p.peerPos = pos
		close(p.posCh)
		p.posCh = make(chan struct{})
	}
	p.posMu.Unlock()
}

// PeerPosition is the passive's last reported durable position and when
// it was reported.
func (p *Primary) PeerPosition() (uint64, time.Time) {
	p.posMu.Lock()
	defer p.posMu.Unlock()
	return p.peerPos, p.peerAt
}

// Commit writes ops as consecutive log entries, appended and fsynced in the
// local log, and applies them to the store. It does not wait for the
// passive: the caller acknowledges a client only after WaitPeer(Seq), so
// that the next batch is written while this one travels (the wait is the
// longest part of a commit, and commits are one at a time). The store is
// applied without its own fsync (store.ApplyLogged): the log is durable,
// and a restart replays its tail. The error reports a failure of the log or
// store, in which case nothing of the batch was acknowledged.
func (p *Primary) Commit(ctx context.Context, ops []store.Op) ([]Committed, error) {
	return p.CommitTagged(ctx, ops, nil)
}

// CommitTagged is Commit with a tag per operation (or nil), handed back
// to OnApplied with the operation's entry: the caller's own value (who
// made the change), never logged nor sent.
func (p *Primary) CommitTagged(ctx context.Context, ops []store.Op, tags []any) ([]Committed, error) {
	p.mu.Lock()
	if p.broken != nil {
		p.mu.Unlock()
		return nil, p.broken
	}
	now := time.Now().UnixNano()
	var entries []Entry
	applied := make([]Entry, len(ops)) // the entry where each op applies
	sentries := make([]store.Entry, len(ops))
	seq := p.next
	collecting := false // a Collect earlier in this batch may delete what the store holds now
	for i, op := range ops {
		if _, ok := op.(*store.Collect); ok {
			collecting = true
		}
		if !collecting {
			op = p.thin(op)
		}
		es := Split(p.opts.Epoch, seq, now, op)
		entries = append(entries, es...)
		seq += uint64(len(es))
		applied[i] = es[len(es)-1]
		sentries[i] = applied[i].storeEntry()
	}
	t0 := time.Now()
	last, err := p.log.Append(ctx, p.lastRecord, entries)
	p.appends.Add(1)
	p.appendNanos.Add(uint64(time.Since(t0)))
	if err != nil {
		// Some entries may be in the log: bring the store and the
		// numbering back in line with it before anything else is written.
		p.recoverLocked(ctx, err)
		p.mu.Unlock()
		return nil, err
	}
	results, err := p.st.ApplyLogged(ctx, sentries...)
	if err != nil {
		p.broken = fmt.Errorf("replog: store failed; restart the node: %w", err)
		p.mu.Unlock()
		return nil, err
	}
	p.next, p.lastRecord, p.lastEpoch = seq, last, p.opts.Epoch
	if p.opts.OnApplied != nil {
		for i := range applied {
			var tag any
			if i < len(tags) {
				tag = tags[i]
			}
			p.opts.OnApplied(&applied[i], &results[i], tag)
		}
	}
	p.mu.Unlock()
	out := make([]Committed, len(results))
	for i, r := range results {
		out[i] = Committed{Result: r, Seq: applied[i].Seq}
	}
	return out, nil
}

// WaitPeer waits until the passive reports seq durable, at most
// PeerTimeout; in async mode it returns at once. An ErrPeerTimeout means
// the change is applied here but not known to be on the passive: the
// client must be told to retry.
//
// Degraded (the passive fenced), it returns at once too, and so do waits
// in progress when degraded mode starts: DRBD's resource-and-stonith lets
// the survivor go on alone once its peer is confirmed off. A wait ended
// by Close fails with ErrNotActive.
func (p *Primary) WaitPeer(ctx context.Context, seq uint64) error {
	if p.opts.Async {
		return nil
	}
	if p.degraded.Load() {
		p.ackedAlone(seq)
		return nil
	}
	return p.waitPeer(ctx, seq)
}

// ackedAlone records that seq was acknowledged without the passive.
func (p *Primary) ackedAlone(seq uint64) {
	for {
		cur := p.aloneUpTo.Load()
		if seq <= cur || p.aloneUpTo.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// AheadAlone reports whether this active acknowledged entries (degraded)
// that its passive has not confirmed: the passive must not take over by
// itself then (DRBD's outdated peer), or acknowledged writes would be lost.
func (p *Primary) AheadAlone() bool {
	pos, _ := p.PeerPosition()
	return pos < p.aloneUpTo.Load()
}

// SetDegraded makes the active acknowledge without its passive (on: the
// passive is confirmed off) or wait for it again (off: it caught up).
func (p *Primary) SetDegraded(on bool) {
	p.degraded.Store(on)
	if on {
		p.posMu.Lock()
		close(p.posCh) // wake the waits: they end now
		p.posCh = make(chan struct{})
		p.posMu.Unlock()
	}
}

// Degraded reports whether the active acknowledges alone.
func (p *Primary) Degraded() bool { return p.degraded.Load() }

// Last is the log's last entry and its epoch, as this writer knows them.
func (p *Primary) Last() (seq, epoch uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next - 1, p.lastEpoch
}

// thin sends a delivered body once: one the store already holds (so the
// passive, at the same position, holds it too) travels as a reference, and
// so does each part blob already held (a forwarded attachment). Called
// under p.mu, in log order, and only before any Collect of the same batch:
// the store's state is the one before the batch applies, and a Collect can
// delete an unreferenced body that a later delivery of the batch brings
// back.
func (p *Primary) thin(op store.Op) store.Op {
	d, ok := op.(*store.Deliver)
	if !ok || d.Body.Stored {
		return op
	}
	if has, err := p.st.HasBody(d.Body.ID); err == nil && has {
		c := *d
		c.Body = d.Body.Reference()
		return &c
	}
	var parts []store.PartBlob
	for i, pt := range d.Body.Parts {
		if pt.Data == nil {
			continue
		}
		if has, err := p.st.HasPart(pt.ID); err == nil && has {
			if parts == nil {
				parts = append([]store.PartBlob(nil), d.Body.Parts...)
			}
			parts[i].Data = nil
		}
	}
	if parts == nil {
		return op
	}
	c := *d
	c.Body.Parts = parts
	return &c
}

func (p *Primary) recoverLocked(ctx context.Context, cause error) {
	next, last, err := catchUp(ctx, p.log, p.st, p.opts.OnApplied)
	if err != nil || errors.Is(cause, ErrStaleWriter) {
		if err == nil {
			err = cause
		}
		p.broken = fmt.Errorf("replog: this writer stopped: %w", err)
		p.lg.Error("log writer stopped", "err", err)
		return
	}
	p.next, p.lastRecord = next, last
}

// PrimaryStats are the active's write-path timings since it started.
type PrimaryStats struct {
	// Appends is how many commits appended to the local log, taking
	// AppendTime in all (the write and its fsync).
	Appends    uint64
	AppendTime time.Duration
	// PeerWaits is how many waits for the passive ended confirmed,
	// taking PeerWaitTime in all: what sync replication adds after the
	// local commit.
	PeerWaits    uint64
	PeerWaitTime time.Duration
}

// Stats returns the write-path timings.
func (p *Primary) Stats() PrimaryStats {
	return PrimaryStats{
		Appends: p.appends.Load(), AppendTime: time.Duration(p.appendNanos.Load()),
		PeerWaits: p.peerWaits.Load(), PeerWaitTime: time.Duration(p.peerWaitNanos.Load()),
	}
}

// waitPeer waits until the passive reports seq durable.
func (p *Primary) waitPeer(ctx context.Context, seq uint64) error {
	t0 := time.Now()
	t := time.NewTimer(p.opts.PeerTimeout)
	defer t.Stop()
	for {
		p.posMu.Lock()
		pos, ch := p.peerPos, p.posCh
		p.posMu.Unlock()
		if p.degraded.Load() {
			p.ackedAlone(seq)
			return nil
		}
		if pos >= seq {
			p.peerWaits.Add(1)
			p.peerWaitNanos.Add(uint64(time.Since(t0)))
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
			return fmt.Errorf("%w: entry %d (passive at %d after %v)", ErrPeerTimeout, seq, pos, p.opts.PeerTimeout)
		case <-ctx.Done():
			return fmt.Errorf("%w: entry %d: %v", ErrPeerTimeout, seq, ctx.Err())
		case <-p.closed:
			return fmt.Errorf("%w: entry %d not confirmed by the passive", ErrNotActive, seq)
		}
	}
}

// Close stops writing: later commits fail, and waits for the passive end
// with ErrNotActive. It then stops listening for positions.
func (p *Primary) Close() error {
	p.closeOne.Do(func() { close(p.closed) })
	p.mu.Lock()
	if p.broken == nil {
		p.broken = ErrNotActive
	}
	p.mu.Unlock()
	if p.sub != nil {
		return p.sub.Unsubscribe()
	}
	return nil
}

// Retain trims the log below what the passive has confirmed, keeping keep
// entries before that: an entry the passive still needs is never trimmed,
// and nothing is trimmed before the passive has reported at all.
func (p *Primary) Retain(ctx context.Context, keep uint64) error {
	pos, _ := p.PeerPosition()
	if applied := p.st.AppliedSeq(); applied < pos {
		pos = applied
	}
	if pos <= keep {
		return nil
	}
	return p.log.Trim(ctx, pos-keep+1)
}
