package admin

import (
	"context"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/twinbox/twinbox/pair"
)

// Metrics are a node's Prometheus collectors (served at /metrics) and the
// delivery counters /status reports.
type Metrics struct {
	Registry *prometheus.Registry

	deliveries     *prometheus.CounterVec
	recipients     *prometheus.CounterVec
	receivedBytes  prometheus.Counter
	recipientBytes prometheus.Counter
	cmdDuration    *prometheus.HistogramVec
	cmdFailures    *prometheus.CounterVec
	delivery       *prometheus.HistogramVec
	fences         *prometheus.CounterVec
	fenceDuration  prometheus.Histogram
	replication    *prometheus.HistogramVec
	fenceLast      atomic.Pointer[fenceResult]

	// For /status: totals since start.
	nDeliveries, nRecipients, nReceived, nRecipientBytes atomic.Uint64
}

// NewMetrics returns a node's metrics, with Go's and the process's.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
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
	m.delivery = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "twinbox_delivery_duration_seconds",
		Help: "Time to take a message in and acknowledge it (SMTP/LMTP DATA from its start, IMAP APPEND): received, stored, logged and confirmed by the passive.",
		// 0.5 ms to about 33 s: an fsync is ~1 ms, peer_timeout seconds.
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 17),
	}, []string{"proto"})
	m.fences = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "twinbox_fence_total", Help: "Fencing runs of the peer, by result (success, failure).",
	}, []string{"result"})
	m.fenceDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "twinbox_fence_duration_seconds", Help: "How long fencing the peer took (the fence agent's run), success or not.",
		Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120},
	})
	m.replication = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "twinbox_replication_duration_seconds",
		Help: "The active's write path by stage: append (the local log's append and fsync) and peer_wait (from then until the passive confirmed).",
		// 0.1 ms to about 6.5 s: an fsync is ~1 ms, peer_timeout seconds.
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 17),
	}, []string{"stage"})
	for _, stage := range []string{"append", "peer_wait"} {
		m.replication.WithLabelValues(stage)
	}
	for _, proto := range []string{"smtp", "lmtp", "imap"} {
		m.deliveries.WithLabelValues(proto) // present at zero from the start
		m.recipients.WithLabelValues(proto)
	}
	for _, r := range []string{"success", "failure"} {
		m.fences.WithLabelValues(r)
	}
	m.Registry.MustRegister(m.deliveries, m.recipients, m.receivedBytes, m.recipientBytes, m.cmdDuration, m.cmdFailures,
		m.delivery, m.fences, m.fenceDuration, m.replication, buildInfo(), &fenceCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// buildInfo is twinbox_build_info: 1, with the build's version, VCS
// revision and Go version as labels (join it to any series by instance).
func buildInfo() prometheus.Collector {
	version, revision, goVersion := "(devel)", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "twinbox_build_info", Help: "The running build: version, VCS revision and Go version as labels; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// ObserveReplication records one stage of the active's write path
// (pair.Config.ObserveReplication).
func (m *Metrics) ObserveReplication(stage string, d time.Duration) {
	m.replication.WithLabelValues(stage).Observe(d.Seconds())
}

// fenceResult is the last fencing run.
type fenceResult struct {
	ok bool
	at time.Time
}

// Fenced records a fencing run of the peer: its error (nil: the peer is
// off) and how long it took.
func (m *Metrics) Fenced(err error, took time.Duration) {
	r := "success"
	if err != nil {
		r = "failure"
	}
	m.fences.WithLabelValues(r).Inc()
	m.fenceDuration.Observe(took.Seconds())
	m.fenceLast.Store(&fenceResult{ok: err == nil, at: time.Now()})
}

// fenceCollector reports the last fencing run; nothing before the first.
type fenceCollector struct{ m *Metrics }

var (
	fenceLastOK = prometheus.NewDesc("twinbox_fence_last_success",
		"1 when the last fencing run powered the peer off, 0 when it failed; absent before the first run.", nil, nil)
	fenceLastAt = prometheus.NewDesc("twinbox_fence_last_timestamp_seconds",
		"When the last fencing run ended (Unix time); absent before the first run.", nil, nil)
)

func (c *fenceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- fenceLastOK; ch <- fenceLastAt }

func (c *fenceCollector) Collect(ch chan<- prometheus.Metric) {
	if r := c.m.fenceLast.Load(); r != nil {
		ch <- prometheus.MustNewConstMetric(fenceLastOK, prometheus.GaugeValue, b2f(r.ok))
		ch <- prometheus.MustNewConstMetric(fenceLastAt, prometheus.GaugeValue, float64(r.at.UnixNano())/1e9)
	}
}

// Observe returns a protocol's command hook.
func (m *Metrics) Observe(proto string) func(cmd string, d time.Duration, err error) {
	delivers := map[string]bool{"DATA": true, "BDAT": true, "APPEND": true}
	return func(cmd string, d time.Duration, err error) {
		m.cmdDuration.WithLabelValues(proto, cmd).Observe(d.Seconds())
		if err != nil {
			m.cmdFailures.WithLabelValues(proto, cmd).Inc()
		} else if delivers[strings.ToUpper(cmd)] {
			m.delivery.WithLabelValues(proto).Observe(d.Seconds())
		}
	}
}

// Delivered returns a protocol's delivery hook.
func (m *Metrics) Delivered(proto string) func(recipients int, size int64) {
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

// FillDeliveries puts the delivery totals into st.
func (m *Metrics) FillDeliveries(st *Status) {
	st.Deliveries, st.Recipients = m.nDeliveries.Load(), m.nRecipients.Load()
	st.ReceivedBytes, st.RecipientBytes = m.nReceived.Load(), m.nRecipientBytes.Load()
}

// Gauge and Counter register a value read at scrape time.
func (m *Metrics) Gauge(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

func (m *Metrics) Counter(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// Sessions registers the open connections of each protocol.
func (m *Metrics) Sessions(protos map[string]func() int) {
	for proto, f := range protos {
		m.Gauge("twinbox_"+proto+"_sessions", "Open "+strings.ToUpper(proto)+" connections.", func() float64 { return float64(f()) })
	}
}

// RegisterPair exposes the node's state on /metrics, read once per
// scrape from its Status.
func (m *Metrics) RegisterPair(p *pair.Pair) {
	m.Registry.MustRegister(&pairCollector{p: p})
}

// pairCollector turns one pair.Status into the node's metrics.
type pairCollector struct{ p *pair.Pair }

// metric is one of the node's metrics: its description and how it is read
// from a Status (ok false: not reported in this state).
type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s *pair.Status, now time.Time) (v float64, ok bool)
}

func gauge(name, help string, f func(s *pair.Status, now time.Time) (float64, bool)) metric {
	return metric{prometheus.NewDesc(name, help, nil, nil), prometheus.GaugeValue, f}
}

func counter(name, help string, f func(s *pair.Status, now time.Time) (float64, bool)) metric {
	return metric{prometheus.NewDesc(name, help, nil, nil), prometheus.CounterValue, f}
}

func always(f func(s *pair.Status) float64) func(*pair.Status, time.Time) (float64, bool) {
	return func(s *pair.Status, _ time.Time) (float64, bool) { return f(s), true }
}

// repl reads a replication value, reported in a pair only.
func repl(f func(r *pair.ReplicationStatus) float64) func(*pair.Status, time.Time) (float64, bool) {
	return func(s *pair.Status, _ time.Time) (float64, bool) {
		if s.Replication == nil {
			return 0, false
		}
		return f(s.Replication), true
	}
}

// asActive and asPassive read a replication value in that role, 0 in the
// other (counters keep their names across role changes).
func asActive(f func(r *pair.ReplicationStatus) float64) func(*pair.Status, time.Time) (float64, bool) {
	return func(s *pair.Status, _ time.Time) (float64, bool) {
		if s.Replication == nil {
			return 0, false
		}
		if s.Role != pair.Active {
			return 0, true
		}
		return f(s.Replication), true
	}
}

func asPassive(f func(r *pair.ReplicationStatus) float64) func(*pair.Status, time.Time) (float64, bool) {
	return func(s *pair.Status, _ time.Time) (float64, bool) {
		if s.Replication == nil {
			return 0, false
		}
		if s.Role != pair.Passive {
			return 0, true
		}
		return f(s.Replication), true
	}
}

func fo(f func(f *pair.FailoverStatus, now time.Time) float64) func(*pair.Status, time.Time) (float64, bool) {
	return func(s *pair.Status, now time.Time) (float64, bool) {
		if s.Failover == nil {
			return 0, false
		}
		return f(s.Failover, now), true
	}
}

func mergeStat(f func(m *pair.MergeStatus) int) func(*pair.Status, time.Time) (float64, bool) {
	return func(s *pair.Status, _ time.Time) (float64, bool) {
		if s.Merge == nil {
			return 0, false
		}
		return float64(f(s.Merge)), true
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var pairMetrics = []metric{
	gauge("twinbox_applied_seq", "Last log sequence applied to the store.", always(func(s *pair.Status) float64 { return float64(s.Applied) })),
	gauge("twinbox_store_disk_bytes", "Bytes of the store's live files on disk.", always(func(s *pair.Status) float64 { return float64(s.StoreBytes) })),
	counter("twinbox_cache_hits_total", "Read cache hits (bodies and metadata).", always(func(s *pair.Status) float64 {
		return float64(s.Cache.Bodies.Hits + s.Cache.Metas.Hits)
	})),
	counter("twinbox_cache_misses_total", "Read cache misses (bodies and metadata).", always(func(s *pair.Status) float64 {
		return float64(s.Cache.Bodies.Misses + s.Cache.Metas.Misses)
	})),
	counter("twinbox_commit_batches_total", "Group commit flushes (fsynced batches).", always(func(s *pair.Status) float64 { return float64(s.Commit.Batches) })),
	counter("twinbox_commit_requests_total", "Writes committed through group commit.", always(func(s *pair.Status) float64 { return float64(s.Commit.Requests) })),
	gauge("twinbox_serving", "1 when the node serves mail (0 while it waits to know its data is current).", always(func(s *pair.Status) float64 { return b2f(s.Serving) })),

	gauge("twinbox_replication_epoch", "The epoch this node writes (active) or accepts (passive).", repl(func(r *pair.ReplicationStatus) float64 { return float64(r.Epoch) })),
	gauge("twinbox_log_last_seq", "Last entry in this node's log.", repl(func(r *pair.ReplicationStatus) float64 { return float64(r.LogLast) })),
	gauge("twinbox_log_first_seq", "First entry still in this node's log (older ones were trimmed).", repl(func(r *pair.ReplicationStatus) float64 { return float64(r.LogFirst) })),
	counter("twinbox_replication_link_bytes_total", "As the active, bytes its NATS server sent (the log to the passive, mostly); as a passive, bytes received from the active. Resets on a role change.", repl(func(r *pair.ReplicationStatus) float64 { return float64(r.LinkBytes) })),
	gauge("twinbox_replication_peer_position", "As the active, the last entry the passive reported durable.", asActive(func(r *pair.ReplicationStatus) float64 { return float64(r.PeerPosition) })),
	gauge("twinbox_replication_peer_seen_seconds", "As the active, seconds since the passive last reported (its reports double as a heartbeat); absent before the first.", func(s *pair.Status, now time.Time) (float64, bool) {
		if r := s.Replication; r != nil && s.Role == pair.Active && !r.PeerSeen.IsZero() {
			return now.Sub(r.PeerSeen).Seconds(), true
		}
		return 0, false
	}),
	gauge("twinbox_replication_lag_entries", "As the active, entries in its log the passive has not confirmed.", asActive(func(r *pair.ReplicationStatus) float64 { return float64(r.Lag) })),
	gauge("twinbox_replication_lag_seconds", "As the active, how long the passive has been behind: 0 when it holds every entry, else the time since its last report (an upper bound of the oldest unconfirmed entry's age).", func(s *pair.Status, now time.Time) (float64, bool) {
		r := s.Replication
		if r == nil {
			return 0, false
		}
		if s.Role != pair.Active || r.Lag == 0 {
			return 0, true
		}
		if r.PeerSeen.IsZero() {
			return 0, false // never heard: the entries say it
		}
		return now.Sub(r.PeerSeen).Seconds(), true
	}),
	gauge("twinbox_replication_degraded", "1 when the active acknowledges alone (its passive is fenced).", asActive(func(r *pair.ReplicationStatus) float64 { return b2f(r.Degraded) })),
	counter("twinbox_log_appends_total", "Appends to the local log as the active (one per group commit).", asActive(func(r *pair.ReplicationStatus) float64 { return float64(r.Appends) })),
	counter("twinbox_log_append_seconds_total", "Time spent in appends to the local log (write and fsync).", asActive(func(r *pair.ReplicationStatus) float64 { return r.AppendTime.Seconds() })),
	counter("twinbox_replication_peer_waits_total", "Writes the passive confirmed after the local append.", asActive(func(r *pair.ReplicationStatus) float64 { return float64(r.PeerWaits) })),
	counter("twinbox_replication_peer_wait_seconds_total", "Time writes waited for the passive's confirmation after the local append.", asActive(func(r *pair.ReplicationStatus) float64 { return r.PeerWaitTime.Seconds() })),
	gauge("twinbox_replication_position", "As a passive, the last entry durable in this node's log.", asPassive(func(r *pair.ReplicationStatus) float64 { return float64(r.PeerPosition) })),
	counter("twinbox_replication_batches_total", "As a passive, batches of the active's log made durable here.", asPassive(func(r *pair.ReplicationStatus) float64 { return float64(r.Takes) })),
	counter("twinbox_replication_batch_seconds_total", "As a passive, time from a batch's arrival to the report of its position (decoding, append, fsync).", asPassive(func(r *pair.ReplicationStatus) float64 { return r.TakeTime.Seconds() })),
	counter("twinbox_replication_resyncs_total", "Rebuilds of this node's store from the active's checkpoint.", repl(func(r *pair.ReplicationStatus) float64 { return float64(r.Resyncs) })),

	gauge("twinbox_merge_pending_plans", "Merge plans of diverged tails not finished yet.", func(s *pair.Status, _ time.Time) (float64, bool) {
		if s.Merge == nil {
			return 0, false
		}
		return float64(s.Merge.Pending), true
	}),
	counter("twinbox_merge_found_total", "Operations found in diverged tails since start.", mergeStat(func(m *pair.MergeStatus) int { return m.Found })),
	counter("twinbox_merge_acknowledged_total", "Operations of diverged tails that had been acknowledged to a client.", mergeStat(func(m *pair.MergeStatus) int { return m.Acked })),
	counter("twinbox_merge_reapplied_total", "Merge steps re-applied on the active.", mergeStat(func(m *pair.MergeStatus) int { return m.Applied })),
	counter("twinbox_merge_skipped_total", "Operations or merge steps not re-applied (not acknowledged, or not applicable on the active).", mergeStat(func(m *pair.MergeStatus) int {
		n := 0
		for _, v := range m.Skipped {
			n += v
		}
		return n
	})),
	gauge("twinbox_failover_active", "1 when this node is the active.", fo(func(f *pair.FailoverStatus, _ time.Time) float64 { return b2f(f.Role == "active") })),
	gauge("twinbox_failover_epoch", "The highest epoch this node knows.", fo(func(f *pair.FailoverStatus, _ time.Time) float64 { return float64(f.Epoch) })),
	gauge("twinbox_failover_peer_alive", "1 when the peer was heard within deadtime on some path.", fo(func(f *pair.FailoverStatus, _ time.Time) float64 {
		return b2f(f.Peer == "alive" || f.Peer == "late")
	})),
	gauge("twinbox_failover_standby", "1 when this node will not take the active role by itself.", fo(func(f *pair.FailoverStatus, _ time.Time) float64 { return b2f(f.Standby) })),
}

// heartbeatMetrics are per path.
func heartbeatMetrics(path string) []metric {
	return []metric{
		gauge("twinbox_heartbeat_"+path+"_last_seconds", "Seconds since a valid heartbeat arrived on the "+path+" path; absent before the first (see also twinbox_heartbeat_age_seconds).", func(s *pair.Status, now time.Time) (float64, bool) {
			if s.Failover == nil {
				return 0, false
			}
			if h, ok := s.Failover.Paths[path]; ok && !h.LastHeard.IsZero() {
				return now.Sub(h.LastHeard).Seconds(), true
			}
			return 0, false
		}),
		counter("twinbox_heartbeat_"+path+"_rejected_total", "Heartbeats refused on the "+path+" path (bad signature, stale, replayed, other version, malformed).", fo(func(f *pair.FailoverStatus, _ time.Time) float64 {
			var n uint64
			for _, v := range f.Paths[path].Rejected {
				n += v
			}
			return float64(n)
		})),
	}
}

func (c *pairCollector) metrics() []metric {
	ms := append([]metric(nil), pairMetrics...)
	for _, path := range []string{"udp", "nats"} {
		ms = append(ms, heartbeatMetrics(path)...)
	}
	return ms
}

// Labelled metrics of the node's state.
var (
	roleDesc = prometheus.NewDesc("twinbox_role",
		"1 for the node's role now (standalone, active, passive), 0 for the others: every role is always present, with or without failover.", []string{"role"}, nil)
	fencingDesc = prometheus.NewDesc("twinbox_fencing_state",
		"1 for the fencing state now (none, waiting, running, confirmed, failed), 0 for the others; with failover only.", []string{"state"}, nil)
	heartbeatAgeDesc = prometheus.NewDesc("twinbox_heartbeat_age_seconds",
		"Seconds since a valid heartbeat arrived on a path; a path is absent before its first heartbeat.", []string{"path"}, nil)
	roles         = []pair.Role{pair.Standalone, pair.Active, pair.Passive}
	fencingStates = []string{"none", "waiting", "running", "confirmed", "failed"}
)

// fencingState names failover's fencing status as fencingStates does.
func fencingState(s string) string {
	switch {
	case strings.HasPrefix(s, "waiting"):
		return "waiting"
	case strings.HasPrefix(s, "peer confirmed"):
		return "confirmed"
	case strings.HasPrefix(s, "failed"):
		return "failed"
	}
	return s
}

func (c *pairCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics() {
		ch <- m.desc
	}
	ch <- roleDesc
	ch <- fencingDesc
	ch <- heartbeatAgeDesc
}

// collectLabelled sends the labelled metrics of s.
func collectLabelled(ch chan<- prometheus.Metric, s *pair.Status, now time.Time) {
	for _, r := range roles {
		ch <- prometheus.MustNewConstMetric(roleDesc, prometheus.GaugeValue, b2f(s.Role == r), string(r))
	}
	f := s.Failover
	if f == nil {
		return
	}
	cur := fencingState(f.Fencing)
	for _, st := range fencingStates {
		ch <- prometheus.MustNewConstMetric(fencingDesc, prometheus.GaugeValue, b2f(cur == st), st)
	}
	for path, h := range f.Paths {
		if !h.LastHeard.IsZero() {
			ch <- prometheus.MustNewConstMetric(heartbeatAgeDesc, prometheus.GaugeValue, now.Sub(h.LastHeard).Seconds(), path)
		}
	}
}

func (c *pairCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := c.p.Status(ctx)
	now := time.Now()
	for _, m := range c.metrics() {
		if v, ok := m.value(&s, now); ok {
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, v)
		}
	}
	collectLabelled(ch, &s, now)
}
