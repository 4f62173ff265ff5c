package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/internal/harness"
	"github.com/twinbox/twinbox/internal/loadgen"
)

// ReplicationUsage is `twinbox bench replication -h`.
const ReplicationUsage = `usage: twinbox bench replication [--sessions 16] [--size 10240] [--duration 20s]
       [--rcpts 1,50] [--link-count 500] [--catchup 2000] [--pin NODE/PASSIVE/LOAD]
       [--json] [--keep]

Measures what synchronous replication costs, side by side in one run on this
machine. Starts 'twinbox serve' processes of this binary on temporary data
directories and loopback ports (a standalone node, and an active + passive
pair with sync replication), adds user1..user50 to each node, then:

  1. for each --rcpts count, on new nodes, the same LMTP load for
     --duration against the standalone and then against the active:
     deliveries/s of both, their ratio, latency p50/p99 and what
     replication adds; the passive's lag is sampled every 100 ms during
     the replicated run;
  2. --link-count messages of 50 recipients through the last active: bytes
     the passive received over the link per message;
  3. on another pair, in async mode: stop the passive (SIGTERM), deliver
     --catchup messages to the active, start the passive again and time it
     until its /digest is at the active's position: entries/s and MB/s.

--pin gives each side its own processor cores, as two machines would: the
standalone and the active run on the NODE cores, the passive on the
PASSIVE cores, and this process (the load generator) on the LOAD cores,
each a taskset(1) list such as 0, 0-3 or 0,2. "--pin 0/1/1" on a
two-core machine runs the active and the standalone each alone on core
0, and the passive on core 1 beside the load. Without --pin every process
shares every core, so the passive's work is taken from the active's.
Either way the nodes share this machine's disk.

Every node gets SIGTERM at the end (and on Ctrl-C); the data directories,
with each node's log, are removed unless --keep.

Flags:`

// Bounds of the bench's waits: each is many times what a healthy node on
// a loaded machine needs; running out is an error naming the node.
const (
	replStartTimeout = 60 * time.Second  // serve prints its addresses and answers /healthz
	replStopTimeout  = 60 * time.Second  // SIGTERM to exit (serve's shutdown_timeout is 30 s)
	replSyncTimeout  = 120 * time.Second // the passive reaches the active's position
	replUserTimeout  = 60 * time.Second  // every bench user exists in the store
	replPoll         = 20 * time.Millisecond
	replLagEvery     = 100 * time.Millisecond
	replUsers        = 50  // user1..user50 on every node
	replLinkRcpts    = 50  // recipients per message of the link-bytes phase
	replLinkRatioMax = 1.2 // the design's goal: link bytes per message at most 1.2× the message
	replUserCost     = 4   // bcrypt cost of the bench users: nobody logs in
	replPassword     = "bench-password"
)

// ReplicationConfig is what `twinbox bench replication` runs.
type ReplicationConfig struct {
	Bin       string // the twinbox binary to start nodes from
	Sessions  int
	Size      int
	Duration  time.Duration
	Rcpts     []int
	LinkCount int
	Catchup   int
	Keep      bool
	Pin       *Pin      // nil: every process on every core
	Log       io.Writer // progress lines (stderr)
}

// Pin is where --pin puts the processes: taskset(1) CPU lists.
type Pin struct {
	Node    string `json:"node"`    // the standalone and the active
	Passive string `json:"passive"` // the passive
	Load    string `json:"load"`    // the bench itself, the load generator
}

// ParsePin reads NODE/PASSIVE/LOAD; each list must be one taskset takes.
func ParsePin(s string) (*Pin, error) {
	if s == "" {
		return nil, nil
	}
	f := strings.Split(s, "/")
	if len(f) != 3 {
		return nil, fmt.Errorf("--pin %q: want NODE/PASSIVE/LOAD, three CPU lists such as 0/1/1", s)
	}
	for _, l := range f {
		if _, err := cpuList(l); err != nil {
			return nil, fmt.Errorf("--pin %q: %v", s, err)
		}
	}
	return &Pin{Node: f[0], Passive: f[1], Load: f[2]}, nil
}

// validate reports every problem at once.
func (c *ReplicationConfig) Validate() error {
	var errs []error
	if c.Sessions < 1 {
		errs = append(errs, fmt.Errorf("--sessions %d: want at least 1", c.Sessions))
	}
	if c.Size < 1 {
		errs = append(errs, fmt.Errorf("--size %d: want at least 1", c.Size))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %v: want more than 0", c.Duration))
	}
	if len(c.Rcpts) == 0 {
		errs = append(errs, errors.New("--rcpts: want at least one recipient count"))
	}
	for _, r := range c.Rcpts {
		if r < 1 || r > replUsers {
			errs = append(errs, fmt.Errorf("--rcpts %d: want 1 to %d", r, replUsers))
		}
	}
	if c.LinkCount < 1 {
		errs = append(errs, fmt.Errorf("--link-count %d: want at least 1", c.LinkCount))
	}
	if c.Catchup < 1 {
		errs = append(errs, fmt.Errorf("--catchup %d: want at least 1", c.Catchup))
	}
	return errors.Join(errs...)
}

