package replog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinbox/twinbox/store"
)

// FollowerOptions configure the passive's follower.
type FollowerOptions struct {
	// Epoch is the lowest epoch accepted; entries of an older epoch are
	// refused (a stale active's). It rises with the entries seen.
	Epoch uint64
	// Batch is how many entries are fetched, appended and applied at once.
	Batch int
	// OnApplied, if set, is told of every applied entry, in log order
	// (with a nil tag).
	OnApplied AppliedFunc
	// DivergedDir is where a diverged tail of the local log is set aside
	// (ErrDiverged); "" means the system's temporary directory.
	DivergedDir string
	// OnDiverged, if set, is told of a diverged tail before the store
	// takes back what it applied of it (the store still holds it then): a
	// merge plans there what to re-apply on the active.
	OnDiverged func(ctx context.Context, d Diverged) error
	// OnReady, if set, is called each time the local log was found a
	// prefix of the active's (after a diverged tail was taken back), before
	// following: the node's data is current from then on.
	OnReady func()
	// Received, if set, returns the bytes read from the link so far
	// (PeerOptions.Received): while it grows the follower tells the
	// active it is receiving, so that the active's PeerTimeout does not
	// fire in the middle of a large operation on a slow link.
	Received func() uint64
	Logger   *slog.Logger
}

// Follower is the passive's side of the log: it reads the active's log,
// appends each entry to the local log at the same sequence number, applies
// it to the store and reports its durable position to the active.
type Follower struct {
	log    *Log
	st     *store.Store
	remote *nats.Conn
	opts   FollowerOptions
	lg     *slog.Logger

	asm        assembler // chunks of an operation not yet whole
	lastRecord uint64    // the local log's last record
	// held are entries in the local log that were pushed and are not
	// known to be in the active's log yet; storedTo is how far the
	// active's log is known to go. The follow loop's alone.
	held     []Entry
	storedTo uint64
	// pushedFirst is the first entry of the latest push seen, taken or
	// not.
	pushedFirst uint64

	takes, takeNanos atomic.Uint64 // batches made durable here, and their time from arrival to report
	rejoins          atomic.Uint64 // diverged tails taken back in place
	// activity counts batches taken and moments spent writing them; it
	// travels with the position, so the active sees progress before the
	// position moves.
	activity atomic.Uint64

	mu      sync.Mutex
	pos     uint64 // last entry durable in the local log
	epoch   uint64
	lastErr error
	// ready: the local log is known to be a prefix of the active's
	// (reconcile); only then are positions reported to the active.
	ready bool
}

// NewFollower prepares a follower; remote is a connection to the active's
// NATS server. Nothing is applied or reported before Run has checked that
// the local log is a prefix of the active's (reconcile).
func NewFollower(ctx context.Context, l *Log, st *store.Store, remote *nats.Conn, opts *FollowerOptions) (*Follower, error) {
	f := &Follower{log: l, st: st, remote: remote}
	if opts != nil {
		f.opts = *opts
	}
	if f.opts.Batch <= 0 {
		f.opts.Batch = 256
	}
	f.lg = f.opts.Logger
	if f.lg == nil {
		f.lg = slog.New(slog.DiscardHandler)
	}
	f.lg = f.lg.With("component", "replog", "role", "passive")
	f.epoch = f.opts.Epoch
	state, err := l.State(ctx)
	if err != nil {
		return nil, err
	}
	f.pos, f.lastRecord = max(state.Last, st.AppliedSeq()), state.LastRecord
	return f, nil
}

// setPos sets the durable position once the log is reconciled.
func (f *Follower) setPos(pos uint64) {
	f.mu.Lock()
	f.pos, f.ready = pos, true
	f.mu.Unlock()
}

// resumeChunks goes on with the chunks of an operation a local log ends
// inside (the active died mid-operation, or this node did).
func (f *Follower) resumeChunks(ctx context.Context) error {
	f.asm = assembler{}
	f.mu.Lock()
	pos := f.pos
	f.mu.Unlock()
	for seq := pos; seq > 0; seq-- {
		e, err := f.log.Get(ctx, seq)
		if err != nil || !e.IsChunk() {
			for s := seq + 1; s <= pos && err == nil; s++ {
				var c Entry
				if c, err = f.log.Get(ctx, s); err == nil {
					_, _, err = f.asm.add(c)
				}
			}
			return err
		}
	}
	return nil
}

