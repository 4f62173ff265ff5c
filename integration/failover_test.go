package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/failover/heartbeat"
	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/internal/harness"
	"github.com/twinbox/twinbox/internal/poll"
)

// The failover tests run two `twinbox serve` processes with automatic
// failover on loopback: real heartbeats (UDP and the NATS link, signed),
// a real fence agent speaking the fence-agents stdin protocol (our own
// `twinbox fence-agent process`, which kills the peer's process by its
// pid file, or a shell script that fails, hangs or lies), real SMTP and
// IMAP clients. Timings are shortened (deadtime 800ms) so the twenty
// kills stay quick; the benchmark measures the defaults.

const heartbeatKey = "failover-test-key-0123456789"

// foPair is a pair with failover: node 0 ("a", preferred) and node 1
// ("b"), each restartable on its data directory and addresses.
type foPair struct {
	bin      string
	data     [2]string
	nats, hb [2]string
	nodes    [2]*node
	fence    [2]string // each node's fence agent (it shoots the other)
	cert     string
	extra    []string
	mu       sync.Mutex // guards nodes for the load's address lookups

	// With relays (p.withRelays), node i reaches node j's NATS through
	// natsTo[j] and its heartbeat port through hbTo[j], so that a test can
	// cut the network between them.
	natsTo, hbTo [2]*harness.Relay
	// witness[i], with p.withWitness, is node i's way to the witness.
	witness [2]*harness.Relay
}

// withRelays puts a relay in front of each node's NATS and heartbeat
// ports, used by the other node (before the nodes start).
func (p *foPair) withRelays(t *testing.T) {
	t.Helper()
	for i := range 2 {
		n, err := harness.NewTCPRelay(p.nats[i])
		if err != nil {
			t.Fatal(err)
		}
		h, err := harness.NewUDPRelay(p.hb[i])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close(); h.Close() })
		p.natsTo[i], p.hbTo[i] = n, h
	}
}

// partition cuts (or, with heal, restores) every path between the nodes.
func (p *foPair) partition(heal bool) {
	for _, r := range [...]*harness.Relay{p.natsTo[0], p.natsTo[1], p.hbTo[0], p.hbTo[1]} {
		if heal {
			r.Heal()
		} else {
			r.Cut()
		}
	}
}

// peerAddrs are the addresses node i is given for its peer's NATS and
// heartbeat port: the relays' when there are.
func (p *foPair) peerAddrs(i int) (nats, hb string) {
	j := 1 - i
	if p.natsTo[j] != nil {
		return p.natsTo[j].Addr(), p.hbTo[j].Addr()
	}
	return p.nats[j], p.hb[j]
}

var foNames = [2]string{"a", "b"}

// newFOPair prepares a pair; agent makes node i's fence agent (nil: our
// process agent shooting the other node).
func newFOPair(t *testing.T, agent func(i int) string, extra ...string) *foPair {
	t.Helper()
	p := &foPair{bin: buildTwinbox(t), extra: extra}
	for i := range 2 {
		p.data[i] = t.TempDir()
		p.nats[i] = freePort(t)
		p.hb[i] = freeUDPPort(t)
	}
	p.cert = linkCert(t, p.data[:])
	for i := range 2 {
		if agent != nil {
			p.fence[i] = agent(i)
			continue
		}
		p.fence[i] = writeScript(t, fmt.Sprintf("fence-%s.sh", foNames[i]), fmt.Sprintf("#!/bin/sh\nexec %q fence-agent process\n", p.bin))
	}
	return p
}

