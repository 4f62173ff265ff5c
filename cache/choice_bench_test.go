package cache

// This benchmark chose the library behind Cache (docs/benchmarks.md,
// "Read cache: otter vs ristretto"). It runs one workload against each
// candidate, used the way Cache uses it (look up; on a miss, load and insert):
//
//   - 20 000 bodies of 1–200 KB (uniform, fixed seed), a 64 MB bound, so about
//     3 % of the bodies fit at once;
//   - keys drawn from a Zipf distribution (s = choiceZipfS), each goroutine
//     with its own generator, after a single-goroutine warm-up;
//   - 1 and 16 goroutines.
//
// Besides ns/op and allocs/op it reports:
//
//   - hit-ratio: hits / lookups in the timed phase;
//   - held/bound: bytes of the values the cache holds right after the timed
//     phase (counted by walking the cache, not from its own accounting) over
//     the bound; settled/bound: the same after the library finished its
//     pending work (otter CleanUp, ristretto Wait);
//   - ristretto only: dropped% (Sets lost because its buffer was full) and
//     rejected% (Sets its admission policy refused), per Set.
//
// "static-optimal" is a reference, not a cache: the fixed set of keys with
// the highest probability per byte that fits the bound (the best a cache can
// do on this independent-reference workload, up to knapsack rounding).
//
// With load=free a miss loads nothing (the body is a slice of one shared
// buffer), so ns/op is the cache's own cost. With load=copy a miss allocates
// and copies the body, the least a read from the store costs (Pebble copies
// a value out of its block cache; a real read also decompresses, or goes to
// disk), so ns/op then includes what a lower hit ratio costs.
//
//	go test -run='^$' -bench=Choice -benchtime=2000000x ./cache/

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/maypok86/otter/v2"
)

const (
	choiceKeys    = 20_000
	choiceBound   = 64 << 20
	choiceMinSize = 1 << 10
	choiceMaxSize = 200 << 10
	choiceZipfS   = 1.1
	choiceWarmup  = 200_000
)

// choiceLoads are the two costs of a miss: nothing, or a copy of the body.
var choiceLoads = []struct {
	name string
	load func(key uint64) []byte
}{
	{"free", func(key uint64) []byte { return choiceBody[:choiceSizes[key]] }},
	{"copy", func(key uint64) []byte { return slices.Clone(choiceBody[:choiceSizes[key]]) }},
}

var (
	// choiceSizes[k] is the size of body k.
	choiceSizes = func() []int {
		r := rand.New(rand.NewPCG(1, 2))
		s := make([]int, choiceKeys)
		for i := range s {
			s[i] = choiceMinSize + r.IntN(choiceMaxSize-choiceMinSize+1)
		}
		return s
	}()
	// choiceBody backs every value: a body is choiceBody[:size].
	choiceBody = make([]byte, choiceMaxSize)
)

func newChoiceZipf(seed uint64) *rand.Zipf {
	return rand.NewZipf(rand.New(rand.NewPCG(seed, 0x5eed)), choiceZipfS, 1, choiceKeys-1)
}

// choiceCache is one candidate under test.
type choiceCache interface {
	// access looks key up, loads and inserts it on a miss, and reports a hit.
	access(key uint64) bool
	// settle completes the library's pending work.
	settle()
	// held returns the bytes of the values the cache currently holds.
	held() int64
	report(b *testing.B)
	close()
}

// choiceCounter is a choiceCache that counts its own hits.
type choiceCounter interface {
	lookups() (hits, total uint64)
}

func BenchmarkChoice(b *testing.B) {
	candidates := []struct {
		name string
		new  func(b *testing.B, load func(uint64) []byte) choiceCache
	}{
		{"static-optimal", newChoiceOptimal},
		{"otter", func(b *testing.B, load func(uint64) []byte) choiceCache { return newChoiceOtter(b, load, false) }},
		{"otter-sync", func(b *testing.B, load func(uint64) []byte) choiceCache { return newChoiceOtter(b, load, true) }},
		{"ristretto", newChoiceRistretto},
		{"cache.Cache", newChoiceCache},
	}
	for _, l := range choiceLoads {
		for _, c := range candidates {
			for _, goroutines := range []int{1, 16} {
				b.Run(fmt.Sprintf("load=%s/lib=%s/goroutines=%d", l.name, c.name, goroutines), func(b *testing.B) {
					runChoice(b, c.new(b, l.load), goroutines)
				})
			}
		}
	}
}

