package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"
)

// Bounds of the harness's waits. Each is the most a healthy node needs
// many times over; a wait that runs out fails the test.
const (
	startTimeout = 30 * time.Second // serve prints its addresses and answers /healthz
	userTimeout  = 10 * time.Second // a new user shows in /status
	stopTimeout  = 20 * time.Second // SIGTERM to exit
	pollEvery    = 20 * time.Millisecond
)

// node is one `twinbox serve` process on a temporary data directory, every
// listener on a port the kernel chose.
type node struct {
	bin, data                           string
	imap, imaps, smtp, smtps, lmtp, adm string // host:port
	nats                                string // host:port, on a node of a pair
	proc                                *os.Process
	users                               map[string]string
	out                                 *syncBuffer // stdout and stderr
	exited                              chan struct{}
	killed                              bool  // by the test, with SIGKILL
	exitErr                             error // set before exited closes
}

// startNode runs `bin serve` and returns once /healthz answers 200. On
// cleanup it sends SIGTERM and fails the test unless the process exits 0
// in time; the node's output goes to t.Log when the test failed.
func startNode(t *testing.T, bin string) *node {
	t.Helper()
	return startNodeIn(t, bin, t.TempDir(), nil)
}

// startNodeIn runs `bin serve` on the data directory data with extra
// flags (a pair's role and link), as startNode does.
func startNodeIn(t *testing.T, bin, data string, extra []string, env ...string) *node {
	t.Helper()
	n := &node{bin: bin, data: data, users: map[string]string{}, out: &syncBuffer{}, exited: make(chan struct{})}
	args := append([]string{"serve", "--data", n.data,
		"--imap-addr", "127.0.0.1:0", "--imaps-addr", "127.0.0.1:0",
		"--smtp-addr", "127.0.0.1:0", "--smtps-addr", "127.0.0.1:0",
		"--lmtp-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(hermeticEnv(), env...)
	paired := slices.Contains(extra, "--role")
	cmd.Stderr = n.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.proc = cmd.Process

	// The address lines go to addrs; everything, addresses included, goes
	// to the log. Wait runs once stdout is at its end, as StdoutPipe asks.
	addrs := make(chan map[string]string, 1)
	go func() {
		seen := map[string]string{}
		sent := false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(n.out, line)
			if f := strings.Fields(line); !sent && len(f) >= 2 && strings.HasPrefix(line, "  ") {
				// Once: a node that restarts in place (a resync) prints
				// its addresses again, the same ones.
				seen[f[0]] = f[1]
				if want := map[bool]int{false: 6, true: 7}[paired]; len(seen) == want {
					addrs <- seen
					sent = true
				}
			}
		}
		io.Copy(io.Discard, stdout)
		n.exitErr = cmd.Wait()
		close(n.exited)
	}()

	t.Cleanup(func() {
		n.stop(t, cmd.Process)
		if t.Failed() {
			t.Logf("twinbox serve output:\n%s", n.out.String())
		}
	})

	select {
	case a := <-addrs:
		n.imap, n.imaps, n.smtp, n.smtps, n.lmtp, n.adm = a["imap"], a["imaps"], a["smtp"], a["smtps"], a["lmtp"], a["admin"]
		n.nats = a["nats"]
	case <-n.exited:
		t.Fatalf("twinbox serve exited before serving: %v", n.exitErr)
	case <-time.After(startTimeout):
		t.Fatalf("twinbox serve printed no addresses in %v", startTimeout)
	}
	for name, a := range map[string]string{"imap": n.imap, "imaps": n.imaps, "smtp": n.smtp, "smtps": n.smtps, "lmtp": n.lmtp, "admin": n.adm} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			t.Fatalf("twinbox serve: %s address %q: %v", name, a, err)
		}
	}
	n.waitFor(t, startTimeout, "/healthz to answer 200", func() bool {
		code, _ := n.get("/healthz")
		return code == http.StatusOK
	})
	return n
}

