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
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/internal/node"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/protocols/imap"
	"github.com/twinbox/twinbox/protocols/smtp"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// pair is a node's side of the replicated pair: its embedded NATS server
// and log, and either the active's write path or the passive's follower.
// With failover the role changes at run time (promote, demote); mu guards
// the role's parts.
type pair struct {
	c     *config
	n     *node.Local
	lg    *slog.Logger
	srv   *server.Server
	local *nats.Conn
	log   *replog.Log

	// The protocol servers, told of role changes.
	imap  *imap.Server
	mtas  []*smtp.Server
	stopT context.CancelFunc // the trim loop
	wg    sync.WaitGroup

	// restart asks serve to restart the node: the passive's store must be
	// rebuilt from the active (a diverged or trimmed position).
	restart chan error

	mu         sync.Mutex
	role       string
	epoch      uint64
	primary    *replog.Primary
	follower   *replog.Follower
	remote     *nats.Conn // the follower's connection to the peer
	stopFollow context.CancelFunc
	followDone chan struct{}
	stopResync func()

	// afterPromote runs once the node writes (users from the passwd-file
	// a passive could not create).
	afterPromote func()
}

// dialActive connects to the peer's (the active's) NATS server with the
// link's credentials (and TLS).
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
	if why, err := os.ReadFile(resyncMarker(c.Data)); err == nil {
		// This node's store cannot follow the active's log (a diverged
		// tail, set aside, or a trimmed position): rebuild it, waiting
		// for an active to serve a checkpoint.
		log.Warn("rebuilding the store from the active", "why", strings.TrimSpace(string(why)))
		for {
			err := resync(ctx, c, remote, log, progress)
			if err == nil {
				return os.Remove(resyncMarker(c.Data))
			}
			log.Warn("resync from the active failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			os.RemoveAll(storeDir(c.Data) + ".resync")
		}
	}
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
	return resync(ctx, c, remote, log, progress)
}

// resync replaces the store with a checkpoint of the active's, and
// starts the local log afresh after it.
func resync(ctx context.Context, c *config, remote *nats.Conn, log *slog.Logger, progress io.Writer) error {
	dir := storeDir(c.Data)
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
// the passive (follows the active, serves reads only). With failover a
// node always starts passive: the failover driver decides.
func startPair(ctx context.Context, c *config, n *node.Local, tlsConf *tls.Config, log *slog.Logger) (*pair, error) {
	p := &pair{c: c, n: n, lg: log, epoch: uint64(c.Epoch), restart: make(chan error, 1)}
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
	if s, err := p.log.State(ctx); err == nil && s.Last > 0 {
		if e, err := p.log.Get(ctx, s.Last); err == nil {
			p.epoch = max(p.epoch, e.Epoch)
		}
	}
	if c.Role == "active" && !c.Failover {
		err = p.becomeActive(ctx, p.epoch, false)
	} else {
		err = p.becomePassive(ctx)
	}
	if err != nil {
		return fail(err)
	}
	rctx, stopTrim := context.WithCancel(context.Background())
	p.stopT = stopTrim
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
			p.mu.Lock()
			primary, follower := p.primary, p.follower
			p.mu.Unlock()
			var err error
			if primary != nil {
				err = primary.Retain(rctx, uint64(c.LogKeep))
			} else if follower != nil {
				err = follower.Retain(rctx, uint64(c.LogKeep))
			}
			if err != nil && rctx.Err() == nil {
				log.Warn("trim the log", "err", err)
			}
		}
	}()
	return p, nil
}

// currentRole is the pair's role now: active or passive.
func (p *pair) currentRole() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.role
}

// attach gives the pair the protocol servers its role changes drive.
func (p *pair) attach(imapSrv *imap.Server, mtas ...*smtp.Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.imap, p.mtas = imapSrv, mtas
}

