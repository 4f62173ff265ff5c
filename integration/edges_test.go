package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/internal/harness"
)

// The failover edges (docs/architecture.md, "UIDs", "Rejoin and split
// brain", "Retries"): a split brain with fence devices that lie, an async
// active killed with an unconfirmed tail, a delivery the passive never
// received, a large delivery over a slow link, a partition with honest
// fencing. The network between the two processes goes through relays
// (harness.Relay) the tests cut and heal; the clients are real (go-imap's
// client, go-smtp's, swaks).

// lyingFence reports success for every action and does nothing: a fence
// device with a wrong port= or on the wrong host. status says "off".
const lyingFence = `#!/bin/sh
action=off
while IFS= read -r line; do
	case "$line" in action=*) action=${line#action=} ;; esac
done
[ "$action" = status ] && exit 2
exit 0
`

// uidSeen records which message (by Message-ID) each UID of a mailbox
// showed, under its UIDVALIDITY, to any IMAP client of either node: a UID
// that ever shows another message is the reuse RFC 9051 forbids.
type uidSeen struct {
	mu        sync.Mutex
	seen      map[uidKey]string
	conflicts []string
	reads     map[string]int // successful reads by node address
}

type uidKey struct {
	user        string
	uidValidity uint32
	uid         imap.UID
}

