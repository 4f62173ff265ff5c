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
	// Observe, if set, is told how long each local append took (stage
	// "append") and each confirmed wait for the passive ("peer_wait"),
	// for latency histograms. It must be quick.
	Observe func(stage string, d time.Duration)
	Logger  *slog.Logger
}

// AppliedFunc is told of an entry applied to the store, with its result
// and the tag its writer gave it (CommitTagged; nil otherwise).
type AppliedFunc func(e *Entry, res *store.Result, tag any)

// Committed is one operation of a commit: its place in the log, and its
// outcome once applied (Result).
type Committed struct {
	// Seq is the log entry where the operation applies: WaitPeer(Seq)
	// tells when the passive holds it.
	Seq uint64
	p   *pending
}

// pending is a committed operation waiting to be applied.
type pending struct {
	seq     uint64
	timeout time.Duration
	closed  <-chan struct{}
	primary *Primary // for the wait's statistics
	mu      sync.Mutex
	claimed bool // the applier took it: it applies now
	gaveUp  bool // its writer was told to retry before it applied
	done    chan struct{}
	res     store.Result
	err     error
}

// Result waits until the operation is applied and returns its result. An
// operation applies once the passive holds it (sync mode), or at once when
// this node acknowledges alone or in async mode. After PeerTimeout without
// it, Result gives up with ErrPeerTimeout: the entry stays in the log and
// applies when the passive confirms it, but the client must be told to
// retry, and the entry is recorded as not acknowledged. A closed writer
// fails it with ErrNotActive.
func (c Committed) Result(ctx context.Context) (store.Result, error) {
	pd := c.p
	t0 := time.Now()
	t := time.NewTimer(pd.timeout)
	defer t.Stop()
	var why error
	for why == nil {
		pd.primary.posMu.Lock()
		progress := pd.primary.posCh
		pd.primary.posMu.Unlock()
		select {
		case <-pd.done:
			if pd.err == nil {
				took := time.Since(t0)
				pd.primary.peerWaits.Add(1)
				pd.primary.peerWaitNanos.Add(uint64(took))
				if o := pd.primary.opts.Observe; o != nil {
					o("peer_wait", took)
				}
			}
			return pd.res, pd.err
		case <-progress:
			// The passive moved on (a large operation's chunks arriving
			// one by one, say): PeerTimeout measures a lack of progress,
			// not the length of the transfer.
			t.Reset(pd.timeout)
		case <-t.C:
			why = fmt.Errorf("%w: entry %d not confirmed: the passive made no progress for %v", ErrPeerTimeout, pd.seq, pd.timeout)
		case <-ctx.Done():
			why = fmt.Errorf("%w: entry %d: %v", ErrPeerTimeout, pd.seq, ctx.Err())
		case <-pd.closed:
			why = fmt.Errorf("%w: entry %d not confirmed by the passive", ErrNotActive, pd.seq)
		}
	}
	pd.mu.Lock()
	if pd.claimed {
		pd.mu.Unlock()
		<-pd.done // it is being applied now
		return pd.res, pd.err
	}
	pd.gaveUp = true
	pd.mu.Unlock()
	return store.Result{Seq: pd.seq}, why
}

func (pd *pending) resolve(res store.Result, err error) {
	pd.res, pd.err = res, err
	close(pd.done)
}

// queued is an entry appended to the log and waiting to be applied.
type queued struct {
	e   Entry // a whole operation: its last chunk's sequence
	tag any
	p   *pending // nil for entries no writer waits for
}

// Primary is the active's write path: every change is appended to the
// local log (fsynced), applied to the store once the passive holds it (or
// at once, tentatively, when acknowledging alone or in async mode).
type Primary struct {
	log  *Log
	st   *store.Store
	nc   *nats.Conn
	opts PrimaryOptions
	lg   *slog.Logger

	mu         sync.Mutex // one commit at a time: numbering, appending
	next       uint64
	lastEpoch  uint64 // epoch of the entry before next
	lastRecord uint64 // the log's last record as this writer knows it
	broken     error

	// The apply queue: entries in the log, not yet applied, in log order
	// (see Committed.Result), and what thinning must know of them.
	qmu        sync.Mutex
	queue      []queued
	qwake      chan struct{}
	bodies     map[store.BlobID]int // bodies delivered by queued entries
	collecting int                  // queued Collects
	applierErr error
	applierEnd chan struct{}

	// degraded: the passive is fenced, acknowledge on this node alone.
	degraded atomic.Bool
	// aloneUpTo is the last entry acknowledged while degraded: until the
	// passive confirms it, the passive lacks acknowledged writes.
	aloneUpTo atomic.Uint64
	closed    chan struct{} // closed by Close: waits for the passive end
	closeOne  sync.Once

	appends, appendNanos     atomic.Uint64 // local log appends (one per commit) and their time
	peerWaits, peerWaitNanos atomic.Uint64 // confirmed waits for the passive and their time

	// firstOwn is the first entry this writer numbered.
	firstOwn uint64

	posMu        sync.Mutex
	peerActivity uint64
	peerPos      uint64
	peerAt       time.Time
	posCh        chan struct{} // closed when peerPos advances
	sub          *nats.Subscription
	wsub         *nats.Subscription // WriterSubject
}

