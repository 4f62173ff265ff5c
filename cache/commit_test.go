package cache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// blockingFlush is a FlushFunc that reports each batch on started and
// returns only when the test sends the batch's outcome on release.
type blockingFlush struct {
	started chan []int
	release chan flushOutcome
}

type flushOutcome struct {
	res []string
	err error
}

func newBlockingFlush() *blockingFlush {
	return &blockingFlush{started: make(chan []int), release: make(chan flushOutcome)}
}

func (f *blockingFlush) flush(_ context.Context, reqs []int) ([]string, error) {
	f.started <- slices.Clone(reqs)
	o := <-f.release
	return o.res, o.err
}

// answer is the result the tests expect for request r.
func answer(r int) string { return fmt.Sprintf("ok-%d", r) }

// answers is the normal outcome of a batch.
func answers(batch []int) flushOutcome {
	o := flushOutcome{}
	for _, r := range batch {
		o.res = append(o.res, answer(r))
	}
	return o
}

type doResult struct {
	req int
	res string
	err error
}

// goDo calls Do on a new goroutine and sends its outcome to out.
func goDo(ctx context.Context, g *GroupCommit[int, string], req int, out chan<- doResult) {
	go func() {
		res, err := g.Do(ctx, req)
		out <- doResult{req, res, err}
	}()
}

func (g *GroupCommit[Req, Res]) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

func TestGroupCommitBatchesWhileFlushing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newBlockingFlush()
		g := NewGroupCommit(f.flush, nil)
		defer g.Close()
		out := make(chan doResult, 100)

		// Alone, a request is flushed at once, without waiting for company.
		goDo(t.Context(), g, 0, out)
		if b := <-f.started; !slices.Equal(b, []int{0}) {
			t.Fatalf("first batch = %v, want [0]", b)
		}
		// While that flush runs, N requests arrive one after the other...
		const n = 20
		for i := 1; i <= n; i++ {
			goDo(t.Context(), g, i, out)
			synctest.Wait() // fixes the arrival order
		}
		if q := g.queued(); q != n {
			t.Fatalf("%d requests queued during the flush, want %d", q, n)
		}
		f.release <- answers([]int{0})
		// ...and all go to the next flush, in arrival order.
		b := <-f.started
		want := make([]int, n)
		for i := range want {
			want[i] = i + 1
		}
		if !slices.Equal(b, want) {
			t.Fatalf("second batch = %v, want %v", b, want)
		}
		f.release <- answers(b)
		got := map[int]bool{}
		for range n + 1 {
			r := <-out
			if r.err != nil || r.res != answer(r.req) {
				t.Errorf("Do(%d) = %q, %v; want %q", r.req, r.res, r.err, answer(r.req))
			}
			got[r.req] = true
		}
		if len(got) != n+1 {
			t.Errorf("%d distinct callers answered, want %d", len(got), n+1)
		}
		s := g.Stats()
		if s.Batches != 2 || s.Requests != n+1 || s.MaxBatch != n || s.AvgBatch() != float64(n+1)/2 {
			t.Errorf("stats = %+v (avg %v), want 2 batches, %d requests, max %d", s, s.AvgBatch(), n+1, n)
		}
	})
}

func TestGroupCommitMaxBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newBlockingFlush()
		g := NewGroupCommit(f.flush, &CommitOptions{MaxBatch: 3})
		defer g.Close()
		out := make(chan doResult, 100)
		goDo(t.Context(), g, 0, out)
		<-f.started
		for i := 1; i <= 7; i++ {
			goDo(t.Context(), g, i, out)
			synctest.Wait()
		}
		f.release <- answers([]int{0})
		for _, want := range [][]int{{1, 2, 3}, {4, 5, 6}, {7}} {
			b := <-f.started
			if !slices.Equal(b, want) {
				t.Fatalf("batch = %v, want %v", b, want)
			}
			f.release <- answers(b)
		}
		for range 8 {
			if r := <-out; r.err != nil || r.res != answer(r.req) {
				t.Errorf("Do(%d) = %q, %v", r.req, r.res, r.err)
			}
		}
	})
}

func TestGroupCommitBatchErrorToAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newBlockingFlush()
		g := NewGroupCommit(f.flush, nil)
		defer g.Close()
		out := make(chan doResult, 100)
		goDo(t.Context(), g, 0, out)
		<-f.started
		for i := 1; i <= 5; i++ {
			goDo(t.Context(), g, i, out)
		}
		synctest.Wait()
		f.release <- answers([]int{0})
		<-out
		errFsync := errors.New("fsync: input/output error")
		<-f.started
		f.release <- flushOutcome{err: errFsync}
		for range 5 {
			if r := <-out; !errors.Is(r.err, errFsync) || r.res != "" {
				t.Errorf("Do(%d) = %q, %v; want the batch's error", r.req, r.res, r.err)
			}
		}
		if s := g.Stats(); s.FailedBatches != 1 {
			t.Errorf("FailedBatches = %d, want 1", s.FailedBatches)
		}
		// The GroupCommit goes on after a failed batch.
		goDo(t.Context(), g, 9, out)
		f.release <- answers(<-f.started)
		if r := <-out; r.err != nil || r.res != answer(9) {
			t.Errorf("Do(9) after a failed batch = %q, %v", r.res, r.err)
		}
	})
}

func TestGroupCommitWrongResultCount(t *testing.T) {
	for _, tc := range []struct {
		name  string
		count func(n int) int
	}{
		{"fewer", func(n int) int { return n - 1 }},
		{"more", func(n int) int { return n + 1 }},
		{"none", func(int) int { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newBlockingFlush()
				g := NewGroupCommit(f.flush, nil)
				defer g.Close()
				out := make(chan doResult, 10)
				goDo(t.Context(), g, 0, out)
				<-f.started
				for i := 1; i <= 3; i++ {
					goDo(t.Context(), g, i, out)
				}
				synctest.Wait()
				f.release <- answers([]int{0})
				<-out
				<-f.started
				f.release <- flushOutcome{res: make([]string, tc.count(3))}
				for range 3 {
					r := <-out
					if !errors.Is(r.err, ErrResultCount) || !strings.Contains(r.err.Error(), "for 3 requests") {
						t.Errorf("Do(%d) = %q, %v; want ErrResultCount", r.req, r.res, r.err)
					}
				}
			})
		})
	}
}

func TestGroupCommitCancelBeforeHandOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newBlockingFlush()
		g := NewGroupCommit(f.flush, nil)
		defer g.Close()
		out := make(chan doResult, 10)
		goDo(t.Context(), g, 0, out)
		<-f.started
		ctx, cancel := context.WithCancel(t.Context())
		goDo(t.Context(), g, 1, out)
		synctest.Wait()
		goDo(ctx, g, 2, out)
		synctest.Wait()
		goDo(t.Context(), g, 3, out)
		synctest.Wait()
		cancel()
		if r := <-out; r.req != 2 || !errors.Is(r.err, context.Canceled) {
			t.Fatalf("got %+v, want request 2 canceled", r)
		}
		f.release <- answers([]int{0})
		if b := <-f.started; !slices.Equal(b, []int{1, 3}) {
			t.Errorf("batch after the cancel = %v, want [1 3]", b)
		} else {
			f.release <- answers(b)
		}
		for range 3 {
			if r := <-out; r.err != nil {
				t.Errorf("Do(%d): %v", r.req, r.err)
			}
		}
		if s := g.Stats(); s.Canceled != 1 || s.Requests != 3 {
			t.Errorf("stats = %+v, want 1 canceled, 3 requests flushed", s)
		}
		// A context that is already done never queues.
		if _, err := g.Do(ctx, 4); !errors.Is(err, context.Canceled) {
			t.Errorf("Do with a done context = %v", err)
		}
	})
}

func TestGroupCommitCancelAfterHandOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var flushCtxErr error
		release := make(chan struct{})
		flush := func(ctx context.Context, reqs []int) ([]string, error) {
			<-release
			flushCtxErr = ctx.Err()
			return answers(reqs).res, nil
		}
		g := NewGroupCommit(flush, nil)
		defer g.Close()
		ctx, cancel := context.WithCancel(t.Context())
		out := make(chan doResult, 1)
		goDo(ctx, g, 5, out)
		synctest.Wait() // request 5 is in the flush
		cancel()
		synctest.Wait()
		select {
		case r := <-out:
			t.Fatalf("Do returned %+v before its flush finished", r)
		default:
		}
		close(release)
		if r := <-out; r.err != nil || r.res != answer(5) {
			t.Errorf("Do canceled after hand-off = %q, %v; want the real result", r.res, r.err)
		}
		if flushCtxErr != nil {
			t.Errorf("the flush's context was canceled by a caller: %v", flushCtxErr)
		}
	})
}

func TestGroupCommitClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newBlockingFlush()
		g := NewGroupCommit(f.flush, nil)
		out := make(chan doResult, 10)
		goDo(t.Context(), g, 0, out)
		<-f.started
		goDo(t.Context(), g, 1, out)
		synctest.Wait()

		closed := make(chan struct{})
		go func() {
			g.Close()
			close(closed)
		}()
		// The queued request is dropped at once...
		if r := <-out; r.req != 1 || !errors.Is(r.err, ErrClosed) {
			t.Fatalf("queued request got %+v, want ErrClosed", r)
		}
		// ...but Close waits for the flush in progress.
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while a flush was in progress")
		default:
		}
		if _, err := g.Do(t.Context(), 2); !errors.Is(err, ErrClosed) {
			t.Errorf("Do during Close = %v, want ErrClosed", err)
		}
		f.release <- answers([]int{0})
		<-closed
		if r := <-out; r.req != 0 || r.err != nil || r.res != answer(0) {
			t.Errorf("in-flight request got %+v, want its real result", r)
		}
		if _, err := g.Do(t.Context(), 3); !errors.Is(err, ErrClosed) {
			t.Errorf("Do after Close = %v, want ErrClosed", err)
		}
		g.Close() // again: no-op
		if s := g.Stats(); s.Requests != 1 {
			t.Errorf("stats = %+v, want only request 0 flushed", s)
		}
	})
}

func TestGroupCommitNoGoroutineLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		flush := func(_ context.Context, reqs []int) ([]string, error) { return answers(reqs).res, nil }
		g := NewGroupCommit(flush, nil)
		if res, err := g.Do(t.Context(), 1); err != nil || res != answer(1) {
			t.Fatalf("Do = %q, %v", res, err)
		}
		// No Close: an idle GroupCommit holds no goroutine, or
		// synctest.Test would report it as leaked.
	})
}

func TestGroupCommitHammer(t *testing.T) {
	const goroutines, perG = 64, 300
	var inFlush atomic.Int32
	var flushed atomic.Int64
	var mu sync.Mutex
	var sizes []int
	flush := func(_ context.Context, reqs []int) ([]string, error) {
		if inFlush.Add(1) != 1 {
			t.Error("flushes overlap")
		}
		defer inFlush.Add(-1)
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		flushed.Add(int64(len(reqs)))
		return answers(reqs).res, nil
	}
	g := NewGroupCommit(flush, &CommitOptions{MaxBatch: 32})
	var wg sync.WaitGroup
	var answered atomic.Int64
	for w := range goroutines {
		wg.Go(func() {
			for i := range perG {
				req := w*perG + i
				res, err := g.Do(context.Background(), req)
				if err != nil || res != answer(req) {
					t.Errorf("Do(%d) = %q, %v", req, res, err)
					return
				}
				answered.Add(1)
			}
		})
	}
	wg.Wait()
	g.Close()
	const total = goroutines * perG
	sum := 0
	for _, s := range sizes {
		if s < 1 || s > 32 {
			t.Errorf("batch of %d requests, want 1..32", s)
		}
		sum += s
	}
	s := g.Stats()
	if answered.Load() != total || sum != total || s.Requests != total || s.Batches != uint64(len(sizes)) {
		t.Errorf("answered %d, batches sum to %d, stats %+v; want %d requests in %d batches",
			answered.Load(), sum, s, total, len(sizes))
	}
	t.Logf("%d requests in %d batches (average %.1f, max %d)", total, s.Batches, s.AvgBatch(), s.MaxBatch)
}