// start runs node i (again) on its data directory.
func (p *foPair) start(t *testing.T, i int) *node {
	t.Helper()
	j := 1 - i
	role := map[int]string{0: "active", 1: "passive"}[i]
	peerNATS, peerHB := p.peerAddrs(i)
	args := []string{"--role", role, "--failover=true", "--node-name", foNames[i], "--peer-name", foNames[j],
		"--nats-addr", p.nats[i], "--peer-nats", peerNATS, "--link-ca", p.cert,
		"--heartbeat-addr", p.hb[i], "--peer-heartbeat", peerHB,
		"--keepalive", "100ms", "--warntime", "400ms", "--deadtime", "800ms", "--initdead", "4s",
		"--peer-timeout", "2s", "--fence-timeout", "2s",
		"--fence-agent", p.fence[i], "--fence-options", "port=" + filepath.Join(p.data[j], "pid"),
		"--pid-file", filepath.Join(p.data[i], "pid")}
	if p.witness[i] != nil {
		args = append(args, "--witness", p.witness[i].Addr())
	}
	args = append(args, p.extra...)
	n := startNodeIn(t, p.bin, p.data[i], args, "TWINBOX_LINK_PASSWORD="+linkPassword, "TWINBOX_HEARTBEAT_KEY="+heartbeatKey)
	n.users["alice"], n.users["bob"] = "alice-pw", "bob-pw"
	p.mu.Lock()
	p.nodes[i] = n
	p.mu.Unlock()
	return n
}

// startBoth starts both nodes with users alice and bob, and waits for
// one of them to be active.
func (p *foPair) startBoth(t *testing.T) {
	t.Helper()
	for i := range 2 {
		for _, u := range [][2]string{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
			addUserOffline(t, p.bin, p.data[i], u[0], u[1])
		}
	}
	p.start(t, 0)
	p.start(t, 1)
	p.waitActive(t, -1)
}

// startPreferred starts both nodes and checks that a, the preferred
// node, is the one that took the active role.
func (p *foPair) startPreferred(t *testing.T) (na, nb *node) {
	t.Helper()
	p.startBoth(t)
	if a := p.waitActive(t, -1); a != 0 {
		t.Fatalf("node %s active, want the preferred a", foNames[a])
	}
	return p.nodes[0], p.nodes[1]
}

// addUserOffline adds a user to a node's passwd-file before it starts.
func addUserOffline(t *testing.T, bin, data, name, password string) {
	t.Helper()
	cmd := exec.Command(bin, "user", "add", name, "--data", data)
	cmd.Env = harness.Env()
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("twinbox user add %s: %v\n%s", name, err, out)
	}
}

// foStatus reads the node's /status; its failover and replication parts
// are never nil (zero when the node did not answer).
func (n *node) foStatus() (admin.Status, bool) {
	st, err := n.Status(context.Background())
	ok := err == nil && st.Failover != nil && st.Replication != nil
	if !ok {
		return admin.Status{Failover: &admin.Failover{}, Replication: &admin.Replication{}}, false
	}
	return *st, true
}

// waitActive waits until a node other than not (an index, or -1) reports
// itself active and its passive caught up (not degraded, peer alive) or,
// with alone, merely active. It returns the active's index.
func (p *foPair) waitActiveAlone(t *testing.T, not int, alone bool) int {
	t.Helper()
	active := -1
	var gone error
	err := poll.Until(t.Context(), 60*time.Second, fmt.Sprintf("a node other than %d to become active", not), func() (bool, error) {
		for i := range 2 {
			p.mu.Lock()
			n := p.nodes[i]
			p.mu.Unlock()
			if i == not || n == nil {
				continue
			}
			if err := n.Alive(); err != nil {
				gone = err
				return true, nil
			}
			s, ok := n.foStatus()
			if ok && s.Role == "active" && (alone || (!s.Failover.Degraded && (s.Failover.Peer == "alive" || s.Failover.Peer == "late") &&
				p.passiveCurrent(1-i))) {
				active = i
				return true, nil
			}
		}
		return false, nil
	})
	if gone != nil || err != nil {
		p.dump(t)
		t.Fatalf("waiting for an active: %v", errors.Join(gone, err))
	}
	return active
}

func (p *foPair) waitActive(t *testing.T, not int) int { return p.waitActiveAlone(t, not, false) }

// passiveCurrent: node i is a passive that hears the active and is not
// outdated (it would take over if the active died now).
func (p *foPair) passiveCurrent(i int) bool {
	p.mu.Lock()
	n := p.nodes[i]
	p.mu.Unlock()
	if n == nil {
		return false
	}
	s, ok := n.foStatus()
	return ok && s.Role == "passive" && !s.Failover.Outdated && s.Failover.PeerRole == "active"
}