// NewPrimary makes this node the writer of the log at the given epoch. It
// first brings the store up to the log (entries appended but not applied
// before a crash), and listens for the passive's positions on nc (a
// connection to this node's server).
func NewPrimary(ctx context.Context, l *Log, st *store.Store, nc *nats.Conn, opts *PrimaryOptions) (*Primary, error) {
	p := &Primary{log: l, st: st, nc: nc, posCh: make(chan struct{}), closed: make(chan struct{}),
		qwake: make(chan struct{}, 1), bodies: map[store.BlobID]int{}, applierEnd: make(chan struct{})}
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
	p.firstOwn = next
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
	// A passive whose log holds pushed entries past this log's end asks
	// which epoch writes here: only this writer may still store them.
	p.wsub, err = nc.Subscribe(WriterSubject, func(m *nats.Msg) {
		_ = m.Respond(binary.BigEndian.AppendUint64(nil, p.opts.Epoch))
	})
	if err != nil {
		p.sub.Unsubscribe()
		return nil, fmt.Errorf("replog: answer for the writer: %w", err)
	}
	go p.applier()
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
	if len(m.Data) < 16 {
		return
	}
	pos, epoch := binary.BigEndian.Uint64(m.Data), binary.BigEndian.Uint64(m.Data[8:])
	if pos >= p.firstOwn && epoch < p.opts.Epoch {
		// A position over this writer's entries from a passive that has
		// none of them: its log holds other entries there (a diverged
		// tail it has not set aside yet). It confirms nothing.
		return
	}
	var activity uint64
	if len(m.Data) >= 24 {
		activity = binary.BigEndian.Uint64(m.Data[16:])
	}
	p.posMu.Lock()
	p.peerAt = time.Now()
	if pos > p.peerPos || activity != p.peerActivity {
		// Progress: waits start their PeerTimeout again.
		p.peerPos = max(p.peerPos, pos)
		p.peerActivity = activity
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
// local log, and queues them to be applied to the store: once the passive
// holds them (so that nothing a client can see is missing on the node that
// would take over), or at once when this node acknowledges alone (its
// passive fenced) or in async mode — then tentatively, with undo records
// (store.ApplyTentative), since a diverged tail may have to be taken back.
// Each Committed's Result waits for its operation's outcome. Commit does
// not wait for the passive: the next batch is written while this one
// travels. The error reports a failure of the log, in which case nothing
// of the batch was acknowledged.
func (p *Primary) Commit(ctx context.Context, ops []store.Op) ([]Committed, error) {
	return p.CommitTagged(ctx, ops, nil)
}

// CommitTagged is Commit with a tag per operation (or nil), handed back
// to OnApplied with the operation's entry: the caller's own value (who
// made the change), never logged nor sent.
func (p *Primary) CommitTagged(ctx context.Context, ops []store.Op, tags []any) ([]Committed, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		return nil, p.broken
	}
	now := time.Now().UnixNano()
	var entries []Entry
	whole := make([]Entry, len(ops)) // the entry where each op applies
	seq := p.next
	p.qmu.Lock()
	collecting := p.collecting > 0 // a queued Collect may delete what the store holds now
	p.qmu.Unlock()
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
		whole[i] = es[len(es)-1]
	}
	t0 := time.Now()
	records, data := encodeRecords(entries)
	// The records go to the passive now, while this node appends them
	// (DRBD's protocol C: the two writes run side by side). A record lost
	// on the way is read from this node's log instead.
	for _, d := range data {
		_ = p.nc.Publish(PushSubject, d)
	}
	pushed := entries[len(entries)-1].Seq
	last, err := p.log.appendEncoded(ctx, p.lastRecord, records, data)
	took := time.Since(t0)
	p.appends.Add(1)
	p.appendNanos.Add(uint64(took))
	if p.opts.Observe != nil {
		p.opts.Observe("append", took)
	}
	if err != nil {
		// Some entries may be in the log: queue what the log holds, and
		// number after it, before anything else is written.
		p.recoverLocked(ctx, err, pushed)
		return nil, err
	}
	p.next, p.lastRecord, p.lastEpoch = seq, last, p.opts.Epoch
	out := make([]Committed, len(ops))
	q := make([]queued, len(ops))
	for i := range whole {
		var tag any
		if i < len(tags) {
			tag = tags[i]
		}
		pd := &pending{seq: whole[i].Seq, timeout: p.opts.PeerTimeout, closed: p.closed, primary: p, done: make(chan struct{})}
		q[i] = queued{e: whole[i], tag: tag, p: pd}
		out[i] = Committed{Seq: whole[i].Seq, p: pd}
	}
	p.enqueue(q)
	return out, nil
}

