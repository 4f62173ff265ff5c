package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/twinbox/twinbox/internal/node"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// pair is a node's side of the replicated pair: its embedded NATS server
// and log, and either the active's write path or the passive's follower.
type pair struct {
	role     string
	epoch    uint64
	srv      *server.Server
	local    *nats.Conn
	remote   *nats.Conn
	log      *replog.Log
	primary  *replog.Primary
	follower *replog.Follower
	wg       sync.WaitGroup
	stop     context.CancelFunc

	stopResync func()
}

// dialActive connects to the active's NATS server with the link's
// credentials (and TLS).
func dialActive(c *config, name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.UserInfo(c.LinkUser, c.LinkPassword), nats.Name(c.NodeName + name),
		nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond), nats.RetryOnFailedConnect(true)}
	url := "nats://" + c.PeerNATS
	if c.LinkTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.LinkCA != "" {
			pem, err := os.ReadFile(c.LinkCA)
			if err != nil {
				return nil, fmt.Errorf("link_ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("link_ca: no certificate in %s", c.LinkCA)
			}
		}
		opts = append(opts, nats.Secure(tc))
		url = "tls://" + c.PeerNATS
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to the active at %s: %w", c.PeerNATS, err)
	}
	return nc, nil
}

// resyncIfNeeded, on a passive about to start, replaces its store with a
// checkpoint of the active's when its position is no longer in the
// active's log (trimmed while it was away), and starts its local log
// afresh after it. An active that cannot be reached now is left to the
// follower, which retries.
func resyncIfNeeded(ctx context.Context, c *config, log *slog.Logger, progress io.Writer) error {
	remote, err := dialActive(c, "-resync")
	if err != nil {
		return err
	}
	defer remote.Close()
	var applied uint64
	dir := storeDir(c.Data)
	if _, err := os.Stat(dir); err == nil {
		st, err := store.Open(ctx, dir, &store.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		applied = st.AppliedSeq()
		st.Close(ctx)
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	need, err := replog.NeedsResync(qctx, remote, applied)
	cancel()
	if err != nil {
		log.Warn("cannot ask the active whether a resync is needed; following will retry", "err", err)
		return nil
	}
	if !need {
		return nil
	}
	log.Warn("this node's position was trimmed from the active's log: full resync from a checkpoint", "applied", applied)
	fresh := dir + ".resync"
	os.RemoveAll(fresh)
	at, err := replog.Resync(ctx, remote, fresh, progress)
	if err != nil {
		return err
	}
	old := dir + ".old"
	os.RemoveAll(old)
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(fresh, dir); err != nil {
		return err
	}
	os.RemoveAll(old)
	// The local log held entries before the checkpoint only.
	if err := os.RemoveAll(filepath.Join(c.Data, "nats")); err != nil {
		return err
	}
	log.Info("resync done; following the active from the checkpoint", "position", at)
	return nil
}

// startPair starts the embedded NATS server and the log, and makes this
// node the active (writes go through the log, confirmed by the passive) or
// the passive (follows the active, serves reads only).
func startPair(ctx context.Context, c *config, n *node.Local, tlsConf *tls.Config, log *slog.Logger) (*pair, error) {
	p := &pair{role: c.Role, epoch: uint64(c.Epoch)}
	so := replog.ServerOptions{Name: c.NodeName, Dir: filepath.Join(c.Data, "nats"), Addr: c.NATSAddr,
		User: c.LinkUser, Password: c.LinkPassword}
	if c.LinkTLS {
		so.TLS = tlsConf
	}
	var err error
	if p.srv, err = replog.StartServer(so); err != nil {
		return nil, err
	}
	fail := func(err error) (*pair, error) {
		p.close()
		return nil, err
	}
	if p.local, err = replog.Connect(p.srv, c.LinkUser, c.LinkPassword, c.NodeName+"-local"); err != nil {
		return fail(err)
	}
	if p.log, err = replog.OpenLog(ctx, p.local, nil); err != nil {
		return fail(err)
	}
	switch c.Role {
	case "active":
		p.primary, err = replog.NewPrimary(ctx, p.log, n.Store(), p.local, &replog.PrimaryOptions{
			Epoch: p.epoch, Async: c.ReplicationMode == "async", PeerTimeout: c.PeerTimeout, Logger: log,
		})
		if err != nil {
			return fail(err)
		}
		if p.stopResync, err = replog.ServeResync(p.local, n.Store(), log); err != nil {
			return fail(err)
		}
		n.UseCommit(func(ctx context.Context, ops []store.Op) ([]node.Outcome, error) {
			res, err := p.primary.Commit(ctx, ops)
			if err != nil {
				return nil, err
			}
			out := make([]node.Outcome, len(res))
			for i, r := range res {
				seq := r.Seq
				out[i] = node.Outcome{Result: r.Result, Wait: func(ctx context.Context) error {
					return p.primary.WaitPeer(ctx, seq)
				}}
			}
			return out, nil
		})
	case "passive":
		if p.remote, err = dialActive(c, "-follower"); err != nil {
			return fail(err)
		}
		p.follower, err = replog.NewFollower(ctx, p.log, n.Store(), p.remote, &replog.FollowerOptions{
			Epoch: p.epoch, Logger: log,
			OnApplied: func(e *replog.Entry, r *store.Result) {
				if r.Err == nil {
					n.Notify(context.Background(), e.Op, r)
				}
			},
		})
		if err != nil {
			return fail(err)
		}
		n.SetReadOnly("this node is the passive; write to " + c.writeHint())
		runCtx, stop := context.WithCancel(context.Background())
		p.stop = stop
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.follower.Run(runCtx); err != nil {
				log.Error("the passive stopped following; it needs an operator", "err", err)
			}
		}()
	}
	rctx, stopRetain := context.WithCancel(context.Background())
	prev := p.stop
	p.stop = func() {
		stopRetain()
		if prev != nil {
			prev()
		}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(c.LogTrimEvery)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			var err error
			if p.primary != nil {
				err = p.primary.Retain(rctx, uint64(c.LogKeep))
			} else {
				err = p.follower.Retain(rctx, uint64(c.LogKeep))
			}
			if err != nil && rctx.Err() == nil {
				log.Warn("trim the log", "err", err)
			}
		}
	}()
	return p, nil
}