func (p *foPair) dump(t *testing.T) {
	t.Helper()
	for i := range 2 {
		if n := p.nodes[i]; n != nil {
			_, body := n.get("/status")
			out := n.Log()
			if len(out) > 6000 {
				out = out[len(out)-6000:]
			}
			t.Logf("node %s /status: %s\nlast output:\n%s", foNames[i], body, out)
			if _, g := n.get("/debug/pprof/goroutine?debug=2"); len(g) > 0 {
				f := filepath.Join(os.TempDir(), fmt.Sprintf("twinbox-goroutines-%s-%d.txt", foNames[i], time.Now().UnixNano()))
				os.WriteFile(f, g, 0o644)
				t.Logf("node %s goroutines in %s", foNames[i], f)
			}
		}
	}
}

// activeSMTP is the SMTP address of whichever node says it is active
// (for the load's reconnections).
func (p *foPair) activeSMTP() string {
	p.mu.Lock()
	nodes := p.nodes
	p.mu.Unlock()
	for _, n := range nodes {
		if n == nil {
			continue
		}
		if s, ok := n.foStatus(); ok && s.Role == "active" {
			return n.smtp
		}
	}
	for _, n := range nodes {
		if n != nil {
			return n.smtp
		}
	}
	return "127.0.0.1:1"
}

// checkAcked asserts that every acknowledged message is on both nodes, once,
// with the same UIDs and UIDVALIDITY.
func (p *foPair) checkAcked(t *testing.T, l *load, active int) {
	t.Helper()
	pn := &pairNodes{active: p.nodes[active], passive: p.nodes[1-active]}
	sameDigest(t, pn.active, pn.passive)
	checkAcked(t, pn, l)
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	_, udp, err := harness.FreeLoopback(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	return udp[0]
}

// linkCert makes one certificate for 127.0.0.1, installs it as both
// nodes' certificate, and returns its path for --link-ca: each node then
// trusts the other's link.
func linkCert(t *testing.T, dirs []string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "twinbox test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(d, "tls"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "tls", "cert.pem"), certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "tls", "key.pem"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca := filepath.Join(t.TempDir(), "link-ca.pem")
	if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// runLoad starts SMTP load against the active (following role changes)
// and returns a function that stops it and waits.
func (p *foPair) runLoad(t *testing.T, l *load, sessions int) (stop func()) {
	t.Helper()
	stopc := make(chan struct{})
	done := make(chan struct{})
	go func() {
		l.run(t, p.activeSMTP, sessions, 1<<30, stopc)
		close(done)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(stopc)
			<-done
		})
	}
	t.Cleanup(stop) // before the nodes stop, if the test failed
	return stop
}

// TestFailoverActiveKilled20Times: under SMTP load, the active is killed
// with SIGKILL twenty times in a row; each time the passive fences it (our
// fence agent, through the fence-agents protocol) and promotes, and the
// killed node is restarted as the new passive. In the end every
// acknowledged message is on both nodes, once, with the same UIDs and
// UIDVALIDITY.
func TestFailoverActiveKilled20Times(t *testing.T) {
	p := newFOPair(t, nil)
	p.startBoth(t)
	var l load
	stop := p.runLoad(t, &l, 4)
	active := p.waitActive(t, -1)
	rounds := 20
	if testing.Short() {
		rounds = 3
	}
	var epochs []uint64
	for r := 0; r < rounds; r++ {
		before := ackedCount(&l)
		p.nodes[active].waitFor(t, 30*time.Second, "deliveries before the kill", func() bool { return ackedCount(&l) >= before+20 })
		killed := active
		p.nodes[killed].kill(t)
		active = p.waitActiveAlone(t, killed, true)
		s, _ := p.nodes[active].foStatus()
		epochs = append(epochs, s.Failover.Epoch)
		if !strings.Contains(s.Failover.Fencing, "confirmed off") && !s.Failover.Degraded {
			t.Errorf("round %d: %s became active without fencing the peer: %+v", r, foNames[active], s.Failover)
		}
		after := ackedCount(&l)
		p.nodes[active].waitFor(t, 30*time.Second, "deliveries on the new active", func() bool { return ackedCount(&l) >= after+10 })
		p.start(t, killed)
		p.waitActive(t, killed) // the old one caught up as the passive
	}
	stop()
	t.Logf("%d rounds, epochs %v: %d acknowledged, %d temporary failures, %d connection errors",
		rounds, epochs, ackedCount(&l), l.temporary.Load(), l.other.Load())
	if !slices.IsSorted(epochs) || len(slices.Compact(slices.Clone(epochs))) != len(epochs) {
		t.Errorf("epochs did not rise with every promotion: %v", epochs)
	}
	p.checkAcked(t, &l, active)
}