// becomeActive makes this node the writer at epoch: the store takes the
// rest of the local log first (NewPrimary), then writes go through the
// log. Called with the follower stopped.
func (p *pair) becomeActive(ctx context.Context, epoch uint64, alone bool) error {
	c := p.c
	primary, err := replog.NewPrimary(ctx, p.log, p.n.Store(), p.local, &replog.PrimaryOptions{
		Epoch: epoch, Async: c.ReplicationMode == "async", PeerTimeout: c.PeerTimeout, Logger: p.lg,
	})
	if err != nil {
		return err
	}
	primary.SetDegraded(alone)
	stopResync, err := replog.ServeResync(p.local, p.n.Store(), p.lg)
	if err != nil {
		primary.Close()
		return err
	}
	p.n.UseCommit(func(ctx context.Context, ops []store.Op) ([]node.Outcome, error) {
		res, err := primary.Commit(ctx, ops)
		if err != nil {
			return nil, err
		}
		out := make([]node.Outcome, len(res))
		for i, r := range res {
			seq := r.Seq
			out[i] = node.Outcome{Result: r.Result, Wait: func(ctx context.Context) error {
				return primary.WaitPeer(ctx, seq)
			}}
		}
		return out, nil
	})
	p.mu.Lock()
	p.role, p.epoch, p.primary, p.stopResync = "active", epoch, primary, stopResync
	imapSrv := p.imap
	p.mu.Unlock()
	p.n.SetWritable()
	if imapSrv != nil {
		imapSrv.SetReadOnly(false, "")
	}
	return nil
}

