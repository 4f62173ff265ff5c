package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/failover/fence"
	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/protocols/smtp"
	"github.com/twinbox/twinbox/store"
)

// config is a node's configuration. Every setting has a default, a key in
// the TOML config file, a flag and a TWINBOX_* environment variable, all
// derived from one table (settings); later sources win: defaults, the
// file, the environment, flags. twinbox.example.toml documents each.
type config struct {
	Data         string   `toml:"data"`
	Passwd       string   `toml:"passwd"`
	Hostname     string   `toml:"hostname"`
	LocalDomains []string `toml:"local_domains"`

	IMAPAddr  string `toml:"imap_addr"`
	IMAPSAddr string `toml:"imaps_addr"`
	SMTPAddr  string `toml:"smtp_addr"`
	SMTPSAddr string `toml:"smtps_addr"`
	LMTPAddr  string `toml:"lmtp_addr"`
	LMTPSock  string `toml:"lmtp_socket"`
	AdminAddr string `toml:"admin_addr"`

	// The admin API (docs/security.md): a unix socket always, TCP only
	// with a token; metrics and health on an address of their own.
	AdminSocket    string `toml:"admin_socket"`
	AdminTokenFile string `toml:"admin_token_file"`
	AdminPprof     bool   `toml:"admin_pprof"`
	MetricsAddr    string `toml:"metrics_addr"`

	TLSCert      string `toml:"tls_cert"`
	TLSKey       string `toml:"tls_key"`
	InsecureAuth bool   `toml:"allow_insecure_auth"`

	MaxMessageSize int64         `toml:"max_message_size"`
	MaxRecipients  int64         `toml:"max_recipients"`
	MaxLineLength  int64         `toml:"max_line_length"`
	SMTPTimeout    time.Duration `toml:"smtp_timeout"`
	CacheSize      int64         `toml:"cache_size"`
	StoreCache     int64         `toml:"store_cache_size"`

	// Limits of the SMTP and LMTP servers (docs/limits.md).
	SMTPMaxConns      int64         `toml:"smtp_max_connections"`
	SMTPMaxConnsPerIP int64         `toml:"smtp_max_connections_per_ip"`
	LMTPMaxConns      int64         `toml:"lmtp_max_connections"`
	LMTPMaxConnsPerIP int64         `toml:"lmtp_max_connections_per_ip"`
	SMTPTxTimeout     time.Duration `toml:"smtp_transaction_timeout"`
	SMTPDataTimeout   time.Duration `toml:"smtp_data_timeout"`
	SMTPDataMinRate   int64         `toml:"smtp_data_min_rate"`
	MaxHeaderSize     int64         `toml:"max_header_size"`
	MaxHeaderFields   int64         `toml:"max_header_fields"`
	MaxBytesInFlight  int64         `toml:"max_bytes_in_flight"`

	Role            string        `toml:"role"`
	NodeName        string        `toml:"node_name"`
	NATSAddr        string        `toml:"nats_addr"`
	PeerNATS        string        `toml:"peer_nats"`
	LinkUser        string        `toml:"link_user"`
	LinkPassword    string        `toml:"link_password"`
	LinkTLS         bool          `toml:"link_tls"`
	LinkCA          string        `toml:"link_ca"`
	ReplicationMode string        `toml:"replication_mode"`
	PeerTimeout     time.Duration `toml:"peer_timeout"`
	Epoch           int64         `toml:"epoch"`
	LogKeep         int64         `toml:"log_keep"`
	LogTrimEvery    time.Duration `toml:"log_trim_interval"`
	ServiceAddr     string        `toml:"service_address"`

	Failover      bool          `toml:"failover"`
	External      bool          `toml:"external"`
	PeerName      string        `toml:"peer_name"`
	HeartbeatAddr string        `toml:"heartbeat_addr"`
	PeerHeartbeat string        `toml:"peer_heartbeat"`
	HeartbeatKey  string        `toml:"heartbeat_key"`
	KeyFile       string        `toml:"heartbeat_key_file"`
	Keepalive     time.Duration `toml:"keepalive"`
	Warntime      time.Duration `toml:"warntime"`
	Deadtime      time.Duration `toml:"deadtime"`
	Initdead      time.Duration `toml:"initdead"`
	FenceAgent    string        `toml:"fence_agent"`
	FenceOptions  []string      `toml:"fence_options"`
	FenceTimeout  time.Duration `toml:"fence_timeout"`
	FenceDelay    time.Duration `toml:"fence_delay"`
	FenceAction   string        `toml:"fence_action"`
	Witness       string        `toml:"witness"`
	OnPromote     string        `toml:"on_promote"`
	OnDemote      string        `toml:"on_demote"`
	HookTimeout   time.Duration `toml:"hook_timeout"`
	AutoFailback  bool          `toml:"auto_failback"`
	PidFile       string        `toml:"pid_file"`

	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
	CollectEvery    time.Duration `toml:"collect_interval"`
	CollectGrace    time.Duration `toml:"collect_grace"`
	LogLevel        string        `toml:"log_level"`
}