func TestCommitOptionsValidate(t *testing.T) {
	err := (&CommitOptions{MaxBatch: -1}).Validate()
	if err == nil || !strings.Contains(err.Error(), "cache: CommitOptions.MaxBatch = -1") {
		t.Errorf("MaxBatch -1: err = %v", err)
	}
	if err := (*CommitOptions)(nil).Validate(); err != nil {
		t.Errorf("nil options: %v", err)
	}
	g := NewGroupCommit(func(context.Context, []int) ([]int, error) { return nil, nil }, &CommitOptions{})
	if g.maxBatch != DefaultMaxBatch {
		t.Errorf("zero MaxBatch: %d, want %d", g.maxBatch, DefaultMaxBatch)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Error("NewGroupCommit with MaxBatch -1 did not panic")
		}
	}()
	NewGroupCommit(func(context.Context, []int) ([]int, error) { return nil, nil }, &CommitOptions{MaxBatch: -1})
}

// The writers of a batch that come back are waited for: with siblings
// waiting on, 4 writers doing several rounds share each flush, while
// without the wait their batches split.
func TestGroupCommitWaitsForSiblings(t *testing.T) {
	const writers, rounds = 4, 5
	for _, wait := range []bool{true, false} {
		var mu sync.Mutex
		var sizes []int
		delay := 250 * time.Millisecond // ends as soon as the siblings are back
		if !wait {
			delay = -1
		}
		var g *GroupCommit[int, int]
		g = NewGroupCommit(func(_ context.Context, reqs []int) ([]int, error) {
			mu.Lock()
			first := len(sizes) == 0
			sizes = append(sizes, len(reqs))
			mu.Unlock()
			// Hold the first flush until the other writers are queued.
			for first {
				g.mu.Lock()
				first = len(g.queue) < writers-1
				g.mu.Unlock()
				runtime.Gosched()
			}
			return reqs, nil
		}, &CommitOptions{MaxDelay: delay})
		// Round 0 starts together: the writers queue behind a first
		// flush that is held until all of them are in.
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for r := range rounds {
					if _, err := g.Do(context.Background(), w*100+r); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		g.Close()
		st := g.Stats()
		if st.Requests != writers*rounds {
			t.Fatalf("requests %d", st.Requests)
		}
		full := 0
		for _, n := range sizes {
			if n == writers {
				full++
			}
		}
		t.Logf("wait=%v: batch sizes %v", wait, sizes)
		if wait && full < rounds-2 {
			t.Errorf("with the wait, only %d of %d batches held all %d writers: %v", full, len(sizes), writers, sizes)
		}
	}
}

// A lone writer never waits: each of its requests is its own flush at once
// (were it to wait, 200 requests would take 200 s and the test time out).
func TestGroupCommitLoneWriterDoesNotWait(t *testing.T) {
	g := NewGroupCommit(func(_ context.Context, reqs []int) ([]int, error) { return reqs, nil }, &CommitOptions{MaxDelay: time.Second})
	defer g.Close()
	for i := range 200 {
		if _, err := g.Do(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	if st := g.Stats(); st.Batches != 200 {
		t.Fatalf("batches = %d, want 200", st.Batches)
	}
}
