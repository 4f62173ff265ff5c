package pair

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/twinbox/twinbox/cache"
	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/failover/heartbeat"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// Role is what a node does in its pair.
type Role string

// The roles. A standalone node has no log and no peer. In a pair the
// active writes and the passive follows; with automatic failover both
// start passive, and Config.Role names the preferred node (Active).
const (
	Standalone Role = "standalone"
	Active     Role = "active"
	Passive    Role = "passive"
)

// Defaults of a Config's zero fields.
const (
	DefaultPeerTimeout     = replog.DefaultPeerTimeout
	DefaultLogKeep         = 1_000_000
	DefaultLogTrimEvery    = 30 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultCollectEvery    = 10 * time.Minute
	DefaultCollectGrace    = time.Hour
	DefaultLinkUser        = "twinbox"
	DefaultWriteHint       = "the active node"
	// DefaultFenceTimeout bounds a fence agent's run: Pacemaker's
	// stonith-timeout default, since fence_ipmilan alone takes 20 s to
	// give up on an unreachable BMC.
	DefaultFenceTimeout = 60 * time.Second
)

// Config configures a Pair. It is plain data: EnsureDefaults fills the
// zero fields, Validate reports every problem at once.
type Config struct {
	// Dir is the data directory (see Layout).
	Dir string
	// Name is this node's name in the pair.
	Name string
	// Role is the node's role: Standalone, or Active/Passive in a pair.
	// With Failover, both nodes start passive and Role names the
	// preferred node.
	Role Role

	// The store: the largest message admitted, Pebble's block cache and
	// the read cache of bodies and metadata, in bytes.
	MaxMessageSize int64
	StoreCache     int64
	CacheBytes     int64

	// The replication link. NATSAddr is where this node's embedded NATS
	// server listens (the peer connects there), PeerNATS the peer's.
	// Every client of either needs LinkUser and LinkPassword; with
	// LinkTLS set the server requires TLS, and the node trusts LinkCA
	// for the peer's certificate (nil: the system's roots).
	NATSAddr, PeerNATS     string
	LinkUser, LinkPassword string
	LinkTLS                *tls.Config
	LinkCA                 *x509.CertPool

	// Async acknowledges without waiting for the passive (explicit
	// opt-in; the default waits, DRBD's protocol C). PeerTimeout bounds
	// a synchronous wait for the passive.
	Async       bool
	PeerTimeout time.Duration
	// Epoch is the first epoch an active started without failover
	// writes at (the log's last epoch, if higher, wins).
	Epoch uint64
	// LogKeep entries are kept behind what both nodes have; the log is
	// trimmed every LogTrimEvery.
	LogKeep      uint64
	LogTrimEvery time.Duration
	// WriteHint says where clients should write instead of a passive
	// (the service address); it ends every refusal of a write.
	WriteHint string

	// Unreferenced bodies are collected every CollectEvery once they are
	// older than CollectGrace, by the node that writes.
	CollectEvery, CollectGrace time.Duration
	// ShutdownTimeout bounds a demotion's drain (transactions in flight).
	ShutdownTimeout time.Duration

	// Users, if set, lists the users that must exist in the store; the
	// node creates the missing ones whenever it becomes writable.
	Users func() []string

	// Failover, if set, lets the pair decide which node is active
	// (heartbeats, fencing, role changes).
	Failover *FailoverConfig

	// Progress receives a resync's progress lines (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
	// ObserveReplication, if set, is told the active's append and
	// peer-wait times (replog.PrimaryOptions.Observe).
	ObserveReplication func(stage string, d time.Duration)
}

// FailoverConfig is the automatic failover of a pair (failover/).
type FailoverConfig struct {
	// PeerName is the peer's Config.Name.
	PeerName string
	// HeartbeatAddr is this node's UDP heartbeat address, PeerHeartbeat
	// the peer's; Key signs heartbeats (at least heartbeat.MinKey bytes,
	// the same on both nodes).
	HeartbeatAddr, PeerHeartbeat string
	Key                          []byte
	// Heartbeat's timings (zero: failover's defaults).
	Keepalive, Warntime, Deadtime, Initdead time.Duration
	// FenceDelay waits before fencing: set it on one node only.
	FenceDelay time.Duration
	// Fencer shoots the peer; nil means no fencing, so no automatic
	// takeover.
	Fencer failover.Fencer
	// Device names the fence device in the status.
	Device string
	// OnPromote and OnDemote are shell commands run after a role change,
	// bounded by HookTimeout.
	OnPromote, OnDemote string
	HookTimeout         time.Duration
	AutoFailback        bool
	// Witness is the witness's UDP address (package failover/witness),
	// "" for none. With one, a node promotes only with its vote.
	Witness string
}