// Defaults (README.md, "Configuration"; twinbox.example.toml).
func defaultConfig() config {
	host, _ := os.Hostname()
	return config{
		Data:            DefaultDataDir,
		Hostname:        host,
		IMAPAddr:        "127.0.0.1:1143",
		IMAPSAddr:       "127.0.0.1:1993",
		SMTPAddr:        "127.0.0.1:2525",
		SMTPSAddr:       "127.0.0.1:4465",
		LMTPAddr:        "127.0.0.1:2424",
		MetricsAddr:     "127.0.0.1:8410",
		MaxMessageSize:  store.DefaultMaxMessageSize,
		MaxRecipients:   1000,
		MaxLineLength:   64 << 10,
		SMTPTimeout:     smtp.DefaultReadTimeout,
		CacheSize:       256 << 20,
		StoreCache:      store.DefaultCacheSize,
		Role:            "standalone",
		NodeName:        host,
		NATSAddr:        "127.0.0.1:8422",
		LinkUser:        "twinbox",
		LinkTLS:         true,
		ReplicationMode: "sync",
		PeerTimeout:     5 * time.Second,
		Epoch:           1,
		LogKeep:         1_000_000,
		LogTrimEvery:    30 * time.Second,
		HeartbeatAddr:   "127.0.0.1:8423",
		Keepalive:       failover.DefaultKeepalive,
		Warntime:        failover.DefaultWarntime,
		Deadtime:        failover.DefaultDeadtime,
		Initdead:        failover.DefaultInitdead,
		FenceTimeout:    DefaultFenceTimeout,
		FenceAction:     "reboot",
		HookTimeout:     failover.DefaultHookTimeout,
		ShutdownTimeout: 30 * time.Second,
		CollectEvery:    10 * time.Minute,
		CollectGrace:    time.Hour,
		LogLevel:        "info",

		SMTPMaxConns:      smtp.DefaultMaxConnections,
		SMTPMaxConnsPerIP: smtp.DefaultMaxConnectionsPerAddr,
		LMTPMaxConns:      smtp.DefaultMaxConnections,
		LMTPMaxConnsPerIP: smtp.DefaultMaxConnections,
		SMTPTxTimeout:     smtp.DefaultTransactionTimeout,
		SMTPDataTimeout:   smtp.DefaultDataTimeout,
		SMTPDataMinRate:   smtp.DefaultDataMinRate,
		MaxHeaderSize:     smtp.DefaultMaxHeaderBytes,
		MaxHeaderFields:   smtp.DefaultMaxHeaderFields,
		MaxBytesInFlight:  smtp.DefaultMaxBytesInFlight,
	}
}

// setting binds one config field to its flag and environment variable.
type setting struct {
	key  string // TOML key; the flag is key with '-', the variable TWINBOX_KEY
	help string
	ptr  any
}