func ParseRcpts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("--rcpts %q: %q is not a number", s, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// CheckBinary makes sure bin is twinbox before the bench starts
// nodes from it: started as `serve`, another program (a test binary, whose
// os.Executable this is under go test) would do something else entirely,
// such as run the tests that run the bench again. --help is safe to ask of
// a test binary too: it prints its flags and exits.
func CheckBinary(ctx context.Context, bin string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--help")
	cmd.Env = harness.Env()
	out, _ := cmd.CombinedOutput()
	if !bytes.Contains(out, []byte("twinbox: a two-node mail store")) {
		return fmt.Errorf("%s is not a twinbox binary (its --help does not say so); set TWINBOX_BENCH_BIN to one", bin)
	}
	return nil
}

// ReplicationReport is what `twinbox bench replication` measured.
type ReplicationReport struct {
	Machine   Machine         `json:"machine"`
	Sessions  int             `json:"sessions"`
	Size      int             `json:"message_size"`
	Duration  float64         `json:"duration_s"`
	Pin       *Pin            `json:"pin,omitempty"`
	Delivery  []*replDelivery `json:"delivery"`
	Link      *replLink       `json:"link,omitempty"`
	Catchup   *replCatchup    `json:"catchup,omitempty"`
	TotalSec  float64         `json:"total_s"`
	Completed bool            `json:"completed"` // every phase ran
}

type Machine struct {
	CPUs  int    `json:"cpus"`
	Model string `json:"cpu_model,omitempty"`
	Go    string `json:"go"`
	Date  string `json:"date"`
}

// replDelivery is one recipient count: the same load against the
// standalone and against the active of the sync pair.
type replDelivery struct {
	Recipients int                     `json:"recipients"`
	Standalone *loadgen.DeliveryResult `json:"standalone"`
	Replicated *loadgen.DeliveryResult `json:"replicated"`
	// Ratio is replicated over standalone delivered messages per second.
	Ratio float64 `json:"ratio"`
	// Added latency, replicated minus standalone, in milliseconds.
	AddedP50 float64 `json:"added_p50_ms"`
	AddedP99 float64 `json:"added_p99_ms"`
	// Lag of the passive during the replicated run.
	Lag replLag `json:"lag"`
	// LinkBytesPerMessage is what the passive received over the link
	// during the replicated run per delivered message (failed messages
	// and the link's own traffic included).
	LinkBytesPerMessage float64 `json:"link_bytes_per_message"`
	// CPU is the processor time each process spent per delivered
	// message during the timed runs.
	CPU replCPU `json:"cpu_us_per_message"`
	// Wait is where a replicated commit's time went, from the nodes'
	// own timings over the replicated run.
	Wait replWait `json:"wait"`
	// PeakRSS is each node's peak resident memory (VmHWM) in MiB, read
	// after its timed run: the design's "resident size under load".
	PeakRSS replRSS `json:"peak_rss_mib"`
}

type replRSS struct {
	Standalone float64 `json:"standalone"`
	Active     float64 `json:"active"`
	Passive    float64 `json:"passive"`
}

// replWait breaks a replicated commit down, as means over the run in
// milliseconds: the active's append to its log (write and fsync, once per
// group commit), its wait for the passive after that (per delivery), and
// within that wait the passive's own part, from a batch's arrival to the
// report of its position (decoding, its append and fsync). The rest of
// the wait is the record's way to the passive and the report's way back.
type replWait struct {
	AppendMs        float64 `json:"active_append_ms"`
	PeerWaitMs      float64 `json:"active_peer_wait_ms"`
	PassiveTakeMs   float64 `json:"passive_take_ms"`
	EntriesPerTake  float64 `json:"entries_per_passive_batch"`
	EntriesPerGroup float64 `json:"entries_per_group_commit"`
}

// waitBetween computes replWait from the nodes' /status before and after.
func waitBetween(a0, a1, p0, p1 *admin.Status) replWait {
	var w replWait
	if a0.Replication == nil || a1.Replication == nil || p0.Replication == nil || p1.Replication == nil {
		return w
	}
	ra0, ra1, rp0, rp1 := a0.Replication, a1.Replication, p0.Replication, p1.Replication
	mean := func(secs float64, n uint64) float64 {
		if n == 0 {
			return 0
		}
		return secs * 1e3 / float64(n)
	}
	w.AppendMs = mean(ra1.AppendSeconds-ra0.AppendSeconds, ra1.Appends-ra0.Appends)
	w.PeerWaitMs = mean(ra1.PeerWaitSeconds-ra0.PeerWaitSeconds, ra1.PeerWaits-ra0.PeerWaits)
	w.PassiveTakeMs = mean(rp1.TakeSeconds-rp0.TakeSeconds, rp1.Takes-rp0.Takes)
	entries := float64(a1.Applied - a0.Applied)
	if n := rp1.Takes - rp0.Takes; n > 0 {
		w.EntriesPerTake = entries / float64(n)
	}
	if n := ra1.Appends - ra0.Appends; n > 0 {
		w.EntriesPerGroup = entries / float64(n)
	}
	return w
}

// replCPU is processor time (user + system) per delivered message, in
// microseconds, read from /proc before and after a timed run: what the
// machine's cores paid for each delivery, by process. Busy is the share
// of all cores the processes used together during the run.
type replCPU struct {
	Standalone     float64 `json:"standalone"`
	StandaloneLoad float64 `json:"standalone_load_generator"`
	StandaloneBusy float64 `json:"standalone_busy"`
	Active         float64 `json:"active"`
	Passive        float64 `json:"passive"`
	ReplicatedLoad float64 `json:"replicated_load_generator"`
	ReplicatedBusy float64 `json:"replicated_busy"`
}

// replLag is the passive's lag sampled every 100 ms. LogLag is the
// active's own figure (log_last − the passive's durable position); Applied
// is the active's applied_seq minus the passive's, read one after the
// other.
type replLag struct {
	Samples    int    `json:"samples"`
	Errors     int    `json:"sample_errors"`
	LogMax     uint64 `json:"log_lag_max"`
	LogP99     uint64 `json:"log_lag_p99"`
	AppliedMax uint64 `json:"applied_lag_max"`
	AppliedP99 uint64 `json:"applied_lag_p99"`
}

// replLink is the link-bytes phase.
type replLink struct {
	Recipients  int     `json:"recipients"`
	MessageSize int     `json:"message_size"`
	Delivered   int64   `json:"delivered"`
	Failed      int64   `json:"failed"`
	Entries     uint64  `json:"entries"`
	Bytes       uint64  `json:"link_bytes"`
	PerMessage  float64 `json:"link_bytes_per_message"`
	Ratio       float64 `json:"ratio_to_message"` // PerMessage / the message size
	WithinGoal  bool    `json:"within_1_2x"`
	// MessageZstd is the mean size of the bench's messages compressed
	// alone with zstd at its fastest level: the link's floor for the body
	// when the log compresses entries, since the bench's text compresses
	// far better than most mail.
	MessageZstd float64 `json:"message_zstd_bytes"`
}

// zstdSize returns the mean size of n bench messages compressed alone.
func zstdSize(size, n int) float64 {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return 0
	}
	defer enc.Close()
	total := 0
	for i := range n {
		total += len(enc.EncodeAll(loadgen.SampleMessage(size, uint64(i+1)), nil))
	}
	return float64(total) / float64(n)
}

