package main

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twinbox/twinbox/store"
)

// metrics are a node's Prometheus collectors (served at /metrics) and the
// counters /status reports.
type metrics struct {
	reg *prometheus.Registry

	deliveries     *prometheus.CounterVec
	recipients     *prometheus.CounterVec
	receivedBytes  prometheus.Counter
	recipientBytes prometheus.Counter
	cmdDuration    *prometheus.HistogramVec
	cmdFailures    *prometheus.CounterVec

	// For /status: totals since start.
	nDeliveries, nRecipients, nReceived, nRecipientBytes atomic.Uint64
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "twinbox_deliveries_total", Help: "Messages delivered (acknowledged), by protocol.",
	}, []string{"proto"})
	m.recipients = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "twinbox_delivered_recipients_total", Help: "Mailboxes delivered into, by protocol.",
	}, []string{"proto"})
	m.receivedBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "twinbox_received_bytes_total", Help: "Bytes of delivered messages, each message counted once.",
	})
	m.recipientBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "twinbox_recipient_bytes_total",
		Help: "Bytes of delivered messages times their recipients: what a copy per mailbox would store. Compare with twinbox_store_disk_bytes for the single-copy ratio.",
	})
	m.cmdDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "twinbox_command_duration_seconds", Help: "Command latency, by protocol and command.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"proto", "command"})
	m.cmdFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "twinbox_command_failures_total", Help: "Commands that failed, by protocol and command.",
	}, []string{"proto", "command"})
	for _, proto := range []string{"smtp", "lmtp", "imap"} {
		m.deliveries.WithLabelValues(proto) // present at zero from the start
		m.recipients.WithLabelValues(proto)
	}
	m.reg.MustRegister(m.deliveries, m.recipients, m.receivedBytes, m.recipientBytes, m.cmdDuration, m.cmdFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe returns a protocol's command hook.
func (m *metrics) observe(proto string) func(cmd string, d time.Duration, err error) {
	return func(cmd string, d time.Duration, err error) {
		m.cmdDuration.WithLabelValues(proto, cmd).Observe(d.Seconds())
		if err != nil {
			m.cmdFailures.WithLabelValues(proto, cmd).Inc()
		}
	}
}

// delivered returns a protocol's delivery hook.
func (m *metrics) delivered(proto string) func(recipients int, size int64) {
	return func(recipients int, size int64) {
		m.deliveries.WithLabelValues(proto).Inc()
		m.recipients.WithLabelValues(proto).Add(float64(recipients))
		m.receivedBytes.Add(float64(size))
		m.recipientBytes.Add(float64(size) * float64(recipients))
		m.nDeliveries.Add(1)
		m.nRecipients.Add(uint64(recipients))
		m.nReceived.Add(uint64(size))
		m.nRecipientBytes.Add(uint64(size) * uint64(recipients))
	}
}

// gauge and counter register a value read at scrape time.
func (m *metrics) gauge(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

func (m *metrics) counter(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// status is what /status reports and `twinbox status` prints.
type status struct {
	Node      string            `json:"node"`
	Role      string            `json:"role"`
	Started   time.Time         `json:"started"`
	Uptime    string            `json:"uptime"`
	Applied   uint64            `json:"applied_seq"`
	Listeners map[string]string `json:"listeners"`
	Sessions  map[string]int    `json:"sessions"`
	Users     int               `json:"users"`

	Deliveries     uint64  `json:"deliveries"`
	Recipients     uint64  `json:"recipients"`
	ReceivedBytes  uint64  `json:"received_bytes"`
	RecipientBytes uint64  `json:"recipient_bytes"`
	StoreBytes     uint64  `json:"store_disk_bytes"`
	StoreGrowth    int64   `json:"store_growth_bytes"`
	SingleCopy     float64 `json:"single_copy_ratio,omitempty"`

	CacheHitRate  float64 `json:"cache_hit_rate"`
	CommitBatch   float64 `json:"commit_avg_batch"`
	Writes        uint64  `json:"writes"`
	Unconfirmed   uint64  `json:"writes_unconfirmed"`
	WriteFailures uint64  `json:"write_failures"`
	LoginFailures uint64  `json:"login_failures"`

	Replication *pairStatus     `json:"replication,omitempty"`
	Failover    *failoverStatus `json:"failover,omitempty"`
}

// adminHandler serves /healthz, /status and /metrics.
func adminHandler(m *metrics, status func() status, digest func() (store.Digest, error), healthy func() error, more func(*http.ServeMux)) http.Handler {
	mux := http.NewServeMux()
	if more != nil {
		more(mux)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(status())
	})
	// /digest is the store's digest at its applied position, whole and per
	// mailbox: what `twinbox verify --peer` compares.
	mux.HandleFunc("GET /digest", func(w http.ResponseWriter, r *http.Request) {
		d, err := digest()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d)
	})
	// Go's profiler, for an operator on the admin address (loopback by
	// default): go tool pprof http://ADMIN/debug/pprof/profile
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	return mux
}

func sortStrings(s []string) { slices.Sort(s) }