func runChoice(b *testing.B, c choiceCache, goroutines int) {
	defer c.close()
	z := newChoiceZipf(0)
	for range choiceWarmup {
		c.access(z.Uint64())
	}
	c.settle()
	var hits0, total0 uint64
	counter, counts := c.(choiceCounter)
	if counts {
		hits0, total0 = counter.lookups()
	}

	var hits atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for g := range goroutines {
		n := b.N / goroutines
		if g < b.N%goroutines {
			n++
		}
		wg.Go(func() {
			z := newChoiceZipf(uint64(g) + 1)
			h := int64(0)
			for range n {
				if c.access(z.Uint64()) {
					h++
				}
			}
			hits.Add(h)
		})
	}
	wg.Wait()
	b.StopTimer()

	raw := c.held()
	c.settle()
	settled := c.held()
	hitRatio := float64(hits.Load()) / float64(b.N)
	if counts {
		h, t := counter.lookups()
		hitRatio = float64(h-hits0) / float64(max(t-total0, 1))
	}
	b.ReportMetric(hitRatio, "hit-ratio")
	b.ReportMetric(float64(raw)/choiceBound, "held/bound")
	b.ReportMetric(float64(settled)/choiceBound, "settled/bound")
	c.report(b)
}

// choiceOptimal holds the keys with the best probability per byte.
type choiceOptimal struct {
	in   []bool
	vals [][]byte // the held values, so the live heap matches a real cache's
	load func(uint64) []byte
}

func newChoiceOptimal(_ *testing.B, load func(uint64) []byte) choiceCache {
	// rand.Zipf draws k in [0, imax] with probability ∝ (v+k)^-s, v = 1.
	keys := make([]int, choiceKeys)
	for i := range keys {
		keys[i] = i
	}
	density := func(k int) float64 {
		return math.Pow(float64(k+1), -choiceZipfS) / float64(choiceSizes[k])
	}
	slices.SortFunc(keys, func(a, b int) int {
		da, db := density(a), density(b)
		switch {
		case da > db:
			return -1
		case da < db:
			return 1
		}
		return 0
	})
	o := &choiceOptimal{in: make([]bool, choiceKeys), vals: make([][]byte, choiceKeys), load: load}
	var used int64
	for _, k := range keys {
		if used+int64(choiceSizes[k]) <= choiceBound {
			used += int64(choiceSizes[k])
			o.in[k] = true
			o.vals[k] = load(uint64(k))
		}
	}
	return o
}

func (o *choiceOptimal) access(key uint64) bool {
	if !o.in[key] {
		_ = o.load(key)
		return false
	}
	return true
}
func (o *choiceOptimal) settle()           {}
func (o *choiceOptimal) report(*testing.B) {}
func (o *choiceOptimal) close()            {}
func (o *choiceOptimal) held() int64 {
	var n int64
	for _, v := range o.vals {
		n += int64(len(v))
	}
	return n
}

// choiceOtter is otter used directly; sync runs its maintenance on the
// calling goroutine (as Cache does) instead of a new goroutine per drain.
type choiceOtter struct {
	c    *otter.Cache[uint64, []byte]
	load func(uint64) []byte
}

func newChoiceOtter(b *testing.B, load func(uint64) []byte, sync bool) choiceCache {
	o := &otter.Options[uint64, []byte]{
		MaximumWeight: choiceBound,
		Weigher:       func(_ uint64, v []byte) uint32 { return uint32(len(v)) },
	}
	if sync {
		o.Executor = func(fn func()) { fn() }
	}
	c, err := otter.New(o)
	if err != nil {
		b.Fatal(err)
	}
	return &choiceOtter{c: c, load: load}
}

