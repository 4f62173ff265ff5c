package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

const verifyUsage = `usage: twinbox verify [--data DIR] [--json]
       twinbox verify --peer SOCKET|HOST:PORT [--admin SOCKET|HOST:PORT] [--admin-token-file FILE] [--timeout 30s] [--json]

Checks a stopped node's store: re-hashes every blob, recounts references,
checks mailbox invariants, and prints a summary with the store digest.
Exits 1 naming each problem found.

With --peer, compares two running nodes instead: reads both nodes' digests
(GET /digest on their admin APIs: a socket, or host:port with the
token of --admin-token-file, the same for both) until both report the same log
position (the passive catches up when the load stops; polled every 100 ms
for up to --timeout), then compares them there. Identical: prints
"identical at sequence N: SUM" and exits 0. Otherwise exits 1 naming the
first mailbox (by user, then name) that differs or exists on one side only,
and both store sums; or, when no common position came in time, where each
node is.`

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", envDefault("TWINBOX_DATA", DefaultDataDir), "node data directory (env TWINBOX_DATA)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	af := addAdminFlags(fs, "with --peer")
	peer := fs.String("peer", "", "the other node's admin socket or host:port: compare two running nodes at one log position")
	timeout := fs.Duration("timeout", 30*time.Second, "with --peer: how long to wait for both nodes to reach the same position")
	fs.Usage = func() { fmt.Fprintln(stderr, verifyUsage); fs.PrintDefaults() }
	if help, err := parseFlags(fs, args, "verify"); help || err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["peer"] {
		switch {
		case *peer == "":
			return fmt.Errorf("%w: verify: --peer needs the other node's admin address host:port", errUsage)
		case set["data"]:
			return fmt.Errorf("%w: verify: --data checks a stopped node's store, --peer compares two running nodes: not both", errUsage)
		case *timeout <= 0:
			return fmt.Errorf("%w: verify: --timeout %v: must be positive", errUsage, *timeout)
		}
		a, err := af.client(*af.addr, 0)
		if err != nil {
			return fmt.Errorf("%w: verify: %v", errUsage, err)
		}
		b, err := af.client(*peer, 0)
		if err != nil {
			return fmt.Errorf("%w: verify: %v", errUsage, err)
		}
		return verifyPeer(ctx, a, b, *timeout, peerPollInterval, *asJSON, stdout)
	}
	if set["admin"] || set["admin-token-file"] || set["timeout"] {
		return fmt.Errorf("%w: verify: --admin and --timeout go with --peer", errUsage)
	}
	dir := pair.Layout(*data).Store()
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("verify: no store at %s: %w", dir, err)
	}
	s, err := store.Open(ctx, dir, &store.Options{ReadOnly: true})
	if err != nil && !errors.Is(err, os.ErrNotExist) && !isLocked(dir) {
		// A damaged or missing file (issue 14 D16): the report names
		// it, exit 1.
		r := &store.Report{Problems: []string{err.Error()}}
		if *asJSON {
			return errors.Join(json.NewEncoder(stdout).Encode(verifyJSON(r)), exitError{code: 1})
		}
		printReport(stdout, dir, r)
		return exitError{code: 1}
	}
	if err != nil {
		return fmt.Errorf("verify: %w (is the node still running? verify reads a stopped node's store)", err)
	}
	defer s.Close(ctx)
	r, err := s.Verify(ctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if d := s.Damaged(); d != nil {
		r.Problems = append(r.Problems, d.Error())
	}
	lc, err := checkLog(ctx, *data, r.Applied)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if lc != nil {
		r.Problems = append(r.Problems, lc.Problems...)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		rj := verifyJSON(r)
		rj.Log = lc
		if err := enc.Encode(rj); err != nil {
			return err
		}
	} else {
		printReport(stdout, dir, r)
		if lc != nil {
			fmt.Fprintf(stdout, "log        %s\n", lc)
		}
	}
	if !r.OK() {
		return exitError{code: 1}
	}
	return nil
}

