package pair

import (
	"context"
	"time"

	"github.com/twinbox/twinbox/cache"
	"github.com/twinbox/twinbox/failover"
)

// Status is the node's state as plain data, for /status, /metrics and
// `twinbox status`.
type Status struct {
	Node string
	State
	// Applied is the store's last applied log sequence.
	Applied uint64
	// Writes acknowledged, failed (the write path failed) and applied
	// but not confirmed by the peer in time (the client was told to
	// retry), since start.
	Writes, WriteFailures, Unconfirmed uint64
	Commit                             cache.CommitStats
	Cache                              cache.ReaderStats
	StoreBytes                         uint64
	// Replication is set in a pair, Failover with automatic failover.
	Replication *ReplicationStatus
	Failover    *FailoverStatus
	// Merge is set in a pair: the merges of diverged tails.
	Merge *MergeStatus
}

// ReplicationStatus is the replication part of Status.
type ReplicationStatus struct {
	Epoch        uint64 `json:"epoch"`
	LogFirst     uint64 `json:"log_first"`
	LogLast      uint64 `json:"log_last"`
	PeerPosition uint64 `json:"peer_position"`
	// PeerSeen is when the passive last reported (active), zero before.
	PeerSeen time.Time `json:"peer_seen"`
	Lag      uint64    `json:"lag"`
	Mode     string    `json:"mode,omitempty"`
	Degraded bool      `json:"degraded,omitempty"`
	// LinkBytes: on the passive, bytes received from the active over the
	// link; on the active, bytes its NATS server sent to all clients.
	LinkBytes uint64 `json:"link_bytes"`
	// Timings since start, for rates and means: on the active, its log
	// appends (write and fsync) and its confirmed waits for the passive;
	// on the passive, its batches from arrival to the report of their
	// position.
	Appends      uint64        `json:"appends,omitempty"`
	AppendTime   time.Duration `json:"append_ns,omitempty"`
	PeerWaits    uint64        `json:"peer_waits,omitempty"`
	PeerWaitTime time.Duration `json:"peer_wait_ns,omitempty"`
	Takes        uint64        `json:"takes,omitempty"`
	TakeTime     time.Duration `json:"take_ns,omitempty"`
	// Rejoins counts diverged tails taken back in place (no copy of the
	// store); Resyncs counts rebuilds of the store from the active's
	// checkpoint, the last one ending at LastResync.
	Rejoins    uint64    `json:"rejoins,omitempty"`
	Resyncs    uint64    `json:"resyncs,omitempty"`
	LastResync time.Time `json:"last_resync"`
	Error      string    `json:"error,omitempty"`
}

// FailoverStatus is the failover part of Status.
type FailoverStatus struct {
	failover.Status
	FenceDevice string                     `json:"fence_device"`
	Paths       map[string]HeartbeatStatus `json:"paths"`
	// BadPayloads counts signed heartbeats whose state was unreadable.
	BadPayloads uint64 `json:"bad_payloads,omitempty"`
}

// HeartbeatStatus is one heartbeat path's.
type HeartbeatStatus struct {
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	// LastHeard is when a valid heartbeat last arrived; zero before the
	// first.
	LastHeard time.Time         `json:"last_heard"`
	Rejected  map[string]uint64 `json:"rejected,omitempty"`
	LastError string            `json:"last_error,omitempty"`
}

// Status returns the node's state now.
func (p *Pair) Status(ctx context.Context) Status {
	l := p.loc.Load()
	st := Status{Node: p.cfg.Name, State: p.State(), Applied: l.st.AppliedSeq(),
		Writes: p.writes.Load(), WriteFailures: p.writeErrs.Load(), Unconfirmed: p.unconfirmed.Load(),
		Commit: p.commit.Stats(), Cache: l.reads.Stats()}
	if du, err := l.st.DiskUsage(); err == nil {
		st.StoreBytes = du
	}
	if p.log != nil {
		st.Replication = p.replicationStatus(ctx)
		m := p.merges.get()
		m.Pending = len(p.pendingPlans())
		st.Merge = &m
	}
	if p.fo != nil {
		st.Failover = p.fo.status()
	}
	return st
}

func (p *Pair) replicationStatus(ctx context.Context) *ReplicationStatus {
	s := p.roles.get()
	rs := &ReplicationStatus{Epoch: s.epoch}
	if ls, err := p.log.State(ctx); err == nil {
		rs.LogFirst, rs.LogLast = ls.First, ls.Last
	} else {
		rs.Error = err.Error()
	}
	if pr := s.primary; pr != nil {
		rs.Mode = "sync"
		if p.cfg.Async {
			rs.Mode = "async"
		}
		rs.Degraded = pr.Degraded()
		if v, err := p.srv.Varz(nil); err == nil {
			rs.LinkBytes = uint64(v.OutBytes)
		}
		rs.PeerPosition, rs.PeerSeen = pr.PeerPosition()
		ps := pr.Stats()
		rs.Appends, rs.AppendTime = ps.Appends, ps.AppendTime
		rs.PeerWaits, rs.PeerWaitTime = ps.PeerWaits, ps.PeerWaitTime
		if last, _ := pr.Last(); last > rs.PeerPosition {
			rs.Lag = last - rs.PeerPosition
		}
		return rs
	}
	if f := p.follow.Load(); f != nil {
		f.mu.Lock()
		fl, remote, ferr := f.f, f.remote, f.err
		rs.Resyncs, rs.LastResync, rs.Rejoins = f.resyncs, f.resyncAt, f.rejoins
		f.mu.Unlock()
		if ferr != nil {
			rs.Error = ferr.Error()
		}
		if fl != nil {
			fs := fl.Status()
			rs.PeerPosition = fs.Position
			rs.Takes, rs.TakeTime = fs.Takes, fs.TakeTime
			rs.Rejoins += fs.Rejoins
			rs.Epoch = max(fs.Epoch, s.epoch)
			if fs.Err != nil {
				rs.Error = fs.Err.Error()
			}
			rs.LinkBytes = remote.Stats().InBytes
		}
	}
	return rs
}

func (f *failoverRun) status() *FailoverStatus {
	s := &FailoverStatus{Status: f.d.Status(), FenceDevice: f.device, Paths: map[string]HeartbeatStatus{},
		BadPayloads: f.badPayload.Load()}
	for name, ps := range f.heart.Stats() {
		s.Paths[name] = HeartbeatStatus{Sent: ps.Sent, Received: ps.Received, LastHeard: ps.LastReceived,
			Rejected: ps.Rejected, LastError: ps.LastError}
	}
	return s
}
