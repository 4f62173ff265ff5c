package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/failover/fence"
	"github.com/twinbox/twinbox/failover/heartbeat"
)

// failoverRun is a node's automatic failover: heartbeats on two paths
// (UDP and the NATS link), the fence device and the driver that changes
// the pair's role.
type failoverRun struct {
	d      *failover.Driver
	heart  *heartbeat.Heart
	peer   *nats.Conn // the heartbeat path's connection to the peer's NATS
	manual *fence.Manual
	device string
	lg     *slog.Logger
	stop   context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	badPayload uint64
}

// deviceFencer fences with a device and the configured timeout.
type deviceFencer struct {
	dev     fence.Device
	timeout time.Duration
}

func (f deviceFencer) Fence(ctx context.Context) error { return fence.Fence(ctx, f.dev, f.timeout) }

// newFenceDevice builds the configured fence device: a fence-agents
// program, or a built-in one.
func newFenceDevice(c *config) (fence.Device, *fence.Manual, error) {
	opts, err := c.fenceOptions()
	if err != nil {
		return nil, nil, err
	}
	switch c.FenceAgent {
	case "":
		return nil, nil, nil
	case "manual":
		m := &fence.Manual{}
		return m, m, nil
	case "docker":
		d, err := fence.NewDockerFromOptions(opts)
		return d, nil, err
	case "process":
		d, err := fence.NewProcessFromOptions(opts)
		return d, nil, err
	}
	a, err := fence.NewAgent(c.FenceAgent, opts, c.FenceTimeout)
	return a, nil, err
}

// startFailover starts heartbeats and the driver for a node whose pair
// started passive.
func startFailover(c *config, pr *pair, log *slog.Logger) (*failoverRun, error) {
	key, err := c.heartbeatKey()
	if err != nil {
		return nil, err
	}
	dev, manual, err := newFenceDevice(c)
	if err != nil {
		return nil, fmt.Errorf("fence_agent: %w", err)
	}
	f := &failoverRun{manual: manual, device: c.FenceAgent, lg: log.With("component", "failover")}
	udp, err := heartbeat.ListenUDP(c.HeartbeatAddr, c.PeerHeartbeat)
	if err != nil {
		return nil, fmt.Errorf("heartbeat_addr: %w", err)
	}
	if f.peer, err = dialActive(c, "-heartbeat"); err != nil {
		udp.Close()
		return nil, err
	}
	np, err := heartbeat.NewNATSPath(pr.local, f.peer, c.NodeName, c.PeerName)
	if err != nil {
		udp.Close()
		f.peer.Close()
		return nil, err
	}
	heard := make(chan failover.Heard, 16)
	var fencer failover.Fencer
	if dev != nil {
		fencer = deviceFencer{dev, c.FenceTimeout}
	}
	var heart atomic.Pointer[heartbeat.Heart] // the driver starts first, then its heartbeats
	f.d, err = failover.StartDriver(failover.DriverOptions{
		Config: failover.Config{Node: c.NodeName, Preferred: c.Role == "active",
			Keepalive: c.Keepalive, Warntime: c.Warntime, Deadtime: c.Deadtime, Initdead: c.Initdead,
			FenceDelay: c.FenceDelay, AutoFailback: c.AutoFailback, Paths: []string{udp.Name(), np.Name()}},
		Node: pr, Fencer: fencer,
		OnPromote: c.OnPromote, OnDemote: c.OnDemote, HookTimeout: c.HookTimeout,
		StateFile: failoverStateFile(c.Data),
		Announce: func() {
			if h := heart.Load(); h != nil {
				h.SendNow()
			}
		},
		Logger: log,
	}, heard)
	if err != nil {
		udp.Close()
		np.Close()
		f.peer.Close()
		return nil, err
	}
	f.heart, err = heartbeat.Start(heartbeat.Options{
		Node: c.NodeName, Key: key, Keepalive: c.Keepalive,
		Paths: []heartbeat.Path{udp, np},
		Payload: func() []byte {
			b, _ := json.Marshal(f.d.Self())
			return b
		},
		Logger: log,
	})
	if err != nil {
		f.d.Close()
		udp.Close()
		np.Close()
		f.peer.Close()
		return nil, err
	}
	heart.Store(f.heart)
	ctx, stop := context.WithCancel(context.Background())
	f.stop = stop
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
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
					f.mu.Lock()
					f.badPayload++
					f.mu.Unlock()
					f.lg.Warn("heartbeat with a signature but an unreadable state; ignored", "path", r.Path, "err", err)
					continue
				}
				select {
				case heard <- failover.Heard{Path: r.Path, At: r.At, Peer: ps}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return f, nil
}

func failoverStateFile(data string) string { return data + "/failover.json" }

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
	f.d.Close()
	f.stop()
	f.wg.Wait()
	f.heart.Close()
	f.peer.Close()
}

// failoverStatus is the failover part of /status.
type failoverStatus struct {
	failover.Status
	FenceDevice string                     `json:"fence_device"`
	Paths       map[string]heartbeatStatus `json:"paths"`
}

