package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/internal/harness"
)

// FailoverUsage is `twinbox bench failover -h`.
const FailoverUsage = `usage: twinbox bench failover [--rounds 20] [--sessions 4] [--size 2048] [--json] [--keep]
       [--keepalive 200ms] [--warntime 1s] [--deadtime 1.5s] [--initdead 10s]

Measures the failover promise (docs/architecture.md) on this machine: the time from the
active's death to the first successful IMAP login and SMTP 250 on the new
active, and the messages lost, which must be none.

Starts a pair as 'twinbox demo' does (two 'twinbox serve' processes of
this binary on temporary data directories and loopback ports, automatic
failover, the process fence agent), with Heartbeat's default timings
unless the flags say otherwise, and keeps --sessions SMTP sessions
delivering to whichever node is active: every message has a Message-ID of
its own and every 250 is recorded. A session whose node fails or refuses
tries the other node 10 ms later. Then --rounds times:

  1. SIGKILL to the active, under that load;
  2. from the kill, the time to the first IMAP LOGIN + SELECT INBOX that
     succeeds on the other node once its /status says it is active (polled
     every 10 ms), and to the first 250 a session gets from it;
  3. the killed node is started again on its data: it joins as the
     passive; the round ends when the active acknowledges with both nodes
     again (no longer degraded) and the passive has heard the active (a
     node that has not heard its peer since it started waits initdead,
     not deadtime, before it takes over).

At the end the load stops, the passive catches up, and every acknowledged
Message-ID is looked for over IMAP on the final active: lost (acknowledged,
not there) must be 0, and no message may be stored twice; the nodes'
digests must be equal. A loss, a duplicate or different digests make the
bench fail.

Every node gets SIGTERM at the end (and on Ctrl-C); the data directories,
with each node's log, are removed unless --keep.

Flags:`

// Bounds and pace of the failover bench; the bounds are many times what
// a healthy pair needs on a loaded machine.
const (
	// ElectTimeout bounds a pair's first election (initdead is 10 s; the
	// election is at once).
	ElectTimeout      = 60 * time.Second
	foPoll            = 10 * time.Millisecond // the takeover's probes; a session's pause before the other node
	foTakeoverTimeout = 60 * time.Second      // from the kill to IMAP and SMTP on the other node
	foRejoinTimeout   = 180 * time.Second     // the killed node back and caught up (a resync included)
	foIOTimeout       = 10 * time.Second      // one SMTP command, one IMAP probe
	foPassword        = "bench-password"
	foDomain          = "localhost"
)

// FailoverConfig is what `twinbox bench failover` runs.
type FailoverConfig struct {
	Bin                                     string
	Rounds, Sessions, Size                  int
	Keepalive, Warntime, Deadtime, Initdead time.Duration
	Keep                                    bool
	Log                                     io.Writer // progress lines (stderr)
}

