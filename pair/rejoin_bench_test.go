package pair_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/pair"
)

// BenchmarkRejoin measures what a former active's rejoin costs against
// the length of its diverged tail and the size of the store: the tail is
// acknowledged alone (a split brain), so the rejoin takes it back in place
// (store.Rollback) and merges it into the new active. It reports the time
// from the former active's start to serving again, and to the end of the
// merge, and the merge's rate.
//
//	go test ./pair -run '^$' -bench Rejoin -benchtime 1x
func BenchmarkRejoin(b *testing.B) {
	for _, store := range []int{100, 2000} {
		for _, tail := range []int{10, 200, 2000} {
			b.Run(fmt.Sprintf("store=%d/tail=%d", store, tail), func(b *testing.B) {
				for range b.N {
					rejoinOnce(b, store, tail)
				}
			})
		}
	}
}

func rejoinOnce(b *testing.B, storeMsgs, tail int) {
	b.StopTimer()
	ctx := context.Background()
	p := newTestPair(b, func(_ int, c *pair.Config) { c.PeerTimeout = time.Second })
	if err := p.nodes[0].Promote(ctx, 1, false); err != nil {
		b.Fatal(err)
	}
	for range storeMsgs {
		if _, err := p.Write(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
	p.holdAll()
	p.Stop(1)
	p.nodes[0].SetDegraded(true)
	for range tail {
		if _, err := p.Write(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
	p.Stop(0)
	p.Start(1)
	if err := p.nodes[1].Promote(ctx, 2, true); err != nil {
		b.Fatal(err)
	}
	for range 5 {
		if _, err := p.Write(ctx, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
	t0 := time.Now()
	p.Start(0)
	a := p.nodes[0]
	poll.Eventually(b, time.Minute, "the rejoin", func() bool {
		r := a.Status(ctx).Replication
		return r != nil && r.Rejoins == 1 && a.State().Serving
	})
	rejoined := time.Since(t0)
	poll.Eventually(b, 5*time.Minute, "the merge", func() bool {
		m := a.Status(ctx).Merge
		return m != nil && m.Pending == 0 && m.Applied > 0
	})
	merged := time.Since(t0)
	b.StopTimer()
	m := a.Status(ctx).Merge
	b.ReportMetric(float64(rejoined.Milliseconds()), "ms-to-serving")
	b.ReportMetric(float64(merged.Milliseconds()), "ms-to-merged")
	b.ReportMetric(float64(m.Applied)/merged.Seconds(), "merge-steps/s")
	if r := a.Status(ctx).Replication; r.Resyncs != 0 {
		b.Fatalf("the rejoin copied the store (%d resyncs)", r.Resyncs)
	}
	p.Stop(0)
	p.Stop(1)
	b.StartTimer()
}