// enqueue adds entries to the apply queue and wakes the applier.
func (p *Primary) enqueue(q []queued) {
	p.qmu.Lock()
	for _, e := range q {
		switch op := e.e.Op.(type) {
		case *store.Collect:
			p.collecting++
		case *store.Deliver:
			p.bodies[op.Body.ID]++
		}
	}
	p.queue = append(p.queue, q...)
	p.qmu.Unlock()
	p.wakeApplier()
}

func (p *Primary) wakeApplier() {
	select {
	case p.qwake <- struct{}{}:
	default:
	}
}

// applier applies queued entries in log order, as Commit says, until the
// writer closes. A store failure stops it: the writer is then broken.
func (p *Primary) applier() {
	defer close(p.applierEnd)
	ctx := context.Background()
	var confirmed uint64 // the position up to which the store was told the passive holds it
	for {
		p.posMu.Lock()
		pos, posCh := p.peerPos, p.posCh
		p.posMu.Unlock()
		alone := p.opts.Async || p.degraded.Load()
		p.qmu.Lock()
		n := 0
		for n < len(p.queue) && (alone || p.queue[n].e.Seq <= pos) {
			n++
		}
		batch := p.queue[:n:n]
		p.queue = p.queue[n:]
		p.qmu.Unlock()
		if n > 0 {
			if err := p.apply(ctx, batch, pos); err != nil {
				p.fail(err)
				return
			}
			continue
		}
		if pos > confirmed {
			// The passive holds these now: they can no longer be taken
			// back, and their undo records go.
			if err := p.st.Confirm(ctx, pos); err != nil {
				p.lg.Warn("forget the undo records of confirmed entries", "err", err)
			}
			confirmed = pos
		}
		select {
		case <-p.qwake:
		case <-posCh:
		case <-p.closed:
			p.failQueue(fmt.Errorf("%w: not confirmed by the passive", ErrNotActive))
			return
		}
	}
}

// apply applies a batch taken from the queue: firmly what the passive
// holds (at or below pos), tentatively the rest (alone or async), with
// whether each entry's writer is still waiting (acknowledged) or gave up.
func (p *Primary) apply(ctx context.Context, batch []queued, pos uint64) error {
	var firm, tent []store.Entry
	var acked []bool
	for _, q := range batch {
		ack := true
		if q.p != nil {
			q.p.mu.Lock()
			q.p.claimed = true
			ack = !q.p.gaveUp
			q.p.mu.Unlock()
		} else {
			ack = false // no writer waits: nobody was told
		}
		if q.e.Seq <= pos {
			firm = append(firm, q.e.storeEntry())
			continue
		}
		tent = append(tent, q.e.storeEntry())
		acked = append(acked, ack)
	}
	var results []store.Result
	if len(firm) > 0 {
		r, err := p.st.ApplyLogged(ctx, firm...)
		if err != nil {
			return p.applyFailed(batch, err)
		}
		results = append(results, r...)
	}
	if len(tent) > 0 {
		r, err := p.st.ApplyTentative(ctx, tent, acked)
		if err != nil {
			return p.applyFailed(batch, err)
		}
		results = append(results, r...)
		if !p.opts.Async {
			// Acknowledged alone (degraded): the passive lacks them.
			for i, e := range tent {
				if acked[i] {
					p.ackedAlone(e.Seq)
				}
			}
		}
	}
	p.qmu.Lock()
	for _, q := range batch {
		switch op := q.e.Op.(type) {
		case *store.Collect:
			p.collecting--
		case *store.Deliver:
			if p.bodies[op.Body.ID]--; p.bodies[op.Body.ID] <= 0 {
				delete(p.bodies, op.Body.ID)
			}
		}
	}
	p.qmu.Unlock()
	for i := range batch {
		q := &batch[i]
		if p.opts.OnApplied != nil {
			p.opts.OnApplied(&q.e, &results[i], q.tag)
		}
		if q.p != nil {
			q.p.resolve(results[i], nil)
		}
	}
	return nil
}