type heartbeatStatus struct {
	Sent      uint64            `json:"sent"`
	Received  uint64            `json:"received"`
	LastHeard string            `json:"last_heard,omitempty"`
	Rejected  map[string]uint64 `json:"rejected,omitempty"`
	LastError string            `json:"last_error,omitempty"`
}

func (f *failoverRun) status() *failoverStatus {
	s := &failoverStatus{Status: f.d.Status(), FenceDevice: f.device, Paths: map[string]heartbeatStatus{}}
	if s.FenceDevice == "" {
		s.FenceDevice = "none"
	}
	for name, ps := range f.heart.Stats() {
		hs := heartbeatStatus{Sent: ps.Sent, Received: ps.Received, Rejected: ps.Rejected, LastError: ps.LastError}
		if !ps.LastReceived.IsZero() {
			hs.LastHeard = time.Since(ps.LastReceived).Round(time.Millisecond).String() + " ago"
		}
		s.Paths[name] = hs
	}
	return s
}

// registerMetrics exposes the failover state on /metrics.
func (f *failoverRun) registerMetrics(m *metrics) {
	m.gauge("twinbox_failover_active", "1 when this node is the active.", func() float64 {
		if f.d.Status().Role == "active" {
			return 1
		}
		return 0
	})
	m.gauge("twinbox_failover_epoch", "The highest epoch this node knows.", func() float64 { return float64(f.d.Status().Epoch) })
	m.gauge("twinbox_failover_peer_alive", "1 when the peer was heard within deadtime on some path.", func() float64 {
		if p := f.d.Status().Peer; p == "alive" || p == "late" {
			return 1
		}
		return 0
	})
	m.gauge("twinbox_failover_standby", "1 when this node will not take the active role by itself.", func() float64 {
		if f.d.Status().Standby {
			return 1
		}
		return 0
	})
	for _, path := range []string{"udp", "nats"} {
		m.gauge("twinbox_heartbeat_"+path+"_last_seconds", "Seconds since a valid heartbeat arrived on the "+path+" path; -1 before the first.", func() float64 {
			if ps, ok := f.heart.Stats()[path]; ok && !ps.LastReceived.IsZero() {
				return time.Since(ps.LastReceived).Seconds()
			}
			return -1
		})
		m.counter("twinbox_heartbeat_"+path+"_rejected_total", "Heartbeats refused on the "+path+" path (bad signature, stale, replayed, other version, malformed).", func() float64 {
			var n uint64
			for _, v := range f.heart.Stats()[path].Rejected {
				n += v
			}
			return float64(n)
		})
	}
}

// handle serves the operator's commands on the admin server:
// POST /failover/switchover, /failover/promote[?force=1], /failover/demote
// and /failover/fence-confirm.
func (f *failoverRun) handle(mux *http.ServeMux) {
	cmd := func(c failover.Command) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if c == failover.CmdPromote && r.URL.Query().Get("force") != "" {
				c = failover.CmdPromoteForce
			}
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			defer cancel()
			if err := f.d.Command(ctx, c); err != nil {
				http.Error(w, err.Error(), http.StatusConflict)
				return
			}
			fmt.Fprintf(w, "%s: accepted\n", c)
		}
	}
	mux.HandleFunc("POST /failover/switchover", cmd(failover.CmdSwitchover))
	mux.HandleFunc("POST /failover/promote", cmd(failover.CmdPromote))
	mux.HandleFunc("POST /failover/demote", cmd(failover.CmdDemote))
	mux.HandleFunc("POST /failover/fence-confirm", func(w http.ResponseWriter, r *http.Request) {
		if f.manual == nil {
			http.Error(w, "fence confirm: this node's fence_agent is not manual", http.StatusConflict)
			return
		}
		f.manual.Confirm()
		fmt.Fprintln(w, "fence confirm: the peer is recorded as off")
	})
}

// printFailover prints the failover part of `twinbox status`.
func printFailover(w interface{ Write([]byte) (int, error) }, s *failoverStatus) {
	fmt.Fprintf(w, "failover    %s at epoch %d", s.Role, s.Epoch)
	if s.Busy != "" {
		fmt.Fprintf(w, ", %s", s.Busy)
	}
	if s.Degraded {
		fmt.Fprint(w, ", degraded (acknowledging alone)")
	}
	if s.Standby {
		fmt.Fprint(w, ", standby")
	}
	if s.Outdated {
		fmt.Fprint(w, ", outdated (the active acknowledged writes this node lacks)")
	}
	fmt.Fprintln(w)
	peer := s.Peer
	if s.PeerNode != "" {
		peer = fmt.Sprintf("%s %s (%s)", s.PeerNode, s.Peer, s.PeerRole)
	}
	fmt.Fprintf(w, "peer        %s; fencing: %s (device %s)\n", peer, s.Fencing, s.FenceDevice)
	names := make([]string, 0, len(s.Paths))
	for n := range s.Paths {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := s.Paths[n]
		var rej uint64
		for _, v := range p.Rejected {
			rej += v
		}
		fmt.Fprintf(w, "heartbeat   %-5s last heard %s, %d received, %d sent, %d refused\n", n, orNever(p.LastHeard), p.Received, p.Sent, rej)
	}
	if s.Reason != "" {
		fmt.Fprintf(w, "why         %s\n", s.Reason)
	}
}