// TestFailoverStaleActiveStepsDown: the active is paused with SIGSTOP
// until the passive has taken over, then resumed. Its fence agent lied
// (it said "off" without doing anything), so both are running: the
// resumed node must refuse the writes it cannot keep, step down, and end
// up a passive of the new active; no client got an OK for a write the new
// active does not have.
func TestFailoverStaleActiveStepsDown(t *testing.T) {
	lying := `#!/bin/sh
action=
while read -r line; do case "$line" in action=*) action="${line#action=}";; esac; done
[ "$action" = status ] && exit 2
exit 0
`
	p := newFOPair(t, func(i int) string { return writeScript(t, "lying-fence.sh", lying) })
	p.startBoth(t)
	var l load
	stop := p.runLoad(t, &l, 4)
	old := p.waitActive(t, -1)
	p.nodes[old].waitFor(t, 30*time.Second, "deliveries", func() bool { return ackedCount(&l) >= 50 })
	if err := syscall.Kill(p.nodes[old].PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(p.nodes[old].PID(), syscall.SIGCONT)
		}
	}()
	nu := p.waitActiveAlone(t, old, true)
	p.nodes[nu].waitFor(t, 30*time.Second, "deliveries on the new active", func() bool {
		s, _ := p.nodes[nu].foStatus()
		return s.Replication.LogLast > 0 && ackedCount(&l) > 60
	})
	// One more client goes to the stale node directly, as one whose DNS
	// still points there would.
	staleAcked := make(chan error, 1)
	go func() {
		id := fmt.Sprintf("stale.%d@load.test", time.Now().UnixNano())
		raw := fmt.Sprintf("From: load@example.org\r\nTo: alice@localhost\r\nSubject: stale\r\nMessage-ID: <%s>\r\n\r\nx\r\n", id)
		c, err := gosmtp.Dial(p.nodes[old].smtp)
		if err != nil {
			staleAcked <- err
			return
		}
		defer c.Close()
		err = c.SendMail("load@example.org", []string{"alice@localhost"}, strings.NewReader(raw))
		if err == nil {
			l.mu.Lock()
			l.acked[id] = true // must then be on the new active: checked below
			l.mu.Unlock()
		}
		staleAcked <- err
	}()
	if err := syscall.Kill(p.nodes[old].PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	p.nodes[old].waitFor(t, 60*time.Second, "the stale active to step down", func() bool {
		s, ok := p.nodes[old].foStatus()
		return ok && s.Role == "passive"
	})
	t.Logf("the stale node's direct client: %v", <-staleAcked)
	p.waitActive(t, old)
	stop()
	t.Logf("%d acknowledged, %d temporary failures, %d connection errors", ackedCount(&l), l.temporary.Load(), l.other.Load())
	p.checkAcked(t, &l, nu)
	if s, _ := p.nodes[nu].foStatus(); s.Role != "active" {
		t.Errorf("the new active is %s after the stale one resumed", s.Role)
	}
}

