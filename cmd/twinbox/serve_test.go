package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/admin"
)

// startServe runs `twinbox serve` in-process on ports the kernel picks and
// returns the addresses it printed.
func startServe(t *testing.T, extra ...string) (map[string]string, context.CancelFunc, <-chan error) {
	t.Helper()
	data := t.TempDir()
	args := []string{"serve", "--data", data, "--log-level", "warn"}
	for _, k := range []string{"imap-addr", "imaps-addr", "smtp-addr", "smtps-addr", "lmtp-addr", "metrics-addr"} {
		args = append(args, "--"+k, "127.0.0.1:0")
	}
	args = append(args, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw, io.Discard)
		pw.Close()
		done <- err
	}()
	addrs := map[string]string{}
	sc := bufio.NewScanner(pr)
	ready := false
	for !ready && sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && strings.HasPrefix(sc.Text(), "  ") {
			addrs[f[0]] = f[1]
		}
		ready = strings.HasPrefix(sc.Text(), "twinbox: ready")
	}
	go io.Copy(io.Discard, pr)
	if !ready {
		cancel()
		t.Fatalf("serve printed %v, then: %v", addrs, <-done)
	}
	t.Cleanup(cancel)
	return addrs, cancel, done
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

func TestServeAdminAndShutdown(t *testing.T) {
	addrs, stop, done := startServe(t)
	metricsURL := "http://" + addrs["metrics"]
	if body := get(t, metricsURL+"/healthz"); body != "ok\n" {
		t.Errorf("/healthz: %q", body)
	}
	var st admin.Status
	if err := admin.NewClient(addrs["admin-socket"], "", 10*time.Second).GetJSON(t.Context(), "/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.Role != "standalone" || st.Listeners["imap"] != addrs["imap"] {
		t.Errorf("/status: %+v", st)
	}

	c, err := gosmtp.Dial(addrs["smtp"])
	if err != nil {
		t.Fatal(err)
	}
	// No user yet: refused.
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("alice@localhost", nil); err == nil {
		t.Errorf("delivery to a user not in the passwd-file accepted")
	}
	c.Close()

	// A failed login: counted, and a command latency observed.
	ic0, err := imapclient.DialInsecure(addrs["imap"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ic0.Login("nobody", "x").Wait(); err == nil {
		t.Error("login of an unknown user succeeded")
	}
	ic0.Close()
	metrics := get(t, metricsURL+"/metrics")
	for _, name := range []string{"twinbox_deliveries_total", "twinbox_imap_sessions", "twinbox_store_disk_bytes",
		"twinbox_cache_hits_total", "twinbox_login_failures_total", "twinbox_login_throttled_total", "twinbox_login_abandoned_total", "twinbox_command_duration_seconds", "go_goroutines"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// An IMAP session open at shutdown is told BYE, and serve returns.
	ic, err := imapclient.DialInsecure(addrs["imap"], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	select {
	case <-ic.Closed():
	case <-time.After(10 * time.Second):
		t.Error("IMAP session still open after shutdown")
	}
}

// TestServeLMTPSocket: LMTP on a unix socket, as Postfix's lmtp:unix: uses.
func TestServeLMTPSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "lmtp.sock")
	_, stop, done := startServe(t, "--lmtp-socket", sock)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := gosmtp.NewClientLMTP(conn)
	if err := c.Hello("mta.test"); err != nil {
		t.Fatalf("LHLO over the socket: %v", err)
	}
	c.Close()
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--imap-addr", "nonsense"},
		{"serve", "--max-message-size", "lots"},
		{"serve", "--log-level", "loud"},
		{"serve", "--tls-cert", "/x.pem"},
		{"serve", "extra"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// TestPrintStatusOfAPair: `twinbox status` tells a person where a pair is
// and what its replication costs, from /status's figures.
func TestPrintStatusOfAPair(t *testing.T) {
	for _, c := range []struct {
		st   admin.Status
		want []string
	}{
		{admin.Status{Node: "a", Role: "active", Applied: 12, Replication: &admin.Replication{Epoch: 2, LogFirst: 1, LogLast: 12,
			PeerPosition: 10, Lag: 2, PeerSeen: "5ms ago", Mode: "sync", Appends: 4, AppendSeconds: 0.004, PeerWaits: 8, PeerWaitSeconds: 0.016}},
			[]string{"log         epoch 2, entries 1..12", "passive     at 10 (lag 2 entries, last heard 5ms ago), sync replication",
				"log writes  4 appends, 1.00 ms each on average", "confirms    8 waits for the passive, 2.00 ms each on average"}},
		{admin.Status{Node: "b", Role: "passive", Applied: 12, Replication: &admin.Replication{Epoch: 2, LogFirst: 1, LogLast: 12,
			PeerPosition: 12, Takes: 3, TakeSeconds: 0.0045, Error: "connection lost"}},
			[]string{"following   durable up to 12", "batches     3 made durable here, 1.50 ms each on average", "problem     connection lost"}},
	} {
		var b strings.Builder
		printStatus(&b, &c.st)
		for _, w := range c.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s's status lacks %q:\n%s", c.st.Role, w, b.String())
			}
		}
		if c.st.Role == "passive" && strings.Contains(b.String(), "log writes") {
			t.Errorf("the passive's status speaks of log writes:\n%s", b.String())
		}
	}
}

// TestExampleConfig: twinbox.example.toml loads as it is, gives the
// built-in defaults it claims to show, and names every setting, so that
// an operator reading it sees them all.
func TestExampleConfig(t *testing.T) {
	const example = "../../twinbox.example.toml"
	raw, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	c, err := loadConfig("serve", []string{"-c", example}, &errOut, "")
	if err != nil {
		t.Fatalf("the example does not load: %v\n%s", err, errOut.String())
	}
	def := defaultConfig()
	if c.Role != def.Role || c.NATSAddr != def.NATSAddr || c.PeerTimeout != def.PeerTimeout || c.LogKeep != def.LogKeep ||
		c.IMAPAddr != def.IMAPAddr || c.CacheSize != def.CacheSize || c.ReplicationMode != def.ReplicationMode {
		t.Errorf("the example's values differ from the defaults it says it shows: %+v", c)
	}
	for _, s := range c.settings() {
		if !regexp.MustCompile(`(?m)^#?\s*` + regexp.QuoteMeta(s.key) + `\s*=`).Match(raw) {
			t.Errorf("twinbox.example.toml does not mention %s (%s)", s.key, s.help)
		}
	}
}

// TestDefaultFenceDelay: the node that is not preferred waits before
// fencing unless fence_delay is set anywhere — in the file, the
// environment or a flag, also a flag beside a file that does not set it.
func TestDefaultFenceDelay(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TWINBOX_LINK_PASSWORD", "secret")
	base := `failover = true
role = "passive"
node_name = "b"
peer_name = "a"
peer_nats = "127.0.0.1:4222"
heartbeat_addr = "127.0.0.1:6940"
peer_heartbeat = "127.0.0.1:6941"
heartbeat_key = "0123456789abcdef0123"
fence_agent = "manual"
`
	file := filepath.Join(dir, "twinbox.toml")
	if err := os.WriteFile(file, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	withDelay := filepath.Join(dir, "delay.toml")
	if err := os.WriteFile(withDelay, []byte(base+"fence_delay = \"0s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want time.Duration
	}{
		{"file without fence_delay", []string{"-c", file}, DefaultPassiveFenceDelay},
		{"file with fence_delay", []string{"-c", withDelay}, 0},
		{"flag beside a file without it", []string{"-c", file, "--fence-delay", "250ms"}, 250 * time.Millisecond},
		{"flag zero beside a file", []string{"-c", file, "--fence-delay", "0s"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errOut bytes.Buffer
			c, err := loadConfig("serve", tc.args, &errOut, "")
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			if c.FenceDelay != tc.want {
				t.Errorf("fence_delay %v, want %v", c.FenceDelay, tc.want)
			}
		})
	}
}
