package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

func weighLen(_ int, v []byte) int64 { return int64(len(v)) }

func newTestCache(tb testing.TB, opts *Options) *Cache[int, []byte] {
	tb.Helper()
	c, err := New(opts, weighLen)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// heldBytes walks the cache and sums the weights of the values it holds,
// independently of the eviction policy's own accounting.
func (c *Cache[K, V]) heldBytes() int64 {
	var n int64
	for k, v := range c.oc.All() {
		n += c.weight(k, v)
	}
	return n
}

// loader returns a load function that counts its calls and returns a body
// of size(key) bytes.
func loader(calls *atomic.Int64, size func(int) int) func(context.Context, int) ([]byte, error) {
	return func(_ context.Context, key int) ([]byte, error) {
		calls.Add(1)
		return make([]byte, size(key)), nil
	}
}

func TestOptionsDefaultsAndValidate(t *testing.T) {
	c := newTestCache(t, nil)
	if got := c.MaxBytes(); got != DefaultMaxBytes {
		t.Errorf("nil options: MaxBytes = %d, want %d", got, DefaultMaxBytes)
	}
	if got, want := c.maxEntry, DefaultMaxBytes/DefaultMaxEntryDivisor; got != want {
		t.Errorf("nil options: max entry = %d, want %d", got, want)
	}
	c = newTestCache(t, &Options{MaxBytes: 5})
	if c.maxEntry != 1 {
		t.Errorf("MaxBytes 5: max entry = %d, want 1", c.maxEntry)
	}

	// Every problem is reported at once, with field name and value.
	_, err := New(&Options{MaxBytes: -7, MaxEntryBytes: -3}, weighLen)
	if err == nil {
		t.Fatal("New with negative sizes: no error")
	}
	for _, want := range []string{"cache: Options.MaxBytes = -7", "cache: Options.MaxEntryBytes = -3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	err = (&Options{MaxBytes: 100, MaxEntryBytes: 101}).Validate()
	if err == nil || !strings.Contains(err.Error(), "MaxEntryBytes = 101") {
		t.Errorf("MaxEntryBytes > MaxBytes: err = %v", err)
	}
	err = (&Options{MaxBytes: 1 << 40, MaxEntryBytes: 1 << 33}).Validate()
	if err == nil || !strings.Contains(err.Error(), "MaxEntryBytes = 8589934592") {
		t.Errorf("MaxEntryBytes over 4 GiB: err = %v", err)
	}
	if _, err := New[int, []byte](nil, nil); err == nil || !strings.Contains(err.Error(), "weigh") {
		t.Errorf("nil weigh: err = %v", err)
	}
}

func TestByteBoundSingleWriter(t *testing.T) {
	// With one writer the bound holds as soon as each Get returns: the
	// eviction runs on the writing goroutine.
	const maxBytes = 4000
	c := newTestCache(t, &Options{MaxBytes: maxBytes})
	r := rand.New(rand.NewPCG(1, 1))
	sizes := make([]int, 2000)
	for i := range sizes {
		sizes[i] = 1 + r.IntN(maxBytes/DefaultMaxEntryDivisor)
	}
	var calls atomic.Int64
	load := loader(&calls, func(k int) int { return sizes[k] })
	ctx := context.Background()
	for i := range 20_000 {
		key := int(r.Uint64() % uint64(len(sizes)))
		if key%3 == 0 {
			key = i % len(sizes) // plenty of one-off keys too
		}
		v, err := c.Get(ctx, key, load)
		if err != nil || len(v) != sizes[key] {
			t.Fatalf("Get(%d) = %d bytes, %v; want %d bytes", key, len(v), err, sizes[key])
		}
		if held := c.heldBytes(); held > maxBytes {
			t.Fatalf("after %d Gets the cache holds %d bytes, bound %d", i+1, held, maxBytes)
		}
	}
	s := c.Stats()
	if s.Bytes > maxBytes || s.Bytes != c.heldBytes() {
		t.Errorf("Stats().Bytes = %d, held %d, bound %d", s.Bytes, c.heldBytes(), maxBytes)
	}
	if s.Evictions == 0 {
		t.Error("no evictions counted")
	}
}

func TestByteBoundConcurrentWriters(t *testing.T) {
	// Concurrent writers may leave maintenance for the next operation, so
	// the bound is checked once the policy has settled (Stats does that).
	const maxBytes = 1 << 16
	c := newTestCache(t, &Options{MaxBytes: maxBytes})
	var calls atomic.Int64
	load := loader(&calls, func(k int) int { return 1 + k%(maxBytes/DefaultMaxEntryDivisor) })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 2))
			for range 5000 {
				if _, err := c.Get(context.Background(), r.IntN(10_000), load); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := c.Stats()
	if held := c.heldBytes(); s.Bytes > maxBytes || held > maxBytes {
		t.Errorf("settled: Stats().Bytes = %d, held %d, bound %d", s.Bytes, held, maxBytes)
	}
	if s.Hits+s.Misses != 8*5000 {
		t.Errorf("hits %d + misses %d != %d Gets", s.Hits, s.Misses, 8*5000)
	}
}

func TestOversizeNotCached(t *testing.T) {
	c := newTestCache(t, &Options{MaxBytes: 800}) // max entry 100
	var calls atomic.Int64
	load := loader(&calls, func(k int) int { return k })
	ctx := context.Background()
	for range 3 {
		v, err := c.Get(ctx, 101, load)
		if err != nil || len(v) != 101 {
			t.Fatalf("Get(101) = %d bytes, %v", len(v), err)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("oversize value loaded %d times, want 3 (never cached)", n)
	}
	for range 3 {
		if _, err := c.Get(ctx, 100, load); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("value at the limit: %d loads in total, want 4 (cached)", n)
	}
	s := c.Stats()
	if s.Oversize != 3 || s.Bytes != 100 || s.Entries != 1 {
		t.Errorf("stats = %+v, want 3 oversize, 100 bytes, 1 entry", s)
	}
}

func TestConcurrentGetsLoadOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, nil)
		release := make(chan struct{})
		var calls atomic.Int64
		load := func(_ context.Context, key int) ([]byte, error) {
			calls.Add(1)
			<-release
			return []byte(fmt.Sprint(key)), nil
		}
		const n = 50
		results := make(chan string, n)
		for range n {
			go func() {
				v, err := c.Get(context.Background(), 42, load)
				if err != nil {
					t.Error(err)
				}
				results <- string(v)
			}()
		}
		synctest.Wait() // every Get is now in the load or waiting for it
		if got := calls.Load(); got != 1 {
			t.Fatalf("load called %d times while in flight, want 1", got)
		}
		close(release)
		for range n {
			if v := <-results; v != "42" {
				t.Errorf("Get = %q, want 42", v)
			}
		}
		if _, err := c.Get(context.Background(), 42, load); err != nil {
			t.Fatal(err)
		}
		s := c.Stats()
		if calls.Load() != 1 || s.Loads != 1 || s.Misses != n || s.Hits != 1 {
			t.Errorf("calls %d, stats %+v; want 1 load, %d misses, 1 hit", calls.Load(), s, n)
		}
	})
}