// FollowerStatus is what the follower reports.
type FollowerStatus struct {
	Position uint64 // last entry durable here
	Epoch    uint64
	Err      error // the last error, until the next success
	// Takes is how many batches of records were made durable here,
	// taking TakeTime in all from their arrival to the report of their
	// position (decoding, the local append and its fsync).
	Takes    uint64
	TakeTime time.Duration
	// Rejoins counts diverged tails taken back in place.
	Rejoins uint64
}

// Status returns the follower's position and last error.
func (f *Follower) Status() FollowerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return FollowerStatus{Position: f.pos, Epoch: f.epoch, Err: f.lastErr,
		Takes: f.takes.Load(), TakeTime: time.Duration(f.takeNanos.Load()), Rejoins: f.rejoins.Load()}
}

// Run follows the active's log until ctx ends. Connection losses are
// retried; an entry that cannot be taken (an older epoch, a gap, an
// unknown format) stops it with that error, since applying past it would
// fork the replica.
func (f *Follower) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	go func() { // the position doubles as a heartbeat for a restarted active
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				f.report()
			}
		}
	}()
	for ctx.Err() == nil {
		err := f.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		f.mu.Lock()
		f.lastErr = err
		f.mu.Unlock()
		if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrGap) || errors.Is(err, ErrVersion) || errors.Is(err, ErrDiverged) ||
			errors.Is(err, ErrFormat) || errors.Is(err, ErrLogTrimmed) || errors.Is(err, ErrSeqMismatch) {
			f.lg.Error("stopped following the active", "err", err)
			return err
		}
		f.lg.Warn("following the active", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}

// report tells the active the position durable here, once the log is
// known to be a prefix of the active's (a position over a diverged tail
// would confirm entries this node does not hold).
func (f *Follower) report() {
	f.mu.Lock()
	pos, epoch, ready := f.pos, f.epoch, f.ready
	f.mu.Unlock()
	if !ready {
		return
	}
	b := make([]byte, 24)
	binary.BigEndian.PutUint64(b, pos)
	binary.BigEndian.PutUint64(b[8:], epoch)
	binary.BigEndian.PutUint64(b[16:], f.activity.Load())
	_ = f.remote.Publish(PositionSubject, b)
}

