package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"

	"github.com/maypok86/otter/v2"
)

// DefaultMaxBytes is the weighted size bound of a Cache whose Options leave
// MaxBytes at zero.
const DefaultMaxBytes int64 = 256 << 20

// DefaultMaxEntryDivisor sets the default MaxEntryBytes: MaxBytes divided by
// this number. A value heavier than that is returned to its caller but not
// cached, so one huge message cannot flush the cache.
const DefaultMaxEntryDivisor = 8

// maxWeight is the largest weight the eviction policy accepts for one entry
// (otter weighs entries with a uint32).
const maxWeight = math.MaxUint32

// Options configures a Cache. A nil *Options means all defaults; a zero
// field means that field's default.
type Options struct {
	// MaxBytes bounds the sum of the weights of the cached values.
	// Zero means DefaultMaxBytes.
	MaxBytes int64
	// MaxEntryBytes is the heaviest value that is cached; heavier values are
	// returned by Get but not kept. Zero means MaxBytes/DefaultMaxEntryDivisor
	// (at least 1). It must not exceed MaxBytes nor 4 GiB - 1.
	MaxEntryBytes int64
}

// withDefaults returns a copy of o (or of the zero Options) with zero fields
// set to their defaults.
func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.MaxBytes == 0 {
		r.MaxBytes = DefaultMaxBytes
	}
	if r.MaxEntryBytes == 0 && r.MaxBytes > 0 {
		r.MaxEntryBytes = max(1, min(r.MaxBytes/DefaultMaxEntryDivisor, maxWeight))
	}
	return r
}

