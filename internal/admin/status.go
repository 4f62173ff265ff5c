package admin

import (
	"time"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/pair"
)

// Status is what /status answers and `twinbox status` prints: the wire
// format, shared by the node and every client of it (the CLI, the
// process harness, the benches).
type Status struct {
	Node     string `json:"node"`
	Role     string `json:"role"`
	Writable bool   `json:"writable"`
	Serving  bool   `json:"serving"`
	// Health is "ok", or why /healthz answers 503 (a failing disk or
	// write path).
	Health    string            `json:"health,omitempty"`
	Waiting   string            `json:"waiting,omitempty"`
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

	Replication *Replication `json:"replication,omitempty"`
	Failover    *Failover    `json:"failover,omitempty"`
	Merge       *Merge       `json:"merge,omitempty"`
}

// Merge is the merge part of Status: what a former active acknowledged
// alone during a split brain, re-applied on the active.
type Merge struct {
	Pending    int            `json:"pending_plans"`
	Found      int            `json:"found"`
	Acked      int            `json:"acknowledged"`
	Applied    int            `json:"reapplied"`
	Duplicates int            `json:"already_applied"`
	Skipped    map[string]int `json:"skipped,omitempty"`
	LastError  string         `json:"last_error,omitempty"`
}

// Replication is the replication part of Status.
type Replication struct {
	Epoch        uint64 `json:"epoch"`
	LogFirst     uint64 `json:"log_first"`
	LogLast      uint64 `json:"log_last"`
	PeerPosition uint64 `json:"peer_position"`
	PeerSeen     string `json:"peer_seen,omitempty"`
	Lag          uint64 `json:"lag"`
	Mode         string `json:"mode,omitempty"`
	// LinkBytes: on the passive, bytes received from the active over the
	// link; on the active, bytes its NATS server sent to all clients.
	LinkBytes uint64 `json:"link_bytes"`
	// Timings since start, in seconds, for rates and means: on the
	// active, its log appends (write and fsync) and its confirmed waits
	// for the passive; on the passive, its batches from arrival to the
	// report of their position.
	Appends         uint64  `json:"appends,omitempty"`
	AppendSeconds   float64 `json:"append_seconds,omitempty"`
	PeerWaits       uint64  `json:"peer_waits,omitempty"`
	PeerWaitSeconds float64 `json:"peer_wait_seconds,omitempty"`
	Takes           uint64  `json:"takes,omitempty"`
	TakeSeconds     float64 `json:"take_seconds,omitempty"`
	Rejoins         uint64  `json:"rejoins,omitempty"`
	Resyncs         uint64  `json:"resyncs,omitempty"`
	Error           string  `json:"error,omitempty"`
}

// Failover is the failover part of Status.
type Failover struct {
	failover.Status
	FenceDevice string               `json:"fence_device"`
	Paths       map[string]Heartbeat `json:"paths"`
}

// Heartbeat is one heartbeat path's part of Failover.
type Heartbeat struct {
	Sent      uint64            `json:"sent"`
	Received  uint64            `json:"received"`
	LastHeard string            `json:"last_heard,omitempty"`
	Rejected  map[string]uint64 `json:"rejected,omitempty"`
	LastError string            `json:"last_error,omitempty"`
}

// FromPair fills the node's part of a Status from the pair's.
func FromPair(st *Status, ps pair.Status, now time.Time) {
	st.Node, st.Role, st.Writable, st.Serving, st.Waiting = ps.Node, string(ps.Role), ps.Writable, ps.Serving, ps.Waiting
	st.Applied = ps.Applied
	st.Writes, st.WriteFailures, st.Unconfirmed = ps.Writes, ps.WriteFailures, ps.Unconfirmed
	st.CommitBatch = ps.Commit.AvgBatch()
	st.StoreBytes = ps.StoreBytes
	rs := ps.Cache
	if gets := rs.Bodies.Hits + rs.Bodies.Misses + rs.Metas.Hits + rs.Metas.Misses; gets > 0 {
		st.CacheHitRate = float64(rs.Bodies.Hits+rs.Metas.Hits) / float64(gets)
	}
	if r := ps.Replication; r != nil {
		st.Replication = &Replication{Epoch: r.Epoch, LogFirst: r.LogFirst, LogLast: r.LogLast,
			PeerPosition: r.PeerPosition, PeerSeen: ago(now, r.PeerSeen), Lag: r.Lag, Mode: r.Mode,
			LinkBytes: r.LinkBytes, Appends: r.Appends, AppendSeconds: r.AppendTime.Seconds(),
			PeerWaits: r.PeerWaits, PeerWaitSeconds: r.PeerWaitTime.Seconds(),
			Takes: r.Takes, TakeSeconds: r.TakeTime.Seconds(), Rejoins: r.Rejoins, Resyncs: r.Resyncs, Error: r.Error}
		if r.Degraded {
			st.Replication.Mode += ", degraded (the passive is fenced: acknowledged on this node alone)"
		}
	}
	if m := ps.Merge; m != nil {
		st.Merge = &Merge{Pending: m.Pending, Found: m.Found, Acked: m.Acked, Applied: m.Applied,
			Duplicates: m.Duplicates, Skipped: m.Skipped, LastError: m.LastError}
	}
	if f := ps.Failover; f != nil {
		st.Failover = &Failover{Status: f.Status, FenceDevice: f.FenceDevice, Paths: map[string]Heartbeat{}}
		for name, h := range f.Paths {
			st.Failover.Paths[name] = Heartbeat{Sent: h.Sent, Received: h.Received, LastHeard: ago(now, h.LastHeard),
				Rejected: h.Rejected, LastError: h.LastError}
		}
	}
}

// ago says how long before now t was, "" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return now.Sub(t).Round(time.Millisecond).String() + " ago"
}