// TestFailoverFenceFailsOrHangs: the active dies, but the passive's fence
// agent fails (exit 1) or hangs past fence_timeout: the passive does not
// promote, and its status says why.
func TestFailoverFenceFailsOrHangs(t *testing.T) {
	for _, tc := range []struct{ name, script, want string }{
		{"fails", "#!/bin/sh\necho 'ipmi: connection refused' >&2\nexit 1\n", "connection refused"},
		{"hangs", "#!/bin/sh\nsleep 1000\n", "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok := writeScript(t, "fence-ok.sh", fmt.Sprintf("#!/bin/sh\nexec %q fence-agent process\n", buildTwinbox(t)))
			bad := writeScript(t, "fence-bad.sh", tc.script)
			p := newFOPair(t, func(i int) string { return map[int]string{0: ok, 1: bad}[i] })
			p.startPreferred(t)
			p.nodes[0].kill(t)
			b := p.nodes[1]
			var s admin.Status
			b.waitFor(t, 30*time.Second, "the passive to report two failed fencing attempts", func() bool {
				s, _ = b.foStatus()
				return strings.Contains(s.Failover.Reason, "fencing failed") && strings.Contains(s.Failover.Reason, tc.want) &&
					s.Failover.Peer == "dead"
			})
			if s.Role != "passive" {
				t.Fatalf("promoted without a confirmed fence: %+v", s)
			}
			if err := sendOne(b.smtp); err == nil {
				t.Error("the unfenced passive acknowledged a delivery")
			}
			s, _ = b.foStatus()
			if s.Role != "passive" {
				t.Fatalf("promoted without a confirmed fence: %+v", s)
			}
			t.Logf("status: %s", s.Failover.Reason)
		})
	}
}

func sendOne(addr string) error {
	return sendRaw(addr, "From: x@example.org\r\nTo: alice@localhost\r\nSubject: one\r\n\r\nx\r\n")
}

// sendRaw delivers raw to alice over SMTP at addr.
func sendRaw(addr, raw string) error {
	c, err := gosmtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.SendMail("x@example.org", []string{"alice@localhost"}, strings.NewReader(raw))
}

