package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/store"
)

// Bounds of a node's start and stop; each is what a healthy node needs
// many times over, on a busy machine, under the race detector.
const (
	StartTimeout = 60 * time.Second // serve prints its addresses and answers /healthz
	StopTimeout  = 60 * time.Second // SIGTERM to exit (serve's shutdown_timeout is 30 s)
	// RequestTimeout bounds one admin request; a wait polls many.
	RequestTimeout = 10 * time.Second
)

// Node is one `twinbox serve` process. Fill the exported fields (NewNode
// does for the usual case), then Start it; Stop, Kill and Start again as a
// test or a bench needs. Its output goes to LogPath, the address lines
// it prints included.
type Node struct {
	Name, Bin, Data, LogPath string
	// CPUs is a taskset(1) CPU list the node runs on; "" runs anywhere.
	CPUs string
	// Args are serve's arguments; Env the process's environment
	// (Env() and what the node needs).
	Args, Env []string
	// Addrs are the addresses the node printed: imap, imaps, smtp, smtps,
	// lmtp, metrics, admin-socket (a path), nats.
	Addrs map[string]string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error // set before exited closes
	stopped bool  // Stop or Kill was called: the exit was asked for
}

// NewNode returns a node of bin on data directory root/name, every
// listener on a port the kernel picks, with extra serve flags (a pair's
// role and link); its log is root/name.log.
func NewNode(bin, root, name string, extra []string, env ...string) *Node {
	n := &Node{Name: name, Bin: bin, Data: filepath.Join(root, name), LogPath: filepath.Join(root, name+".log"),
		Env: append(Env(), env...)}
	n.Args = append([]string{"serve", "--data", n.Data, "--node-name", name,
		"--imap-addr", "127.0.0.1:0", "--imaps-addr", "127.0.0.1:0",
		"--smtp-addr", "127.0.0.1:0", "--smtps-addr", "127.0.0.1:0",
		"--lmtp-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}, extra...)
	return n
}

// Env is this process's environment without TWINBOX_* settings, so that
// an operator's or developer's own configuration does not reach a node.
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TWINBOX_") {
			env = append(env, kv)
		}
	}
	return env
}

// Start runs the process and returns once it printed its addresses and
// answers /healthz; on failure the process is stopped and the error holds
// the end of its log.
func (n *Node) Start(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(n.LogPath), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(n.Bin, n.Args...)
	if n.CPUs != "" { // taskset execs the node: the process is the node's
		cmd = exec.Command("taskset", append([]string{"--cpu-list", n.CPUs, n.Bin}, n.Args...)...)
	}
	cmd.Env = n.Env
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start the %s node: %w", n.Name, err)
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.stopped, n.exited, n.exitErr = cmd, false, exited, nil
	n.mu.Unlock()
	addrs := make(chan map[string]string, 1)
	go func() {
		seen := map[string]string{}
		sent := false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(line, "  ") {
				seen[f[0]] = f[1]
			}
			if !sent && strings.HasPrefix(line, ReadyLine) {
				addrs <- maps.Clone(seen)
				sent = true
			}
		}
		io.Copy(io.Discard, stdout)
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		close(exited)
	}()
	fail := func(err error) error {
		n.Kill()
		return fmt.Errorf("the %s node did not come up: %w%s", n.Name, err, n.LogTail())
	}
	t := time.NewTimer(StartTimeout)
	defer t.Stop()
	select {
	case a := <-addrs:
		n.mu.Lock()
		n.Addrs = a
		n.mu.Unlock()
	case <-exited:
		n.mu.Lock()
		n.stopped = true // nothing left to stop
		n.mu.Unlock()
		return fmt.Errorf("the %s node exited before serving: %v%s", n.Name, n.ExitErr(), n.LogTail())
	case <-t.C:
		return fail(fmt.Errorf("no addresses printed in %v", StartTimeout))
	case <-ctx.Done():
		return fail(errors.New("interrupted"))
	}
	err = n.WaitFor(ctx, StartTimeout, "/healthz to answer 200", func() (bool, error) {
		code, _, err := n.Get(ctx, "/healthz")
		return code == http.StatusOK, err
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

// ReadyLine begins the line serve prints after its addresses, once it
// serves.
const ReadyLine = "twinbox: ready"

// Stop sends SIGTERM and waits for the process to exit, killing it after
// StopTimeout. A node that exits other than with status 0 is an error.
func (n *Node) Stop() error {
	n.mu.Lock()
	cmd, exited, stopped := n.cmd, n.exited, n.stopped
	n.stopped = true
	n.mu.Unlock()
	if cmd == nil || stopped {
		return nil
	}
	select {
	case <-exited:
		if err := n.ExitErr(); err != nil {
			return fmt.Errorf("the %s node had exited: %v%s", n.Name, err, n.LogTail())
		}
		return nil
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		cmd.Process.Kill()
	}
	t := time.NewTimer(StopTimeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("the %s node did not exit within %v of SIGTERM; killed%s", n.Name, StopTimeout, n.LogTail())
	}
	if err := n.ExitErr(); err != nil {
		return fmt.Errorf("the %s node after SIGTERM: %v, want exit 0%s", n.Name, err, n.LogTail())
	}
	return nil
}

// Kill stops the process with SIGKILL, as a crash would, and waits for it.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.stopped = true
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// KillNow sends SIGKILL and returns at once (a bench times what follows
// the kill); Exited tells when the process is gone.
func (n *Node) KillNow() error {
	n.mu.Lock()
	cmd := n.cmd
	n.stopped = true
	n.mu.Unlock()
	if cmd == nil {
		return errors.New("harness: the node was never started")
	}
	return cmd.Process.Kill()
}

// Restart stops the node (SIGTERM) if it runs and starts it again on the
// same data directory with the same flags.
func (n *Node) Restart(ctx context.Context) error {
	if err := n.Stop(); err != nil {
		return err
	}
	return n.Start(ctx)
}

// ExitErr is the process's exit error once it exited.
func (n *Node) ExitErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exitErr
}

// Exited is closed when the process exits.
func (n *Node) Exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exited
}

