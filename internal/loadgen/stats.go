package loadgen

import (
	"encoding/json"
	"math"
	"slices"
	"time"
)

// Latency summarises the latencies of one kind of transaction. In JSON the
// values are milliseconds.
type Latency struct {
	Samples int
	P50     time.Duration
	P90     time.Duration
	P99     time.Duration
	Max     time.Duration
}

// summarize sorts d in place and returns its percentiles (nearest rank).
func summarize(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	return Latency{
		Samples: len(d),
		P50:     percentile(d, 0.50),
		P90:     percentile(d, 0.90),
		P99:     percentile(d, 0.99),
		Max:     d[len(d)-1],
	}
}

// percentile returns the nearest-rank q-quantile of the sorted slice d.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// MarshalJSON writes the latencies in milliseconds, to the microsecond.
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Samples int     `json:"samples"`
		P50     float64 `json:"p50_ms"`
		P90     float64 `json:"p90_ms"`
		P99     float64 `json:"p99_ms"`
		Max     float64 `json:"max_ms"`
	}{l.Samples, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max)})
}

// perSecond returns n per second of elapsed.
func perSecond(n int64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return float64(n) / elapsed.Seconds()
}

// tally counts failures by reply code.
type tally map[string]int64

func (t tally) add(o tally) {
	for k, v := range o {
		t[k] += v
	}
}
