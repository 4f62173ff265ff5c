package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/harness"
)

// TestOCFTester runs Debian's ocf-tester (resource-agents) on the
// resource agent ops/ocf/twinbox, driving a real node: meta-data against
// the OCF DTD, validate-all, probes, start, monitor, notify, promote and
// demote (twice each, and repeated), stop.
func TestOCFTester(t *testing.T) {
	tester := need(t, "ocf-tester")
	need(t, "xmllint")
	bin := buildTwinbox(t)
	// ocf-tester runs meta-data as nobody: the agent's directory must be
	// open to it, which t.TempDir's is not.
	dir, err := os.MkdirTemp("", "ocf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	src, err := os.ReadFile("../ops/ocf/twinbox")
	if err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(dir, "twinbox")
	if err := os.WriteFile(agent, src, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "node.toml")
	os.WriteFile(conf, fmt.Appendf(nil, `data = %q
imap_addr = "127.0.0.1:0"
imaps_addr = "127.0.0.1:0"
smtp_addr = "127.0.0.1:0"
smtps_addr = "127.0.0.1:0"
lmtp_addr = "127.0.0.1:0"
metrics_addr = "127.0.0.1:0"
role = "passive"
external = true
node_name = "a"
nats_addr = %q
peer_nats = %q
link_password = %q
`, filepath.Join(dir, "data"), freePort(t), freePort(t), linkPassword), 0o600)
	log := filepath.Join(dir, "twinbox.log")
	r := run(t, 5*time.Minute, nil, nil, tester, "-n", "twinbox", "-o", "binary="+bin, "-o", "config="+conf,
		"-o", "pidfile="+filepath.Join(dir, "twinbox.pid"), "-o", "log="+log, agent)
	out := string(r.stdout) + string(r.stderr)
	if r.code != 0 || !strings.Contains(out, "passed all tests") {
		nodeLog, _ := os.ReadFile(log)
		t.Fatalf("ocf-tester: exit %d\n%s\nthe node's log:\n%s", r.code, out, nodeLog)
	}
	t.Logf("ocf-tester:\n%s", out)
}

// TestExternalRoles: with external = true the pair's roles change only
// from outside, as Pacemaker changes them through the agent: both nodes
// start passive; promote makes one active; demote there and promote on
// the other is a switchover that loses nothing.
func TestExternalRoles(t *testing.T) {
	bin := buildTwinbox(t)
	var data, nats [2]string
	for i := range 2 {
		data[i] = t.TempDir()
		nats[i] = freePort(t)
		addUserOffline(t, bin, data[i], "alice", "alice-pw")
	}
	ca := linkCert(t, data[:])
	var nodes [2]*node
	for i := range 2 {
		nodes[i] = startNodeIn(t, bin, data[i], []string{"--role", "passive", "--external=true",
			"--node-name", foNames[i], "--nats-addr", nats[i], "--peer-nats", nats[1-i], "--link-ca", ca, "--peer-timeout", "5s"},
			"TWINBOX_LINK_PASSWORD="+linkPassword)
		nodes[i].users["alice"] = "alice-pw"
	}
	role := func(i int) string {
		st, err := nodes[i].Status(t.Context())
		if err != nil {
			return ""
		}
		return st.Role
	}
	cli := func(i int, args ...string) {
		t.Helper()
		r := run(t, time.Minute, nil, nil, bin, append(args, "--admin", nodes[i].adm)...)
		if r.code != 0 {
			t.Fatalf("twinbox %v on %s: exit %d\n%s%s", args, foNames[i], r.code, r.stdout, r.stderr)
		}
	}
	for i := range 2 {
		if r := role(i); r != "passive" {
			t.Fatalf("%s starts %q, want passive (the cluster manager promotes)", foNames[i], r)
		}
	}
	cli(0, "promote")
	nodes[0].waitFor(t, 30*time.Second, "a active and b following it", func() bool {
		return role(0) == "active" && role(1) == "passive"
	})
	nodes[0].send(t, message("before the switch", "one"), "sender@example.org", "alice@localhost")
	cli(0, "demote")
	cli(1, "promote")
	nodes[1].waitFor(t, 30*time.Second, "b active and a following it", func() bool {
		return role(1) == "active" && role(0) == "passive"
	})
	nodes[1].send(t, message("after the switch", "two"), "sender@example.org", "alice@localhost")
	nodes[1].waitFor(t, 30*time.Second, "equal digests", func() bool {
		a, err1 := nodes[0].Digest(t.Context())
		b, err2 := nodes[1].Digest(t.Context())
		return err1 == nil && err2 == nil && a.Applied == b.Applied && a.Store == b.Store
	})
	mb := map[string]int{}
	if err := harness.MessageIDs(t.Context(), nodes[1].imap, "alice", "alice-pw", mb); err != nil {
		t.Fatal(err)
	}
	if mb["before.the.switch@example.org"] != 1 || mb["after.the.switch@example.org"] != 1 {
		t.Fatalf("messages on the new active: %v", mb)
	}
	// Switchover is the manager's: refused here with a reason.
	r := run(t, time.Minute, nil, nil, bin, "switchover", "--admin", nodes[1].adm)
	if r.code == 0 || !strings.Contains(string(r.stderr), "cluster manager") {
		t.Fatalf("switchover with external = true: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
