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
	"slices"
	"strings"
	"time"

	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/pair"
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
	if errors.Is(err, store.ErrCorrupt) {
		// A damaged file (issue 14 D16): the report names it, exit 1.
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
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(verifyJSON(r)); err != nil {
			return err
		}
	} else {
		printReport(stdout, dir, r)
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