func (p *Primary) applyFailed(batch []queued, err error) error {
	err = fmt.Errorf("replog: store failed; restart the node: %w", err)
	for _, q := range batch {
		if q.p != nil {
			q.p.resolve(store.Result{Seq: q.e.Seq}, err)
		}
	}
	return err
}

// fail stops the writer after a store failure.
func (p *Primary) fail(err error) {
	p.lg.Error("applying the log failed; this writer stopped", "err", err)
	p.mu.Lock()
	if p.broken == nil {
		p.broken = err
	}
	p.mu.Unlock()
	p.qmu.Lock()
	p.applierErr = err
	p.qmu.Unlock()
	p.failQueue(err)
}

// failQueue fails every queued entry's writer with err.
func (p *Primary) failQueue(err error) {
	p.qmu.Lock()
	q := p.queue
	p.queue = nil
	p.qmu.Unlock()
	for _, e := range q {
		if e.p != nil {
			e.p.resolve(store.Result{Seq: e.e.Seq}, err)
		}
	}
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

// thin sends a delivered body once: one the store already holds, or that
// a queued delivery brings (so the passive, applying the log in order,
// holds it too), travels as a reference, and so does each part blob
// already held (a forwarded attachment). Called under p.mu, in log order,
// and only while no Collect is queued or earlier in the batch: a Collect
// can delete an unreferenced body that a later delivery brings back.
func (p *Primary) thin(op store.Op) store.Op {
	d, ok := op.(*store.Deliver)
	if !ok || d.Body.Stored {
		return op
	}
	p.qmu.Lock()
	queued := p.bodies[d.Body.ID] > 0
	p.qmu.Unlock()
	if has, err := p.st.HasBody(d.Body.ID); queued || (err == nil && has) {
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

// recoverLocked brings the numbering back in line with the log after a
// failed append: entries the log took are queued to apply like any other
// (no writer waits for them), and the next entry follows the log's last.
//
// Entries up to pushed were sent to the passive, which may hold them: any
// of them this log lacks must never be numbered again at this epoch (the
// passive's copy would look like the new entry, and the divergence check
// compares epochs). So a log that lost part of what was pushed stops this
// writer: a new epoch must follow, whose entries tell the two apart.
func (p *Primary) recoverLocked(ctx context.Context, cause error, pushed uint64) {
	err := cause
	if !errors.Is(cause, ErrStaleWriter) {
		err = p.requeueLocked(ctx)
	}
	if err == nil && p.next <= pushed {
		err = fmt.Errorf("entries %d..%d were sent to the passive but are not in this node's log (%v); writing again needs a new epoch", p.next, pushed, cause)
	}
	if err != nil {
		p.broken = fmt.Errorf("replog: this writer stopped: %w", err)
		p.lg.Error("log writer stopped", "err", err)
	}
}

// requeueLocked queues the log's entries from p.next on.
func (p *Primary) requeueLocked(ctx context.Context) error {
	state, err := p.log.State(ctx)
	if err != nil {
		return err
	}
	if state.Last < p.next {
		p.lastRecord = state.LastRecord
		return nil
	}
	var q []queued
	err = p.log.Replay(ctx, p.next, state.Last, func(e *Entry) error {
		q = append(q, queued{e: *e})
		return nil
	})
	if err != nil {
		return err
	}
	p.enqueue(q)
	p.next, p.lastRecord = state.Last+1, state.LastRecord
	return nil
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

// Close stops writing: later commits fail, waits for the passive end with
// ErrNotActive, and the entries not applied yet stay in the log only
// (whoever follows this log next applies them, or sets them aside if the
// new active never had them). It then stops listening for positions.
func (p *Primary) Close() error {
	p.closeOne.Do(func() { close(p.closed) })
	p.mu.Lock()
	if p.broken == nil {
		p.broken = ErrNotActive
	}
	p.mu.Unlock()
	<-p.applierEnd
	if p.wsub != nil {
		p.wsub.Unsubscribe()
	}
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