func printReport(w io.Writer, dir string, r *store.Report) {
	fmt.Fprintf(w, "store      %s\n", dir)
	fmt.Fprintf(w, "applied    %d\n", r.Applied)
	fmt.Fprintf(w, "users      %d\n", r.Users)
	fmt.Fprintf(w, "mailboxes  %d\n", r.Mailboxes)
	fmt.Fprintf(w, "messages   %d\n", r.Messages)
	fmt.Fprintf(w, "bodies     %d (+%d shared parts), %d bytes stored once\n", r.Bodies, r.Parts, r.BlobBytes)
	fmt.Fprintf(w, "digest     %s\n", r.Digest.Store)
	if r.OK() {
		fmt.Fprintln(w, "result     OK")
		return
	}
	fmt.Fprintf(w, "result     %d problem(s)\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem    %s\n", p)
	}
}

type reportJSON struct {
	Applied   uint64   `json:"applied"`
	Users     int      `json:"users"`
	Mailboxes int      `json:"mailboxes"`
	Messages  int      `json:"messages"`
	Bodies    int      `json:"bodies"`
	Parts     int      `json:"parts"`
	BlobBytes int64    `json:"blob_bytes"`
	Digest    string   `json:"digest"`
	OK        bool     `json:"ok"`
	Problems  []string `json:"problems"`
	// Log is the check of the node's log, when it has one.
	Log *logCheck `json:"log,omitempty"`
}

// logCheck is what verify found in a stopped node's log.
type logCheck struct {
	Dir         string    `json:"dir"`
	First, Last uint64    `json:"-"`
	Span        [2]uint64 `json:"span"`
	Entries     uint64    `json:"entries"`
	Problems    []string  `json:"problems,omitempty"`
}

// isLocked reports whether a running node holds the store in dir.
func isLocked(dir string) bool {
	l, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return true
	}
	l.Close()
	return false
}

// blockDir is where the log's JetStream block files are, to name in a
// report (the stream's msgs directory, or dir when there is none).
func blockDir(dir string) string {
	m, _ := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams", "*", "msgs"))
	if len(m) == 1 {
		return m[0]
	}
	return dir
}

func (c *logCheck) String() string {
	if c.Last == 0 {
		return c.Dir + ": empty"
	}
	ok := "continuous"
	if len(c.Problems) > 0 {
		ok = "DAMAGED (see the problems above)"
	}
	return fmt.Sprintf("%s: entries %d..%d, %d operations read, %s", c.Dir, c.First, c.Last, c.Entries, ok)
}

// checkLog reads every entry of a stopped node's log, in order (issue
// 14 D9). nats-server drops a stored record whose checksum fails when it
// recovers a block file, so a damaged block shows as a gap or as a record
// that does not decode; a store that applied past the log's end lost the
// log's tail. nil when the node has no log (standalone).
func checkLog(ctx context.Context, data string, applied uint64) (*logCheck, error) {
	dir := pair.Layout(data).Log()
	if !replog.HasLog(dir) {
		return nil, nil
	}
	lg, closeLog, err := replog.OpenOffline(ctx, dir)
	if errors.Is(err, replog.ErrNoLog) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the log in %s: %w", dir, err)
	}
	defer closeLog()
	c := &logCheck{Dir: dir}
	state, err := lg.State(ctx)
	if err != nil {
		return nil, fmt.Errorf("the log in %s: %w", dir, err)
	}
	c.First, c.Last = state.First, state.Last
	c.Span = [2]uint64{c.First, c.Last}
	if c.Last == 0 {
		return c, nil
	}
	// Replay reads every record (JetStream message) from the first: a
	// record missing in the middle (dropped by nats-server as damaged)
	// or one that does not decode stops it with an error. Chunks of a
	// large operation are assembled, so operations' sequences may skip.
	var last uint64
	err = lg.Replay(ctx, c.First, c.Last, func(e *replog.Entry) error {
		if e.Seq <= last {
			c.Problems = append(c.Problems, fmt.Sprintf("log %s: entry %d after entry %d", dir, e.Seq, last))
		}
		c.Entries++
		last = e.Seq
		return nil
	})
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		c.Problems = append(c.Problems, fmt.Sprintf("log %s: cannot be read past entry %d: %v (a damaged block file in %s)", dir, last, err, blockDir(dir)))
	}
	if applied > c.Last {
		c.Problems = append(c.Problems, fmt.Sprintf("log %s: ends at entry %d, but the store applied up to %d (the log lost its tail)", dir, c.Last, applied))
	}
	return c, nil
}

