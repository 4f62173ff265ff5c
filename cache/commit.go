package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// DefaultMaxBatch is the largest batch a GroupCommit flushes when
// CommitOptions leave MaxBatch at zero.
const DefaultMaxBatch = 256

// ErrClosed is returned by GroupCommit.Do after Close, and to requests that
// were still queued (not yet handed to a flush) when Close was called: such a
// request was not applied.
var ErrClosed = errors.New("cache: group commit closed")

// ErrResultCount is returned to every request of a batch whose FlushFunc
// returned a number of results different from the number of requests.
var ErrResultCount = errors.New("cache: flush returned a wrong number of results")

// FlushFunc applies a batch of requests with one durable commit; it returns
// one result per request, in order, or an error that fails the whole batch
// (every request of the batch gets that error as it is).
//
// Its context is not canceled by any caller of Do: once handed to a flush, a
// request is applied whatever happens to its caller. A FlushFunc that can
// block (for a peer's confirmation, say) bounds that wait itself.
type FlushFunc[Req, Res any] func(ctx context.Context, reqs []Req) ([]Res, error)

// CommitOptions configures a GroupCommit. A nil *CommitOptions means
// defaults; a zero field means that field's default.
type CommitOptions struct {
	// MaxBatch is the largest number of requests given to one flush.
	// Zero means DefaultMaxBatch.
	MaxBatch int
	// MaxDelay is how long a flush may wait for the writers of the previous
	// batch to come back (see GroupCommit). Zero means adaptive: as long as
	// the previous flush took, at most DefaultMaxDelay. A negative value
	// turns the wait off.
	MaxDelay time.Duration
}

// DefaultMaxDelay caps the adaptive wait for the writers of the previous
// batch (CommitOptions.MaxDelay left at zero).
const DefaultMaxDelay = time.Millisecond

// Validate reports every invalid field of o, with its name and value. Zero
// fields are valid: they stand for their defaults. A nil o is valid.
func (o *CommitOptions) Validate() error {
	if o == nil {
		return nil
	}
	if o.MaxDelay > time.Second {
		return fmt.Errorf("cache: CommitOptions.MaxDelay = %v: must be at most 1s", o.MaxDelay)
	}
	if o.MaxBatch < 0 {
		return fmt.Errorf("cache: CommitOptions.MaxBatch = %d: must be > 0 (or 0 for the default %d)", o.MaxBatch, DefaultMaxBatch)
	}
	return nil
}

// CommitStats is a snapshot of a GroupCommit's counters.
type CommitStats struct {
	// Batches counts calls of the FlushFunc.
	Batches uint64
	// Requests counts the requests handed to the FlushFunc (whatever the
	// outcome of their batch).
	Requests uint64
	// FailedBatches counts flushes that returned an error or a wrong number
	// of results.
	FailedBatches uint64
	// Canceled counts requests whose context ended before they were handed
	// to a flush: they were dropped, not applied.
	Canceled uint64
	// MaxBatch is the largest batch flushed so far.
	MaxBatch int
}

// AvgBatch returns Requests / Batches, or 0 before the first flush.
func (s CommitStats) AvgBatch() float64 {
	if s.Batches == 0 {
		return 0
	}
	return float64(s.Requests) / float64(s.Batches)
}

