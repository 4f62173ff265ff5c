package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/harness"
)

const linkPassword = "pair-link-secret"

// freePort returns a loopback address nothing listens on now, for an
// address a node must keep across a restart (harness.FreeLoopback).
func freePort(t *testing.T) string {
	t.Helper()
	tcp, _, err := harness.FreeLoopback(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tcp[0]
}

// pairNodes starts (or restarts, on the same data directories) an active
// and a passive on loopback.
type pairNodes struct {
	bin                  string
	activeData, passData string
	natsAddr             string
	peerNATS             string // the passive's way to natsAddr, when not direct (a relay)
	active, passive      *node
}

func (p *pairNodes) startActive(t *testing.T) {
	t.Helper()
	p.active = startNodeIn(t, p.bin, p.activeData, []string{"--role", "active", "--node-name", "a",
		"--nats-addr", p.natsAddr, "--peer-timeout", "1s"}, "TWINBOX_LINK_PASSWORD="+linkPassword)
}

func (p *pairNodes) startPassive(t *testing.T) {
	t.Helper()
	peer := p.natsAddr
	if p.peerNATS != "" {
		peer = p.peerNATS
	}
	p.passive = startNodeIn(t, p.bin, p.passData, []string{"--role", "passive", "--node-name", "b",
		"--nats-addr", "127.0.0.1:0", "--peer-nats", peer,
		"--link-ca", p.activeData + "/tls/cert.pem", "--service-address", serviceAddress}, "TWINBOX_LINK_PASSWORD="+linkPassword)
}

// serviceAddress is the pair's address for clients, which a passive's
// refusals name.
const serviceAddress = "mail.example.test"

func startPair(t *testing.T) *pairNodes {
	t.Helper()
	p := &pairNodes{bin: buildTwinbox(t), activeData: t.TempDir(), passData: t.TempDir(), natsAddr: freePort(t)}
	p.startActive(t)
	p.startPassive(t)
	for _, n := range []*node{p.active, p.passive} {
		n.addUser(t, "alice", "alice-pw")
		n.addUser(t, "bob", "bob-pw")
	}
	return p
}

// digestOf reads a node's /digest.
type digestJSON struct {
	Applied   uint64
	Store     string
	Mailboxes []struct{ User, Name, Sum string }
}

func (n *node) digest(t *testing.T) digestJSON {
	t.Helper()
	code, body := n.get("/digest")
	var d digestJSON
	if code != http.StatusOK || json.Unmarshal(body, &d) != nil {
		t.Fatalf("/digest: %d %s", code, body)
	}
	return d
}

// sameDigest waits until both nodes are at the same position and compares
// their digests there.
func sameDigest(t *testing.T, a, b *node) digestJSON {
	t.Helper()
	var da, db digestJSON
	a.waitFor(t, 60*time.Second, "the passive to reach the active's position", func() bool {
		da, db = a.digest(t), b.digest(t)
		return da.Applied == db.Applied && da.Applied > 0
	})
	if da.Store != db.Store {
		t.Fatalf("at sequence %d the stores differ: active %s, passive %s", da.Applied, da.Store, db.Store)
	}
	return da
}

// load sends messages with unique Message-IDs from several sessions and
// records which were acknowledged (250) and which were refused.
type load struct {
	mu        sync.Mutex
	acked     map[string]bool
	temporary atomic.Int64 // 4xx answers
	other     atomic.Int64
	// times, when set before run, keeps when each acknowledgement came
	// (for the pause a switchover makes).
	times   bool
	ackedAt []time.Time
}

// longestGap is the longest time between two acknowledgements.
func (l *load) longestGap() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	at := slices.Clone(l.ackedAt)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for i := 1; i < len(at); i++ {
		gap = max(gap, at[i].Sub(at[i-1]))
	}
	return gap
}