func TestErrorsNotCached(t *testing.T) {
	c := newTestCache(t, nil)
	errDisk := errors.New("disk on fire")
	fail := true
	var calls atomic.Int64
	load := func(context.Context, int) ([]byte, error) {
		calls.Add(1)
		if fail {
			return nil, errDisk
		}
		return []byte("body"), nil
	}
	ctx := context.Background()
	for range 2 {
		if _, err := c.Get(ctx, 1, load); !errors.Is(err, errDisk) {
			t.Fatalf("Get = %v, want %v", err, errDisk)
		}
	}
	fail = false
	for range 2 {
		if v, err := c.Get(ctx, 1, load); err != nil || string(v) != "body" {
			t.Fatalf("Get = %q, %v after the error cleared", v, err)
		}
	}
	s := c.Stats()
	if calls.Load() != 3 || s.Loads != 3 || s.LoadErrors != 2 || s.Hits != 1 || s.Misses != 3 {
		t.Errorf("calls %d, stats %+v; want 3 loads, 2 errors, 1 hit, 3 misses", calls.Load(), s)
	}
}

func TestErrorSharedByWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, nil)
		errDisk := errors.New("disk on fire")
		release := make(chan struct{})
		load := func(context.Context, int) ([]byte, error) {
			<-release
			return nil, errDisk
		}
		errs := make(chan error, 3)
		for range 3 {
			go func() {
				_, err := c.Get(context.Background(), 7, load)
				errs <- err
			}()
		}
		synctest.Wait()
		close(release)
		for range 3 {
			if err := <-errs; !errors.Is(err, errDisk) {
				t.Errorf("waiter got %v, want %v", err, errDisk)
			}
		}
		if s := c.Stats(); s.Loads != 1 || s.Entries != 0 {
			t.Errorf("stats %+v, want 1 load and nothing cached", s)
		}
	})
}