// GroupCommit lets concurrent writers share durable commits: each Do queues
// a request, and one flush applies every request queued at that time.
//
// No timer is involved and no flush waits for more work: when no flush is
// running, a request is flushed at once, alone; requests that arrive while a
// flush runs queue up and all go to the next flush (up to MaxBatch per
// flush, in arrival order). Flushes never overlap, so they reach the store
// in the order they were made. Throughput therefore grows with the number of
// concurrent writers instead of being capped at one request per fsync.
//
// Siblings. With many writers, batches alternate between two halves: while
// one batch flushes, the others queue, and the writers just answered come
// back during the next flush. When a flush of more than one request ends
// with requests already queued, the next flush therefore waits until the
// writers just answered have had a chance to rejoin: until as many requests
// are queued as the two halves together, or until the previous flush's
// duration (at most DefaultMaxDelay, or CommitOptions.MaxDelay) has passed;
// likewise when it ends with nothing
// queued, the first writer to come back waits for the others. A lone writer
// never waits. This is PostgreSQL's commit_delay with
// commit_siblings: fewer, fuller fsyncs under load, no delay without it.
//
// GroupCommit starts no goroutine. A flush runs on the goroutine of the Do
// call whose request is first in the batch (the leader); when it is done,
// the leader takes the next batch off the queue and hands it to the
// goroutine of that batch's first request, which flushes it. An uncontended
// Do therefore costs what a direct call of the FlushFunc costs, with no
// goroutine switch in between.
//
// A GroupCommit is safe for concurrent use. Create it with NewGroupCommit.
type GroupCommit[Req, Res any] struct {
	flush    FlushFunc[Req, Res]
	maxBatch int
	maxDelay time.Duration  // < 0: no wait; 0: adaptive; > 0: fixed
	wg       sync.WaitGroup // one count while a leader flushes; Close waits

	mu       sync.Mutex
	queue    []*commitReq[Req, Res] // arrived, not yet handed to a flush
	flushing bool                   // a leader is flushing or about to
	closed   bool
	arrived  chan struct{} // closed at the next arrival, for a waiting leader
	// siblings is the size of the last batch when it ended with nothing
	// queued; until siblingsUntil the next arrival waits for them.
	siblings      int
	siblingsUntil time.Time
	stats         CommitStats
}

// commitReq is one Do call waiting for its result.
type commitReq[Req, Res any] struct {
	req   Req
	taken bool // handed to a flush (or failed by Close); guarded by GroupCommit.mu
	// signal is closed once res and err are set, or once lead is set.
	signal chan struct{}
	// leader is set when this request's caller must take the next batch
	// (which starts with this request) and flush it: once the queue holds
	// want requests, or at until.
	leader bool
	want   int
	until  time.Time
	res    Res
	err    error
}

// NewGroupCommit returns a GroupCommit that applies batches with flush.
// It panics if flush is nil or opts is invalid (see CommitOptions.Validate),
// which are programming errors; validate options that come from
// configuration beforehand.
func NewGroupCommit[Req, Res any](flush FlushFunc[Req, Res], opts *CommitOptions) *GroupCommit[Req, Res] {
	if flush == nil {
		panic("cache: NewGroupCommit: nil FlushFunc")
	}
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	g := &GroupCommit[Req, Res]{flush: flush, maxBatch: DefaultMaxBatch}
	if opts != nil && opts.MaxBatch > 0 {
		g.maxBatch = opts.MaxBatch
	}
	if opts != nil {
		g.maxDelay = opts.MaxDelay
	}
	return g
}

// Do applies req in the next flush and returns its result once that flush
// returned, that is once req is durable (or the batch failed).
//
// If ctx ends while req is still queued, req is dropped and Do returns
// ctx.Err(): nothing was applied. Once req has been handed to a flush, ctx
// no longer matters: cancellation does not undo the write, and Do waits for
// the flush and returns its real result, so the caller always learns whether
// req was applied. After Close, Do returns ErrClosed.
func (g *GroupCommit[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	r := &commitReq[Req, Res]{req: req, signal: make(chan struct{})}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return zero, ErrClosed
	}
	g.queue = append(g.queue, r)
	if g.arrived != nil {
		close(g.arrived)
		g.arrived = nil
	}
	if !g.flushing {
		// No flush running, so the queue held nothing else: lead, at
		// once unless the writers of the last batch are due back.
		g.flushing = true
		g.wg.Add(1)
		if g.siblings > 1 && time.Now().Before(g.siblingsUntil) {
			r.taken, r.leader = true, true
			r.want, r.until = g.siblings, g.siblingsUntil
			g.siblings = 0
			g.mu.Unlock()
			g.lead(g.gather(r))
			return r.res, r.err
		}
		g.siblings = 0
		batch := g.takeLocked()
		g.mu.Unlock()
		g.lead(batch)
		return r.res, r.err
	}
	g.mu.Unlock()

	select {
	case <-r.signal:
	case <-ctx.Done():
		g.mu.Lock()
		if !r.taken {
			g.queue = slices.DeleteFunc(g.queue, func(q *commitReq[Req, Res]) bool { return q == r })
			g.stats.Canceled++
			g.mu.Unlock()
			return zero, ctx.Err()
		}
		g.mu.Unlock()
		<-r.signal // handed to a flush: the write happens, wait for its outcome
	}
	if r.leader {
		g.lead(g.gather(r))
	}
	return r.res, r.err
}