// replCatchup is the catch-up phase.
type replCatchup struct {
	Delivered     int64   `json:"delivered"`
	Failed        int64   `json:"failed"`
	Entries       uint64  `json:"entries"` // the passive's applied_seq moved by this much
	From, To      uint64  `json:"-"`
	StartupSec    float64 `json:"startup_s"` // process start to /healthz
	Seconds       float64 `json:"seconds"`   // process start to the active's position
	EntriesPerSec float64 `json:"entries_per_s"`
	LinkBytes     uint64  `json:"link_bytes"`
	MBPerSec      float64 `json:"mb_per_s"`
	DigestsEqual  bool    `json:"digests_equal"`
	// The limits to compare MBPerSec with, measured right after: fsynced
	// 1 MiB writes to the bench's directory, and a TLS stream over
	// loopback (0 when a measurement failed).
	DiskSyncMBPerSec    float64 `json:"disk_fsync_mb_per_s"`
	LoopbackTLSMBPerSec float64 `json:"loopback_tls_mb_per_s"`
}

// benchReplication runs every phase. It returns the report so far with an
// error when a phase failed, and stops every node it started.
func Replication(ctx context.Context, cfg ReplicationConfig) (rep *ReplicationReport, err error) {
	start := time.Now()
	root, err := os.MkdirTemp("", "twinbox-bench-replication-")
	if err != nil {
		return nil, fmt.Errorf("bench replication: %w", err)
	}
	b := &replBench{cfg: cfg, root: root, began: start}
	pw := make([]byte, 16)
	rand.Read(pw)
	b.linkPassword = hex.EncodeToString(pw)
	rep = &ReplicationReport{Machine: machine(), Sessions: cfg.Sessions, Size: cfg.Size, Duration: cfg.Duration.Seconds(), Pin: cfg.Pin}
	if cfg.Pin != nil {
		if err := pinSelf(cfg.Pin.Load); err != nil {
			return rep, fmt.Errorf("bench replication: --pin: %w", err)
		}
	}
	defer func() {
		if serr := b.stopAll(); serr != nil {
			err = errors.Join(err, serr)
		}
		rep.TotalSec = time.Since(start).Seconds()
		if cfg.Keep {
			b.logf("kept the data directories and logs in %s", root)
		} else if rerr := os.RemoveAll(root); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if err != nil {
			err = fmt.Errorf("bench replication: %w", err)
		}
	}()
	if err := b.run(ctx, rep); err != nil {
		return rep, err
	}
	rep.Completed = true
	return rep, nil
}