// Validate reports every invalid field of o at once, with its name and value.
// Zero fields are valid: they stand for their defaults. A nil o is valid.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	var errs []error
	if o.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("cache: Options.MaxBytes = %d: must be > 0 (or 0 for the default %d)", o.MaxBytes, DefaultMaxBytes))
	}
	if o.MaxEntryBytes < 0 {
		errs = append(errs, fmt.Errorf("cache: Options.MaxEntryBytes = %d: must be > 0 (or 0 for MaxBytes/%d)", o.MaxEntryBytes, DefaultMaxEntryDivisor))
	}
	if o.MaxEntryBytes > maxWeight {
		errs = append(errs, fmt.Errorf("cache: Options.MaxEntryBytes = %d: must be at most %d", o.MaxEntryBytes, int64(maxWeight)))
	}
	if o.MaxBytes > 0 && o.MaxEntryBytes > o.MaxBytes {
		errs = append(errs, fmt.Errorf("cache: Options.MaxEntryBytes = %d: must not exceed MaxBytes = %d", o.MaxEntryBytes, o.MaxBytes))
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of a Cache's counters. Counters only grow; Bytes and
// Entries describe the current contents.
type Stats struct {
	// Hits counts Gets answered from the cache.
	Hits uint64
	// Misses counts Gets that did not find their key cached, including those
	// that joined another caller's load.
	Misses uint64
	// Loads counts calls of a load function (successful or not).
	Loads uint64
	// LoadErrors counts loads that returned an error (never cached).
	LoadErrors uint64
	// Oversize counts loaded values that were heavier than MaxEntryBytes and
	// so were returned but not cached.
	Oversize uint64
	// Evictions counts entries removed to respect MaxBytes (not Invalidate).
	Evictions uint64
	// Bytes is the current sum of the weights of the cached values.
	Bytes int64
	// Entries is the approximate number of cached values.
	Entries int
}

// HitRatio returns Hits / (Hits + Misses), or 0 before the first Get.
func (s Stats) HitRatio() float64 {
	total := s.Hits + s.Misses
	if total == 0 {
		return 0
	}
	return float64(s.Hits) / float64(total)
}

// ErrLoadPanicked is what the Gets waiting for a load get when the load
// function panicked in the goroutine that ran it.
var ErrLoadPanicked = errors.New("cache: load function panicked")

// Cache is a byte-bounded read-through cache: Get returns the cached value of
// a key or loads it, once for all concurrent callers. It is meant for values
// that do not change (content-addressed bodies, metadata computed once at
// delivery); Invalidate exists for the rare exception.
//
// The eviction policy is otter's W-TinyLFU (github.com/maypok86/otter/v2),
// chosen by measurement; see docs/benchmarks.md. The Cache starts no
// goroutine: the policy's maintenance runs on the goroutines that call it.
//
// A Cache is safe for concurrent use. The zero value is not usable: call New.
type Cache[K comparable, V any] struct {
	oc       *otter.Cache[K, V]
	weigh    func(K, V) int64
	maxBytes int64
	maxEntry int64

	// shards hold the loads in flight, by hash of the key. A shard's mutex
	// also orders a load's store against Invalidate of the same key.
	seed   maphash.Seed
	shards [loadShards]loadShard[K, V]

	hits, misses, loads, loadErrors, oversize, evictions atomic.Uint64
}

// loadShards is the number of independently locked tables of loads in
// flight; a power of two.
const loadShards = 64

// loadShard is one table of loads in flight, padded to its own cache line.
type loadShard[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
	_     [64 - 16]byte
}

// shard returns the table of loads of key.
func (c *Cache[K, V]) shard(key K) *loadShard[K, V] {
	return &c.shards[maphash.Comparable(c.seed, key)&(loadShards-1)]
}

// call is one load in flight, shared by every Get of its key.
type call[V any] struct {
	done chan struct{} // closed once val and err are set
	val  V
	err  error
	// leaderGone: the load failed while the context of the Get that ran it
	// was done, so waiters whose own context is alive load again.
	leaderGone bool
	// stale: Invalidate ran during the load, so its value is not cached.
	// Guarded by the mutex of the key's loadShard.
	stale bool
}

// New returns an empty Cache bounded by opts (nil means defaults). weigh
// returns the cost of a value in bytes; it should count what the value keeps
// alive (a body's length, plus a fixed overhead if that matters). Weights
// below 1 count as 1, so every entry can be evicted. weigh must not call the
// Cache.
func New[K comparable, V any](opts *Options, weigh func(K, V) int64) (*Cache[K, V], error) {
	o := opts.withDefaults()
	err := o.Validate()
	if weigh == nil {
		err = errors.Join(err, errors.New("cache: weigh function is nil"))
	}
	if err != nil {
		return nil, err
	}
	c := &Cache[K, V]{
		weigh:    weigh,
		maxBytes: o.MaxBytes,
		maxEntry: o.MaxEntryBytes,
		seed:     maphash.MakeSeed(),
	}
	for i := range c.shards {
		c.shards[i].calls = make(map[K]*call[V])
	}
	oc, err := otter.New(&otter.Options[K, V]{
		MaximumWeight: uint64(o.MaxBytes),
		Weigher: func(k K, v V) uint32 {
			// Only values of weight <= maxEntry (<= maxWeight) are stored;
			// the clamp guards against a weigh that is not deterministic.
			return uint32(min(c.weight(k, v), maxWeight))
		},
		// Run the policy's maintenance (evictions included) on the
		// goroutine that writes, instead of a new goroutine per drain:
		// the Cache owns no goroutine and a single writer sees the bound
		// enforced when its Get returns.
		Executor: func(fn func()) { fn() },
		OnAtomicDeletion: func(e otter.DeletionEvent[K, V]) {
			if e.WasEvicted() {
				c.evictions.Add(1)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cache: new otter cache: %w", err)
	}
	c.oc = oc
	return c, nil
}

// weight is weigh clamped to [1, max int64].
func (c *Cache[K, V]) weight(k K, v V) int64 {
	return max(c.weigh(k, v), 1)
}

// Get returns the value of key, from the cache or else from load.
//
// Concurrent Gets of a key that is not cached share one call of load: the
// first runs it with its own ctx, the others wait for its result or for
// their ctx, whichever comes first. A load error is returned to every caller
// that shared the load and is never cached. If the load failed because the
// context of the Get that ran it ended, the waiters whose context is still
// alive load again rather than inherit that error. A Get whose ctx is already
// done returns a cached value but does not load.
//
// A loaded value heavier than MaxEntryBytes is returned but not cached.
// load must not call the Cache for the same key.
func (c *Cache[K, V]) Get(ctx context.Context, key K, load func(ctx context.Context, key K) (V, error)) (V, error) {
	if v, ok := c.oc.GetIfPresent(key); ok {
		c.hits.Add(1)
		return v, nil
	}
	c.misses.Add(1)
	sh := c.shard(key)
	for {
		var zero V
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		sh.mu.Lock()
		// A load that finished since the lookup above stored its value
		// before it left calls, so look again under the lock.
		if v, ok := c.oc.GetIfPresent(key); ok {
			sh.mu.Unlock()
			return v, nil
		}
		if cl, ok := sh.calls[key]; ok {
			sh.mu.Unlock()
			select {
			case <-cl.done:
			case <-ctx.Done():
				return zero, ctx.Err()
			}
			if cl.err != nil && cl.leaderGone {
				continue // the loader's caller gave up; load for ourselves
			}
			return cl.val, cl.err
		}
		cl := &call[V]{done: make(chan struct{})}
		sh.calls[key] = cl
		sh.mu.Unlock()
		return c.load(ctx, sh, key, cl, load)
	}
}

// load runs fn for key as the leader of cl, stores a good result and
// publishes the outcome to cl's waiters.
func (c *Cache[K, V]) load(ctx context.Context, sh *loadShard[K, V], key K, cl *call[V], fn func(context.Context, K) (V, error)) (V, error) {
	finished := false
	defer func() {
		if !finished { // fn panicked: release the waiters, let the panic go on
			cl.err = ErrLoadPanicked
			c.finish(sh, key, cl, false)
		}
	}()
	c.loads.Add(1)
	v, err := fn(ctx, key)
	finished = true
	cl.val, cl.err = v, err
	keep := err == nil
	if err != nil {
		c.loadErrors.Add(1)
		cl.leaderGone = ctx.Err() != nil
	} else if c.weight(key, v) > c.maxEntry {
		c.oversize.Add(1)
		keep = false
	}
	c.finish(sh, key, cl, keep)
	return v, err
}

// finish stores cl's value if keep and nothing invalidated the key during
// the load, then retires cl and wakes its waiters.
func (c *Cache[K, V]) finish(sh *loadShard[K, V], key K, cl *call[V], keep bool) {
	sh.mu.Lock()
	if !cl.stale {
		if keep {
			c.oc.Set(key, cl.val)
		}
		delete(sh.calls, key)
	}
	sh.mu.Unlock()
	close(cl.done)
}

// Invalidate removes key from the cache. A load of key in flight when
// Invalidate is called still answers the Gets that were waiting for it, but
// its value is not cached, and later Gets load again.
func (c *Cache[K, V]) Invalidate(key K) {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cl, ok := sh.calls[key]; ok {
		cl.stale = true
		delete(sh.calls, key)
	}
	c.oc.Invalidate(key)
}

// Stats returns a snapshot of the counters. It first completes the eviction
// policy's pending work, so Bytes is the settled weighted size.
func (c *Cache[K, V]) Stats() Stats {
	bytes := c.oc.WeightedSize() // runs pending maintenance
	return Stats{
		Hits:       c.hits.Load(),
		Misses:     c.misses.Load(),
		Loads:      c.loads.Load(),
		LoadErrors: c.loadErrors.Load(),
		Oversize:   c.oversize.Load(),
		Evictions:  c.evictions.Load(),
		Bytes:      int64(bytes),
		Entries:    c.oc.EstimatedSize(),
	}
}

// MaxBytes returns the bound on the sum of the weights of cached values.
func (c *Cache[K, V]) MaxBytes() int64 { return c.maxBytes }