// gather waits, as r's leader instructions say, for the queue to fill, then
// takes the next batch (which starts with r).
func (g *GroupCommit[Req, Res]) gather(r *commitReq[Req, Res]) []*commitReq[Req, Res] {
	var timer *time.Timer
	g.mu.Lock()
	for !g.closed && len(g.queue) < r.want {
		wait := time.Until(r.until)
		if wait <= 0 {
			break
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		}
		ch := make(chan struct{})
		g.arrived = ch
		g.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
		}
		g.mu.Lock()
	}
	g.arrived = nil
	batch := g.takeLocked()
	g.mu.Unlock()
	return batch
}

// takeLocked removes the next batch (at most maxBatch requests) from the
// queue, which must not be empty, and marks it taken. g.mu must be held.
func (g *GroupCommit[Req, Res]) takeLocked() []*commitReq[Req, Res] {
	n := min(len(g.queue), g.maxBatch)
	batch := slices.Clone(g.queue[:n])
	clear(g.queue[:n])
	g.queue = g.queue[n:]
	if len(g.queue) == 0 {
		g.queue = nil // let the backing array go
	}
	for _, r := range batch {
		r.taken = true
	}
	g.stats.Batches++
	g.stats.Requests += uint64(n)
	g.stats.MaxBatch = max(g.stats.MaxBatch, n)
	return batch
}

// lead flushes batch, whose first request is the caller's, answers the
// other requests, and hands the next batch to its first request's goroutine
// or, if the queue is empty, ends the leadership.
func (g *GroupCommit[Req, Res]) lead(batch []*commitReq[Req, Res]) {
	reqs := make([]Req, len(batch)) // the FlushFunc may keep it
	for i, r := range batch {
		reqs[i] = r.req
	}
	start := time.Now()
	res, err := g.flush(context.Background(), reqs)
	took := time.Since(start)
	if err == nil && len(res) != len(batch) {
		err = fmt.Errorf("%w: %d results for %d requests", ErrResultCount, len(res), len(batch))
	}
	for i, r := range batch {
		if err != nil {
			r.err = err
		} else {
			r.res = res[i]
		}
	}

	g.mu.Lock()
	if err != nil {
		g.stats.FailedBatches++
	}
	var next *commitReq[Req, Res]
	if len(g.queue) > 0 {
		// The first queued request leads the next batch. It cannot be
		// canceled any more: it is as good as taken.
		next = g.queue[0]
		next.taken, next.leader = true, true
		if d := g.siblingDelay(took); len(batch) > 1 && d > 0 {
			next.want = min(len(g.queue)+len(batch), g.maxBatch)
			next.until = time.Now().Add(d)
		}
	} else {
		g.flushing = false
		if d := g.siblingDelay(took); len(batch) > 1 && d > 0 {
			g.siblings = min(len(batch), g.maxBatch)
			g.siblingsUntil = time.Now().Add(d)
		}
	}
	g.mu.Unlock()

	for _, r := range batch[1:] { // batch[0] is the caller's own request
		close(r.signal)
	}
	if next == nil {
		g.wg.Done()
		return
	}
	close(next.signal)
}

// siblingDelay is how long the next flush may wait for the writers of a
// batch whose flush took took.
func (g *GroupCommit[Req, Res]) siblingDelay(took time.Duration) time.Duration {
	switch {
	case g.maxDelay < 0:
		return 0
	case g.maxDelay > 0:
		return g.maxDelay
	}
	return min(took, DefaultMaxDelay)
}

// Close stops accepting requests: later calls of Do return ErrClosed, and so
// do the requests still queued, which are dropped (not applied). Close waits
// for a flush in progress, whose requests get their real results. Close may
// be called more than once.
func (g *GroupCommit[Req, Res]) Close() {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		// Fail what is queued, except a request already chosen to lead
		// the next batch: that batch is flushed.
		var keep []*commitReq[Req, Res]
		for _, r := range g.queue {
			if r.leader {
				keep = append(keep, r)
				continue
			}
			r.taken = true
			r.err = ErrClosed
			close(r.signal)
		}
		g.queue = keep
		if g.arrived != nil {
			close(g.arrived)
			g.arrived = nil
		}
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// Stats returns a snapshot of the counters.
func (g *GroupCommit[Req, Res]) Stats() CommitStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}