// follow reads from the active until an error.
func (f *Follower) follow(ctx context.Context) error {
	js, err := jetstream.New(f.remote)
	if err != nil {
		return err
	}
	st, err := js.Stream(ctx, StreamName)
	if err != nil {
		return fmt.Errorf("replog: the active's log: %w", err)
	}
	state, err := stateOf(ctx, st)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.ready = false
	f.mu.Unlock()
	local, err := f.log.State(ctx)
	if err != nil {
		return err
	}
	if state.Last != 0 && state.First > max(local.Last, f.st.AppliedSeq())+1 {
		return fmt.Errorf("%w: this node is at %d, the active's log starts at %d", ErrLogTrimmed, max(local.Last, f.st.AppliedSeq()), state.First)
	}
	if err := f.reconcile(ctx, st, state); err != nil {
		return err
	}
	if f.opts.OnReady != nil {
		f.opts.OnReady()
	}
	f.mu.Lock()
	pos := f.pos
	f.mu.Unlock()
	start := state.LastRecord + 1 // nothing new yet: wait for the next record
	if state.Last > pos {
		if start, err = findRecord(ctx, st, state, pos+1); err != nil {
			return err
		}
	}
	// Records reach this node two ways. The active pushes each record as
	// it appends it (PushSubject), so that this node's append and fsync
	// run beside the active's: what arrives so is appended and confirmed
	// at once, but applied only once the active has it too. The active's
	// stream, read for its headers only, tells what the active stored
	// (lastHeader); a record stored there that did not arrive by push (a
	// push lost, this node catching up) is read from the stream.
	pushes := make(chan []byte, f.opts.Batch)
	psub, err := f.remote.Subscribe(PushSubject, func(m *nats.Msg) {
		select {
		case pushes <- m.Data:
		default: // full: the stream has it
		}
	})
	if err != nil {
		return fmt.Errorf("replog: receive the active's records: %w", err)
	}
	defer psub.Unsubscribe()
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start, HeadersOnly: true}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("replog: read the active's log: %w", err)
	}
	f.report()
	if f.opts.Received != nil {
		done := make(chan struct{})
		defer close(done)
		go f.tellReceiving(done)
	}
	stored := make(chan storedRecord, f.opts.Batch)
	errc := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		r := storedRecord{last: 0}
		if md, err := m.Metadata(); err == nil {
			r.stream, r.behind = md.Sequence.Stream, md.NumPending >= catchUpBehind
		}
		if v, err := strconv.ParseUint(m.Headers().Get(lastHeader), 10, 64); err == nil {
			r.last = v
		}
		// The record's ID is "epoch.first" (Log.Append).
		if e, first, ok := strings.Cut(m.Headers().Get(nats.MsgIdHdr), "."); ok {
			r.epoch, _ = strconv.ParseUint(e, 10, 64)
			r.first, _ = strconv.ParseUint(first, 10, 64)
		}
		select {
		case stored <- r:
		case <-ctx.Done():
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		select {
		case errc <- err:
		default:
		}
	}))
	if err != nil {
		return fmt.Errorf("replog: read the active's log: %w", err)
	}
	defer cc.Stop()
	// The store applies behind the log, in its own goroutine: the next
	// batch is appended and confirmed while this one applies, so the
	// active's wait is this node's append and fsync, not its apply too.
	ap := f.startApplier(ctx)
	defer ap.stop()
	f.held, f.storedTo, f.pushedFirst = nil, 0, 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-ap.failed:
			return err
		case err := <-errc:
			if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				return err
			}
			f.lg.Debug("reading the active's log", "err", err)
		case first := <-pushes:
			// Every push that has arrived, in one append and one fsync.
			arrived := time.Now()
			batch := [][]byte{first}
		drain:
			for len(batch) < f.opts.Batch {
				select {
				case m := <-pushes:
					batch = append(batch, m)
				default:
					break drain
				}
			}
			if err := f.takePushed(ctx, ap, batch, arrived); err != nil {
				return err
			}
		case r := <-stored:
			if err := f.takeStored(ctx, ap, st, pushes, r); err != nil {
				return err
			}
		}
	}
}

// errHeldDiverged: entries pushed to this node are not what the active
// stored at their place (an earlier writer pushed them and never stored
// them). Following starts again, and reconcile sets them aside.
var errHeldDiverged = errors.New("replog: pushed entries differ from the active's log")

// catchUpBehind is how many stored records after one mean this node is
// catching up (it reads the stream) rather than just behind a push.
const catchUpBehind = 64

// storedRecord is a record the active's stream holds: its stream
// sequence, and its last entry (0 when the record does not say).
type storedRecord struct {
	stream, last uint64
	epoch, first uint64 // 0 when the record does not say
	// behind: the active has stored later records too, so this node is
	// catching up and the record's push came long ago, if at all.
	behind bool
}

// pushGrace is how long a record the active stored may wait for its push
// (delivered on another subscription, it may be a moment behind) before
// it is read from the stream.
const pushGrace = 20 * time.Millisecond