func (c *config) settings() []setting {
	return []setting{
		{"data", "node data directory (store, passwd-file, certificate)", &c.Data},
		{"passwd", "passwd-file in Dovecot's format (default: DATA/passwd)", &c.Passwd},
		{"hostname", "this node's name in greetings and Received headers", &c.Hostname},
		{"local_domains", "comma-separated domains whose users are local (default: localhost and the host name)", &c.LocalDomains},
		{"imap_addr", "IMAP listen address (STARTTLS available); empty disables", &c.IMAPAddr},
		{"imaps_addr", "IMAP implicit-TLS listen address; empty disables", &c.IMAPSAddr},
		{"smtp_addr", "SMTP listen address (STARTTLS available); empty disables", &c.SMTPAddr},
		{"smtps_addr", "SMTP implicit-TLS listen address; empty disables", &c.SMTPSAddr},
		{"lmtp_addr", "LMTP TCP listen address; empty disables", &c.LMTPAddr},
		{"lmtp_socket", "LMTP unix socket path; empty disables", &c.LMTPSock},
		{"admin_socket", "the admin API's unix socket, mode 0600, that the twinbox CLI uses (default: DATA/admin.sock)", &c.AdminSocket},
		{"admin_addr", "admin API over TCP (status, digest, role commands), for remote operators; needs admin_token_file; empty (the default) disables", &c.AdminAddr},
		{"admin_token_file", "file holding the bearer token admin_addr requires (at least 16 bytes, mode 0600)", &c.AdminTokenFile},
		{"admin_pprof", "serve Go's profiler under /debug/pprof/ on the admin API", &c.AdminPprof},
		{"metrics_addr", "HTTP listen address of /metrics and /healthz only, no credentials; empty disables", &c.MetricsAddr},
		{"tls_cert", "TLS certificate PEM file (default: a self-signed one made in DATA/tls)", &c.TLSCert},
		{"tls_key", "TLS private key PEM file", &c.TLSKey},
		{"allow_insecure_auth", "allow plain-text login without TLS from any address (default: loopback only)", &c.InsecureAuth},
		{"max_message_size", "largest message accepted, in bytes", &c.MaxMessageSize},
		{"max_recipients", "most recipients per SMTP/LMTP transaction", &c.MaxRecipients},
		{"max_line_length", "longest SMTP/LMTP line, in bytes", &c.MaxLineLength},
		{"smtp_timeout", "SMTP/LMTP idle timeout (the wait for a command) and reply write timeout", &c.SMTPTimeout},
		{"smtp_max_connections", "most SMTP connections open at once (over it: 421 4.7.0)", &c.SMTPMaxConns},
		{"smtp_max_connections_per_ip", "most SMTP connections from one client IP address (loopback exempt)", &c.SMTPMaxConnsPerIP},
		{"lmtp_max_connections", "most LMTP connections open at once", &c.LMTPMaxConns},
		{"lmtp_max_connections_per_ip", "most LMTP connections from one client IP address (loopback exempt)", &c.LMTPMaxConnsPerIP},
		{"smtp_transaction_timeout", "SMTP/LMTP limit on a transaction, from MAIL to the reply to DATA", &c.SMTPTxTimeout},
		{"smtp_data_timeout", "SMTP/LMTP limit on receiving one message", &c.SMTPDataTimeout},
		{"smtp_data_min_rate", "least average rate of a message, bytes per second, after a first smtp_timeout", &c.SMTPDataMinRate},
		{"max_header_size", "largest header section of a message taken over SMTP/LMTP, in bytes (over it: 552 5.3.4)", &c.MaxHeaderSize},
		{"max_header_fields", "most header fields of a message taken over SMTP/LMTP", &c.MaxHeaderFields},
		{"max_bytes_in_flight", "message bytes the SMTP (and the LMTP) server holds at once; over it 452 4.3.1", &c.MaxBytesInFlight},
		{"cache_size", "read cache for bodies and metadata, in bytes", &c.CacheSize},
		{"store_cache_size", "Pebble block cache, in bytes", &c.StoreCache},
		{"role", "standalone, active or passive (the pair's roles, until failover decides them)", &c.Role},
		{"node_name", "this node's name in the pair (default: the host name)", &c.NodeName},
		{"nats_addr", "the embedded NATS server's address, where the peer connects (pair roles)", &c.NATSAddr},
		{"peer_nats", "the active's NATS address host:port (passive)", &c.PeerNATS},
		{"link_user", "user name on the replication link", &c.LinkUser},
		{"link_password", "password on the replication link (required for pair roles; both nodes the same)", &c.LinkPassword},
		{"link_tls", "TLS on the replication link (the node's certificate)", &c.LinkTLS},
		{"link_ca", "PEM file the passive trusts for the active's link certificate (default: the system's roots)", &c.LinkCA},
		{"replication_mode", "sync (acknowledge when the passive has the change) or async (explicit opt-in)", &c.ReplicationMode},
		{"peer_timeout", "how long the active waits for the passive before a client is told to retry", &c.PeerTimeout},
		{"epoch", "the active's epoch, stored in every log entry (raised by failover)", &c.Epoch},
		{"log_trim_interval", "how often the log is trimmed to log_keep", &c.LogTrimEvery},
		{"log_keep", "log entries kept behind what both nodes have (replay, a peer's catch-up); never trims what the passive lacks", &c.LogKeep},
		{"service_address", "the name or address mail clients use for the pair (a service IP or DNS name); a passive's refusals point there", &c.ServiceAddr},
		{"failover", "automatic failover: heartbeats, fencing and role changes decide which node is active (role then names the preferred node)", &c.Failover},
		{"external", "an outside cluster manager (Pacemaker, with ops/ocf/twinbox) decides the role: twinbox's own failover is off, and promote/demote change the role", &c.External},
		{"peer_name", "the peer's node_name (failover; Heartbeat's node list)", &c.PeerName},
		{"heartbeat_addr", "UDP address this node's heartbeats arrive on (failover)", &c.HeartbeatAddr},
		{"peer_heartbeat", "the peer's heartbeat UDP address host:port (failover)", &c.PeerHeartbeat},
		{"heartbeat_key", "shared key signing heartbeats, at least 16 bytes, the same on both nodes (Heartbeat's authkeys); prefer heartbeat_key_file", &c.HeartbeatKey},
		{"heartbeat_key_file", "file holding the heartbeat key", &c.KeyFile},
		{"keepalive", "interval between heartbeats", &c.Keepalive},
		{"warntime", "a heartbeat path silent this long is reported late", &c.Warntime},
		{"deadtime", "the peer is declared dead when no path was heard this long", &c.Deadtime},
		{"initdead", "deadtime at boot, before the peer was first heard", &c.Initdead},
		{"fence_agent", "STONITH: a fence-agents program (fence_ipmilan, fence_virsh...), or the built-in docker, process or manual; empty: no fencing, so no automatic takeover", &c.FenceAgent},
		{"fence_options", "comma-separated key=value lines for the fence agent (port=node-b, ip=..., for docker: port=CONTAINER, for process: port=PIDFILE)", &c.FenceOptions},
		{"fence_timeout", "how long fencing may take (a timeout is a failure)", &c.FenceTimeout},
		{"fence_delay", "wait before fencing the peer, so that the other node wins a mutual shootout (default: 0 on the preferred node, 1s on the other; more if the fence device takes longer than 1s to power the peer off)", &c.FenceDelay},
		{"fence_action", "off, or reboot: off, then on again once this node is active, so that the fenced node comes back as the passive (with devices that can power on: fence-agents programs, docker)", &c.FenceAction},
		{"witness", "UDP address host:port of a witness (twinbox witness on a third machine): a node then promotes or goes on alone only with its vote, so that a lying fence cannot make two actives; empty: none", &c.Witness},
		{"on_promote", "shell command run after this node becomes active (drbdadm primary, mount, add the service address); a failure steps it down", &c.OnPromote},
		{"on_demote", "shell command run after this node becomes passive", &c.OnDemote},
		{"hook_timeout", "how long on_promote and on_demote may take", &c.HookTimeout},
		{"auto_failback", "the preferred node takes the active role back once it is caught up", &c.AutoFailback},
		{"pid_file", "file the node writes its process id to (for the process fence agent); empty: none", &c.PidFile},
		{"shutdown_timeout", "how long in-flight transactions may take on shutdown", &c.ShutdownTimeout},
		{"collect_interval", "how often unreferenced bodies are collected", &c.CollectEvery},
		{"collect_grace", "how long an unreferenced body is kept before collection", &c.CollectGrace},
		{"log_level", "debug, info, warn or error", &c.LogLevel},
	}
}

