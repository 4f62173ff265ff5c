package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/internal/testmail"
	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/store"
)

// seedStore delivers the test corpus into a store under data/store and
// returns its digest.
func seedStore(t *testing.T, data string) store.Digest {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, pair.Layout(data).Store(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	ops := []store.Op{&store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"}}
	for _, raw := range testmail.Corpus(t) {
		ops = append(ops, &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: store.Now(),
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}, {User: "bob", Mailbox: "INBOX"}}})
	}
	res, err := s.ApplyNext(ctx, store.Now(), ops...)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	d, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestVerifyCommand(t *testing.T) {
	data := t.TempDir()
	d := seedStore(t, data)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"verify", "--data", data}, &out, &errOut); err != nil {
		t.Fatalf("verify of a healthy store: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"result     OK", "digest     " + d.Store.String(), "users      2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

}

// The damaged-store case runs the built binary: integration/verify_test.go.

// TestVerifyFlippedByte (issue 14 D16): a bit flipped in a table file of
// the store: verify exits 1 naming the file, and does not panic.
func TestVerifyFlippedByte(t *testing.T) {
	data := t.TempDir()
	seedStore(t, data)
	ctx := context.Background()
	s, err := store.Open(ctx, pair.Layout(data).Store(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Close(ctx)
	tables, _ := filepath.Glob(filepath.Join(pair.Layout(data).Store(), "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table file")
	}
	b, err := os.ReadFile(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x10
	if err := os.WriteFile(tables[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runCmd(t, "verify", "--data", data)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("verify of a damaged store: %v, want exit 1\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, filepath.Base(tables[0])) || !strings.Contains(out, "problem") {
		t.Errorf("the report does not name %s:\n%s", filepath.Base(tables[0]), out)
	}

	// serve refuses to start on it, naming the file.
	sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = run(sctx, []string{"serve", "--data", data, "--imap-addr", "127.0.0.1:0", "--imaps-addr", "",
		"--smtp-addr", "", "--smtps-addr", "", "--lmtp-addr", "", "--metrics-addr", ""}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), filepath.Base(tables[0])) {
		t.Errorf("serve on a damaged store: %v, want a refusal naming %s", err, filepath.Base(tables[0]))
	}

	// Cut short, as a disk that lost the file's tail leaves it.
	if err := os.Truncate(tables[0], int64(len(b)/2)); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = runCmd(t, "verify", "--data", data)
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(out, filepath.Base(tables[0])) {
		t.Errorf("verify of a truncated table file: %v, want exit 1 naming it\n%s%s", err, out, errOut)
	}
}

func TestVerifyCommandErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"verify", "--data", filepath.Join(t.TempDir(), "none")}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no store at") {
		t.Fatalf("missing store: %v", err)
	}
	if err := run(context.Background(), []string{"verify", "extra"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Fatalf("extra argument: %v", err)
	}
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Fatalf("unknown command: %v", err)
	}
	// A running node holds the store's lock: verify says so.
	data := t.TempDir()
	seedStore(t, data)
	s, err := store.Open(context.Background(), pair.Layout(data).Store(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	err = run(context.Background(), []string{"verify", "--data", data}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("locked store: %v", err)
	}
}

// peerBase is what both nodes of the peer tests applied: two users, a few
// deliveries.
func peerBase() []store.Op {
	ops := []store.Op{&store.CreateUser{User: "alice", UIDValidity: 7}, &store.CreateUser{User: "bob", UIDValidity: 7}}
	for i := range 5 {
		raw := fmt.Appendf(nil, "From: a@example.org\r\nSubject: m%d\r\n\r\nbody %d\r\n", i, i)
		ops = append(ops, &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: 1e18,
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}, {User: "bob", Mailbox: "INBOX"}}})
	}
	return ops
}

// digestsAfter applies ops, in steps, to a new store and returns its
// digest after each step.
func digestsAfter(t *testing.T, steps ...[]store.Op) []store.Digest {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(ctx)
	var out []store.Digest
	for _, ops := range steps {
		res, err := st.ApplyNext(ctx, 1e18, ops...)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		out = append(out, mustDigest(t, st))
	}
	return out
}

// digestServer answers GET /digest with the digests given, one per
// request, then the last one from then on; requests counts them.
func digestServer(t *testing.T, ds ...store.Digest) (addr string, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != "/digest" {
			http.NotFound(w, r)
			return
		}
		n := requests.Add(1)
		json.NewEncoder(w).Encode(ds[min(int(n), len(ds))-1])
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), requests
}