// takePushed takes pushed records that continue the local log; others
// (a gap, what is here already, an older epoch) are left to the stream.
func (f *Follower) takePushed(ctx context.Context, ap *applier, batch [][]byte, arrived time.Time) error {
	f.mu.Lock()
	pos, epoch := f.pos, f.epoch
	f.mu.Unlock()
	var entries []Entry
	for _, data := range batch {
		r, err := decodeRecord(data)
		if err != nil || len(r) == 0 {
			continue // the stream's copy will say what is wrong
		}
		f.pushedFirst = max(f.pushedFirst, r[0].Seq)
		// A later writer's record over entries pushed here by an earlier
		// one that never stored them: those diverged.
		for _, h := range f.held {
			if h.Seq >= r[0].Seq && h.Seq <= r[len(r)-1].Seq && h.Epoch < r[0].Epoch {
				return fmt.Errorf("%w: entry %d here has epoch %d, the active now writes epoch %d there", errHeldDiverged, h.Seq, h.Epoch, r[0].Epoch)
			}
		}
		next := pos + uint64(len(entries)) + 1
		if r[len(r)-1].Seq < next || r[0].Seq > next || r[0].Epoch < epoch {
			continue
		}
		for _, e := range r {
			if e.Seq >= next {
				entries = append(entries, e)
			}
		}
	}
	if len(entries) == 0 {
		return nil
	}
	return f.take(ctx, ap, entries, arrived, false)
}

// takeStored learns that the active stored a record: it applies what was
// pushed up to there, or reads the record from the stream if it did not
// arrive by push.
func (f *Follower) takeStored(ctx context.Context, ap *applier, st jetstream.Stream, pushes chan []byte, r storedRecord) error {
	f.mu.Lock()
	pos := f.pos
	f.mu.Unlock()
	if r.last != 0 && r.last <= pos {
		// What this node holds there must be that record: a pushed tail
		// of an earlier writer that never stored it is not.
		for _, e := range f.held {
			if r.epoch != 0 && e.Seq >= r.first && e.Seq <= r.last && e.Epoch != r.epoch {
				return fmt.Errorf("%w: entry %d here has epoch %d, the active stored epoch %d there", errHeldDiverged, e.Seq, e.Epoch, r.epoch)
			}
		}
		return f.release(ctx, ap, r.last)
	}
	if r.last != 0 && !r.behind && f.pushedFirst <= r.last {
		// Its push may be a moment behind, on its own subscription (when
		// a later push has come, it came and went: this node was behind).
		t := time.NewTimer(pushGrace)
		defer t.Stop()
		for r.last > pos {
			select {
			case m := <-pushes:
				if err := f.takePushed(ctx, ap, [][]byte{m}, time.Now()); err != nil {
					return err
				}
				f.mu.Lock()
				pos = f.pos
				f.mu.Unlock()
				continue
			case <-t.C:
			case <-ctx.Done():
				return nil
			}
			break
		}
		if r.last <= pos {
			return f.release(ctx, ap, r.last)
		}
	}
	if r.behind {
		return f.catchUp(ctx, ap, st, r.stream)
	}
	m, err := st.GetMsg(ctx, r.stream)
	if err != nil {
		return fmt.Errorf("replog: read record %d of the active's log: %w", r.stream, err)
	}
	entries, err := decodeRecord(m.Data)
	if err != nil {
		return err
	}
	return f.take(ctx, ap, entries, time.Now(), true)
}