func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }
func envName(key string) string  { return "TWINBOX_" + strings.ToUpper(key) }

// setString parses v into the setting's field.
func (s setting) set(v string) error {
	switch p := s.ptr.(type) {
	case *string:
		*p = v
	case *[]string:
		*p = nil
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				*p = append(*p, d)
			}
		}
	case *bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", s.key, v)
		}
		*p = b
	case *int64:
		n, err := parseSize(v)
		if err != nil {
			return fmt.Errorf("%s: %w", s.key, err)
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration such as 30s or 5m", s.key, v)
		}
		*p = d
	default:
		panic(fmt.Sprintf("setting %s: unsupported type %T", s.key, s.ptr))
	}
	return nil
}

// parseSize reads a byte count: 52428800, 50MiB, 64KiB, 1GiB.
func parseSize(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	num := strings.TrimSpace(v)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 52428800 or 50MiB", v)
	}
	return n * mult, nil
}

// loadConfig reads the configuration: defaults, then the file named by -c
// (or TWINBOX_CONFIG), then TWINBOX_* variables, then flags. Every
// problem is reported at once (unknown keys with the nearest known one,
// values of the wrong kind, then what validate finds); an unknown flag
// gives a short error, not the whole usage.
func loadConfig(name string, args []string, stderr interface{ Write([]byte) (int, error) }, usage string) (*config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", os.Getenv("TWINBOX_CONFIG"), "config file (TOML; see twinbox.example.toml) (env TWINBOX_CONFIG)")
	set := c.settings()
	flagged := map[string]string{}
	for _, s := range set {
		key := s.key
		_, isBool := s.ptr.(*bool)
		fs.Var(&settingFlag{def: s.String(), isBool: isBool, set: func(v string) error {
			flagged[key] = v
			return nil
		}}, flagName(key), s.help+" (env "+envName(key)+")")
	}
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), usage)
		fs.PrintDefaults()
	}
	// The flag package prints the whole usage after a parse error: only
	// -h gets it; an error gets one line.
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s; 'twinbox %s -h' lists the flags", errUsage, flagError(err, set), name)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: %s takes no arguments, got %q", errUsage, name, fs.Args())
	}
	_, fenceDelaySet := flagged["fence_delay"]
	if _, ok := os.LookupEnv(envName("fence_delay")); ok {
		fenceDelaySet = true
	}
	var problems []string
	if *file != "" {
		var raw map[string]any
		if _, err := toml.DecodeFile(*file, &raw); err != nil {
			return nil, fmt.Errorf("config %s: %w", *file, err)
		}
		_, inFile := raw["fence_delay"]
		fenceDelaySet = fenceDelaySet || inFile
		byKey := make(map[string]setting, len(set))
		for _, s := range set {
			byKey[s.key] = s
		}
		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			s, ok := byKey[k]
			if !ok {
				problems = append(problems, fmt.Sprintf("config %s: unknown setting %s%s", *file, k, didYouMean(k, set, "")))
				continue
			}
			v, err := tomlString(raw[k])
			if err == nil {
				err = s.set(v)
			}
			if err != nil {
				problems = append(problems, fmt.Sprintf("config %s: %v", *file, err))
			}
		}
	}
	for _, s := range set {
		if v, ok := os.LookupEnv(envName(s.key)); ok {
			if err := s.set(v); err != nil {
				problems = append(problems, envName(s.key)+": "+err.Error())
			}
		}
	}
	for _, s := range set {
		if v, ok := flagged[s.key]; ok {
			if err := s.set(v); err != nil {
				problems = append(problems, "--"+flagName(s.key)+": "+err.Error())
			}
		}
	}
	if len(problems) > 0 {
		// What validate finds too, so that one run shows everything.
		if err := c.validate(); err != nil {
			problems = append(problems, strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		}
		return nil, fmt.Errorf("%w: %s", errUsage, strings.Join(problems, "; "))
	}
	if !fenceDelaySet && c.Failover && c.Role == "passive" {
		// One node waits before fencing, so that a partition never has
		// both shoot each other: by default the one that is not preferred.
		c.FenceDelay = DefaultPassiveFenceDelay
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// settingFlag is a setting's flag: it records the value given, shows the
// default in -h, and is a boolean flag (--failover alone means true) for
// a boolean setting.
type settingFlag struct {
	def    string
	isBool bool
	set    func(string) error
}

func (f *settingFlag) String() string {
	if f == nil {
		return ""
	}
	return f.def
}
func (f *settingFlag) Set(v string) error { return f.set(v) }
func (f *settingFlag) IsBoolFlag() bool   { return f != nil && f.isBool }

// String is the setting's current value as a flag or variable writes it.
func (s setting) String() string {
	switch p := s.ptr.(type) {
	case *string:
		return *p
	case *[]string:
		return strings.Join(*p, ",")
	case *bool:
		if !*p {
			return "" // -h shows no "(default false)"
		}
		return "true"
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *time.Duration:
		if *p == 0 {
			return ""
		}
		return p.String()
	}
	return fmt.Sprint(s.ptr)
}

// tomlString turns a value of the config file into the text a flag or a
// variable would give.
func tomlString(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, err := tomlString(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("a %T is not a value here", v)
}

// flagError rewrites the flag package's error for a person: an unknown
// flag with the nearest known one.
func flagError(err error, set []setting) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		name = strings.TrimLeft(name, "-")
		return "unknown flag --" + name + didYouMean(strings.ReplaceAll(name, "-", "_"), set, "--")
	}
	return msg
}

// didYouMean suggests the setting nearest to key (by edit distance), if
// one is near enough, written with prefix ("--" for a flag).
func didYouMean(key string, set []setting, prefix string) string {
	best, dist := "", len(key)/2+2
	for _, s := range set {
		if d := editDistance(key, s.key); d < dist {
			best, dist = s.key, d
		}
	}
	if best == "" {
		return ""
	}
	if prefix == "--" {
		best = flagName(best)
	}
	return " (did you mean " + prefix + best + "?)"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// DefaultFenceTimeout is fence_timeout: Pacemaker's stonith-timeout, as
// fence_ipmilan alone can take 21 s to fail.
const DefaultFenceTimeout = 60 * time.Second

// DefaultPassiveFenceDelay is fence_delay on the node that is not
// preferred (role passive) when none is set.
const DefaultPassiveFenceDelay = time.Second

// validate reports every problem at once.
func (c *config) validate() error {
	var problems []string
	bad := func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) }
	if c.Data == "" {
		bad("data: must not be empty")
	}
	if c.Passwd == "" {
		c.Passwd = filepath.Join(c.Data, "passwd")
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if len(c.LocalDomains) == 0 {
		c.LocalDomains = []string{"localhost"}
		if c.Hostname != "localhost" {
			c.LocalDomains = append(c.LocalDomains, c.Hostname)
		}
	}
	for _, a := range []struct{ key, addr string }{
		{"imap_addr", c.IMAPAddr}, {"imaps_addr", c.IMAPSAddr}, {"smtp_addr", c.SMTPAddr},
		{"smtps_addr", c.SMTPSAddr}, {"lmtp_addr", c.LMTPAddr}, {"admin_addr", c.AdminAddr},
		{"metrics_addr", c.MetricsAddr},
	} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			bad("%s: %q is not host:port", a.key, a.addr)
		}
	}
	c.validateAdmin(bad)
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls_cert and tls_key: set both or neither")
	}
	if c.MaxMessageSize < 1024 {
		bad("max_message_size: %d is below 1024 bytes", c.MaxMessageSize)
	}
	if c.MaxRecipients < 1 {
		bad("max_recipients: %d must be at least 1", c.MaxRecipients)
	}
	if c.MaxLineLength < 1000 {
		bad("max_line_length: %d is below RFC 5321's 1000", c.MaxLineLength)
	}
	if c.SMTPTimeout <= 0 || c.ShutdownTimeout <= 0 || c.CollectEvery <= 0 || c.CollectGrace < 0 {
		bad("smtp_timeout, shutdown_timeout and collect_interval must be positive, collect_grace not negative")
	}
	for _, l := range []struct {
		key string
		v   int64
	}{
		{"smtp_max_connections", c.SMTPMaxConns}, {"smtp_max_connections_per_ip", c.SMTPMaxConnsPerIP},
		{"lmtp_max_connections", c.LMTPMaxConns}, {"lmtp_max_connections_per_ip", c.LMTPMaxConnsPerIP},
		{"smtp_transaction_timeout", int64(c.SMTPTxTimeout)}, {"smtp_data_timeout", int64(c.SMTPDataTimeout)},
		{"smtp_data_min_rate", c.SMTPDataMinRate}, {"max_header_size", c.MaxHeaderSize},
		{"max_header_fields", c.MaxHeaderFields}, {"max_bytes_in_flight", c.MaxBytesInFlight},
	} {
		if l.v < 1 {
			bad("%s: %d must be positive", l.key, l.v)
		}
	}
	switch c.Role {
	case "standalone":
	case "active", "passive":
		if c.LinkPassword == "" {
			bad("link_password: required for role %s (set TWINBOX_LINK_PASSWORD)", c.Role)
		}
		if c.NATSAddr == "" {
			bad("nats_addr: required for role %s", c.Role)
		} else if _, _, err := net.SplitHostPort(c.NATSAddr); err != nil {
			bad("nats_addr: %q is not host:port", c.NATSAddr)
		}
		if c.Role == "passive" || c.Failover {
			if _, _, err := net.SplitHostPort(c.PeerNATS); err != nil {
				bad("peer_nats: %q is not the peer's host:port", c.PeerNATS)
			}
		}
		if c.Failover {
			c.validateFailover(bad)
		}
	default:
		bad("role: %q is not standalone, active or passive", c.Role)
	}
	if c.Failover && c.Role == "standalone" {
		bad("failover: needs a pair (role active for the preferred node, passive for the other)")
	}
	if c.External && c.Failover {
		bad("external: the cluster manager decides the role; set failover = false")
	}
	if c.External && c.Role == "standalone" {
		bad("external: needs a pair (role passive on both nodes: the cluster manager promotes one)")
	}
	if c.ReplicationMode != "sync" && c.ReplicationMode != "async" {
		bad("replication_mode: %q is not sync or async", c.ReplicationMode)
	}
	if c.PeerTimeout <= 0 {
		bad("peer_timeout: must be positive")
	}
	if c.LogTrimEvery <= 0 {
		bad("log_trim_interval: must be positive")
	}
	if c.LogKeep < 0 {
		bad("log_keep: %d is negative", c.LogKeep)
	}
	if c.Epoch < 1 {
		bad("epoch: %d must be at least 1", c.Epoch)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", errUsage, strings.Join(problems, "; "))
	}
	return nil
}