// Running reports whether the process was started and has not exited.
func (n *Node) Running() bool {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// PID is the process's id, 0 before Start.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Alive returns an error, with the end of the log, if the node exited
// without being asked to.
func (n *Node) Alive() error {
	n.mu.Lock()
	exited, stopped := n.exited, n.stopped
	n.mu.Unlock()
	if exited == nil {
		return nil
	}
	select {
	case <-exited:
		if !stopped {
			return fmt.Errorf("the %s node exited: %v%s", n.Name, n.ExitErr(), n.LogTail())
		}
	default:
	}
	return nil
}

// WaitFor polls cond until it holds. It gives up after bound, when ctx
// ends, or when this node or one of others exits without being asked to;
// cond's last error is part of the timeout's.
func (n *Node) WaitFor(ctx context.Context, bound time.Duration, what string, cond func() (bool, error), others ...*Node) error {
	var gone error
	err := poll.Until(ctx, bound, what, func() (bool, error) {
		ok, err := cond()
		if ok {
			return true, nil
		}
		for _, m := range append([]*Node{n}, others...) {
			if aerr := m.Alive(); aerr != nil {
				gone = aerr
				return true, nil
			}
		}
		return false, err
	})
	if gone != nil {
		return fmt.Errorf("waiting for %s: %w", what, gone)
	}
	return err
}

// Get fetches a path of the node's admin API, over its unix socket (the
// one it printed, else DATA/admin.sock), as the twinbox CLI does.
func (n *Node) Get(ctx context.Context, path string) (code int, body []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	code, body, err = n.Admin().Do(ctx, "GET", path, 64<<20)
	if err != nil {
		return 0, nil, fmt.Errorf("%s node %s: %w", n.Name, path, err)
	}
	return code, body, nil
}

// AdminSocket is the path of the node's admin socket.
func (n *Node) AdminSocket() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.Addrs["admin-socket"]; p != "" {
		return p
	}
	return filepath.Join(n.Data, admin.SocketName)
}

// Admin is a client of the node's admin API over its socket.
func (n *Node) Admin() *admin.Client {
	return admin.NewClient(n.AdminSocket(), "", RequestTimeout)
}

// GetJSON fetches a path of the admin server and decodes its JSON.
func (n *Node) GetJSON(ctx context.Context, path string, v any) error {
	code, body, err := n.Get(ctx, path)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s node %s: %d: %s", n.Name, path, code, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s node %s: %w", n.Name, path, err)
	}
	return nil
}

// Status reads the node's /status.
func (n *Node) Status(ctx context.Context) (*admin.Status, error) {
	var st admin.Status
	if err := n.GetJSON(ctx, "/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Digest reads the node's /digest.
func (n *Node) Digest(ctx context.Context) (*store.Digest, error) {
	var d store.Digest
	if err := n.GetJSON(ctx, "/digest", &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Metrics reads /metrics: the value of every sample without labels whose
// name starts with twinbox_.
func (n *Node) Metrics(ctx context.Context) (map[string]float64, error) {
	code, body, err := n.Get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s node /metrics: %d", n.Name, code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "twinbox_") || strings.Contains(name, "{") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics line %q: %v", line, err)
		}
		out[name] = v
	}
	return out, nil
}

// AddUser runs `twinbox user add` on the node's data directory, as an
// operator does (cost 0: the default bcrypt cost).
func (n *Node) AddUser(ctx context.Context, name, password string, cost int) error {
	args := []string{"user", "add", name, "--data", n.Data}
	if cost > 0 {
		args = append(args, "--cost", strconv.Itoa(cost))
	}
	cmd := exec.CommandContext(ctx, n.Bin, args...)
	cmd.Env = Env()
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("twinbox user add %s --data %s: %v\n%s", name, n.Data, err, out)
	}
	return nil
}

// CertFile is the self-signed certificate the node made on its first
// start.
func (n *Node) CertFile() string { return filepath.Join(n.Data, "tls", "cert.pem") }

// LogTail returns the last lines of the node's log, to quote in an error.
func (n *Node) LogTail() string {
	const maxBytes, maxLines = 4096, 20
	f, err := os.Open(n.LogPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, fi.Size()-maxBytes)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first is cut
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "\n(its log " + n.LogPath + " is empty)"
	}
	return "\n" + n.Name + " node's log (" + n.LogPath + "), last lines:\n  " + strings.Join(lines, "\n  ")
}

// Log returns the node's whole log.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}