func (l *load) run(t *testing.T, smtpAddr func() string, sessions, perSession int, stop <-chan struct{}) {
	t.Helper()
	l.mu.Lock()
	if l.acked == nil {
		l.acked = map[string]bool{}
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *gosmtp.Client
			for i := 0; i < perSession; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if c == nil {
					var err error
					if c, err = gosmtp.Dial(smtpAddr()); err != nil {
						l.other.Add(1)
						time.Sleep(20 * time.Millisecond) // the node is restarting: retry pacing, not settling
						continue
					}
					// A sending MTA gives up on a server that stopped
					// answering (a paused node) and tries elsewhere.
					c.CommandTimeout, c.SubmissionTimeout = 3*time.Second, 3*time.Second
				}
				id := fmt.Sprintf("%d.%d.%d@load.test", time.Now().UnixNano(), s, i)
				raw := fmt.Sprintf("From: load@example.org\r\nTo: alice@localhost\r\nSubject: load %s\r\nMessage-ID: <%s>\r\n\r\n%s\r\n", id, id, strings.Repeat("x", 2000))
				err := c.SendMail("load@example.org", []string{"alice@localhost", "bob@localhost"}, strings.NewReader(raw))
				var se *gosmtp.SMTPError
				switch {
				case err == nil:
					l.mu.Lock()
					l.acked[id] = true
					if l.times {
						l.ackedAt = append(l.ackedAt, time.Now())
					}
					l.mu.Unlock()
				case errors.As(err, &se) && se.Code/100 == 4:
					// As a sending MTA does: try again later on a new
					// connection (to whichever node is active by then).
					l.temporary.Add(1)
					c.Close()
					c = nil
					time.Sleep(5 * time.Millisecond) // retry pacing
				default:
					l.other.Add(1)
					c.Close()
					c = nil
				}
			}
			if c != nil {
				c.Quit()
			}
		}()
	}
	wg.Wait()
}

// messageIDs lists the Message-IDs in a user's INBOX over IMAP, with
// their UIDs, and the mailbox's UIDVALIDITY.
func messageIDs(t *testing.T, n *node, user string) (map[string][]imap.UID, uint32) {
	t.Helper()
	c := n.login(t, user)
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	data := sel
	ids := map[string][]imap.UID{}
	if data.NumMessages == 0 {
		return ids, data.UIDValidity
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		ids[m.Envelope.MessageID] = append(ids[m.Envelope.MessageID], m.UID)
	}
	c.Logout()
	return ids, data.UIDValidity
}

// checkAcked asserts that every acknowledged message is in both users'
// INBOXes on both nodes, once, with the same UIDs and UIDVALIDITY.
func checkAcked(t *testing.T, p *pairNodes, l *load) {
	t.Helper()
	for _, user := range []string{"alice", "bob"} {
		onA, uvA := messageIDs(t, p.active, user)
		onB, uvB := messageIDs(t, p.passive, user)
		if uvA != uvB {
			t.Errorf("%s: UIDVALIDITY %d on the active, %d on the passive", user, uvA, uvB)
		}
		missing, twice := 0, 0
		for id := range l.acked {
			if len(onA[id]) == 0 || len(onB[id]) == 0 {
				missing++
			}
		}
		for id, uids := range onA {
			if len(uids) > 1 {
				twice++
			}
			if !slices.Equal(uids, onB[id]) {
				t.Errorf("%s: message %s has UIDs %v on the active, %v on the passive", user, id, uids, onB[id])
				break
			}
		}
		if missing > 0 || twice > 0 {
			t.Errorf("%s: %d acknowledged messages missing, %d stored twice (of %d acknowledged)", user, missing, twice, len(l.acked))
		}
	}
}

