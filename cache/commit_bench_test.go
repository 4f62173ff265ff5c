package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// BenchmarkGroupCommit measures requests per second when every flush
// appends its batch to a file and fsyncs it (a stand-in for one Pebble
// commit with pebble.Sync), with 1 to 64 concurrent writers. "alone" is the
// baseline without group commit: each request writes and fsyncs by itself,
// under a mutex. It reports the average batch size; throughput should grow
// with concurrency for "group" and stay flat for "alone".
//
//	go test -run='^$' -bench=GroupCommit -benchtime=2000x ./cache/
func BenchmarkGroupCommit(b *testing.B) {
	record := make([]byte, 512) // a log entry referencing a body
	for _, mode := range []string{"alone", "group"} {
		for _, writers := range []int{1, 4, 16, 64} {
			b.Run(fmt.Sprintf("mode=%s/writers=%d", mode, writers), func(b *testing.B) {
				f, err := os.Create(filepath.Join(b.TempDir(), "log"))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				appendSync := func(n int) error {
					for range n {
						if _, err := f.Write(record); err != nil {
							return err
						}
					}
					return f.Sync()
				}
				var do func(ctx context.Context, req int) (int, error)
				var g *GroupCommit[int, int]
				if mode == "group" {
					g = NewGroupCommit(func(_ context.Context, reqs []int) ([]int, error) {
						return reqs, appendSync(len(reqs))
					}, nil)
					defer g.Close()
					do = g.Do
				} else {
					var mu sync.Mutex
					do = func(_ context.Context, req int) (int, error) {
						mu.Lock()
						defer mu.Unlock()
						return req, appendSync(1)
					}
				}
				b.ResetTimer()
				var wg sync.WaitGroup
				for w := range writers {
					n := b.N / writers
					if w < b.N%writers {
						n++
					}
					wg.Go(func() {
						for i := range n {
							if _, err := do(context.Background(), i); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
				if g != nil {
					b.ReportMetric(g.Stats().AvgBatch(), "avg-batch")
				}
			})
		}
	}
}