// maxSocketPath is the longest unix socket path Linux binds (sun_path
// holds 108 bytes with the NUL).
const maxSocketPath = 107

// validateAdmin checks the admin API's settings: a TCP listener needs a
// token.
func (c *config) validateAdmin(bad func(string, ...any)) {
	if c.AdminSocket == "" {
		c.AdminSocket = filepath.Join(c.Data, admin.SocketName)
	}
	if len(c.AdminSocket) > maxSocketPath {
		bad("admin_socket: %q is %d bytes, over the %d a unix socket path may have; set admin_socket to a shorter path", c.AdminSocket, len(c.AdminSocket), maxSocketPath)
	}
	switch {
	case c.AdminAddr != "" && c.AdminTokenFile == "":
		bad("admin_addr: %q needs admin_token_file (a file of at least %d random bytes, mode 0600): the admin API over TCP is never open", c.AdminAddr, admin.MinTokenLen)
	case c.AdminTokenFile != "":
		if _, err := admin.ReadToken(c.AdminTokenFile); err != nil {
			bad("admin_token_file: %v", err)
		}
	}
}

// validateFailover checks the failover settings.
func (c *config) validateFailover(bad func(string, ...any)) {
	if c.PeerName == "" || c.PeerName == c.NodeName {
		bad("peer_name: %q must name the other node (node_name is %q)", c.PeerName, c.NodeName)
	}
	for _, a := range []struct{ key, addr string }{{"heartbeat_addr", c.HeartbeatAddr}, {"peer_heartbeat", c.PeerHeartbeat}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			bad("%s: %q is not host:port (required with failover)", a.key, a.addr)
		}
	}
	if c.HeartbeatKey == "" && c.KeyFile == "" {
		bad("heartbeat_key_file: required with failover (or heartbeat_key / TWINBOX_HEARTBEAT_KEY): the shared key that signs heartbeats")
	} else if key, err := c.heartbeatKey(); err != nil {
		bad("%v", err)
	} else if len(key) < 16 {
		bad("heartbeat key: %d bytes is too short; use at least 16 random bytes", len(key))
	}
	fc := failover.Config{Keepalive: c.Keepalive, Warntime: c.Warntime, Deadtime: c.Deadtime, Initdead: c.Initdead, FenceDelay: c.FenceDelay}
	if err := fc.Validate(); err != nil {
		for _, e := range strings.Split(err.Error(), "\n") {
			bad("%s", e)
		}
	}
	if c.Witness != "" {
		if _, _, err := net.SplitHostPort(c.Witness); err != nil {
			bad("witness: %q is not host:port", c.Witness)
		}
	}
	if c.FenceAction != "off" && c.FenceAction != "reboot" {
		bad("fence_action: %q is not off or reboot", c.FenceAction)
	}
	if c.FenceTimeout <= 0 || c.HookTimeout <= 0 {
		bad("fence_timeout and hook_timeout must be positive")
	}
	if _, err := c.fenceOptions(); err != nil {
		bad("%v", err)
	}
	switch c.FenceAgent {
	case "", "docker", "process", "manual":
	default:
		if st, err := os.Stat(c.FenceAgent); err != nil {
			bad("fence_agent: %v", err)
		} else if st.IsDir() || st.Mode()&0o111 == 0 {
			bad("fence_agent: %s is not an executable file", c.FenceAgent)
		}
	}
}