// catchUp reads up to a batch of records from the active's stream, from
// record from on, in one go (one append, one fsync): a node far behind
// streams, rather than asking record by record.
func (f *Follower) catchUp(ctx context.Context, ap *applier, st jetstream.Stream, from uint64) error {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return fmt.Errorf("replog: read the active's log: %w", err)
	}
	batch, err := cons.FetchNoWait(f.opts.Batch)
	if err != nil {
		return fmt.Errorf("replog: read the active's log: %w", err)
	}
	var entries []Entry
	for m := range batch.Messages() {
		r, err := decodeRecord(m.Data())
		if err != nil {
			return err
		}
		entries = append(entries, r...)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("replog: read the active's log: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	return f.take(ctx, ap, entries, time.Now(), true)
}

// release hands the entries held in the local log up to upTo, which the
// active has stored, to the applier.
func (f *Follower) release(ctx context.Context, ap *applier, upTo uint64) error {
	f.storedTo = max(f.storedTo, upTo)
	n := 0
	for n < len(f.held) && f.held[n].Seq <= f.storedTo {
		n++
	}
	if n == 0 {
		return nil
	}
	ready := f.held[:n]
	f.held = f.held[n:]
	var whole []Entry
	var size int64
	for _, raw := range ready {
		e, ok, err := f.asm.add(raw)
		if err != nil {
			return err
		}
		if ok {
			whole = append(whole, e)
			size += int64(len(e.enc))
		}
	}
	if len(whole) == 0 {
		return nil // chunks of an operation still arriving
	}
	return ap.send(ctx, whole, size)
}

// take appends entries to the local log, reports the new position and
// hands the operations they complete to the applier.
//
// Entries the active has stored (stored: read from its stream) go on to
// the applier; pushed ones wait in held until the stream says the active
// has them (release): a record the active failed to store must not be in
// this node's store, so that it can be set aside if the next active's log
// does not have it.
func (f *Follower) take(ctx context.Context, ap *applier, entries []Entry, arrived time.Time, stored bool) error {
	// While this batch is being made durable, say so: the active's
	// PeerTimeout measures a lack of progress, and a large operation's
	// records take a while to write and fsync.
	busy := make(chan struct{})
	defer close(busy)
	go func() {
		t := time.NewTicker(busyEvery)
		defer t.Stop()
		for {
			select {
			case <-busy:
				return
			case <-t.C:
				f.activity.Add(1)
				f.report()
			}
		}
	}()
	f.mu.Lock()
	pos, epoch := f.pos, f.epoch
	f.mu.Unlock()
	// The first record may begin before this node's position (after a
	// resync from a checkpoint taken inside it): skip what is here.
	for len(entries) > 0 && entries[0].Seq <= pos {
		entries = entries[1:]
	}
	if len(entries) == 0 {
		return nil
	}
	for i := range entries {
		e := &entries[i]
		if e.Seq != pos+uint64(i)+1 {
			return fmt.Errorf("%w: expected entry %d, got %d", ErrGap, pos+uint64(i)+1, e.Seq)
		}
		if e.Epoch < epoch {
			return fmt.Errorf("%w: entry %d has epoch %d, this node is at %d", ErrStaleEpoch, e.Seq, e.Epoch, epoch)
		}
		epoch = e.Epoch
	}
	lastRecord, err := f.log.Append(ctx, f.lastRecord, entries)
	if err != nil {
		// Part of the batch may be in the local log: once the applier
		// is done, take up from what the log holds (applying it), so the
		// retry neither skips nor repeats.
		aerr := ap.stop()
		if next, last, cerr := catchUp(ctx, f.log, f.st, f.opts.OnApplied); cerr == nil {
			f.asm = assembler{}
			f.mu.Lock()
			f.pos = next - 1
			f.mu.Unlock()
			f.lastRecord = last
		}
		return errors.Join(err, aerr)
	}
	f.lastRecord = lastRecord
	last := entries[len(entries)-1].Seq
	f.mu.Lock()
	f.pos, f.epoch, f.lastErr = last, epoch, nil
	f.mu.Unlock()
	f.report() // durable here: the active may acknowledge
	f.takes.Add(1)
	f.takeNanos.Add(uint64(time.Since(arrived)))
	f.held = append(f.held, entries...)
	if stored {
		return f.release(ctx, ap, last)
	}
	return nil
}

// tellReceiving reports activity every busyEvery while bytes arrive on
// the link, until done.
func (f *Follower) tellReceiving(done <-chan struct{}) {
	t := time.NewTicker(busyEvery)
	defer t.Stop()
	last := f.opts.Received()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if n := f.opts.Received(); n != last {
				last = n
				f.activity.Add(1)
				f.report()
			}
		}
	}
}

// busyEvery is how often a follower busy with a batch, or receiving one,
// tells the active.
const busyEvery = 100 * time.Millisecond

// applier applies whole operations to the store in log order, behind the
// local log that already holds them (store.ApplyLogged: a crash leaves
// the store behind the log, and NewFollower's catch-up replays the rest).
// What waits for it is bounded in batches and in bytes, so a slow store
// slows the follower (and, in sync mode, the active's acknowledgements)
// instead of filling memory with 50 MB messages.
type applier struct {
	apply  func(ctx context.Context, whole []Entry) error
	queue  chan applyBatch
	failed chan error // the applier's error; it stopped
	done   chan struct{}
	err    error // set before done closes
	once   sync.Once

	mu      sync.Mutex
	queued  int64         // encoded bytes of the operations queued or applying
	stopped bool          // stop closed the queue
	freed   chan struct{} // signalled when an apply ends
}