func (o *choiceOtter) access(key uint64) bool {
	if _, ok := o.c.GetIfPresent(key); ok {
		return true
	}
	o.c.Set(key, o.load(key))
	return false
}
func (o *choiceOtter) settle()           { o.c.CleanUp() }
func (o *choiceOtter) report(*testing.B) {}
func (o *choiceOtter) close()            {}
func (o *choiceOtter) held() int64 {
	var n int64
	for _, v := range o.c.All() {
		n += int64(len(v))
	}
	return n
}

// choiceRistretto is ristretto used directly, with the settings its README
// recommends (10 counters per expected entry, BufferItems 64) and costs in
// bytes only.
type choiceRistretto struct {
	c             *ristretto.Cache[uint64, []byte]
	load          func(uint64) []byte
	sets, dropped atomic.Int64
	rejected      atomic.Int64
}

func newChoiceRistretto(b *testing.B, load func(uint64) []byte) choiceCache {
	r := &choiceRistretto{load: load}
	meanSize := int64(choiceMinSize+choiceMaxSize) / 2
	c, err := ristretto.NewCache(&ristretto.Config[uint64, []byte]{
		NumCounters:        10 * choiceBound / meanSize,
		MaxCost:            choiceBound,
		BufferItems:        64,
		IgnoreInternalCost: true,
		OnReject:           func(*ristretto.Item[[]byte]) { r.rejected.Add(1) },
	})
	if err != nil {
		b.Fatal(err)
	}
	r.c = c
	return r
}

func (r *choiceRistretto) access(key uint64) bool {
	if _, ok := r.c.Get(key); ok {
		return true
	}
	r.sets.Add(1)
	v := r.load(key)
	if !r.c.Set(key, v, int64(len(v))) {
		r.dropped.Add(1)
	}
	return false
}
func (r *choiceRistretto) settle() { r.c.Wait() }
func (r *choiceRistretto) close()  { r.c.Close() }
func (r *choiceRistretto) held() int64 {
	var n int64
	r.c.IterValues(func(v []byte) bool {
		n += int64(len(v))
		return false
	})
	return n
}
func (r *choiceRistretto) report(b *testing.B) {
	sets := float64(max(r.sets.Load(), 1))
	b.ReportMetric(100*float64(r.dropped.Load())/sets, "dropped%")
	b.ReportMetric(100*float64(r.rejected.Load())/sets, "rejected%")
}

// choiceCacheImpl is this package's Cache (otter with a synchronous
// executor, plus single-flight loads and the oversize rule).
type choiceCacheImpl struct {
	c    *Cache[uint64, []byte]
	load func(context.Context, uint64) ([]byte, error)
}

func newChoiceCache(b *testing.B, load func(uint64) []byte) choiceCache {
	c, err := New(&Options{MaxBytes: choiceBound}, func(_ uint64, v []byte) int64 { return int64(len(v)) })
	if err != nil {
		b.Fatal(err)
	}
	return &choiceCacheImpl{c: c, load: func(_ context.Context, key uint64) ([]byte, error) { return load(key), nil }}
}

// access does not know whether its Get was a hit (a Get that joins another
// goroutine's load is a miss that loads nothing); lookups counts instead.
func (c *choiceCacheImpl) access(key uint64) bool {
	_, _ = c.c.Get(context.Background(), key, c.load)
	return false
}
func (c *choiceCacheImpl) lookups() (hits, total uint64) {
	s := c.c.Stats()
	return s.Hits, s.Hits + s.Misses
}
func (c *choiceCacheImpl) settle()           { c.c.oc.CleanUp() }
func (c *choiceCacheImpl) report(*testing.B) {}
func (c *choiceCacheImpl) close()            {}
func (c *choiceCacheImpl) held() int64 {
	var n int64
	for _, v := range c.c.oc.All() {
		n += int64(len(v))
	}
	return n
}