// replBench is one run: its nodes, its directory, its link password.
type replBench struct {
	cfg          ReplicationConfig
	root         string
	linkPassword string
	began        time.Time
	nodes        []*harness.Node // every node started, in order
}

func (b *replBench) logf(format string, args ...any) {
	if b.cfg.Log != nil {
		fmt.Fprintf(b.cfg.Log, "bench replication: %5.1fs "+format+"\n",
			append([]any{time.Since(b.began).Seconds()}, args...)...)
	}
}

func (b *replBench) run(ctx context.Context, rep *ReplicationReport) error {
	cfg := b.cfg
	b.logf("nodes in %s, binary %s", b.root, cfg.Bin)

	// 1. The same timed load against the standalone, then the active, for
	// each recipient count on new nodes: a store that took more mail in an
	// earlier run (the standalone takes several times what the active
	// does) would be slower for reasons of its own.
	var solo, active, passive *harness.Node
	for i, r := range cfg.Rcpts {
		if i > 0 {
			for _, n := range []*harness.Node{solo, passive, active} {
				b.logf("stopping the %s node", n.Name)
				if err := n.Stop(); err != nil {
					return err
				}
			}
		}
		var err error
		if solo, active, passive, err = b.startSoloAndPair(ctx, fmt.Sprintf("run%d-rcpt%d-", i+1, r)); err != nil {
			return err
		}
		d := &replDelivery{Recipients: r}
		rep.Delivery = append(rep.Delivery, d)
		if _, err := waitCaughtUp(ctx, active, passive); err != nil {
			return err
		}
		b.logf("LMTP, %d recipient(s), %v against the standalone", r, cfg.Duration)
		cpu := startCPU(solo)
		if d.Standalone, err = b.deliver(ctx, solo, r, loadgen.Limits{Duration: cfg.Duration}); err != nil {
			return err
		}
		used := cpu.used(d.Standalone)
		d.CPU.Standalone, d.CPU.StandaloneLoad, d.CPU.StandaloneBusy = used.nodes[0], used.self, used.busy
		d.PeakRSS.Standalone = peakRSS(solo)
		activeBefore, before, err := statuses(ctx, active, passive)
		if err != nil {
			return err
		}
		b.logf("LMTP, %d recipient(s), %v against the active (sync)", r, cfg.Duration)
		sctx, stopSampling := context.WithCancel(ctx)
		lagc := make(chan replLag, 1)
		go func() { lagc <- b.sampleLag(sctx, active, passive) }()
		cpu = startCPU(active, passive)
		d.Replicated, err = b.deliver(ctx, active, r, loadgen.Limits{Duration: cfg.Duration})
		stopSampling()
		if err == nil {
			used := cpu.used(d.Replicated)
			d.CPU.Active, d.CPU.Passive, d.CPU.ReplicatedLoad, d.CPU.ReplicatedBusy = used.nodes[0], used.nodes[1], used.self, used.busy
			d.PeakRSS.Active, d.PeakRSS.Passive = peakRSS(active), peakRSS(passive)
		}
		d.Lag = <-lagc
		if err != nil {
			return err
		}
		if _, err := waitCaughtUp(ctx, active, passive); err != nil {
			return err
		}
		activeAfter, after, err := statuses(ctx, active, passive)
		if err != nil {
			return err
		}
		d.Wait = waitBetween(activeBefore, activeAfter, before, after)
		if n := d.Replicated.Delivered; n > 0 {
			d.LinkBytesPerMessage = float64(linkBytes(after)-linkBytes(before)) / float64(n)
		}
		if s := d.Standalone.MessagesPerSec; s > 0 {
			d.Ratio = d.Replicated.MessagesPerSec / s
		}
		d.AddedP50 = msOf(d.Replicated.Latency.P50 - d.Standalone.Latency.P50)
		d.AddedP99 = msOf(d.Replicated.Latency.P99 - d.Standalone.Latency.P99)
	}

	// 2. Link bytes per 50-recipient message, by count, on a quiet pair.
	if _, err := waitCaughtUp(ctx, active, passive); err != nil {
		return err
	}
	b.logf("link bytes: %d messages of %d recipients through the active", cfg.LinkCount, replLinkRcpts)
	before, err := passive.Status(ctx)
	if err != nil {
		return err
	}
	res, err := b.deliver(ctx, active, replLinkRcpts, loadgen.Limits{Count: int64(cfg.LinkCount)})
	if err != nil {
		return err
	}
	if _, err := waitCaughtUp(ctx, active, passive); err != nil {
		return err
	}
	after, err := passive.Status(ctx)
	if err != nil {
		return err
	}
	l := &replLink{Recipients: replLinkRcpts, MessageSize: cfg.Size, Delivered: res.Delivered, Failed: res.Failed,
		Entries: after.Applied - before.Applied, Bytes: linkBytes(after) - linkBytes(before),
		MessageZstd: zstdSize(cfg.Size, 20)}
	if res.Delivered > 0 {
		l.PerMessage = float64(l.Bytes) / float64(res.Delivered)
		l.Ratio = l.PerMessage / float64(cfg.Size)
		l.WithinGoal = l.Ratio <= replLinkRatioMax
	}
	rep.Link = l

	// The first nodes are done; stop them before the catch-up pair so
	// that it has the machine to itself.
	for _, n := range []*harness.Node{solo, passive, active} {
		b.logf("stopping the %s node", n.Name)
		if err := n.Stop(); err != nil {
			return err
		}
	}

	// 3. Catch-up on an async pair: the active goes on without the
	// passive, which then has --catchup messages to fetch and apply.
	active, passive, err = b.startPair(ctx, "catchup-async", "async")
	if err != nil {
		return err
	}
	if err := b.addUsers(ctx, active, passive); err != nil {
		return err
	}
	if err := b.waitUsers(ctx, active); err != nil {
		return err
	}
	from, err := waitCaughtUp(ctx, active, passive)
	if err != nil {
		return err
	}
	b.logf("catch-up: passive stopped; %d messages to the active", cfg.Catchup)
	if err := passive.Stop(); err != nil {
		return err
	}
	res, err = b.deliver(ctx, active, 1, loadgen.Limits{Count: int64(cfg.Catchup)})
	if err != nil {
		return err
	}
	target, err := active.Status(ctx)
	if err != nil {
		return err
	}
	c := &replCatchup{Delivered: res.Delivered, Failed: res.Failed, From: from, To: target.Applied}
	rep.Catchup = c
	b.logf("catch-up: passive started again, %d entries behind", c.To-c.From)
	t0 := time.Now()
	if err = passive.Restart(ctx); err != nil {
		return err
	}
	c.StartupSec = time.Since(t0).Seconds()
	var last *admin.Status
	err = passive.WaitFor(ctx, replSyncTimeout, "the restarted passive to reach the active's position", func() (bool, error) {
		st, err := passive.Status(ctx)
		if err != nil {
			return false, nil // it may be busy; the bound decides
		}
		last = st
		return st.Applied >= c.To, nil
	})
	if err != nil {
		return err
	}
	took := time.Since(t0)
	c.Seconds = took.Seconds()
	c.Entries = last.Applied - c.From
	c.LinkBytes = linkBytes(last)
	c.EntriesPerSec = float64(c.Entries) / took.Seconds()
	c.MBPerSec = float64(c.LinkBytes) / took.Seconds() / 1e6
	da, err := active.Digest(ctx)
	if err != nil {
		return err
	}
	dp, err := passive.Digest(ctx)
	if err != nil {
		return err
	}
	c.DigestsEqual = da.Applied == dp.Applied && da.Store == dp.Store
	if !c.DigestsEqual {
		return fmt.Errorf("after catch-up the digests differ: active at %d %s, passive at %d %s",
			da.Applied, da.Store, dp.Applied, dp.Store)
	}
	b.logf("catch-up: the disk's and loopback's limits, %v each", limitRun)
	var err1, err2 error
	c.DiskSyncMBPerSec, err1 = diskSyncMBps(b.root)
	c.LoopbackTLSMBPerSec, err2 = loopbackTLSMBps(filepath.Join(active.Data, "tls"))
	if err := errors.Join(err1, err2); err != nil {
		b.logf("catch-up limits: %v", err)
	}
	return nil
}