// TestFailoverHeartbeatPaths: heartbeats signed with another key are
// ignored (and counted), however alarming their content; and losing one
// heartbeat path alone (node b sends its UDP heartbeats nowhere) causes no
// failover.
func TestFailoverHeartbeatPaths(t *testing.T) {
	p := newFOPair(t, nil)
	// b's UDP heartbeats go to a port nobody reads: a hears b on NATS only.
	deaf := freeUDPPort(t)
	for i := range 2 {
		addUserOffline(t, p.bin, p.data[i], "alice", "alice-pw")
	}
	p.start(t, 0)
	saved := p.hb[0]
	p.hb[0] = deaf
	p.start(t, 1)
	p.hb[0] = saved
	a := p.waitActive(t, -1)
	if a != 0 {
		t.Fatalf("node %s active, want a", foNames[a])
	}
	// A forged heartbeat: b claiming to be active at a later epoch, signed
	// with the wrong key, sent to a's UDP port.
	msg, err := heartbeat.Seal([]byte("not-the-shared-key-0000"), &heartbeat.Message{Node: "b", Boot: 1, Counter: 1,
		Sent: time.Now(), Payload: []byte(`{"node":"b","role":2,"epoch":99}`)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", p.hb[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	na := p.nodes[0]
	var s admin.Status
	na.waitFor(t, 30*time.Second, "a to count the forged heartbeat as refused", func() bool {
		conn.Write(msg)
		s, _ = na.foStatus()
		return s.Failover.Paths["udp"].Rejected["signature"] > 0
	})
	// Many deadtimes of NATS-only heartbeats later, nothing has changed.
	start := s.Failover.Paths["nats"].Received
	na.waitFor(t, 30*time.Second, "a to hear b on NATS for 30 keepalives", func() bool {
		s, _ = na.foStatus()
		return s.Failover.Paths["nats"].Received >= start+30
	})
	if s.Role != "active" || s.Failover.Epoch == 99 || s.Failover.Peer == "dead" || s.Failover.Paths["udp"].Received != 0 {
		t.Errorf("a after a forged heartbeat and 3s without UDP from b: %+v", s)
	}
	sb, _ := p.nodes[1].foStatus()
	if sb.Role != "passive" || sb.Failover.Fencing != "none" {
		t.Errorf("b: %+v", sb)
	}
}

// TestSwitchoverUnderLoad: `twinbox switchover` on the active under SMTP
// load hands over to the passive; nothing acknowledged is lost, and the
// longest pause between acknowledgements is logged (docs/benchmarks.md
// records it).
func TestSwitchoverUnderLoad(t *testing.T) {
	p := newFOPair(t, nil)
	p.startBoth(t)
	var l load
	l.times = true
	stop := p.runLoad(t, &l, 4)
	old := p.waitActive(t, -1)
	p.nodes[old].waitFor(t, 30*time.Second, "deliveries", func() bool { return ackedCount(&l) >= 100 })
	out, stderr, code := runTwinbox(t, p.bin, harness.Env(), "switchover", "--admin", p.nodes[old].adm)
	if code != 0 {
		t.Fatalf("twinbox switchover: exit %d: %s%s", code, out, stderr)
	}
	t0 := time.Now()
	nu := p.waitActive(t, old)
	took := time.Since(t0)
	after := ackedCount(&l)
	p.nodes[nu].waitFor(t, 30*time.Second, "deliveries on the new active", func() bool { return ackedCount(&l) >= after+100 })
	stop()
	gap := l.longestGap()
	t.Logf("switchover: new active reported in %v; longest pause between acknowledgements %v; %d acknowledged, %d temporary failures, %d connection errors",
		took.Round(time.Millisecond), gap.Round(time.Millisecond), ackedCount(&l), l.temporary.Load(), l.other.Load())
	p.checkAcked(t, &l, nu)
	// The old active follows as a passive, and takes no writes.
	if s, _ := p.nodes[old].foStatus(); s.Role != "passive" {
		t.Errorf("the old active is %s after the switchover", s.Role)
	}
}

// TestOperatorRoleCommands: the operator's commands through the CLI, as
// an operator runs them. demote hands the role over and keeps the node
// standby; promote takes it back (the active hands over on request);
// promote --force on the passive makes it active at once, and the old
// active steps down on seeing the later epoch; fence confirm is refused
// clearly without a manual fence device. (auto_failback is in the state
// machine's scenarios: testdata/switchover.txt.)
func TestOperatorRoleCommands(t *testing.T) {
	p := newFOPair(t, nil)
	p.startPreferred(t)
	cli := func(i int, args ...string) (string, int) {
		t.Helper()
		out, stderr, code := runTwinbox(t, p.bin, harness.Env(), append(args, "--admin", p.nodes[i].adm)...)
		return out + stderr, code
	}
	waitRole := func(i int, role string) admin.Status {
		t.Helper()
		var s admin.Status
		p.nodes[i].waitFor(t, 30*time.Second, fmt.Sprintf("node %s to be %s", foNames[i], role), func() bool {
			s, _ = p.nodes[i].foStatus()
			return s.Role == role && s.Failover.Role == role && s.Failover.Busy == ""
		})
		return s
	}

	// demote: a hands over to b and stays standby.
	if out, code := cli(0, "demote"); code != 0 {
		t.Fatalf("twinbox demote: exit %d: %s", code, out)
	}
	waitRole(1, "active")
	if s := waitRole(0, "passive"); !s.Failover.Standby {
		t.Errorf("a after demote is not standby: %+v", s.Failover)
	}
	// promote: a leaves standby and asks b to hand over.
	if out, code := cli(0, "promote"); code != 0 {
		t.Fatalf("twinbox promote: exit %d: %s", code, out)
	}
	epoch := waitRole(0, "active").Failover.Epoch
	waitRole(1, "passive")
	if out, code := cli(0, "promote"); code == 0 || !strings.Contains(out, "already active") {
		t.Errorf("twinbox promote on the active: exit %d: %s", code, out)
	}

	// promote --force on the passive: active at once, at a later epoch;
	// a hears it and steps down.
	if out, code := cli(1, "promote", "--force"); code != 0 {
		t.Fatalf("twinbox promote --force: exit %d: %s", code, out)
	}
	if s := waitRole(1, "active"); s.Failover.Epoch <= epoch {
		t.Errorf("forced promotion at epoch %d, not above %d", s.Failover.Epoch, epoch)
	}
	waitRole(0, "passive")
	p.waitActive(t, 0) // b, with a caught up behind it

	// fence confirm without a manual device: a clear refusal.
	if out, code := cli(1, "fence", "confirm"); code == 0 || !strings.Contains(out, "not manual") {
		t.Errorf("twinbox fence confirm on a node with a process fence agent: exit %d: %s", code, out)
	}
}
