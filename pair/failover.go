package pair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/failover/heartbeat"
	"github.com/twinbox/twinbox/failover/witness"
)

// failoverRun is a node's automatic failover: heartbeats on two paths
// (UDP and the NATS link), the fence device and the driver that changes
// the node's role.
type failoverRun struct {
	d      *failover.Driver
	heart  *heartbeat.Heart
	peer   *nats.Conn // the heartbeat path's connection to the peer's NATS
	device string
	wit    *witness.Client // nil without a witness
	lg     *slog.Logger
	stop   context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	badPayload atomic.Uint64
}

// startFailover starts heartbeats and the driver for a node that started
// passive.
func (p *Pair) startFailover() (_ *failoverRun, err error) {
	c, fc := &p.cfg, p.cfg.Failover
	f := &failoverRun{device: fc.Device, lg: p.lg.With("component", "failover")}
	if f.device == "" {
		f.device = "none"
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	udp, err := heartbeat.ListenUDP(fc.HeartbeatAddr, fc.PeerHeartbeat)
	if err != nil {
		return nil, fmt.Errorf("heartbeat address: %w", err)
	}
	undo = append(undo, func() { udp.Close() })
	if f.peer, err = p.dialPeer("-heartbeat"); err != nil {
		return nil, err
	}
	undo = append(undo, f.peer.Close)
	np, err := heartbeat.NewNATSPath(p.nc, f.peer, c.Name, fc.PeerName)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { np.Close() })
	var wc *witness.Client
	if fc.Witness != "" {
		if wc, err = witness.Dial(fc.Witness, c.Name, fc.Key); err != nil {
			return nil, err
		}
		undo = append(undo, func() { wc.Close() })
		f.wit = wc
	}
	heard := make(chan failover.Heard, 16)
	mc := fc.machineConfig(c)
	mc.Paths = []string{udp.Name(), np.Name()}
	var heart atomic.Pointer[heartbeat.Heart] // the driver starts first, then its heartbeats
	f.d, err = failover.StartDriver(failover.DriverOptions{
		Config: mc, Node: p, Fencer: fc.Fencer,
		OnPromote: fc.OnPromote, OnDemote: fc.OnDemote, HookTimeout: fc.HookTimeout,
		StateFile: p.lay.FailoverState(),
		Announce: func() {
			if h := heart.Load(); h != nil {
				h.SendNow()
			}
		},
		Witness: wc,
		Logger:  p.lg,
	}, heard)
	if err != nil {
		return nil, err
	}
	undo = append(undo, f.d.Close)
	f.heart, err = heartbeat.Start(heartbeat.Options{
		Node: c.Name, Key: fc.Key, Keepalive: fc.Keepalive,
		Paths: []heartbeat.Path{udp, np},
		Payload: func() []byte {
			b, _ := json.Marshal(f.d.Self())
			return b
		},
		Logger: p.lg,
	})
	if err != nil {
		return nil, err
	}
	heart.Store(f.heart)
	ctx, stop := context.WithCancel(context.Background())
	f.stop = stop
	f.wg.Go(func() { f.relay(ctx, heard) })
	return f, nil
}

// relay hands the verified heartbeats' states to the driver.
func (f *failoverRun) relay(ctx context.Context, heard chan<- failover.Heard) {
	for {
		select {
		case <-ctx.Done():
			return
		case r, ok := <-f.heart.Received():
			if !ok {
				return
			}
			var ps failover.PeerState
			if err := json.Unmarshal(r.Msg.Payload, &ps); err != nil || ps.Node != r.Msg.Node {
				f.badPayload.Add(1)
				f.lg.Warn("heartbeat with a signature but an unreadable state; ignored", "path", r.Path, "err", err)
				continue
			}
			select {
			case heard <- failover.Heard{Path: r.Path, At: r.At, Peer: ps, Boot: r.Msg.Boot, Counter: r.Msg.Counter}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// leave is a clean shutdown: the active hands over to a live passive,
// then the node tells its peer it is leaving (on both paths, waiting
// until the heartbeats went out), so the peer goes on without fencing it.
func (f *failoverRun) leave(ctx context.Context) {
	sent := func() map[string]uint64 {
		m := map[string]uint64{}
		for name, ps := range f.heart.Stats() {
			m[name] = ps.Sent
		}
		return m
	}
	if !f.d.Leave(ctx) {
		return
	}
	// Rounds already sealed may still go out with the old state: wait
	// for two more on every path.
	before := sent()
	for name := range before {
		before[name]++
	}
	f.heart.SendNow()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(time.Second)
	for {
		now, all := sent(), true
		for name, n := range before {
			all = all && now[name] > n
		}
		if all {
			f.lg.Info("told the peer this node is leaving")
			return
		}
		select {
		case <-t.C:
			f.heart.SendNow()
		case <-deadline:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (f *failoverRun) close() {
	f.once.Do(func() {
		f.d.Close()
		f.stop()
		f.wg.Wait()
		f.heart.Close()
		f.peer.Close()
		if f.wit != nil {
			f.wit.Close()
		}
	})
}

// Leave is a clean shutdown of a node with failover, before Close: an
// active hands over to a live passive first (within ctx), and the node
// tells its peer it is leaving, so the peer goes on without fencing it.
// Without failover it does nothing.
func (p *Pair) Leave(ctx context.Context) {
	if p.fo != nil {
		p.fo.leave(ctx)
	}
}

// ErrNoFailover: the node does not run automatic failover.
var ErrNoFailover = errors.New("pair: this node does not run failover (failover = false)")

// Command runs an operator's role command (switchover, promote, promote
// --force, demote); the error says why it cannot be done now.
func (p *Pair) Command(ctx context.Context, c failover.Command) error {
	if p.fo == nil {
		return ErrNoFailover
	}
	return p.fo.d.Command(ctx, c)
}