// deliver runs the LMTP load against n and checks that n is still up.
func (b *replBench) deliver(ctx context.Context, n *harness.Node, rcpts int, limits loadgen.Limits) (*loadgen.DeliveryResult, error) {
	res, err := loadgen.RunDelivery(ctx, loadgen.DeliveryConfig{
		Conn: loadgen.Conn{Target: n.Addrs["lmtp"]}, Limits: limits, LMTP: true,
		Sessions: b.cfg.Sessions, MessageSize: b.cfg.Size, Recipients: rcpts,
		Users: loadgen.Users{Count: replUsers},
	})
	if err != nil {
		return nil, fmt.Errorf("LMTP to the %s node: %w%s", n.Name, err, exitNote(n))
	}
	if res.Interrupted {
		return res, fmt.Errorf("interrupted; the numbers so far are partial")
	}
	if err := n.Alive(); err != nil {
		return res, err
	}
	return res, nil
}

// sampleLag polls both nodes' /status every 100 ms until ctx ends.
func (b *replBench) sampleLag(ctx context.Context, active, passive *harness.Node) replLag {
	var out replLag
	var logLag, applied []uint64
	t := time.NewTicker(replLagEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			out.Samples = len(logLag)
			out.LogMax, out.LogP99 = maxP99(logLag)
			out.AppliedMax, out.AppliedP99 = maxP99(applied)
			return out
		case <-t.C:
		}
		a, err := active.Status(ctx)
		if err != nil || a.Replication == nil {
			if ctx.Err() == nil {
				out.Errors++
			}
			continue
		}
		p, err := passive.Status(ctx)
		if err != nil {
			if ctx.Err() == nil {
				out.Errors++
			}
			continue
		}
		logLag = append(logLag, a.Replication.Lag)
		var gap uint64
		if a.Applied > p.Applied {
			gap = a.Applied - p.Applied
		}
		applied = append(applied, gap)
	}
}