// stop sends SIGTERM and waits for a clean exit; a node that does not
// exit in time is killed and fails the test.
func (n *node) stop(t *testing.T, p *os.Process) {
	select {
	case <-n.exited:
		if !n.killed {
			t.Errorf("twinbox serve exited before the test ended: %v", n.exitErr)
		}
		return
	default:
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	select {
	case <-n.exited:
		if n.exitErr != nil {
			t.Errorf("twinbox serve after SIGTERM: %v, want exit 0", n.exitErr)
		}
	case <-time.After(stopTimeout):
		p.Kill()
		<-n.exited
		t.Errorf("twinbox serve did not exit within %v of SIGTERM", stopTimeout)
	}
}

// kill stops the node with SIGKILL, as a crash would, and waits for it.
func (n *node) kill(t *testing.T) {
	t.Helper()
	n.killed = true
	if err := n.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	<-n.exited
}

// hermeticEnv is the test's environment without TWINBOX_* settings, so a
// developer's own configuration does not leak into the node.
func hermeticEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TWINBOX_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitFor polls cond until it holds, failing the test after timeout or
// when the node exits.
func (n *node) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		select {
		case <-n.exited:
			t.Fatalf("twinbox serve exited (%v) while waiting for %s", n.exitErr, what)
		case <-tick.C:
		}
	}
}

// get fetches a path of the admin server; code 0 means no answer.
func (n *node) get(path string) (int, []byte) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + n.adm + path)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil
	}
	return resp.StatusCode, body
}

// metrics reads /metrics: the value of every sample without labels whose
// name starts with twinbox_.
func (n *node) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	code, body := n.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics on %s: %d", n.adm, code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "twinbox_") || strings.Contains(name, "{") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[name] = v
	}
	return out
}

// nodeStatus is the part of /status the tests read.
type nodeStatus struct {
	Users int `json:"users"`
}

// addUser runs `twinbox user add` as an operator does and waits until the
// running node counts the user.
func (n *node) addUser(t *testing.T, name, password string) {
	t.Helper()
	cmd := exec.Command(n.bin, "user", "add", name, "--data", n.data)
	cmd.Env = hermeticEnv()
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("twinbox user add %s: %v\n%s", name, err, out)
	}
	n.users[name] = password
	want := len(n.users)
	n.waitFor(t, userTimeout, fmt.Sprintf("/status to count %d users", want), func() bool {
		code, body := n.get("/status")
		var st nodeStatus
		return code == http.StatusOK && json.Unmarshal(body, &st) == nil && st.Users == want
	})
}

// certFile is the self-signed certificate the node made on start.
func (n *node) certFile() string { return filepath.Join(n.data, "tls", "cert.pem") }

// tlsConfig trusts the node's certificate and nothing else.
func (n *node) tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(n.certFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", n.certFile())
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// login opens an IMAP session as user over plain text (allowed on
// loopback), closed on cleanup.
func (n *node) login(t *testing.T, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(n.imap, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, n.users[user]).Wait(); err != nil {
		t.Fatalf("IMAP login %s: %v", user, err)
	}
	return c
}

// send delivers raw over SMTP with go-smtp's client.
func (n *node) send(t *testing.T, raw []byte, from string, to ...string) {
	t.Helper()
	c, err := gosmtp.Dial(n.smtp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail(from, to, bytes.NewReader(raw)); err != nil {
		t.Fatalf("SMTP to %v: %v", to, err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("SMTP QUIT: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the process's writers and the
// test's reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// need returns the path of an outside program a test drives. A missing
// program skips the test on a developer's machine and fails it under CI,
// where .ci/run installs every one.
func need(t *testing.T, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI is set: .ci/run installs it (%v)", prog, err)
	}
	t.Skipf("%s is not installed (install it to run this test; under CI=1 this fails)", prog)
	return ""
}

// needPerl checks that perl can load module, which an outside program
// needs for part of a test (swaks's TLS needs Net::SSLeay, which Debian
// only recommends); missing, it skips or fails as need does.
func needPerl(t *testing.T, module string) {
	t.Helper()
	err := exec.Command(need(t, "perl"), "-M"+module, "-e", "1").Run()
	if err == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("perl module %s is missing, and CI is set: .ci/run installs it (%v)", module, err)
	}
	t.Skipf("perl module %s is missing (install it to run this test; under CI=1 this fails)", module)
}

// result is what an outside program did.
type result struct {
	stdout, stderr []byte
	code           int
}

// run runs an outside program with stdin, killing it after timeout, and
// returns its output and exit code. It fails the test only when the
// program cannot be run at all or runs out of time.
func run(t *testing.T, timeout time.Duration, env []string, stdin []byte, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(hermeticEnv(), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: no exit within %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), timeout, &out, &errOut)
	case err == nil:
		return result{out.Bytes(), errOut.Bytes(), 0}
	case errors.As(err, &ee):
		return result{out.Bytes(), errOut.Bytes(), ee.ExitCode()}
	}
	t.Fatalf("%s: %v", name, err)
	return result{}
}