func TestVerifyPeerIdentical(t *testing.T) {
	// Two stores that applied the same operations, served by the admin
	// handler a node runs.
	ctx := context.Background()
	var addrs []string
	for range 2 {
		st, err := store.Open(ctx, t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close(ctx) })
		if _, err := st.ApplyNext(ctx, 1e18, peerBase()...); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(admin.Handler(admin.Options{Metrics: admin.NewMetrics(),
			Status: func() admin.Status { return admin.Status{} }, Digest: st.Digest, Healthy: func() error { return nil }}))
		t.Cleanup(srv.Close)
		addrs = append(addrs, srv.Listener.Addr().String())
	}
	want := digestsAfter(t, peerBase())[0]
	out, _, err := runCmd(t, "verify", "--admin", addrs[0], "--peer", addrs[1])
	if err != nil {
		t.Fatalf("verify --peer of identical nodes: %v\n%s", err, out)
	}
	if line := fmt.Sprintf("identical at sequence %d: %s\n", want.Applied, want.Store); out != line {
		t.Errorf("output %q, want %q", out, line)
	}
}

func TestVerifyPeerDifferent(t *testing.T) {
	base := peerBase()
	flag := func(user string) store.Op {
		return &store.StoreFlags{User: user, Mailbox: "INBOX", UIDs: []uint32{2}, Action: store.FlagsAdd, Flags: []string{`\Seen`}}
	}
	archive := func(user string) store.Op { return &store.CreateMailbox{User: user, Name: "Archive", UIDValidity: 9} }
	for _, c := range []struct {
		name       string
		admin, pr  store.Op // the one operation each node applied last
		want       mailboxDiff
		wantOutput string
	}{
		// Both alice/INBOX and bob/INBOX differ; alice's comes first.
		{"mailbox differs", flag("alice"), flag("bob"),
			mailboxDiff{User: "alice", Name: "INBOX"}, "mailbox    alice/INBOX differs: "},
		{"only on the admin node", archive("alice"), archive("bob"),
			mailboxDiff{User: "alice", Name: "Archive", OnlyAdmin: true}, "mailbox    alice/Archive exists only on ADMIN\n"},
		{"only on the peer", archive("bob"), archive("alice"),
			mailboxDiff{User: "alice", Name: "Archive", OnlyPeer: true}, "mailbox    alice/Archive exists only on PEER\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			da := digestsAfter(t, append(base[:len(base):len(base)], c.admin))[0]
			dp := digestsAfter(t, append(base[:len(base):len(base)], c.pr))[0]
			admin, _ := digestServer(t, da)
			peer, _ := digestServer(t, dp)
			out, _, err := runCmd(t, "verify", "--admin", admin, "--peer", peer)
			var ee exitError
			if !errors.As(err, &ee) || ee.code != 1 {
				t.Fatalf("verify --peer of different nodes: %v, want exit status 1\n%s", err, out)
			}
			want := strings.NewReplacer("ADMIN", admin, "PEER", peer).Replace(c.wantOutput)
			for _, w := range []string{
				fmt.Sprintf("different at sequence %d\n", da.Applied), want,
				fmt.Sprintf("store      %s on %s\n", da.Store, admin),
				fmt.Sprintf("store      %s on %s\n", dp.Store, peer),
			} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}

			out, _, _ = runCmd(t, "verify", "--admin", admin, "--peer", peer, "--json")
			var rep peerReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			m := rep.Mailbox
			if rep.Identical || rep.Applied != da.Applied || m == nil || m.User != c.want.User || m.Name != c.want.Name ||
				m.OnlyAdmin != c.want.OnlyAdmin || m.OnlyPeer != c.want.OnlyPeer || (m.AdminSum == "") != m.OnlyPeer ||
				(m.PeerSum == "") != m.OnlyAdmin || m.AdminSum == m.PeerSum {
				t.Errorf("--json: %s", out)
			}
		})
	}
}

// TestVerifyPeerConverges: while the passive is behind, verify asks again
// until both nodes are at the same position, then compares there.
func TestVerifyPeerConverges(t *testing.T) {
	more := func(i int) []store.Op {
		raw := fmt.Appendf(nil, "Subject: late %d\r\n\r\nx\r\n", i)
		return []store.Op{&store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: 1e18,
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}}
	}
	ds := digestsAfter(t, peerBase(), more(1), more(2), more(3))
	// The active moves on for a while; the passive follows two steps behind.
	admin, _ := digestServer(t, ds[1], ds[2], ds[3])
	peer, peerRequests := digestServer(t, ds[0], ds[0], ds[1], ds[2], ds[3])
	out, _, err := runCmd(t, "verify", "--admin", admin, "--peer", peer, "--timeout", "10s")
	if err != nil {
		t.Fatalf("verify --peer: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("identical at sequence %d: %s\n", ds[3].Applied, ds[3].Store); out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if n := peerRequests.Load(); n != 5 {
		t.Errorf("the peer was asked %d times, want 5", n)
	}

	// A passive that never catches up: verify gives up after --timeout
	// and says where each node is.
	admin, _ = digestServer(t, ds[3])
	peer, _ = digestServer(t, ds[1])
	start := time.Now()
	out, _, err = runCmd(t, "verify", "--admin", admin, "--peer", peer, "--timeout", "350ms")
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("verify --peer of nodes that never meet: %v\n%s", err, out)
	}
	want := fmt.Sprintf("no common position within 350ms: %s at sequence %d, %s at sequence %d\n", admin, ds[3].Applied, peer, ds[1].Applied)
	if out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