// errApplierStopped is send's error after stop when no apply failed.
var errApplierStopped = errors.New("replog: the passive's applier stopped")

type applyBatch struct {
	whole []Entry
	size  int64
}

// Bounds of what waits for the store: enough to ride out a slow apply (a
// compaction), little enough that the store stays close behind the log.
// A batch larger than applyBudget alone still goes, once nothing else
// waits.
const (
	applyQueue  = 64
	applyBudget = 64 << 20
)

func (f *Follower) startApplier(ctx context.Context) *applier {
	return startApplier(ctx, f.apply)
}

func startApplier(ctx context.Context, apply func(context.Context, []Entry) error) *applier {
	ap := &applier{apply: apply, queue: make(chan applyBatch, applyQueue), failed: make(chan error, 1),
		done: make(chan struct{}), freed: make(chan struct{}, 1)}
	go func() {
		defer close(ap.done)
		for b := range ap.queue {
			err := ap.apply(ctx, b.whole)
			ap.mu.Lock()
			ap.queued -= b.size
			ap.mu.Unlock()
			select {
			case ap.freed <- struct{}{}:
			default:
			}
			if err != nil {
				ap.err = err
				ap.failed <- err
				return
			}
		}
	}()
	return ap
}

// send queues a batch of size encoded bytes, waiting while the queue is
// full. It and stop are called from one goroutine (the follower's). Once
// the applier failed or stopped, it returns why and queues nothing.
func (ap *applier) send(ctx context.Context, whole []Entry, size int64) error {
	for {
		ap.mu.Lock()
		if ap.stopped {
			ap.mu.Unlock()
			return ap.stoppedErr()
		}
		select {
		case <-ap.done: // failed: nothing more will apply
			ap.mu.Unlock()
			return ap.stoppedErr()
		default:
		}
		fits := ap.queued == 0 || ap.queued+size <= applyBudget
		if fits {
			ap.queued += size
		}
		ap.mu.Unlock()
		if fits {
			break
		}
		select {
		case <-ap.freed:
		case <-ap.done:
			return ap.stoppedErr()
		case <-ctx.Done():
			return nil
		}
	}
	select {
	case ap.queue <- applyBatch{whole, size}:
		return nil
	case <-ap.done:
		return ap.stoppedErr()
	case <-ctx.Done():
		return nil
	}
}

// stoppedErr is why an applier that ended took nothing more: its apply's
// error, or errApplierStopped. Call it once done is closed or stop began.
func (ap *applier) stoppedErr() error {
	<-ap.done
	if ap.err != nil {
		return ap.err
	}
	return errApplierStopped
}

// stop lets the queued batches apply and returns the applier's error.
func (ap *applier) stop() error {
	ap.once.Do(func() {
		ap.mu.Lock()
		ap.stopped = true
		ap.mu.Unlock()
		close(ap.queue)
	})
	<-ap.done
	return ap.err
}

// apply applies whole operations to the store.
func (f *Follower) apply(ctx context.Context, whole []Entry) error {
	sentries := make([]store.Entry, len(whole))
	for i := range whole {
		sentries[i] = whole[i].storeEntry()
	}
	results, err := f.st.ApplyLogged(ctx, sentries...) // durable in the local log
	if err != nil {
		return fmt.Errorf("replog: apply %d..%d: %w", whole[0].Seq, whole[len(whole)-1].Seq, err)
	}
	if f.opts.OnApplied != nil {
		for i := range whole {
			f.opts.OnApplied(&whole[i], &results[i], nil)
		}
	}
	return nil
}

// Retain trims the local log below the follower's position, keeping keep
// entries before it (for a peer that may need them after a role change).
func (f *Follower) Retain(ctx context.Context, keep uint64) error {
	pos := min(f.Status().Position, f.st.AppliedSeq())
	if pos <= keep {
		return nil
	}
	return f.log.Trim(ctx, pos-keep+1)
}