func verifyJSON(r *store.Report) reportJSON {
	return reportJSON{
		Applied: r.Applied, Users: r.Users, Mailboxes: r.Mailboxes, Messages: r.Messages,
		Bodies: r.Bodies, Parts: r.Parts, BlobBytes: r.BlobBytes, Digest: r.Digest.Store.String(),
		OK: r.OK(), Problems: r.Problems,
	}
}

// peerPollInterval is how often verify --peer asks both nodes again while
// their positions differ.
const peerPollInterval = 100 * time.Millisecond

// peerReport is the result of comparing two running nodes (--json).
type peerReport struct {
	Identical bool `json:"identical"`
	// Applied is the position both nodes were compared at; 0 when they
	// reached none in time (Problem says so).
	Applied uint64       `json:"applied"`
	Admin   nodeDigest   `json:"admin"`
	Peer    nodeDigest   `json:"peer"`
	Mailbox *mailboxDiff `json:"first_difference,omitempty"`
	Problem string       `json:"problem,omitempty"`
	Waited  float64      `json:"waited_seconds"`
}

type nodeDigest struct {
	Addr    string `json:"addr"`
	Applied uint64 `json:"applied"`
	Digest  string `json:"digest"`
}

// mailboxDiff is the first mailbox that differs; a sum is empty on the
// side where the mailbox does not exist.
type mailboxDiff struct {
	User      string `json:"user"`
	Name      string `json:"name"`
	AdminSum  string `json:"admin_sum"`
	PeerSum   string `json:"peer_sum"`
	OnlyAdmin bool   `json:"only_admin,omitempty"`
	OnlyPeer  bool   `json:"only_peer,omitempty"`
}

// verifyPeer compares two running nodes' digests at the same position,
// asking both again every interval until they report one, within timeout.
func verifyPeer(ctx context.Context, adminNode, peerNode *admin.Client, timeout, interval time.Duration, asJSON bool, stdout io.Writer) error {
	adminAddr, peerAddr := adminNode.Addr, peerNode.Addr
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var a, b store.Digest
	fetched := false
	for {
		da, db, err := fetchDigests(wctx, adminNode, peerNode)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("verify: %w", ctx.Err())
			}
			if !fetched || wctx.Err() == nil {
				return fmt.Errorf("verify: %w", err)
			}
			break // the deadline cut a request short: report the last positions
		}
		a, b, fetched = da, db, true
		if a.Applied == b.Applied {
			break
		}
		t := time.NewTimer(interval)
		select {
		case <-t.C:
			continue
		case <-wctx.Done():
			t.Stop()
		}
		if ctx.Err() != nil {
			return fmt.Errorf("verify: %w", ctx.Err())
		}
		break
	}
	rep := peerReport{
		Admin:  nodeDigest{Addr: adminAddr, Applied: a.Applied, Digest: a.Store.String()},
		Peer:   nodeDigest{Addr: peerAddr, Applied: b.Applied, Digest: b.Store.String()},
		Waited: time.Since(start).Seconds(),
	}
	switch {
	case a.Applied != b.Applied:
		rep.Problem = fmt.Sprintf("no common position within %v: %s at sequence %d, %s at sequence %d",
			timeout, adminAddr, a.Applied, peerAddr, b.Applied)
	case a.Store == b.Store:
		rep.Identical, rep.Applied = true, a.Applied
	default:
		rep.Applied = a.Applied
		rep.Mailbox = firstMailboxDiff(a.Mailboxes, b.Mailboxes)
		rep.Problem = fmt.Sprintf("different at sequence %d", a.Applied)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printPeerReport(stdout, &rep)
	}
	if !rep.Identical {
		return exitError{code: 1}
	}
	return nil
}