func TestVerifyPeerErrors(t *testing.T) {
	d := digestsAfter(t, peerBase())[0]
	good, _ := digestServer(t, d)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "store: closed", http.StatusInternalServerError)
	}))
	defer broken.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	gone := closed.Listener.Addr().String()
	closed.Close()
	for _, c := range []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"data and peer", []string{"--data", t.TempDir(), "--peer", good}, true, "not both"},
		{"empty peer", []string{"--peer", ""}, true, "--peer needs"},
		{"admin alone", []string{"--admin", good}, true, "go with --peer"},
		{"timeout alone", []string{"--timeout", "1s"}, true, "go with --peer"},
		{"zero timeout", []string{"--peer", good, "--timeout", "0s"}, true, "must be positive"},
		{"bad timeout", []string{"--peer", good, "--timeout", "soon"}, true, "timeout"},
		{"nobody there", []string{"--admin", good, "--peer", gone}, false, "no node answers at " + gone},
		{"node error", []string{"--admin", broken.Listener.Addr().String(), "--peer", good}, false, "500 Internal Server Error to GET /digest: store: closed"},
	} {
		out, _, err := runCmd(t, append([]string{"verify"}, c.args...)...)
		if err == nil || errors.Is(err, errUsage) != c.usage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (want usage %v, %q)\n%s", c.name, err, c.usage, c.want, out)
		}
	}
}

func TestFirstMailboxDiff(t *testing.T) {
	sum := func(b byte) store.Sum { return store.Sum{b} }
	mb := func(user, name string, b byte) store.MailboxSum {
		return store.MailboxSum{User: user, Name: name, Sum: sum(b)}
	}
	a := []store.MailboxSum{mb("bob", "INBOX", 1), mb("alice", "INBOX", 1), mb("alice", "Sent", 2)}
	if d := firstMailboxDiff(a, []store.MailboxSum{a[2], a[1], a[0]}); d != nil {
		t.Errorf("same mailboxes in another order: %+v", d)
	}
	if d := firstMailboxDiff(a, a[:2]); d == nil || d.User != "alice" || d.Name != "Sent" || !d.OnlyAdmin {
		t.Errorf("one missing on the peer: %+v", d)
	}
	if d := firstMailboxDiff(nil, a); d == nil || d.User != "alice" || d.Name != "INBOX" || !d.OnlyPeer {
		t.Errorf("none on the admin node: %+v", d)
	}
	b := []store.MailboxSum{mb("alice", "INBOX", 1), mb("alice", "Sent", 2), mb("bob", "INBOX", 3)}
	if d := firstMailboxDiff(a, b); d == nil || d.User != "bob" || d.AdminSum != sum(1).String() || d.PeerSum != sum(3).String() {
		t.Errorf("bob's INBOX differs: %+v", d)
	}
}

// TestVerifyChecksTheLog (issue 14 D9): verify reads a stopped node's log
// to its end; one byte flipped in a JetStream block file is a problem
// naming the log's block directory, and exit 1.
func TestVerifyChecksTheLog(t *testing.T) {
	data := t.TempDir()
	n := startPairNode(t, data, 1)
	n.commit(t, &store.CreateUser{User: "alice"})
	for i := range 40 {
		raw := fmt.Appendf(nil, "From: a@example.org\r\nSubject: m%d\r\n\r\nbody %d %s\r\n", i, i, strings.Repeat("x", 200))
		n.commit(t, &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: store.Now(),
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
	}
	n.close()
	out, errOut, err := runCmd(t, "verify", "--data", data)
	if err != nil || !strings.Contains(out, "continuous") {
		t.Fatalf("verify of a sound log: %v\n%s%s", err, out, errOut)
	}
	blocks, _ := filepath.Glob(filepath.Join(data, "nats", "jetstream", "*", "streams", "*", "msgs", "*.blk"))
	if len(blocks) == 0 {
		t.Fatal("no block file")
	}
	b, err := os.ReadFile(blocks[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(blocks[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = runCmd(t, "verify", "--data", data)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("verify of a damaged log: %v, want exit 1\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, filepath.Dir(blocks[0])) {
		t.Errorf("the report does not name %s:\n%s", filepath.Dir(blocks[0]), out)
	}
	t.Logf("verify of a damaged log:\n%s", out)
}
