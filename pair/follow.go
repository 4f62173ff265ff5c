package pair

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// following is a passive's follower loop: it follows the active's log,
// reconnecting when the link drops, and rebuilds the store from the
// active's when the log cannot be followed.
type following struct {
	stop  context.CancelFunc
	done  chan struct{}
	epoch uint64 // the lowest epoch accepted; rises with the entries taken

	mu       sync.Mutex
	f        *replog.Follower
	remote   *nats.Conn
	err      error
	resyncs  uint64
	rejoins  uint64 // of followers that ended
	resyncAt time.Time
}

func (f *following) set(fl *replog.Follower, remote *nats.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f != nil {
		st := f.f.Status()
		f.epoch = max(f.epoch, st.Epoch)
		f.rejoins += st.Rejoins
	}
	f.f, f.remote = fl, remote
}

// status is the follower's, when one runs.
func (f *following) status() (replog.FollowerStatus, bool) {
	f.mu.Lock()
	fl := f.f
	f.mu.Unlock()
	if fl == nil {
		return replog.FollowerStatus{}, false
	}
	return fl.Status(), true
}

// Bounds of the follower loop's retries.
const (
	followRetryMin = 250 * time.Millisecond
	followRetryMax = 5 * time.Second
)

// runFollower follows the active until ctx ends.
func (p *Pair) runFollower(ctx context.Context, f *following) {
	wait := followRetryMin
	for ctx.Err() == nil {
		var err error
		if p.needResync.Load() {
			err = errResyncPending
		} else {
			err = p.followOnce(ctx, f)
		}
		if ctx.Err() != nil {
			return
		}
		if isFatalFollow(err) || errors.Is(err, errResyncPending) {
			p.needResync.Store(true)
			p.lg.Error("this node's store cannot follow the active's log; rebuilding it from the active's", "why", err)
			if rerr := p.resync(ctx, f, err); rerr != nil {
				if ctx.Err() != nil {
					return
				}
				p.lg.Warn("rebuilding the store from the active failed; retrying", "err", rerr)
				f.mu.Lock()
				f.err = rerr
				f.mu.Unlock()
				sleep(ctx, time.Second)
				continue
			}
			p.needResync.Store(false)
			wait = followRetryMin
			continue
		}
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
		p.lg.Warn("following the active stopped; retrying", "err", err, "in", wait)
		sleep(ctx, wait)
		wait = min(2*wait, followRetryMax)
	}
}

// errResyncPending: a rebuild of the store was interrupted (the node
// stopped or crashed in the middle of one) and must be done again.
var errResyncPending = errors.New("pair: a rebuild of the store from the active's did not finish")

// followOnce follows the active's log until the follower stops.
func (p *Pair) followOnce(ctx context.Context, f *following) error {
	var received atomic.Uint64
	remote, err := p.dialPeerCounting("-follower", &received)
	if err != nil {
		return err
	}
	defer remote.Close()
	var merging sync.Once
	fl, err := replog.NewFollower(ctx, p.log, p.loc.Load().st, remote, &replog.FollowerOptions{
		Epoch: f.epoch, Logger: p.lg, DivergedDir: p.lay.Diverged(), OnApplied: p.applied,
		Received:   received.Load,
		OnDiverged: p.planMerge,
		OnReady: func() {
			p.setServing(true, "")
			if len(p.pendingPlans()) > 0 {
				merging.Do(func() { p.wg.Go(func() { p.runMerges(ctx, remote) }) })
			}
		},
	})
	if err != nil {
		return err
	}
	f.set(fl, remote)
	defer f.set(nil, nil)
	err = fl.Run(ctx)
	return err
}

// setServing changes whether the node serves mail, keeping its role;
// waiting says what it waits for meanwhile.
func (p *Pair) setServing(on bool, waiting string) {
	s := p.roles.get()
	if s.serving == on && s.waiting == waiting {
		return
	}
	p.roles.set(continued(s, func(s *state) { s.serving, s.waiting = on, waiting }))
}