func printPeerReport(w io.Writer, r *peerReport) {
	if r.Identical {
		fmt.Fprintf(w, "identical at sequence %d: %s\n", r.Applied, r.Admin.Digest)
		return
	}
	fmt.Fprintln(w, r.Problem)
	if r.Admin.Applied != r.Peer.Applied {
		return
	}
	switch m := r.Mailbox; {
	case m == nil:
		fmt.Fprintln(w, "mailbox    none differs: the difference is in users, bodies or reference counts")
	case m.OnlyAdmin:
		fmt.Fprintf(w, "mailbox    %s/%s exists only on %s\n", m.User, m.Name, r.Admin.Addr)
	case m.OnlyPeer:
		fmt.Fprintf(w, "mailbox    %s/%s exists only on %s\n", m.User, m.Name, r.Peer.Addr)
	default:
		fmt.Fprintf(w, "mailbox    %s/%s differs: %s on %s, %s on %s\n", m.User, m.Name, m.AdminSum, r.Admin.Addr, m.PeerSum, r.Peer.Addr)
	}
	fmt.Fprintf(w, "store      %s on %s\n", r.Admin.Digest, r.Admin.Addr)
	fmt.Fprintf(w, "store      %s on %s\n", r.Peer.Digest, r.Peer.Addr)
}

// firstMailboxDiff returns the first mailbox, by user then name, whose sum
// differs or that exists on one side only; nil when the lists are equal.
func firstMailboxDiff(a, b []store.MailboxSum) *mailboxDiff {
	order := func(x, y store.MailboxSum) int {
		return cmp.Or(strings.Compare(x.User, y.User), strings.Compare(x.Name, y.Name))
	}
	a, b = slices.SortedFunc(slices.Values(a), order), slices.SortedFunc(slices.Values(b), order)
	for i, j := 0, 0; i < len(a) || j < len(b); {
		var c int
		switch {
		case i == len(a):
			c = 1
		case j == len(b):
			c = -1
		default:
			c = order(a[i], b[j])
		}
		switch {
		case c < 0:
			return &mailboxDiff{User: a[i].User, Name: a[i].Name, AdminSum: a[i].Sum.String(), OnlyAdmin: true}
		case c > 0:
			return &mailboxDiff{User: b[j].User, Name: b[j].Name, PeerSum: b[j].Sum.String(), OnlyPeer: true}
		case a[i].Sum != b[j].Sum:
			return &mailboxDiff{User: a[i].User, Name: a[i].Name, AdminSum: a[i].Sum.String(), PeerSum: b[j].Sum.String()}
		}
		i++
		j++
	}
	return nil
}

// fetchDigests asks both nodes at once, so that the two answers are close
// in time.
func fetchDigests(ctx context.Context, adminNode, peerNode *admin.Client) (store.Digest, store.Digest, error) {
	type answer struct {
		d   store.Digest
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		d, err := fetchDigest(ctx, peerNode)
		ch <- answer{d, err}
	}()
	a, errA := fetchDigest(ctx, adminNode)
	pb := <-ch
	if err := errors.Join(errA, pb.err); err != nil {
		return store.Digest{}, store.Digest{}, err
	}
	return a, pb.d, nil
}

// fetchDigest reads GET /digest from a node's admin API.
func fetchDigest(ctx context.Context, c *admin.Client) (store.Digest, error) {
	code, body, err := c.Do(ctx, "GET", "/digest", 1<<30)
	if err != nil {
		return store.Digest{}, err
	}
	if code != http.StatusOK {
		msg := strings.TrimSpace(string(body[:min(len(body), 512)]))
		return store.Digest{}, fmt.Errorf("%s answered %d %s to GET /digest: %s", c.Addr, code, http.StatusText(code), msg)
	}
	var d store.Digest
	if err := json.Unmarshal(body, &d); err != nil {
		return store.Digest{}, fmt.Errorf("%s did not answer GET /digest with a digest: %w", c.Addr, err)
	}
	return d, nil
}