// read lists user's INBOX on the IMAP server at addr and records it.
func (u *uidSeen) read(ctx context.Context, addr, user, password string) error {
	c, err := harness.IMAPDial(ctx, addr, user, password, 30*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return err
	}
	var msgs []*seenMsg
	if sel.NumMessages > 0 {
		got, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
		if err != nil {
			return err
		}
		for _, m := range got {
			if m.Envelope != nil {
				msgs = append(msgs, &seenMsg{uid: m.UID, id: m.Envelope.MessageID})
			}
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.seen == nil {
		u.seen, u.reads = map[uidKey]string{}, map[string]int{}
	}
	u.reads[addr]++
	for _, m := range msgs {
		k := uidKey{user, sel.UIDValidity, m.uid}
		if was, ok := u.seen[k]; ok && was != m.id {
			u.conflicts = append(u.conflicts, fmt.Sprintf("%s UIDVALIDITY %d UID %d showed %s, now %s on %s",
				user, sel.UIDValidity, m.uid, was, m.id, addr))
			continue
		}
		u.seen[k] = m.id
	}
	return nil
}

type seenMsg struct {
	uid imap.UID
	id  string
}

// watch reads user's INBOX on each node over and over, as clients
// polling their mail would, until the returned function is called.
// Reads that fail (a node not serving) are what a client would meet too.
func (u *uidSeen) watch(t *testing.T, nodes []*node, user string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, n := range nodes {
		addr, pw := n.imap, n.users[user]
		wg.Go(func() {
			for ctx.Err() == nil {
				if u.read(ctx, addr, user, pw) != nil {
					select {
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond): // retry pacing for a node not serving
					}
				}
			}
		})
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// readsOf is how many reads of addr succeeded.
func (u *uidSeen) readsOf(addr string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.reads[addr]
}

// check reads each node once more and fails the test for every UID that
// showed two messages.
func (u *uidSeen) check(t *testing.T, user string, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		if err := u.read(t.Context(), n.imap, user, n.users[user]); err != nil {
			t.Errorf("final IMAP read of %s: %v", n.imap, err)
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.conflicts {
		t.Error(c)
	}
	t.Logf("%d UIDs seen by IMAP clients, %d shown with two messages", len(u.seen), len(u.conflicts))
}

// runLoadTo runs SMTP load against one node's address, whatever its role.
func runLoadTo(t *testing.T, l *load, addr string, sessions int) (stop func()) {
	t.Helper()
	stopc := make(chan struct{})
	done := make(chan struct{})
	go func() {
		l.run(t, func() string { return addr }, sessions, 1<<30, stopc)
		close(done)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(stopc); <-done }) }
	t.Cleanup(stop)
	return stop
}

// union is a load whose acknowledged set is all of ls'.
func union(ls ...*load) *load {
	u := &load{acked: map[string]bool{}}
	for _, l := range ls {
		l.mu.Lock()
		for id := range l.acked {
			u.acked[id] = true
		}
		l.mu.Unlock()
	}
	return u
}

// uidValidities is the UIDVALIDITY of alice's and bob's INBOX on n.
func uidValidities(t *testing.T, n *node) [2]uint32 {
	t.Helper()
	_, a := messageIDs(t, n, "alice")
	_, b := messageIDs(t, n, "bob")
	return [2]uint32{a, b}
}

// alone: the node is active and acknowledges without its passive.
func alone(s admin.Status) bool {
	return s.Role == "active" && s.Replication != nil && strings.Contains(s.Replication.Mode, "degraded")
}

// merged waits until node n, a former active, is a current passive whose
// merge plans are all done, having re-applied what it acknowledged.
func (p *foPair) waitMerged(t *testing.T, i int) admin.Status {
	t.Helper()
	n := p.nodes[i]
	var s admin.Status
	err := n.WaitFor(t.Context(), 120*time.Second, "the former active to rejoin and finish its merge", func() (bool, error) {
		var ok bool
		s, ok = n.foStatus()
		return ok && p.passiveCurrent(i) && s.Serving && s.Merge != nil && s.Merge.Acked > 0 && s.Merge.Pending == 0, nil
	}, p.nodes[1-i].Node)
	if err != nil {
		p.dump(t)
		t.Fatal(err)
	}
	return s
}

// TestSplitBrainWithLyingFenceIsMerged: the two nodes are cut apart for
// 10 s with fence devices that lie, with SMTP load on both and IMAP
// clients reading both. Both act alone (a split brain). After the heal,
// the node at the older epoch steps down, takes its tail back and merges
// it into the other: every message acknowledged on either side is on both
// nodes once, UIDVALIDITY is unchanged, and no UID any client saw shows
// another message.
func TestSplitBrainWithLyingFenceIsMerged(t *testing.T) {
	lying := writeScript(t, "fence-lies.sh", lyingFence)
	p := newFOPair(t, func(int) string { return lying })
	p.withRelays(t)
	na, nb := p.startPreferred(t)
	var before load
	before.run(t, func() string { return na.smtp }, 2, 10, nil)
	sameDigest(t, na, nb)
	uv := uidValidities(t, na)

	var seen uidSeen
	stopWatch := seen.watch(t, []*node{na, nb}, "alice")
	var la, lb load
	stopA := runLoadTo(t, &la, na.smtp, 2)
	stopB := runLoadTo(t, &lb, nb.smtp, 2)
	p.partition(false)
	cut := time.Now()
	span := 10 * time.Second
	if testing.Short() {
		span = 5 * time.Second
	}
	var ackA, ackB int
	var readsA, readsB int
	err := na.WaitFor(t.Context(), 120*time.Second, "both nodes to act alone", func() (bool, error) {
		sa, _ := na.foStatus()
		sb, _ := nb.foStatus()
		if !alone(sa) || !alone(sb) {
			return false, nil
		}
		ackA, ackB = ackedCount(&la), ackedCount(&lb)
		readsA, readsB = seen.readsOf(na.imap), seen.readsOf(nb.imap)
		return true, nil
	}, nb.Node)
	if err != nil {
		p.dump(t)
		t.Fatal(err)
	}
	// The partition lasts its span, and long enough for each side to
	// acknowledge alone and be read by its clients.
	err = na.WaitFor(t.Context(), 120*time.Second, "both sides to acknowledge and be read alone", func() (bool, error) {
		return time.Since(cut) >= span && ackedCount(&la) >= ackA+10 && ackedCount(&lb) >= ackB+10 &&
			seen.readsOf(na.imap) > readsA && seen.readsOf(nb.imap) > readsB, nil
	}, nb.Node)
	if err != nil {
		p.dump(t)
		t.Fatal(err)
	}
	p.partition(true)
	healed := time.Now()
	stopA() // a steps down: its clients would go to the service address
	s := p.waitMerged(t, 0)
	t.Logf("healed %v after the cut; merged %v later: %+v", healed.Sub(cut).Round(time.Millisecond),
		time.Since(healed).Round(time.Millisecond), *s.Merge)
	stopB()
	stopWatch()
	if sb, _ := nb.foStatus(); sb.Role != "active" {
		t.Fatalf("b after the merge: %+v", sb)
	}
	all := union(&before, &la, &lb)
	t.Logf("acknowledged: %d before, %d by a, %d by b; temporary failures %d / %d", len(before.acked), ackedCount(&la),
		ackedCount(&lb), la.temporary.Load(), lb.temporary.Load())
	sameDigest(t, nb, na)
	checkAcked(t, &pairNodes{active: nb, passive: na}, all)
	if got := uidValidities(t, nb); got != uv {
		t.Errorf("UIDVALIDITY of alice's and bob's INBOX %v after the merge, %v before", got, uv)
	}
	seen.check(t, "alice", nb, na)
}

// TestAsyncActiveKilledTailMerged: in async mode the active acknowledges
// before the passive has a change. The passive stops receiving (its link
// cut, heartbeats still flowing), the active acknowledges on, and is
// killed with SIGKILL; the passive fences it and promotes. The killed
// node restarts while it cannot reach the new active: it serves nothing,
// not even IMAP reads, and says what it waits for. Once the link is back
// it takes its tail back, merges it, and both nodes hold every
// acknowledged message once.
func TestAsyncActiveKilledTailMerged(t *testing.T) {
	p := newFOPair(t, nil, "--replication-mode", "async")
	p.withRelays(t)
	na, nb := p.startPreferred(t)
	var seen uidSeen
	stopWatch := seen.watch(t, []*node{na, nb}, "alice")
	var l load
	stop := p.runLoad(t, &l, 4)
	na.waitFor(t, 60*time.Second, "some deliveries", func() bool { return ackedCount(&l) >= 50 })
	p.natsTo[0].Cut() // b no longer reads a's log
	n0, r0 := ackedCount(&l), seen.readsOf(na.imap)
	na.waitFor(t, 60*time.Second, "acknowledgements the passive lacks, read by a client", func() bool {
		return ackedCount(&l) >= n0+30 && seen.readsOf(na.imap) > r0
	})
	na.kill(t)
	p.waitActiveAlone(t, 0, true)
	stopWatch()
	// The killed node comes back, but cannot reach the new active's log.
	p.natsTo[1].Cut()
	na = p.start(t, 0)
	var st admin.Status
	na.waitFor(t, 60*time.Second, "the restarted node to say it waits for the active's log", func() bool {
		var ok bool
		st, ok = na.foStatus()
		return ok && st.Role == "passive" && st.Failover.PeerRole == "active" && !st.Serving && st.Waiting != ""
	})
	t.Logf("waiting: %s", st.Waiting)
	if err := imapServes(t.Context(), na, "alice"); err == nil {
		t.Error("the restarted former active served an IMAP read before checking its log against the active's")
	}
	if err := sendOne(na.smtp); err == nil {
		t.Error("the restarted former active acknowledged a delivery")
	}
	if st, _ := na.foStatus(); st.Serving {
		t.Fatalf("serving while cut off from the active: %+v", st)
	}
	p.natsTo[0].Heal()
	p.natsTo[1].Heal()
	s := p.waitMerged(t, 0)
	t.Logf("merge: %+v", *s.Merge)
	stop()
	sameDigest(t, nb, na)
	checkAcked(t, &pairNodes{active: nb, passive: na}, &l)
	seen.check(t, "alice", nb, na)
}

// imapServes logs in on n and selects user's INBOX.
func imapServes(ctx context.Context, n *node, user string) error {
	c, err := harness.IMAPDial(ctx, n.imap, user, n.users[user], 30*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Select("INBOX", nil).Wait()
	return err
}

// TestNoUIDShownBeforeThePassiveHoldsIt: the passive stops receiving the
// log (heartbeats still flow); a delivery to the active is refused with a
// temporary error after peer_timeout, and no IMAP client of the active
// sees it meanwhile. The active is then killed; the passive takes over
// and delivers new mail: no UID a client saw on the old active shows
// another message on the new one, nor on the old one once it rejoined.
func TestNoUIDShownBeforeThePassiveHoldsIt(t *testing.T) {
	p := newFOPair(t, nil)
	p.withRelays(t)
	na, nb := p.startPreferred(t)
	var l load
	l.run(t, func() string { return na.smtp }, 1, 3, nil)
	var seen uidSeen
	if err := seen.read(t.Context(), na.imap, "alice", "alice-pw"); err != nil { // a client that reads its mail
		t.Fatal(err)
	}
	p.natsTo[0].Cut()
	const id = "unconfirmed@edge.test"
	err := sendWithID(na.smtp, id)
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code/100 != 4 {
		t.Fatalf("a delivery the passive cannot receive: %v, want a temporary failure", err)
	}
	if err := seen.read(t.Context(), na.imap, "alice", "alice-pw"); err != nil {
		t.Fatal(err)
	}
	for k, v := range seen.seen {
		if v == id {
			t.Errorf("the active showed UID %d for a message the passive does not hold", k.uid)
		}
	}
	na.kill(t)
	p.waitActiveAlone(t, 0, true)
	p.natsTo[0].Heal()
	var after load
	after.run(t, func() string { return nb.smtp }, 1, 3, nil)
	// The sender retries the refused delivery: one copy in the end,
	// whether or not the first attempt reached b after all.
	if err := sendWithID(nb.smtp, id); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	na = p.start(t, 0)
	p.waitActive(t, 0)
	sameDigest(t, nb, na)
	checkAcked(t, &pairNodes{active: nb, passive: na}, union(&l, &after))
	for _, n := range []*node{nb, na} {
		if ids, _ := messageIDs(t, n, "alice"); len(ids[id]) != 1 {
			t.Errorf("%s holds the retried message under UIDs %v, want one", n.imap, ids[id])
		}
	}
	seen.check(t, "alice", nb, na)
}

// sendWithID delivers one small message with Message-ID id to alice.
func sendWithID(addr, id string) error {
	raw := fmt.Sprintf("From: x@example.org\r\nTo: alice@localhost\r\nSubject: edge\r\nMessage-ID: <%s>\r\n\r\nx\r\n", id)
	return sendRaw(addr, raw)
}

// TestLargeLMTPDeliveryOverASlowLinkStoredOnce: a 20 MB LMTP delivery
// (swaks) whose replication takes longer than peer_timeout. Over a slow
// link the passive visibly receives, so the active waits and answers
// 250. Over a cut link it answers 451; once the link is back the first
// attempt is confirmed after all, and the sender's retry is recognised:
// 250, one copy on both nodes.
func TestLargeLMTPDeliveryOverASlowLinkStoredOnce(t *testing.T) {
	swaks := need(t, "swaks")
	p := &pairNodes{bin: buildTwinbox(t), activeData: t.TempDir(), passData: t.TempDir(), natsAddr: freePort(t)}
	p.startActive(t)
	relay, err := harness.NewTCPRelay(p.natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	p.peerNATS = relay.Addr()
	p.startPassive(t)
	for _, n := range []*node{p.active, p.passive} {
		n.addUser(t, "alice", "alice-pw")
	}
	size := 20 << 20
	if testing.Short() {
		size = 8 << 20
	}
	files := map[string]string{}
	// deliver sends the message with Message-ID id over LMTP with swaks;
	// a second call (the sender's retry) sends the same bytes.
	deliver := func(id string) result {
		file, ok := files[id]
		if !ok {
			file = filepath.Join(t.TempDir(), "big.eml")
			files[id] = file
			var b strings.Builder
			fmt.Fprintf(&b, "From: big@example.org\r\nTo: alice@localhost\r\nSubject: big\r\nMessage-ID: <%s>\r\n\r\n", id)
			// Random base64, as an attachment is: the link's compression
			// cannot shrink it.
			raw := make([]byte, 57)
			for b.Len() < size {
				rand.Read(raw)
				b.WriteString(base64.StdEncoding.EncodeToString(raw))
				b.WriteString("\r\n")
			}
			if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return run(t, 5*time.Minute, nil, nil, swaks, "--protocol", "LMTP", "--server", p.active.lmtp,
			"--from", "big@example.org", "--to", "alice@localhost", "--data", "@"+file, "--suppress-data")
	}
	copies := func(id string) [2]int {
		sameDigest(t, p.active, p.passive)
		a, _ := messageIDs(t, p.active, "alice")
		b, _ := messageIDs(t, p.passive, "alice")
		return [2]int{len(a[id]), len(b[id])}
	}

	t.Run("slow", func(t *testing.T) {
		// An 8 MiB chunk takes 4 s and the whole message 10 s, against the
		// active's peer_timeout of 1 s. (At 1 MiB/s, under -race on two busy
		// cores, a pause of over 1 s between arrivals was seen while the
		// passive appended a chunk: the test would then measure the machine.)
		relay.SetRate(2 << 20)
		defer relay.SetRate(0)
		start := time.Now()
		r := deliver("slow@edge.test")
		if r.code != 0 {
			t.Fatalf("swaks over a slow link: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		t.Logf("acknowledged after %v", time.Since(start).Round(time.Millisecond))
		if got := copies("slow@edge.test"); got != [2]int{1, 1} {
			t.Errorf("copies on the active and the passive: %v, want one each", got)
		}
	})
	t.Run("cut", func(t *testing.T) {
		relay.Cut()
		r := deliver("cut@edge.test")
		relay.Heal()
		if r.code == 0 || !strings.Contains(string(r.stdout), "451") {
			t.Fatalf("swaks over a cut link: exit %d, want a 451\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = deliver("cut@edge.test") // the sender's retry
		if r.code != 0 {
			t.Fatalf("the retry: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if got := copies("cut@edge.test"); got != [2]int{1, 1} {
			t.Errorf("copies on the active and the passive: %v, want one each", got)
		}
		if !strings.Contains(p.active.Log(), "a retried delivery was stored already") {
			t.Errorf("the active did not log the recognised retry:\n%s", p.active.LogTail())
		}
	})
}

// TestPartitionFencesOneNode: a partition between two nodes with honest
// fence devices and the default fence_delay: the preferred node fences
// the other and goes on alone; the other never shoots. Once the fenced
// node is powered on again (here: restarted by the test, as the fence
// device's reboot would) and the link is back, it rejoins as passive and
// nothing acknowledged is missing.
func TestPartitionFencesOneNode(t *testing.T) {
	p := newFOPair(t, nil)
	p.withRelays(t)
	na, nb := p.startPreferred(t)
	var l load
	stop := runLoadTo(t, &l, na.smtp, 2)
	na.waitFor(t, 60*time.Second, "some deliveries", func() bool { return ackedCount(&l) >= 20 })
	p.partition(false)
	select {
	case <-nb.Exited():
		nb.Kill() // fenced, as meant: not a failure of the node
	case <-na.Exited():
		t.Fatalf("the preferred node was fenced:\n%s", na.LogTail())
	case <-time.After(2 * time.Minute):
		p.dump(t)
		t.Fatal("nobody fenced within 2 minutes of the cut")
	}
	na.waitFor(t, 60*time.Second, "a to acknowledge alone", func() bool {
		s, _ := na.foStatus()
		return alone(s)
	})
	n0 := ackedCount(&l)
	na.waitFor(t, 60*time.Second, "deliveries acknowledged alone", func() bool { return ackedCount(&l) >= n0+10 })
	p.partition(true)
	p.start(t, 1)
	p.waitActive(t, 1)
	stop()
	if err := na.Alive(); err != nil {
		t.Fatalf("the preferred node: %v", err)
	}
	sameDigest(t, na, p.nodes[1])
	checkAcked(t, &pairNodes{active: na, passive: p.nodes[1]}, &l)
}