// dialPeer connects to the peer's NATS server over the link.
func (p *Pair) dialPeer(suffix string) (*nats.Conn, error) { return p.dialPeerCounting(suffix, nil) }

// dialPeerCounting is dialPeer counting the bytes read into received.
func (p *Pair) dialPeerCounting(suffix string, received *atomic.Uint64) (*nats.Conn, error) {
	c := &p.cfg
	return replog.DialPeer(replog.PeerOptions{Addr: c.PeerNATS, User: c.LinkUser, Password: c.LinkPassword,
		TLS: c.LinkTLS != nil, RootCAs: c.LinkCA, Name: c.Name + suffix, Received: received})
}

// resyncMarker exists while a rebuild of the store is replacing the store
// and the log: if the node stops in the middle, neither can be trusted,
// and the next start rebuilds again.
func (l Layout) resyncMarker() string { return filepath.Join(l.Tmp(), "resync-in-progress") }

// resync replaces the store with a checkpoint of the active's and starts
// the local log afresh after it: for a node whose log diverged from the
// active's (its tail is set aside in Layout.Diverged), or whose position
// the active's log no longer holds. The node serves nothing meanwhile.
func (p *Pair) resync(ctx context.Context, f *following, why error) error {
	p.roles.set(continued(p.roles.get(), func(s *state) {
		s.serving, s.waiting = false, "rebuilding the store from the active's: "+why.Error()
	}))
	p.kick(ctx, "[UNAVAILABLE] this node is rebuilding its store from the active; reconnect")
	remote, err := p.dialPeer("-resync")
	if err != nil {
		return err
	}
	defer remote.Close()
	fresh := filepath.Join(p.lay.Tmp(), "store.resync")
	if err := os.RemoveAll(fresh); err != nil {
		return err
	}
	at, err := replog.Resync(ctx, remote, fresh, p.cfg.Progress)
	if err != nil {
		return err
	}
	if err := p.swapStore(ctx, fresh); err != nil {
		return fmt.Errorf("pair: put the active's checkpoint in place: %w", err)
	}
	f.mu.Lock()
	f.resyncs++
	f.resyncAt = time.Now()
	f.err = nil
	f.mu.Unlock()
	p.lg.Warn("the store is rebuilt from the active's checkpoint; following the active from there", "position", at)
	p.roles.set(continued(p.roles.get(), func(s *state) { s.serving, s.waiting = true, "" }))
	return nil
}

// swapStore puts the store in dir in place of the node's and empties the
// local log, which held entries before the checkpoint (or a diverged
// tail). A marker file makes a crash in the middle start it again.
func (p *Pair) swapStore(ctx context.Context, dir string) error {
	marker := p.lay.resyncMarker()
	if err := writeSync(marker, []byte("the store and the log are being replaced by the active's checkpoint\n")); err != nil {
		return err
	}
	old := p.loc.Load()
	if err := old.st.Close(ctx); err != nil && !errors.Is(err, store.ErrClosed) {
		p.lg.Warn("close the replaced store", "err", err)
	}
	gone := filepath.Join(p.lay.Tmp(), "store.old")
	if err := os.RemoveAll(gone); err != nil {
		return err
	}
	if err := os.Rename(p.lay.Store(), gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(dir, p.lay.Store()); err != nil {
		return err
	}
	l, err := p.openLocal(ctx)
	if err != nil {
		return err
	}
	p.loc.Store(l)
	if err := p.log.Reset(ctx); err != nil {
		return err
	}
	p.pub.reset(l.st.AppliedSeq())
	if err := os.Remove(marker); err != nil {
		return err
	}
	return os.RemoveAll(gone)
}

// writeSync writes a small file and fsyncs it and its directory.
func writeSync(path string, b []byte) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = fh.Write(b)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