// pairStatus is the replication part of /status.
type pairStatus struct {
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
	Error           string  `json:"error,omitempty"`
}

func (p *pair) status(ctx context.Context, mode string) *pairStatus {
	ps := &pairStatus{Epoch: p.epoch}
	if s, err := p.log.State(ctx); err == nil {
		ps.LogFirst, ps.LogLast = s.First, s.Last
	} else {
		ps.Error = err.Error()
	}
	switch {
	case p.primary != nil:
		ps.Mode = mode
		if v, err := p.srv.Varz(nil); err == nil {
			ps.LinkBytes = uint64(v.OutBytes)
		}
		pos, at := p.primary.PeerPosition()
		ps.PeerPosition = pos
		st := p.primary.Stats()
		ps.Appends, ps.AppendSeconds = st.Appends, st.AppendTime.Seconds()
		ps.PeerWaits, ps.PeerWaitSeconds = st.PeerWaits, st.PeerWaitTime.Seconds()
		if !at.IsZero() {
			ps.PeerSeen = time.Since(at).Round(time.Millisecond).String() + " ago"
		}
		if ps.LogLast > pos {
			ps.Lag = ps.LogLast - pos
		}
	case p.follower != nil:
		ps.LinkBytes = p.remote.Stats().InBytes
		fs := p.follower.Status()
		ps.PeerPosition = fs.Position
		ps.Takes, ps.TakeSeconds = fs.Takes, fs.TakeTime.Seconds()
		ps.Epoch = fs.Epoch
		if fs.Err != nil {
			ps.Error = fs.Err.Error()
		}
	}
	return ps
}