func TestStatsCounting(t *testing.T) {
	c := newTestCache(t, &Options{MaxBytes: 1000})
	if r := c.Stats().HitRatio(); r != 0 {
		t.Errorf("hit ratio before any Get = %v, want 0", r)
	}
	var calls atomic.Int64
	load := loader(&calls, func(int) int { return 10 })
	ctx := context.Background()
	for _, k := range []int{1, 2, 1, 1, 3, 2} { // misses: 1, 2, 3
		if _, err := c.Get(ctx, k, load); err != nil {
			t.Fatal(err)
		}
	}
	s := c.Stats()
	want := Stats{Hits: 3, Misses: 3, Loads: 3, Bytes: 30, Entries: 3}
	if s != want {
		t.Errorf("stats = %+v, want %+v", s, want)
	}
	if r := s.HitRatio(); r != 0.5 {
		t.Errorf("hit ratio = %v, want 0.5", r)
	}
}

func TestInvalidate(t *testing.T) {
	c := newTestCache(t, nil)
	var calls atomic.Int64
	load := loader(&calls, func(int) int { return 3 })
	ctx := context.Background()
	if _, err := c.Get(ctx, 1, load); err != nil {
		t.Fatal(err)
	}
	c.Invalidate(1)
	c.Invalidate(2) // absent: no-op
	if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 || s.Evictions != 0 {
		t.Errorf("after Invalidate: %+v, want empty and no eviction counted", s)
	}
	if _, err := c.Get(ctx, 1, load); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d loads, want 2 (reloaded after Invalidate)", n)
	}
}

func TestInvalidateDuringLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, nil)
		release := make(chan struct{})
		var calls atomic.Int64
		load := func(context.Context, int) ([]byte, error) {
			n := calls.Add(1)
			if n == 1 {
				<-release
				return []byte("old"), nil
			}
			return []byte("new"), nil
		}
		got := make(chan string, 2)
		for range 2 {
			go func() {
				v, _ := c.Get(context.Background(), 1, load)
				got <- string(v)
			}()
		}
		synctest.Wait()
		c.Invalidate(1)
		// A Get after Invalidate does not join the stale load.
		if v, err := c.Get(context.Background(), 1, load); err != nil || string(v) != "new" {
			t.Errorf("Get after Invalidate = %q, %v; want new", v, err)
		}
		close(release)
		for range 2 {
			if v := <-got; v != "old" {
				t.Errorf("waiter of the old load got %q, want old", v)
			}
		}
		// The stale value was not stored over the new one.
		if v, _ := c.Get(context.Background(), 1, load); string(v) != "new" || calls.Load() != 2 {
			t.Errorf("cached %q after %d loads, want new after 2", v, calls.Load())
		}
	})
}