// maxP99 returns the largest value and the nearest-rank 99th percentile.
func maxP99(v []uint64) (uint64, uint64) {
	if len(v) == 0 {
		return 0, 0
	}
	slices.Sort(v)
	i := (99*len(v)+99)/100 - 1
	return v[len(v)-1], v[max(0, min(i, len(v)-1))]
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func linkBytes(st *admin.Status) uint64 {
	if st.Replication == nil {
		return 0
	}
	return st.Replication.LinkBytes
}

// waitCaughtUp waits until the passive has applied everything the active
// has, and returns that position.
func waitCaughtUp(ctx context.Context, active, passive *harness.Node) (uint64, error) {
	var pos uint64
	err := passive.WaitFor(ctx, replSyncTimeout, "the passive to reach the active's position", func() (bool, error) {
		a, err := active.Status(ctx)
		if err != nil {
			return false, err
		}
		p, err := passive.Status(ctx)
		if err != nil {
			return false, err
		}
		pos = a.Applied
		return p.Applied == a.Applied, nil
	}, active)
	return pos, err
}

// waitUsers waits until every bench user is in n's store (a user added to
// the passwd-file is created in the store within a second).
func (b *replBench) waitUsers(ctx context.Context, n *harness.Node) error {
	return n.WaitFor(ctx, replUserTimeout, fmt.Sprintf("user1..user%d in the store", replUsers), func() (bool, error) {
		d, err := n.Digest(ctx)
		if err != nil {
			return false, err
		}
		have := map[string]bool{}
		for _, m := range d.Mailboxes {
			have[m.User] = true
		}
		for i := range replUsers {
			if !have[loadgen.Users{Prefix: loadgen.DefaultUserPrefix}.Name(i)] {
				return false, nil
			}
		}
		return true, nil
	})
}

// exitNote says why a node is gone, if it exited without being asked to.
func exitNote(n *harness.Node) string {
	if err := n.Alive(); err != nil {
		return " (" + err.Error() + ")"
	}
	return ""
}

// statuses reads the active's /status and then the passive's.
func statuses(ctx context.Context, active, passive *harness.Node) (*admin.Status, *admin.Status, error) {
	a, err := active.Status(ctx)
	if err != nil {
		return nil, nil, err
	}
	p, err := passive.Status(ctx)
	if err != nil {
		return nil, nil, err
	}
	return a, p, nil
}

// start runs `twinbox serve` on a new data directory under the bench's
// root, every listener on a port the kernel picks.
func (b *replBench) start(ctx context.Context, name string, extra []string) (*harness.Node, error) {
	n := harness.NewNode(b.cfg.Bin, b.root, name, extra, "TWINBOX_LINK_PASSWORD="+b.linkPassword)
	n.CPUs = b.cpus(name)
	b.nodes = append(b.nodes, n)
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// startSoloAndPair starts a standalone node and a sync pair, their names
// prefixed, with the bench users in every store.
// cpus is the CPU list --pin gives the node called name ("" unpinned).
func (b *replBench) cpus(name string) string {
	switch p := b.cfg.Pin; {
	case p == nil:
		return ""
	case strings.HasSuffix(name, "-passive"):
		return p.Passive
	default:
		return p.Node
	}
}

func (b *replBench) startSoloAndPair(ctx context.Context, prefix string) (solo, active, passive *harness.Node, err error) {
	if solo, err = b.start(ctx, prefix+"standalone", nil); err != nil {
		return nil, nil, nil, err
	}
	if active, passive, err = b.startPair(ctx, prefix+"sync", "sync"); err != nil {
		return nil, nil, nil, err
	}
	if err := b.addUsers(ctx, solo, active, passive); err != nil {
		return nil, nil, nil, err
	}
	for _, n := range []*harness.Node{solo, active} {
		if err := b.waitUsers(ctx, n); err != nil {
			return nil, nil, nil, err
		}
	}
	return solo, active, passive, nil
}

// startPair starts an active and a passive that follows it over TLS,
// trusting the active's own certificate.
func (b *replBench) startPair(ctx context.Context, label, mode string) (*harness.Node, *harness.Node, error) {
	active, err := b.start(ctx, label+"-active", []string{"--role", "active",
		"--nats-addr", "127.0.0.1:0", "--replication-mode", mode})
	if err != nil {
		return nil, nil, err
	}
	passive, err := b.start(ctx, label+"-passive", []string{"--role", "passive",
		"--nats-addr", "127.0.0.1:0", "--peer-nats", active.Addrs["nats"],
		"--link-ca", filepath.Join(active.Data, "tls", "cert.pem")})
	if err != nil {
		return nil, nil, err
	}
	return active, passive, nil
}

// addUsers adds user1..user50 to each node's passwd-file with `twinbox
// user add`, as an operator does, the nodes in parallel.
func (b *replBench) addUsers(ctx context.Context, nodes ...*harness.Node) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for u := range replUsers {
				name := loadgen.Users{Prefix: loadgen.DefaultUserPrefix}.Name(u)
				cmd := exec.CommandContext(ctx, b.cfg.Bin, "user", "add", name, "--data", n.Data,
					"--cost", strconv.Itoa(replUserCost))
				cmd.Env = harness.Env()
				cmd.Stdin = strings.NewReader(replPassword + "\n")
				if out, err := cmd.CombinedOutput(); err != nil {
					errs[i] = fmt.Errorf("twinbox user add %s --data %s: %v\n%s", name, n.Data, err, out)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopAll stops every node still running, the last started first.
func (b *replBench) stopAll() error {
	var errs []error
	for _, n := range slices.Backward(b.nodes) {
		if n.Running() {
			b.logf("stopping the %s node", n.Name)
		}
		if err := n.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// machine describes where the numbers were measured.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// WriteText prints the report as a table for a person.
func (r *ReplicationReport) WriteText(w io.Writer) error {
	var b strings.Builder
	model := r.Machine.Model
	if model == "" {
		model = "CPU model unknown"
	}
	fmt.Fprintf(&b, "twinbox bench replication: LMTP, %d sessions, %d-byte messages, %s per timed run\n",
		r.Sessions, r.Size, time.Duration(r.Duration*float64(time.Second)))
	fmt.Fprintf(&b, "every node a separate process on this machine: %d CPUs (%s), %s, %s\n",
		r.Machine.CPUs, model, r.Machine.Go, r.Machine.Date)
	if p := r.Pin; p != nil {
		fmt.Fprintf(&b, "pinned: standalone and active on CPU %s, passive on CPU %s, load generator on CPU %s\n\n", p.Node, p.Passive, p.Load)
	} else {
		fmt.Fprintf(&b, "not pinned: every process shares every CPU\n\n")
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tstandalone\treplicated (sync)\treplicated/standalone")
	for _, d := range r.Delivery {
		s, p := d.Standalone, d.Replicated
		fmt.Fprintf(tw, "%d recipient(s): deliveries/s\t%s\t%s\t%s\n", d.Recipients, rate(s), rate(p), ratio(d.Ratio, s != nil && p != nil))
		if s == nil || p == nil {
			continue
		}
		fmt.Fprintf(tw, "  latency p50\t%s\t%s\t%+.2f ms\n", msCell(s.Latency.P50), msCell(p.Latency.P50), d.AddedP50)
		fmt.Fprintf(tw, "  latency p99\t%s\t%s\t%+.2f ms\n", msCell(s.Latency.P99), msCell(p.Latency.P99), d.AddedP99)
		fmt.Fprintf(tw, "  delivered / failed messages\t%d / %d\t%d / %d\t\n", s.Delivered, s.Failed, p.Delivered, p.Failed)
		fmt.Fprintf(tw, "  passive lag, log (max / p99 entries)\t\t%d / %d\t\n", d.Lag.LogMax, d.Lag.LogP99)
		fmt.Fprintf(tw, "  passive lag, applied (max / p99 entries)\t\t%d / %d\t\n", d.Lag.AppliedMax, d.Lag.AppliedP99)
		fmt.Fprintf(tw, "  lag samples (every 100 ms)\t\t%d\t\n", d.Lag.Samples)
		fmt.Fprintf(tw, "  link bytes per delivered message\t\t%.0f\t\n", d.LinkBytesPerMessage)
		if w := d.Wait; w.AppendMs > 0 {
			fmt.Fprintf(tw, "  active: log append (mean, %.1f entries each)\t\t%.2f ms\t\n", w.EntriesPerGroup, w.AppendMs)
			fmt.Fprintf(tw, "  active: then the wait for the passive (mean)\t\t%.2f ms\t\n", w.PeerWaitMs)
			fmt.Fprintf(tw, "  passive: arrival to report (mean, %.1f entries each)\t\t%.2f ms\t\n", w.EntriesPerTake, w.PassiveTakeMs)
		}
		if c := d.CPU; c.Standalone > 0 && c.Active > 0 {
			fmt.Fprintf(tw, "  CPU µs per message, node(s)\t%.0f\t%.0f + %.0f = %.0f\t%.2f×\n", c.Standalone,
				c.Active, c.Passive, c.Active+c.Passive, (c.Active+c.Passive)/c.Standalone)
			fmt.Fprintf(tw, "  CPU µs per message, load generator\t%.0f\t%.0f\t\n", c.StandaloneLoad, c.ReplicatedLoad)
			fmt.Fprintf(tw, "  cores busy (of %d)\t%.0f%%\t%.0f%%\t\n", r.Machine.CPUs, 100*c.StandaloneBusy, 100*c.ReplicatedBusy)
		}
		if m := d.PeakRSS; m.Standalone > 0 && m.Active > 0 {
			fmt.Fprintf(tw, "  peak resident memory, node(s)\t%.0f MiB\t%.0f + %.0f MiB\t\n", m.Standalone, m.Active, m.Passive)
		}
	}
	tw.Flush()
	if l := r.Link; l != nil {
		fmt.Fprintf(&b, "\nlink: %d messages of %d recipients (%d failed), %d entries: %d bytes to the passive,\n",
			l.Delivered, l.Recipients, l.Failed, l.Entries, l.Bytes)
		verdict := "within"
		if !l.WithinGoal {
			verdict = "above"
		}
		fmt.Fprintf(&b, "  %.0f bytes per message = %.2f× the %d-byte message (%s the design's 1.2×)\n",
			l.PerMessage, l.Ratio, l.MessageSize, verdict)
		if l.MessageZstd > 0 {
			fmt.Fprintf(&b, "  (one such message compressed alone, zstd fastest: %.0f bytes; the link carried %.2f× that)\n",
				l.MessageZstd, l.PerMessage/l.MessageZstd)
		}
	}
	if c := r.Catchup; c != nil {
		fmt.Fprintf(&b, "\ncatch-up (async pair): %d messages delivered while the passive was down (%d failed);\n", c.Delivered, c.Failed)
		if c.Seconds > 0 {
			fmt.Fprintf(&b, "  restarted, it applied %d entries in %.2f s (serving after %.2f s): %.0f entries/s,\n",
				c.Entries, c.Seconds, c.StartupSec, c.EntriesPerSec)
			fmt.Fprintf(&b, "  %.1f MB over the link, %.1f MB/s; digests equal: %v\n", float64(c.LinkBytes)/1e6, c.MBPerSec, c.DigestsEqual)
		}
		if c.DiskSyncMBPerSec > 0 && c.LoopbackTLSMBPerSec > 0 {
			fmt.Fprintf(&b, "  the limits here: the disk takes %.0f MB/s of fsynced 1 MiB writes, loopback carries %.0f MB/s of TLS\n",
				c.DiskSyncMBPerSec, c.LoopbackTLSMBPerSec)
		}
	}
	if !r.Completed {
		fmt.Fprintf(&b, "\n(incomplete: a phase failed; see the error)\n")
	}
	fmt.Fprintf(&b, "\ntotal %.1f s\n", r.TotalSec)
	_, err := io.WriteString(w, b.String())
	return err
}

func rate(r *loadgen.DeliveryResult) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f", r.MessagesPerSec)
}

func ratio(x float64, ok bool) string {
	if !ok {
		return ""
	}
	return fmt.Sprintf("%.2f×", x)
}

func msCell(d time.Duration) string { return fmt.Sprintf("%.2f ms", msOf(d)) }
