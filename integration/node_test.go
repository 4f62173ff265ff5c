package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/harness"
)

// Bounds of the tests' waits. Each is the most a healthy node needs many
// times over; a wait that runs out fails the test.
const (
	userTimeout = 10 * time.Second // a new user shows in /status
)

// TestMain removes the twinbox binary the tests built (once for the
// package: harness.Binary).
func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}

// buildTwinbox is the twinbox binary the nodes run, built once.
func buildTwinbox(t *testing.T) string { return harness.MustBinary(t) }

// node is one `twinbox serve` process on a temporary data directory,
// every listener on a port the kernel chose (harness.Node), with the
// users the test added.
type node struct {
	*harness.Node
	bin, data                      string
	imap, imaps, smtp, smtps, lmtp string // host:port
	adm                            string // the admin socket's path
	nats                           string // host:port, on a node of a pair
	users                          map[string]string
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
	hn := &harness.Node{Name: filepath.Base(data), Bin: bin, Data: data, LogPath: filepath.Join(t.TempDir(), "serve.log"),
		Env: append(harness.Env(), env...)}
	hn.Args = append([]string{"serve", "--data", data,
		"--imap-addr", "127.0.0.1:0", "--imaps-addr", "127.0.0.1:0",
		"--smtp-addr", "127.0.0.1:0", "--smtps-addr", "127.0.0.1:0",
		"--lmtp-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}, extra...)
	harness.StartNode(t, hn)
	a := hn.Addrs
	return &node{Node: hn, bin: bin, data: data, users: map[string]string{},
		imap: a["imap"], imaps: a["imaps"], smtp: a["smtp"], smtps: a["smtps"], lmtp: a["lmtp"], adm: hn.AdminSocket(), nats: a["nats"]}
}

// stop sends SIGTERM and waits for a clean exit.
func (n *node) stop(t *testing.T) {
	t.Helper()
	if err := n.Stop(); err != nil {
		t.Error(err)
	}
}

// kill stops the node with SIGKILL, as a crash would, and waits for it.
func (n *node) kill(t *testing.T) {
	t.Helper()
	n.Kill()
}

// waitFor polls cond until it holds, failing the test after timeout or
// when the node exits.
func (n *node) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := n.WaitFor(t.Context(), timeout, what, func() (bool, error) { return cond(), nil }); err != nil {
		t.Fatal(err)
	}
}

// get fetches a path of the admin server; code 0 means no answer.
func (n *node) get(path string) (int, []byte) {
	code, body, err := n.Get(context.Background(), path)
	if err != nil {
		return 0, nil
	}
	return code, body
}

// metrics reads /metrics: the value of every sample without labels whose
// name starts with twinbox_.
func (n *node) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	m, err := n.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// addUser runs `twinbox user add` as an operator does and waits until the
// running node counts the user.
func (n *node) addUser(t *testing.T, name, password string) {
	t.Helper()
	if err := n.AddUser(t.Context(), name, password, 0); err != nil {
		t.Fatal(err)
	}
	n.users[name] = password
	want := len(n.users)
	n.waitFor(t, userTimeout, fmt.Sprintf("/status to count %d users", want), func() bool {
		st, err := n.Status(t.Context())
		return err == nil && st.Users == want
	})
}

// tlsConfig trusts the node's certificate and nothing else.
func (n *node) tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(n.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", n.CertFile())
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
	cmd.Env = append(harness.Env(), env...)
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