// becomePassive makes this node follow the peer's log and serve reads
// only.
func (p *pair) becomePassive(ctx context.Context) error {
	c := p.c
	hint := "this node is the passive; write to " + c.writeHint()
	p.n.SetReadOnly(hint)
	p.mu.Lock()
	if p.imap != nil {
		p.imap.SetReadOnly(true, c.writeHint())
	}
	p.mu.Unlock()
	remote, err := dialActive(c, "-follower")
	if err != nil {
		return err
	}
	n := p.n
	follower, err := replog.NewFollower(ctx, p.log, n.Store(), remote, &replog.FollowerOptions{
		Epoch: p.epoch, Logger: p.lg, DivergedDir: filepath.Join(c.Data, "diverged"),
		OnApplied: func(e *replog.Entry, r *store.Result) {
			if r.Err == nil {
				n.Notify(protocols.Change{Op: e.Op, Result: r})
			}
		},
	})
	if err != nil {
		remote.Close()
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.mu.Lock()
	p.role, p.follower, p.remote, p.stopFollow, p.followDone = "passive", follower, remote, stop, done
	p.mu.Unlock()
	go func() {
		defer close(done)
		err := follower.Run(runCtx)
		if err == nil {
			return
		}
		if errors.Is(err, replog.ErrDiverged) || errors.Is(err, replog.ErrLogTrimmed) {
			// The store must be rebuilt from the active: restart the node
			// with a resync (the diverged tail is already set aside).
			p.lg.Error("this node's log cannot follow the active's; restarting to resync from it", "err", err)
			if werr := os.WriteFile(resyncMarker(c.Data), []byte(err.Error()+"\n"), 0o600); werr != nil {
				p.lg.Error("mark the store for resync", "err", werr)
				return
			}
			select {
			case p.restart <- err:
			default:
			}
			return
		}
		p.lg.Error("the passive stopped following; it needs an operator", "err", err)
	}()
	return nil
}

// resyncMarker is the file that makes the next start rebuild the store
// from the active.
func resyncMarker(data string) string { return filepath.Join(data, "resync-needed") }

// stopFollowing stops the passive's follower and waits for it (its
// applier included: the store then has every entry it applied).
func (p *pair) stopFollowing() {
	p.mu.Lock()
	stop, done, remote := p.stopFollow, p.followDone, p.remote
	p.stopFollow, p.followDone, p.remote, p.follower = nil, nil, nil, nil
	p.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	if remote != nil {
		remote.Close()
	}
}

// stopWriting ends the active's write path: pending waits for the
// passive fail (the clients retry), and the checkpoint service stops.
func (p *pair) stopWriting() {
	p.mu.Lock()
	primary, stopResync := p.primary, p.stopResync
	p.primary, p.stopResync = nil, nil
	p.mu.Unlock()
	if primary != nil {
		primary.Close()
	}
	if stopResync != nil {
		stopResync()
	}
}

// Position, PeerConfirmed, Promote, Demote, SetDegraded and AheadAlone
// make the pair a failover.Node.
var _ failover.Node = (*pair)(nil)

func (p *pair) Position() failover.Position {
	p.mu.Lock()
	primary, follower, epoch := p.primary, p.follower, p.epoch
	p.mu.Unlock()
	switch {
	case primary != nil:
		seq, e := primary.Last()
		return failover.Position{Last: seq, LastEpoch: e}
	case follower != nil:
		fs := follower.Status()
		return failover.Position{Last: fs.Position, LastEpoch: max(fs.Epoch, epoch)}
	}
	return failover.Position{Last: p.n.Store().AppliedSeq(), LastEpoch: epoch}
}

func (p *pair) PeerConfirmed() uint64 {
	p.mu.Lock()
	primary := p.primary
	p.mu.Unlock()
	if primary == nil {
		return 0
	}
	pos, _ := primary.PeerPosition()
	return pos
}

func (p *pair) SetDegraded(on bool) {
	p.mu.Lock()
	primary := p.primary
	p.mu.Unlock()
	if primary != nil {
		primary.SetDegraded(on)
	}
}

func (p *pair) AheadAlone() bool {
	p.mu.Lock()
	primary := p.primary
	p.mu.Unlock()
	return primary != nil && primary.AheadAlone()
}

// Promote stops following, applies the whole local log and opens for
// writes at epoch.
func (p *pair) Promote(ctx context.Context, epoch uint64, alone bool) error {
	p.mu.Lock()
	role := p.role
	p.mu.Unlock()
	if role == "active" {
		return errors.New("already active")
	}
	p.stopFollowing()
	if err := p.becomeActive(ctx, epoch, alone); err != nil {
		// Stay a passive rather than nothing.
		if perr := p.becomePassive(ctx); perr != nil {
			err = errors.Join(err, perr)
		}
		return err
	}
	if p.afterPromote != nil {
		go p.afterPromote()
	}
	return nil
}

// Demote gives up the active role properly: SMTP and LMTP stop taking new
// transactions (421) and let those in flight finish, then writes stop,
// the last ones are confirmed by the peer (with handover, every entry:
// the position is returned), IMAP sessions get BYE, and the node follows
// the peer. A handover the peer cannot confirm leaves the node active.
func (p *pair) Demote(ctx context.Context, handover bool) (uint64, error) {
	p.mu.Lock()
	role, primary, imapSrv, mtas := p.role, p.primary, p.imap, p.mtas
	p.mu.Unlock()
	if role != "active" || primary == nil {
		return 0, errors.New("not active")
	}
	hint := "this node is handing over; write to " + p.c.writeHint()
	dctx, cancel := context.WithTimeout(ctx, p.c.ShutdownTimeout)
	defer cancel()
	if !handover {
		// Stepping down because another node is active: nothing more may
		// be acknowledged here, at once.
		p.n.SetReadOnly(hint)
		p.stopWriting()
	}
	var wg sync.WaitGroup
	for _, s := range mtas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Drain(dctx); err != nil {
				p.lg.Warn("drain", "err", err)
			}
		}()
	}
	wg.Wait()
	p.n.SetReadOnly(hint)
	if imapSrv != nil {
		imapSrv.SetReadOnly(true, p.c.writeHint())
	}
	if err := p.n.WaitWrites(dctx); err != nil {
		p.lg.Warn("writes still in flight when demoting", "err", err)
	}
	var at uint64
	if handover {
		last, _ := primary.Last()
		if err := p.waitPeer(dctx, primary, last); err != nil {
			p.n.SetWritable()
			if imapSrv != nil {
				imapSrv.SetReadOnly(false, "")
			}
			return 0, fmt.Errorf("handover: the peer did not confirm entry %d: %w", last, err)
		}
		at = last
		p.stopWriting()
	}
	if imapSrv != nil {
		if err := imapSrv.Kick(dctx, "[UNAVAILABLE] this node is no longer the active; reconnect"); err != nil {
			p.lg.Warn("end IMAP sessions", "err", err)
		}
	}
	if err := p.becomePassive(ctx); err != nil {
		// Writes have stopped: this node is no longer active whatever
		// happens. Restart it to follow the peer afresh.
		p.lg.Error("demoted, but cannot follow the peer; restarting the node", "err", err)
		select {
		case p.restart <- fmt.Errorf("follow the peer after demotion: %w", err):
		default:
		}
	}
	return at, nil
}