// stopFollowing stops the passive's follower (before the store closes).
func (p *pair) stopFollowing() {
	if p.stop != nil {
		p.stop()
	}
	p.wg.Wait()
}

// close stops following, then the connections and the server.
func (p *pair) close() {
	p.stopFollowing()
	if p.stopResync != nil {
		p.stopResync()
	}
	if p.primary != nil {
		p.primary.Close()
	}
	if p.remote != nil {
		p.remote.Close()
	}
	if p.local != nil {
		p.local.Close()
	}
	if p.srv != nil {
		p.srv.Shutdown()
		p.srv.WaitForShutdown()
	}
}

// registerMetrics exposes the replication's state and timings on
// /metrics. Both roles: the epoch, the local log's span and the link's
// bytes; the active: the passive's confirmed position, the lag, its log
// appends and its waits for the passive; the passive: its durable
// position and its batches.
func (p *pair) registerMetrics(m *metrics) {
	ctx := context.Background()
	m.gauge("twinbox_replication_epoch", "The epoch this node writes (active) or accepts (passive).", func() float64 {
		if p.follower != nil {
			return float64(p.follower.Status().Epoch)
		}
		return float64(p.epoch)
	})
	m.gauge("twinbox_log_last_seq", "Last entry in this node's log.", func() float64 {
		s, _ := p.log.State(ctx)
		return float64(s.Last)
	})
	m.gauge("twinbox_log_first_seq", "First entry still in this node's log (older ones were trimmed).", func() float64 {
		s, _ := p.log.State(ctx)
		return float64(s.First)
	})
	if p.primary != nil {
		m.counter("twinbox_replication_link_bytes_total", "Bytes this node's NATS server sent (the log to the passive, mostly).", func() float64 {
			v, err := p.srv.Varz(nil)
			if err != nil {
				return 0
			}
			return float64(v.OutBytes)
		})
		m.gauge("twinbox_replication_peer_position", "Last entry the passive reported durable.", func() float64 {
			pos, _ := p.primary.PeerPosition()
			return float64(pos)
		})
		m.gauge("twinbox_replication_peer_seen_seconds", "Seconds since the passive last reported (its reports double as a heartbeat); -1 before the first.", func() float64 {
			if _, at := p.primary.PeerPosition(); !at.IsZero() {
				return time.Since(at).Seconds()
			}
			return -1
		})
		m.gauge("twinbox_replication_lag_entries", "Entries in this node's log the passive has not confirmed.", func() float64 {
			s, _ := p.log.State(ctx)
			pos, _ := p.primary.PeerPosition()
			if s.Last > pos {
				return float64(s.Last - pos)
			}
			return 0
		})
		m.counter("twinbox_log_appends_total", "Appends to the local log (one per group commit).", func() float64 { return float64(p.primary.Stats().Appends) })
		m.counter("twinbox_log_append_seconds_total", "Time spent in appends to the local log (write and fsync).", func() float64 {
			return p.primary.Stats().AppendTime.Seconds()
		})
		m.counter("twinbox_replication_peer_waits_total", "Writes the passive confirmed after the local append.", func() float64 { return float64(p.primary.Stats().PeerWaits) })
		m.counter("twinbox_replication_peer_wait_seconds_total", "Time writes waited for the passive's confirmation after the local append.", func() float64 {
			return p.primary.Stats().PeerWaitTime.Seconds()
		})
	}
	if p.follower != nil {
		m.counter("twinbox_replication_link_bytes_total", "Bytes received from the active over the link.", func() float64 { return float64(p.remote.Stats().InBytes) })
		m.gauge("twinbox_replication_position", "Last entry durable in this node's log.", func() float64 { return float64(p.follower.Status().Position) })
		m.counter("twinbox_replication_batches_total", "Batches of the active's log made durable here.", func() float64 { return float64(p.follower.Status().Takes) })
		m.counter("twinbox_replication_batch_seconds_total", "Time from a batch's arrival to the report of its position (decoding, append, fsync).", func() float64 {
			return p.follower.Status().TakeTime.Seconds()
		})
	}
}