// validate reports every problem at once.
func (c *FailoverConfig) Validate() error {
	var errs []error
	if c.Rounds < 1 {
		errs = append(errs, fmt.Errorf("--rounds %d: want at least 1", c.Rounds))
	}
	if c.Sessions < 1 {
		errs = append(errs, fmt.Errorf("--sessions %d: want at least 1", c.Sessions))
	}
	if c.Size < 512 {
		errs = append(errs, fmt.Errorf("--size %d: want at least 512", c.Size))
	}
	fc := failover.Config{Keepalive: c.Keepalive, Warntime: c.Warntime, Deadtime: c.Deadtime, Initdead: c.Initdead}
	if err := fc.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// timingFlags are the serve flags of the configured timings.
func (c *FailoverConfig) timingFlags() []string {
	return []string{"--keepalive", c.Keepalive.String(), "--warntime", c.Warntime.String(),
		"--deadtime", c.Deadtime.String(), "--initdead", c.Initdead.String()}
}

func (c *FailoverConfig) defaultTimings() bool {
	return c.Keepalive == failover.DefaultKeepalive && c.Warntime == failover.DefaultWarntime &&
		c.Deadtime == failover.DefaultDeadtime && c.Initdead == failover.DefaultInitdead
}

// FailoverReport is what `twinbox bench failover` measured.
type FailoverReport struct {
	Machine  Machine `json:"machine"`
	Sessions int     `json:"sessions"`
	Size     int     `json:"message_size"`
	Timing   struct {
		Keepalive string `json:"keepalive"`
		Warntime  string `json:"warntime"`
		Deadtime  string `json:"deadtime"`
		Initdead  string `json:"initdead"`
		Defaults  bool   `json:"defaults"`
	} `json:"timing"`
	Rounds []*foRound `json:"rounds"`
	// From the kill to the first IMAP login + SELECT, and to the first
	// SMTP 250, on the new active, over the rounds, in seconds.
	IMAP foSpread `json:"imap_s"`
	SMTP foSpread `json:"smtp_s"`
	// Messages: every transaction begun, those acknowledged with 250, and on the
	// final active those found, lost (acknowledged, missing), stored more
	// than once, and stored without a 250 (the client was told to retry).
	Attempted    int64   `json:"attempted"`
	Acked        int64   `json:"acknowledged"`
	Found        int64   `json:"found"`
	Lost         int64   `json:"lost"`
	Twice        int64   `json:"stored_twice"`
	Unacked      int64   `json:"stored_without_250"`
	Checked      bool    `json:"checked"` // the final count ran
	DigestsEqual bool    `json:"digests_equal"`
	Position     uint64  `json:"position"` // where the digests were compared
	TotalSec     float64 `json:"total_s"`
	Completed    bool    `json:"completed"`
}

// foRound is one SIGKILL to the active.
type foRound struct {
	N         int     `json:"round"`
	Killed    string  `json:"killed"`
	NewActive string  `json:"new_active"`
	Epoch     uint64  `json:"epoch"`
	IMAPSec   float64 `json:"imap_s"`
	SMTPSec   float64 `json:"smtp_s"`
	RejoinSec float64 `json:"rejoin_s"` // restart to the active no longer degraded
}

type foSpread struct {
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

func spreadOf(v []float64) foSpread {
	if len(v) == 0 {
		return foSpread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return foSpread{Median: m, Max: s[len(s)-1]}
}

// foBench is one run: its pair, its load, which node is active.
type foBench struct {
	cfg    FailoverConfig
	pair   *harness.Pair
	load   *foLoad
	active int
	began  time.Time
}

func (b *foBench) logf(format string, args ...any) {
	if b.cfg.Log != nil {
		fmt.Fprintf(b.cfg.Log, "bench failover: %5.1fs "+format+"\n",
			append([]any{time.Since(b.began).Seconds()}, args...)...)
	}
}

// benchFailover runs the bench. It returns the report so far with an
// error when something failed, and stops every node it started.
func Failover(ctx context.Context, cfg FailoverConfig) (rep *FailoverReport, err error) {
	b := &foBench{cfg: cfg, began: time.Now()}
	rep = &FailoverReport{Machine: machine(), Sessions: cfg.Sessions, Size: cfg.Size}
	rep.Timing.Keepalive, rep.Timing.Warntime = cfg.Keepalive.String(), cfg.Warntime.String()
	rep.Timing.Deadtime, rep.Timing.Initdead = cfg.Deadtime.String(), cfg.Initdead.String()
	rep.Timing.Defaults = cfg.defaultTimings()
	root, err := os.MkdirTemp("", "twinbox-bench-failover-")
	if err != nil {
		return nil, fmt.Errorf("bench failover: %w", err)
	}
	defer func() {
		if b.load != nil {
			b.load.stop()
		}
		if b.pair != nil {
			if serr := b.pair.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		rep.TotalSec = time.Since(b.began).Seconds()
		if cfg.Keep {
			b.logf("kept the data directories and logs in %s", root)
		} else if rerr := os.RemoveAll(root); rerr != nil {
			err = errors.Join(err, rerr)
		}
		if err != nil {
			err = fmt.Errorf("bench failover: %w", err)
		}
	}()
	b.logf("nodes in %s, binary %s", root, cfg.Bin)
	if err := b.run(ctx, root, rep); err != nil {
		return rep, err
	}
	rep.Completed = true
	switch {
	case rep.Lost > 0:
		return rep, fmt.Errorf("%d acknowledged messages are missing on the final active", rep.Lost)
	case rep.Twice > 0:
		return rep, fmt.Errorf("%d messages are stored more than once", rep.Twice)
	case !rep.DigestsEqual:
		return rep, errors.New("the nodes' digests differ at the same position")
	}
	return rep, nil
}

func (b *foBench) run(ctx context.Context, root string, rep *FailoverReport) error {
	cfg := b.cfg
	p, err := harness.NewPair(cfg.Bin, root, cfg.timingFlags())
	if err != nil {
		return err
	}
	b.pair = p
	users := make([]string, cfg.Sessions)
	for i := range users {
		users[i] = fmt.Sprintf("fo%d", i+1)
		// The default bcrypt cost: a login costs what a real one does.
		if err := p.AddUser(users[i], foPassword, 0); err != nil {
			return err
		}
	}
	b.logf("starting nodes a and b")
	if err := p.Start(ctx); err != nil {
		return err
	}
	if b.active, _, err = p.WaitActive(ctx, ElectTimeout); err != nil {
		return err
	}
	b.logf("node %s is active; waiting for the %d users in its store", p.Names[b.active], len(users))
	if err := b.waitUsers(ctx, users); err != nil {
		return err
	}
	b.load = startFoLoad(ctx, p, users, cfg.Size, b.active)
	b.logf("%d SMTP sessions delivering", cfg.Sessions)
	var imapT, smtpT []float64
	for r := 1; r <= cfg.Rounds; r++ {
		rd, err := b.round(ctx, r)
		if rd != nil {
			rep.Rounds = append(rep.Rounds, rd)
			if rd.IMAPSec > 0 && rd.SMTPSec > 0 {
				imapT, smtpT = append(imapT, rd.IMAPSec), append(smtpT, rd.SMTPSec)
			}
			rep.IMAP, rep.SMTP = spreadOf(imapT), spreadOf(smtpT)
		}
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
	}
	b.load.stop()
	rep.Attempted, rep.Acked = b.load.attempts.Load(), int64(len(b.load.acks))
	b.logf("load stopped: %d acknowledged of %d sent; waiting for the passive to catch up", rep.Acked, rep.Attempted)
	active, passive := p.Nodes[b.active], p.Nodes[1-b.active]
	if _, err := waitCaughtUp(ctx, active, passive); err != nil {
		return err
	}
	da, err := active.Digest(ctx)
	if err != nil {
		return err
	}
	dp, err := passive.Digest(ctx)
	if err != nil {
		return err
	}
	rep.Position, rep.DigestsEqual = da.Applied, da.Applied == dp.Applied && da.Store == dp.Store
	b.logf("looking for every message over IMAP on node %s", p.Names[b.active])
	return b.count(ctx, users, rep)
}

// waitUsers waits until every bench user is in the active's store.
func (b *foBench) waitUsers(ctx context.Context, users []string) error {
	p := b.pair
	n := p.Nodes[b.active]
	return n.WaitFor(ctx, replUserTimeout, "the bench users in the active's store", func() (bool, error) {
		d, err := n.Digest(ctx)
		if err != nil {
			return false, err
		}
		have := map[string]bool{}
		for _, m := range d.Mailboxes {
			have[m.User] = true
		}
		for _, u := range users {
			if !have[u] {
				return false, nil
			}
		}
		return true, nil
	})
}

// round kills the active under load, times the takeover, and brings the
// killed node back as the passive.
func (b *foBench) round(ctx context.Context, r int) (*foRound, error) {
	p, l := b.pair, b.load
	a, s := b.active, 1-b.active
	dead, survivor := p.Nodes[a], p.Nodes[s]
	rd := &foRound{N: r, Killed: p.Names[a], NewActive: p.Names[s]}

	// Under load: a 250 from the active since the round began.
	since := time.Now()
	if err := dead.WaitFor(ctx, foTakeoverTimeout, "a delivery to the active", func() (bool, error) {
		_, ok := l.firstAck(a, since)
		return ok, nil
	}); err != nil {
		return nil, err
	}
	pid := dead.PID()
	killed := time.Now()
	if err := dead.KillNow(); err != nil {
		return nil, fmt.Errorf("SIGKILL to node %s: %w", rd.Killed, err)
	}
	b.logf("round %d: SIGKILL to the active, node %s (pid %d)", r, rd.Killed, pid)

	// The first IMAP login + SELECT on the survivor once it says it is
	// active.
	deadline := killed.Add(foTakeoverTimeout)
	var lastErr error
	for {
		if v, err := p.View(ctx, s); err == nil && v.Role == "active" {
			rd.Epoch = v.Epoch
			if lastErr = imapLoginSelect(ctx, survivor.Addrs["imap"], l.users[0], foPassword); lastErr == nil {
				rd.IMAPSec = time.Since(killed).Seconds()
				break
			}
		} else if err != nil {
			lastErr = err
		}
		if err := survivor.Alive(); err != nil {
			return rd, err
		}
		if time.Now().After(deadline) {
			return rd, fmt.Errorf("node %s not active with an IMAP login %v after the kill: %v", rd.NewActive, foTakeoverTimeout, lastErr)
		}
		if !sleepCtx(ctx, foPoll) {
			return rd, ctx.Err()
		}
	}
	// The first 250 from it.
	var smtpAt time.Time
	if err := survivor.WaitFor(ctx, time.Until(deadline), "a 250 from the new active", func() (bool, error) {
		at, ok := l.firstAck(s, killed)
		smtpAt = at
		return ok, nil
	}); err != nil {
		return rd, err
	}
	rd.SMTPSec = smtpAt.Sub(killed).Seconds()
	b.logf("round %d: node %s active at epoch %d: IMAP after %.2f s, SMTP 250 after %.2f s", r, rd.NewActive, rd.Epoch, rd.IMAPSec, rd.SMTPSec)
	b.active = s

	// The killed node again, on its data: it joins as the passive.
	select {
	case <-dead.Exited():
	case <-time.After(foTakeoverTimeout):
		return rd, fmt.Errorf("node %s still running %v after SIGKILL", rd.Killed, foTakeoverTimeout)
	}
	restarted := time.Now()
	if err := dead.Start(ctx); err != nil {
		return rd, err
	}
	// Both ways: the active acknowledges with the passive again, and the
	// passive has heard the active (until then it would wait initdead, not
	// deadtime, before taking over) say it is no longer ahead of it (until
	// then it would not take over at all: outdated).
	err := survivor.WaitFor(ctx, foRejoinTimeout, fmt.Sprintf("node %s to acknowledge with node %s again", rd.NewActive, rd.Killed), func() (bool, error) {
		st, err := survivor.Status(ctx)
		if err != nil {
			return false, err
		}
		if f := st.Failover; f == nil || f.Role != "active" || f.Degraded || f.Peer != "alive" || f.PeerRole != "passive" {
			return false, nil
		}
		st, err = dead.Status(ctx)
		if err != nil {
			return false, err
		}
		f := st.Failover
		return f != nil && f.Role == "passive" && f.Peer == "alive" && f.PeerRole == "active" && !f.Outdated, nil
	}, dead)
	if err != nil {
		return rd, err
	}
	rd.RejoinSec = time.Since(restarted).Seconds()
	b.logf("round %d: node %s back as the passive, caught up after %.2f s", r, rd.Killed, rd.RejoinSec)
	return rd, nil
}

// count looks for every message in the users' INBOXes on the active.
func (b *foBench) count(ctx context.Context, users []string, rep *FailoverReport) error {
	addr := b.pair.Nodes[b.active].Addrs["imap"]
	found := map[string]int{}
	for _, u := range users {
		if err := harness.MessageIDs(ctx, addr, u, foPassword, found); err != nil {
			return fmt.Errorf("count the messages of %s on node %s: %w", u, b.pair.Names[b.active], err)
		}
	}
	acked := make(map[string]bool, len(b.load.acks))
	for _, a := range b.load.acks {
		acked[a.id] = true
	}
	for id, n := range found {
		rep.Found += int64(n)
		if n > 1 {
			rep.Twice++
		}
		if !acked[id] {
			rep.Unacked++
		}
	}
	for id := range acked {
		if found[id] == 0 {
			rep.Lost++
		}
	}
	rep.Checked = true
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// imapLoginSelect logs in and selects INBOX on a new connection.
func imapLoginSelect(ctx context.Context, addr, user, password string) error {
	c, err := harness.IMAPDial(ctx, addr, user, password, foIOTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		return fmt.Errorf("SELECT INBOX: %w", err)
	}
	return c.Logout().Wait()
}

// foLoad is the SMTP load of the failover bench: sessions that deliver to
// whichever node takes mail, recording every 250.
type foLoad struct {
	users    []string
	addrs    [2]string // the nodes' SMTP addresses (kept across restarts)
	size     int
	tag      string // makes this run's Message-IDs its own
	attempts atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu   sync.Mutex
	acks []foAck // in the order the 250s came
}

type foAck struct {
	id   string
	node int
	at   time.Time
}

// startFoLoad starts one session per user, each first trying node first.
func startFoLoad(ctx context.Context, p *harness.Pair, users []string, size, first int) *foLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &foLoad{users: users, size: size, tag: randomHex(4), cancel: cancel}
	for i, n := range p.Nodes {
		l.addrs[i] = n.Addrs["smtp"]
	}
	for i := range users {
		l.wg.Go(func() { l.session(ctx, i, first) })
	}
	return l
}

// stop ends the sessions and waits for them; acks is then stable.
func (l *foLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// firstAck returns the time of the first 250 from node after t.
func (l *foLoad) firstAck(node int, after time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.acks {
		if a.node == node && a.at.After(after) && (first.IsZero() || a.at.Before(first)) {
			first = a.at
		}
	}
	return first, !first.IsZero()
}

// session delivers to user i until ctx ends, one message at a time, to
// node target; when that node fails or refuses, it tries the other.
func (l *foLoad) session(ctx context.Context, i, target int) {
	rcpt := l.users[i] + "@" + foDomain
	var (
		c    *smtp.Client
		stop func() bool
		buf  bytes.Buffer
	)
	drop := func() {
		if c != nil {
			stop()
			c.Close()
			c = nil
		}
	}
	defer drop()
	for seq := 1; ctx.Err() == nil; seq++ {
		if c == nil {
			var err error
			if c, err = dialSMTP(ctx, l.addrs[target]); err != nil {
				target = 1 - target
				if !sleepCtx(ctx, foPoll) {
					return
				}
				continue
			}
			cc := c // drop sets c to nil while this may run
			stop = context.AfterFunc(ctx, func() { cc.Close() })
		}
		id := fmt.Sprintf("fo-%s-%d-%d@bench.twinbox", l.tag, i+1, seq)
		msg := foMessage(&buf, id, rcpt, l.size)
		l.attempts.Add(1)
		if err := sendMessage(c, "bench@"+foDomain, rcpt, msg); err != nil {
			drop()
			target = 1 - target
			if !sleepCtx(ctx, foPoll) {
				return
			}
			continue
		}
		l.mu.Lock()
		l.acks = append(l.acks, foAck{id: id, node: target, at: time.Now()})
		l.mu.Unlock()
	}
}

func dialSMTP(ctx context.Context, addr string) (*smtp.Client, error) {
	conn, err := (&net.Dialer{Timeout: foIOTimeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout, c.SubmissionTimeout = foIOTimeout, foIOTimeout
	if err := c.Hello("bench.localhost"); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// sendMessage runs one transaction; nil means the server said 250.
func sendMessage(c *smtp.Client, from, to string, msg []byte) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

// foMessage builds a message of about size bytes with Message-ID id.
func foMessage(buf *bytes.Buffer, id, to string, size int) []byte {
	buf.Reset()
	fmt.Fprintf(buf, "Message-ID: <%s>\r\nFrom: bench@%s\r\nTo: %s\r\nSubject: failover bench %s\r\nDate: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
		id, foDomain, to, id, time.Now().Format(time.RFC1123Z))
	const line = "The quick brown fox jumps over the lazy dog while the active node dies.\r\n"
	for buf.Len()+len(line) <= size {
		buf.WriteString(line)
	}
	return buf.Bytes()
}

// WriteText prints the report for a person.
func (r *FailoverReport) WriteText(w io.Writer) error {
	var b strings.Builder
	model := r.Machine.Model
	if model == "" {
		model = "CPU model unknown"
	}
	fmt.Fprintf(&b, "twinbox bench failover: SIGKILL to the active, %d rounds, under SMTP load (%d sessions, %d-byte messages)\n",
		len(r.Rounds), r.Sessions, r.Size)
	fmt.Fprintf(&b, "both nodes separate processes on this machine: %d CPUs (%s), %s, %s\n",
		r.Machine.CPUs, model, r.Machine.Go, r.Machine.Date)
	t := r.Timing
	defaults := "the defaults"
	if !t.Defaults {
		defaults = "NOT the defaults"
	}
	fmt.Fprintf(&b, "keepalive %s, warntime %s, deadtime %s, initdead %s (%s); fence agent: process (SIGKILL)\n\n",
		t.Keepalive, t.Warntime, t.Deadtime, t.Initdead, defaults)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "round\tkilled\tnew active\tepoch\tIMAP login+SELECT\tSMTP 250\tkilled node back, caught up")
	for _, rd := range r.Rounds {
		cell := func(s float64) string {
			if s <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f s", s)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", rd.N, rd.Killed, rd.NewActive, rd.Epoch, cell(rd.IMAPSec), cell(rd.SMTPSec), cell(rd.RejoinSec))
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nfrom the active's death to, on the new active:\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tmedian\tmax")
	fmt.Fprintf(tw, "  the first IMAP login + SELECT INBOX\t%.2f s\t%.2f s\n", r.IMAP.Median, r.IMAP.Max)
	fmt.Fprintf(tw, "  the first SMTP 250\t%.2f s\t%.2f s\n", r.SMTP.Median, r.SMTP.Max)
	tw.Flush()
	fmt.Fprintf(&b, "\nmessages: %d acknowledged with 250; %d more transactions refused or cut off (a passive's 451, the dying node), each retried as a new message\n",
		r.Acked, r.Attempted-r.Acked)
	if r.Checked {
		fmt.Fprintf(&b, "  on the final active, over IMAP: %d found; lost: %d; stored twice: %d; stored without a 250: %d (the client was told to retry)\n",
			r.Found, r.Lost, r.Twice, r.Unacked)
		fmt.Fprintf(&b, "  the nodes' digests at position %d equal: %v\n", r.Position, r.DigestsEqual)
	} else {
		fmt.Fprintf(&b, "  not checked: the bench stopped before the count\n")
	}
	if !r.Completed {
		fmt.Fprintf(&b, "\n(incomplete: a round failed; see the error)\n")
	}
	fmt.Fprintf(&b, "\ntotal %.1f s\n", r.TotalSec)
	_, err := io.WriteString(w, b.String())
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