// EnsureDefaults fills the zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	if c.Role == "" {
		c.Role = Standalone
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = store.DefaultMaxMessageSize
	}
	if c.StoreCache == 0 {
		c.StoreCache = store.DefaultCacheSize
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = cache.DefaultMaxBytes
	}
	if c.LinkUser == "" {
		c.LinkUser = DefaultLinkUser
	}
	if c.PeerTimeout == 0 {
		c.PeerTimeout = DefaultPeerTimeout
	}
	if c.Epoch == 0 {
		c.Epoch = 1
	}
	if c.LogKeep == 0 {
		c.LogKeep = DefaultLogKeep
	}
	if c.LogTrimEvery == 0 {
		c.LogTrimEvery = DefaultLogTrimEvery
	}
	if c.WriteHint == "" {
		c.WriteHint = DefaultWriteHint
	}
	if c.CollectEvery == 0 {
		c.CollectEvery = DefaultCollectEvery
	}
	if c.CollectGrace == 0 {
		c.CollectGrace = DefaultCollectGrace
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if f := c.Failover; f != nil {
		if f.HookTimeout == 0 {
			f.HookTimeout = failover.DefaultHookTimeout
		}
		fc := f.machineConfig(c)
		f.Keepalive, f.Warntime, f.Deadtime, f.Initdead = fc.Keepalive, fc.Warntime, fc.Deadtime, fc.Initdead
	}
}

// machineConfig is the failover machine's configuration with its
// defaults filled in.
func (f *FailoverConfig) machineConfig(c *Config) failover.Config {
	fc := failover.Config{Node: c.Name, Preferred: c.Role == Active,
		Keepalive: f.Keepalive, Warntime: f.Warntime, Deadtime: f.Deadtime, Initdead: f.Initdead,
		FenceDelay: f.FenceDelay, Fencing: f.Fencer != nil, AutoFailback: f.AutoFailback}
	fc.EnsureDefaults()
	return fc
}

// Validate reports every problem of the configuration at once, each
// naming its field and value.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Dir == "" {
		bad("Dir: must not be empty")
	}
	if c.Name == "" && c.Role != Standalone {
		bad("Name: must not be empty in a pair")
	}
	switch c.Role {
	case Standalone:
		if c.Failover != nil {
			bad("Failover: needs a pair (Role active for the preferred node, passive for the other)")
		}
	case Active, Passive:
		if c.LinkPassword == "" {
			bad("LinkPassword: required for role %s", c.Role)
		}
		if _, _, err := net.SplitHostPort(c.NATSAddr); err != nil {
			bad("NATSAddr: %q is not host:port", c.NATSAddr)
		}
		if c.Role == Passive || c.Failover != nil {
			if _, _, err := net.SplitHostPort(c.PeerNATS); err != nil {
				bad("PeerNATS: %q is not the peer's host:port", c.PeerNATS)
			}
		}
	default:
		bad("Role: %q is not standalone, active or passive", c.Role)
	}
	if c.MaxMessageSize < 1 {
		bad("MaxMessageSize: %d must be positive", c.MaxMessageSize)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"PeerTimeout", c.PeerTimeout}, {"LogTrimEvery", c.LogTrimEvery}, {"CollectEvery", c.CollectEvery},
		{"ShutdownTimeout", c.ShutdownTimeout}} {
		if d.v <= 0 {
			bad("%s: %v must be positive", d.name, d.v)
		}
	}
	if c.CollectGrace < 0 {
		bad("CollectGrace: %v must not be negative", c.CollectGrace)
	}
	if f := c.Failover; f != nil && c.Role != Standalone {
		if f.PeerName == "" || f.PeerName == c.Name {
			bad("Failover.PeerName: %q must name the other node (Name is %q)", f.PeerName, c.Name)
		}
		for _, a := range []struct{ name, addr string }{{"HeartbeatAddr", f.HeartbeatAddr}, {"PeerHeartbeat", f.PeerHeartbeat}} {
			if _, _, err := net.SplitHostPort(a.addr); err != nil {
				bad("Failover.%s: %q is not host:port", a.name, a.addr)
			}
		}
		if f.Witness != "" {
			if _, _, err := net.SplitHostPort(f.Witness); err != nil {
				bad("Failover.Witness: %q is not host:port", f.Witness)
			}
		}
		if len(f.Key) < heartbeat.MinKey {
			bad("Failover.Key: %d bytes is too short; use at least %d random bytes", len(f.Key), heartbeat.MinKey)
		}
		fc := f.machineConfig(c)
		if err := fc.Validate(); err != nil {
			errs = append(errs, err)
		}
		if f.HookTimeout <= 0 {
			bad("Failover.HookTimeout: %v must be positive", f.HookTimeout)
		}
	}
	return errors.Join(errs...)
}

// layout is the data directory's layout.
func (c *Config) layout() Layout { return Layout(c.Dir) }