// heartbeatKey is the shared heartbeat key: heartbeat_key, or the
// contents of heartbeat_key_file (surrounding whitespace removed).
func (c *config) heartbeatKey() ([]byte, error) {
	if c.HeartbeatKey != "" {
		return []byte(c.HeartbeatKey), nil
	}
	b, err := os.ReadFile(c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("heartbeat_key_file: %w", err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}

// fenceOptions parses fence_options into the agent's key=value options.
func (c *config) fenceOptions() (map[string]string, error) {
	opts := map[string]string{}
	for _, kv := range c.FenceOptions {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("fence_options: %q is not key=value", kv)
		}
		opts[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return opts, nil
}

// pairConfig is the node's configuration for package pair, with the
// fence device built (and returned when it is the manual one, which the
// operator confirms through the admin server). users lists the users the
// store must have; progress gets a resync's progress lines.
func (c *config) pairConfig(tlsConf *tls.Config, log *slog.Logger, progress io.Writer, users func() []string) (pair.Config, *fence.Manual, error) {
	pc := pair.Config{
		Dir: c.Data, Name: c.NodeName, Role: pair.Role(c.Role),
		MaxMessageSize: c.MaxMessageSize, StoreCache: c.StoreCache, CacheBytes: c.CacheSize,
		NATSAddr: c.NATSAddr, PeerNATS: c.PeerNATS, LinkUser: c.LinkUser, LinkPassword: c.LinkPassword,
		Async: c.ReplicationMode == "async", PeerTimeout: c.PeerTimeout, Epoch: uint64(c.Epoch),
		LogKeep: uint64(c.LogKeep), LogTrimEvery: c.LogTrimEvery, WriteHint: c.ServiceAddr,
		CollectEvery: c.CollectEvery, CollectGrace: c.CollectGrace, ShutdownTimeout: c.ShutdownTimeout,
		Users: users, Progress: progress, Logger: log,
	}
	if c.LinkTLS {
		pc.LinkTLS = tlsConf
		if c.LinkCA != "" {
			pem, err := os.ReadFile(c.LinkCA)
			if err != nil {
				return pair.Config{}, nil, fmt.Errorf("link_ca: %w", err)
			}
			pc.LinkCA = x509.NewCertPool()
			if !pc.LinkCA.AppendCertsFromPEM(pem) {
				return pair.Config{}, nil, fmt.Errorf("link_ca: no certificate in %s", c.LinkCA)
			}
		}
	}
	if !c.Failover {
		return pc, nil, nil
	}
	key, err := c.heartbeatKey()
	if err != nil {
		return pair.Config{}, nil, err
	}
	dev, manual, err := c.fenceDevice()
	if err != nil {
		return pair.Config{}, nil, fmt.Errorf("fence_agent: %w", err)
	}
	pc.Failover = &pair.FailoverConfig{
		PeerName: c.PeerName, HeartbeatAddr: c.HeartbeatAddr, PeerHeartbeat: c.PeerHeartbeat, Key: key,
		Keepalive: c.Keepalive, Warntime: c.Warntime, Deadtime: c.Deadtime, Initdead: c.Initdead,
		FenceDelay: c.FenceDelay, Device: c.FenceAgent,
		OnPromote: c.OnPromote, OnDemote: c.OnDemote, HookTimeout: c.HookTimeout, AutoFailback: c.AutoFailback,
		Witness: c.Witness,
	}
	if dev != nil {
		pc.Failover.Fencer = deviceFencer{dev: dev, timeout: c.FenceTimeout, reboot: c.FenceAction == "reboot"}
	}
	return pc, manual, nil
}

// deviceFencer fences with a device and the configured timeout; with
// reboot it powers the peer on again once this node is active (Restore).
type deviceFencer struct {
	dev     fence.Device
	timeout time.Duration
	reboot  bool
}

func (f deviceFencer) Fence(ctx context.Context) error { return fence.Fence(ctx, f.dev, f.timeout) }

// Restore powers the fenced peer on again (fence_action = reboot), when
// the device can.
func (f deviceFencer) Restore(ctx context.Context) error {
	sw, ok := f.dev.(fence.Switcher)
	if !f.reboot || !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return sw.On(ctx)
}

// fenceDevice builds the configured fence device: a fence-agents
// program, or a built-in one.
func (c *config) fenceDevice() (fence.Device, *fence.Manual, error) {
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