// waitPeer waits until the passive confirmed seq, at most peer_timeout.
func (p *pair) waitPeer(ctx context.Context, primary *replog.Primary, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, p.c.PeerTimeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if pos, _ := primary.PeerPosition(); pos >= seq {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
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
	p.mu.Lock()
	primary, follower, remote, epoch := p.primary, p.follower, p.remote, p.epoch
	p.mu.Unlock()
	ps := &pairStatus{Epoch: epoch}
	if s, err := p.log.State(ctx); err == nil {
		ps.LogFirst, ps.LogLast = s.First, s.Last
	} else {
		ps.Error = err.Error()
	}
	switch {
	case primary != nil:
		ps.Mode = mode
		if primary.Degraded() {
			ps.Mode += ", degraded (the passive is fenced: acknowledged on this node alone)"
		}
		if v, err := p.srv.Varz(nil); err == nil {
			ps.LinkBytes = uint64(v.OutBytes)
		}
		pos, at := primary.PeerPosition()
		ps.PeerPosition = pos
		st := primary.Stats()
		ps.Appends, ps.AppendSeconds = st.Appends, st.AppendTime.Seconds()
		ps.PeerWaits, ps.PeerWaitSeconds = st.PeerWaits, st.PeerWaitTime.Seconds()
		if !at.IsZero() {
			ps.PeerSeen = time.Since(at).Round(time.Millisecond).String() + " ago"
		}
		if ps.LogLast > pos {
			ps.Lag = ps.LogLast - pos
		}
	case follower != nil:
		ps.LinkBytes = remote.Stats().InBytes
		fs := follower.Status()
		ps.PeerPosition = fs.Position
		ps.Takes, ps.TakeSeconds = fs.Takes, fs.TakeTime.Seconds()
		ps.Epoch = max(fs.Epoch, epoch)
		if fs.Err != nil {
			ps.Error = fs.Err.Error()
		}
	}
	return ps
}

// close stops the role's parts, then the connections and the server.
func (p *pair) close() {
	if p.stopT != nil {
		p.stopT()
	}
	p.wg.Wait()
	p.stopFollowing()
	p.stopWriting()
	if p.local != nil {
		p.local.Close()
	}
	if p.srv != nil {
		p.srv.Shutdown()
		p.srv.WaitForShutdown()
	}
}

// parts returns the role's parts for a scrape.
func (p *pair) parts() (*replog.Primary, *replog.Follower, *nats.Conn, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.primary, p.follower, p.remote, p.epoch
}

// registerMetrics exposes the replication's state and timings on
// /metrics, for whichever role the node has at scrape time: the epoch,
// the local log's span and the link's bytes; as the active, the passive's
// confirmed position, the lag, its log appends and its waits for the
// passive; as a passive, its durable position and its batches.
func (p *pair) registerMetrics(m *metrics) {
	ctx := context.Background()
	m.gauge("twinbox_replication_epoch", "The epoch this node writes (active) or accepts (passive).", func() float64 {
		_, f, _, epoch := p.parts()
		if f != nil {
			return float64(max(f.Status().Epoch, epoch))
		}
		return float64(epoch)
	})
	m.gauge("twinbox_log_last_seq", "Last entry in this node's log.", func() float64 {
		s, _ := p.log.State(ctx)
		return float64(s.Last)
	})
	m.gauge("twinbox_log_first_seq", "First entry still in this node's log (older ones were trimmed).", func() float64 {
		s, _ := p.log.State(ctx)
		return float64(s.First)
	})
	m.counter("twinbox_replication_link_bytes_total", "As the active, bytes its NATS server sent (the log to the passive, mostly); as a passive, bytes received from the active. Resets on a role change.", func() float64 {
		pr, _, remote, _ := p.parts()
		if pr != nil {
			if v, err := p.srv.Varz(nil); err == nil {
				return float64(v.OutBytes)
			}
		} else if remote != nil {
			return float64(remote.Stats().InBytes)
		}
		return 0
	})
	primaryStat := func(f func(*replog.Primary) float64) func() float64 {
		return func() float64 {
			if pr, _, _, _ := p.parts(); pr != nil {
				return f(pr)
			}
			return 0
		}
	}
	followerStat := func(f func(replog.FollowerStatus) float64) func() float64 {
		return func() float64 {
			if _, fl, _, _ := p.parts(); fl != nil {
				return f(fl.Status())
			}
			return 0
		}
	}
	m.gauge("twinbox_replication_peer_position", "As the active, the last entry the passive reported durable.", primaryStat(func(pr *replog.Primary) float64 {
		pos, _ := pr.PeerPosition()
		return float64(pos)
	}))
	m.gauge("twinbox_replication_peer_seen_seconds", "As the active, seconds since the passive last reported (its reports double as a heartbeat); -1 before the first.", func() float64 {
		if pr, _, _, _ := p.parts(); pr != nil {
			if _, at := pr.PeerPosition(); !at.IsZero() {
				return time.Since(at).Seconds()
			}
		}
		return -1
	})
	m.gauge("twinbox_replication_lag_entries", "As the active, entries in its log the passive has not confirmed.", primaryStat(func(pr *replog.Primary) float64 {
		last, _ := pr.Last()
		pos, _ := pr.PeerPosition()
		if last > pos {
			return float64(last - pos)
		}
		return 0
	}))
	m.gauge("twinbox_replication_degraded", "1 when the active acknowledges alone (its passive is fenced).", primaryStat(func(pr *replog.Primary) float64 {
		if pr.Degraded() {
			return 1
		}
		return 0
	}))
	m.counter("twinbox_log_appends_total", "Appends to the local log as the active (one per group commit).", primaryStat(func(pr *replog.Primary) float64 { return float64(pr.Stats().Appends) }))
	m.counter("twinbox_log_append_seconds_total", "Time spent in appends to the local log (write and fsync).", primaryStat(func(pr *replog.Primary) float64 {
		return pr.Stats().AppendTime.Seconds()
	}))
	m.counter("twinbox_replication_peer_waits_total", "Writes the passive confirmed after the local append.", primaryStat(func(pr *replog.Primary) float64 { return float64(pr.Stats().PeerWaits) }))
	m.counter("twinbox_replication_peer_wait_seconds_total", "Time writes waited for the passive's confirmation after the local append.", primaryStat(func(pr *replog.Primary) float64 {
		return pr.Stats().PeerWaitTime.Seconds()
	}))
	m.gauge("twinbox_replication_position", "As a passive, the last entry durable in this node's log.", followerStat(func(s replog.FollowerStatus) float64 { return float64(s.Position) }))
	m.counter("twinbox_replication_batches_total", "As a passive, batches of the active's log made durable here.", followerStat(func(s replog.FollowerStatus) float64 { return float64(s.Takes) }))
	m.counter("twinbox_replication_batch_seconds_total", "As a passive, time from a batch's arrival to the report of its position (decoding, append, fsync).", followerStat(func(s replog.FollowerStatus) float64 {
		return s.TakeTime.Seconds()
	}))
}