func TestWaiterContextCanceled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, nil)
		release := make(chan struct{})
		load := func(context.Context, int) ([]byte, error) {
			<-release
			return []byte("v"), nil
		}
		leader := make(chan error, 1)
		go func() {
			_, err := c.Get(context.Background(), 1, load)
			leader <- err
		}()
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		waiter := make(chan error, 1)
		go func() {
			_, err := c.Get(ctx, 1, load)
			waiter <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-waiter; !errors.Is(err, context.Canceled) {
			t.Errorf("canceled waiter got %v", err)
		}
		close(release)
		if err := <-leader; err != nil {
			t.Errorf("leader got %v", err)
		}
		// A done context still reads what is cached, but never loads.
		if v, err := c.Get(ctx, 1, load); err != nil || string(v) != "v" {
			t.Errorf("cached Get with done ctx = %q, %v", v, err)
		}
		if _, err := c.Get(ctx, 2, load); !errors.Is(err, context.Canceled) {
			t.Errorf("uncached Get with done ctx = %v, want context.Canceled", err)
		}
	})
}

func TestLeaderContextCanceled(t *testing.T) {
	// The caller that runs the load gives up; a waiter whose context is
	// alive must not inherit that error: it loads for itself.
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, nil)
		var calls atomic.Int64
		load := func(ctx context.Context, _ int) ([]byte, error) {
			if calls.Add(1) == 1 {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return []byte("v"), nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		leader := make(chan error, 1)
		go func() {
			_, err := c.Get(ctx, 1, load)
			leader <- err
		}()
		synctest.Wait()
		waiter := make(chan string, 1)
		go func() {
			v, err := c.Get(context.Background(), 1, load)
			if err != nil {
				t.Errorf("waiter: %v", err)
			}
			waiter <- string(v)
		}()
		synctest.Wait()
		cancel()
		if err := <-leader; !errors.Is(err, context.Canceled) {
			t.Errorf("leader got %v, want context.Canceled", err)
		}
		if v := <-waiter; v != "v" {
			t.Errorf("waiter got %q, want v", v)
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("%d loads, want 2", n)
		}
	})
}

func TestLoadPanicReleasesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCache(t, nil)
		release := make(chan struct{})
		load := func(context.Context, int) ([]byte, error) {
			<-release
			panic("boom")
		}
		recovered := make(chan any, 1)
		go func() {
			defer func() { recovered <- recover() }()
			_, _ = c.Get(context.Background(), 1, load)
		}()
		synctest.Wait()
		waiter := make(chan error, 1)
		go func() {
			_, err := c.Get(context.Background(), 1, load)
			waiter <- err
		}()
		synctest.Wait()
		close(release)
		if r := <-recovered; r != "boom" {
			t.Errorf("leader recovered %v, want the load's panic", r)
		}
		if err := <-waiter; !errors.Is(err, ErrLoadPanicked) {
			t.Errorf("waiter got %v, want ErrLoadPanicked", err)
		}
		ok := func(context.Context, int) ([]byte, error) { return []byte("v"), nil }
		if v, err := c.Get(context.Background(), 1, ok); err != nil || string(v) != "v" {
			t.Errorf("Get after the panic = %q, %v", v, err)
		}
	})
}

func TestZeroWeightStillEvictable(t *testing.T) {
	c, err := New(&Options{MaxBytes: 10}, func(int, []byte) int64 { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	load := func(context.Context, int) ([]byte, error) { return nil, nil }
	for k := range 100 {
		if _, err := c.Get(context.Background(), k, load); err != nil {
			t.Fatal(err)
		}
	}
	if s := c.Stats(); s.Entries > 10 || s.Bytes > 10 {
		t.Errorf("weightless values: %+v; want at most 10 entries (weight 1 each)", s)
	}
}