// TestPairReplicates: deliveries at concurrency 16 reach the passive, which
// serves the same messages with the same UIDs read-only, and both stores
// have the same digest at the same position.
func TestPairReplicates(t *testing.T) {
	p := startPair(t)
	var l load
	l.run(t, func() string { return p.active.smtp }, 16, 625, nil)
	if l.temporary.Load() != 0 || l.other.Load() != 0 || len(l.acked) != 16*625 {
		t.Fatalf("%d acknowledged, %d temporary failures, %d other", len(l.acked), l.temporary.Load(), l.other.Load())
	}
	d := sameDigest(t, p.active, p.passive)
	t.Logf("identical at sequence %d", d.Applied)
	checkAcked(t, p, &l)

	// /metrics on both sides agree on the position (the logins above made
	// special-use folders, so it is past the digest's), and count the
	// confirmed writes.
	var am, pm map[string]float64
	p.active.waitFor(t, 30*time.Second, "both nodes' metrics to show the same position", func() bool {
		am, pm = p.active.metrics(t), p.passive.metrics(t)
		last := am["twinbox_log_last_seq"]
		return last >= float64(d.Applied) && am["twinbox_applied_seq"] == last &&
			am["twinbox_replication_peer_position"] == last && am["twinbox_replication_lag_entries"] == 0 &&
			pm["twinbox_replication_position"] == last && pm["twinbox_log_last_seq"] == last && pm["twinbox_applied_seq"] == last
	})
	if am["twinbox_replication_peer_waits_total"] < 16*625 || am["twinbox_log_appends_total"] < 1 ||
		am["twinbox_log_append_seconds_total"] <= 0 || am["twinbox_replication_link_bytes_total"] <= 0 ||
		am["twinbox_replication_peer_seen_seconds"] < 0 {
		t.Errorf("active's replication metrics: %v", am)
	}
	if pm["twinbox_replication_batches_total"] < 1 || pm["twinbox_replication_batch_seconds_total"] <= 0 ||
		pm["twinbox_replication_link_bytes_total"] <= 0 {
		t.Errorf("passive's replication metrics: %v", pm)
	}

	// The passive refuses writes: SMTP 451, IMAP NO.
	c, err := gosmtp.Dial(p.passive.smtp)
	if err != nil {
		t.Fatal(err)
	}
	err = c.SendMail("x@example.org", []string{"alice@localhost"}, strings.NewReader("Subject: no\r\n\r\nno\r\n"))
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || !strings.Contains(se.Message, "read-only replica") {
		t.Errorf("SMTP to the passive: %v, want 451 naming the read-only replica", err)
	}
	c.Close()
	ic := p.passive.login(t, "alice")
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err == nil || !strings.Contains(err.Error(), serviceAddress) {
		t.Errorf("STORE on the passive: %v, want a refusal pointing at %s", err, serviceAddress)
	}
	if err := ic.Create("New", nil).Wait(); err == nil {
		t.Error("CREATE on the passive succeeded")
	}

	// A session idling on the passive sees mail delivered to the active.
	exists := make(chan uint32, 16)
	idler, err := imapclient.DialInsecure(p.passive.imap, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idler.Close()
	if err := idler.Login("bob", "bob-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := idler.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}
	p.active.send(t, []byte("Subject: to the idler\r\n\r\nhi\r\n"), "x@example.org", "bob@localhost")
	select {
	case n := <-exists:
		if n != sel.NumMessages+1 {
			t.Errorf("EXISTS %d on the passive, want %d", n, sel.NumMessages+1)
		}
	case <-time.After(20 * time.Second):
		t.Error("a session idling on the passive was not told of the new message")
	}
	idle.Close()
}

// TestPairPassiveKilled: the passive dies under load (SIGKILL) and comes
// back: meanwhile clients get temporary failures, never a false OK; it
// catches up to identical and every acknowledged message is on both.
func TestPairPassiveKilled(t *testing.T) {
	p := startPair(t)
	var l load
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		l.run(t, func() string { return p.active.smtp }, 8, 1<<30, stop)
		close(done)
	}()
	p.active.waitFor(t, 30*time.Second, "some deliveries", func() bool { return ackedCount(&l) >= 100 })
	p.passive.kill(t)
	p.active.waitFor(t, 30*time.Second, "a temporary failure while the passive is down", func() bool { return l.temporary.Load() > 0 })
	p.startPassive(t)
	p.passive.users["alice"], p.passive.users["bob"] = "alice-pw", "bob-pw" // its passwd-file survived
	before := ackedCount(&l)
	p.active.waitFor(t, 30*time.Second, "deliveries acknowledged again", func() bool { return ackedCount(&l) >= before+100 })
	close(stop)
	<-done
	t.Logf("%d acknowledged, %d temporary failures", ackedCount(&l), l.temporary.Load())
	sameDigest(t, p.active, p.passive)
	checkAcked(t, p, &l)
}

// TestPairActiveKilled: the active dies under load (SIGKILL) and is
// restarted: no acknowledged message is missing on either node and none is
// stored twice.
func TestPairActiveKilled(t *testing.T) {
	p := startPair(t)
	var l load
	stop := make(chan struct{})
	done := make(chan struct{})
	var addrMu sync.Mutex
	smtpAddr := func() string {
		addrMu.Lock()
		defer addrMu.Unlock()
		return p.active.smtp
	}
	go func() {
		l.run(t, smtpAddr, 8, 1<<30, stop)
		close(done)
	}()
	p.active.waitFor(t, 30*time.Second, "some deliveries", func() bool { return ackedCount(&l) >= 200 })
	addrMu.Lock()
	p.active.kill(t)
	p.startActive(t)
	p.active.users["alice"], p.active.users["bob"] = "alice-pw", "bob-pw"
	addrMu.Unlock()
	before := ackedCount(&l)
	p.active.waitFor(t, 30*time.Second, "deliveries acknowledged by the restarted active", func() bool { return ackedCount(&l) >= before+100 })
	close(stop)
	<-done
	t.Logf("%d acknowledged, %d temporary failures, %d connection errors", ackedCount(&l), l.temporary.Load(), l.other.Load())
	sameDigest(t, p.active, p.passive)
	checkAcked(t, p, &l)
}

func ackedCount(l *load) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// TestPairNewPassiveResyncs: a new passive joining an active whose log was
// trimmed takes a checkpoint of the active's store, then follows the log
// to identical.
func TestPairNewPassiveResyncs(t *testing.T) {
	p := &pairNodes{bin: buildTwinbox(t), activeData: t.TempDir(), passData: t.TempDir(), natsAddr: freePort(t)}
	p.active = startNodeIn(t, p.bin, p.activeData, []string{"--role", "active", "--node-name", "a",
		"--nats-addr", p.natsAddr, "--peer-timeout", "1s", "--log-keep", "5", "--log-trim-interval", "100ms"},
		"TWINBOX_LINK_PASSWORD="+linkPassword)
	p.startPassive(t)
	for _, n := range []*node{p.active, p.passive} {
		n.addUser(t, "alice", "alice-pw")
		n.addUser(t, "bob", "bob-pw")
	}
	var l load
	l.run(t, func() string { return p.active.smtp }, 4, 25, nil)
	sameDigest(t, p.active, p.passive)
	p.active.waitFor(t, 30*time.Second, "the active to trim its log", func() bool {
		st, err := p.active.Status(t.Context())
		return err == nil && st.Replication != nil && st.Replication.LogFirst > 10
	})
	// A new passive on an empty data directory (a replaced disk).
	p.passive.stop(t)
	p.passData = t.TempDir()
	p.startPassive(t)
	p.passive.waitFor(t, 60*time.Second, "the new passive to rebuild its store from the active's", func() bool {
		st, err := p.passive.Status(t.Context())
		return err == nil && st.Replication != nil && st.Replication.Resyncs >= 1
	})
	if !strings.Contains(p.passive.Log(), "resync:") {
		t.Errorf("the new passive's output shows no resync progress:\n%s", p.passive.Log())
	}
	p.passive.addUser(t, "alice", "alice-pw") // its passwd-file is new too
	p.passive.addUser(t, "bob", "bob-pw")
	l.run(t, func() string { return p.active.smtp }, 2, 10, nil)
	sameDigest(t, p.active, p.passive)
	checkAcked(t, p, &l)
}

// TestReplayRebuildsTheLiveStore: after a replicated run, `twinbox replay`
// on each stopped node's log rebuilds a store with the live store's digest,
// and `twinbox verify --peer` found both nodes identical while they ran.
func TestReplayRebuildsTheLiveStore(t *testing.T) {
	p := startPair(t)
	var l load
	l.run(t, func() string { return p.active.smtp }, 4, 50, nil)
	live := sameDigest(t, p.active, p.passive)
	r := run(t, 60*time.Second, harness.Env(), nil, p.bin, "verify", "--admin", p.active.adm, "--peer", p.passive.adm)
	if r.code != 0 || !strings.Contains(string(r.stdout), "identical") {
		t.Errorf("verify --peer: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, n := range []*node{p.passive, p.active} {
		n.stop(t)
		r := run(t, 120*time.Second, harness.Env(), nil, p.bin, "replay", "--data", n.data, "--json")
		var out struct {
			Applied uint64 `json:"applied"`
			Digest  string `json:"digest"`
		}
		if r.code != 0 || json.Unmarshal(r.stdout, &out) != nil {
			t.Fatalf("replay %s: exit %d\n%s%s", n.data, r.code, r.stdout, r.stderr)
		}
		if out.Applied != live.Applied || out.Digest != live.Store {
			t.Errorf("replay of %s: %d %s, live store %d %s", n.data, out.Applied, out.Digest, live.Applied, live.Store)
		}
	}
}
