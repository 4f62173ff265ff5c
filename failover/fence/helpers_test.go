package fence_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/fence"
)

// helperEnv makes the test binary a fence agent (ServeAgent over one of the
// built-in devices) instead of running the tests: see TestMain.
const helperEnv = "TWINBOX_FENCE_TEST_AGENT"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(helperEnv); mode {
	case "":
		os.Exit(m.Run())
	case "process":
		os.Exit(fence.ServeAgent(os.Stdin, os.Stdout, os.Stderr, fence.NewProcessFromOptions))
	case "docker":
		os.Exit(fence.ServeAgent(os.Stdin, os.Stdout, os.Stderr, fence.NewDockerFromOptions))
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: unknown device\n", helperEnv, mode)
		os.Exit(1)
	}
}

// waitLimit bounds every wait for a condition.
const waitLimit = 10 * time.Second

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("still waiting after %v for %s", waitLimit, what)
		}
		<-tick.C
	}
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// quote quotes s for sh.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// writeScript writes an executable sh script in dir and returns its path.
func writeScript(tb testing.TB, dir, name, body string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		tb.Fatal(err)
	}
	return path
}

// newAgent is NewAgent that must succeed.
func newAgent(tb testing.TB, path string, opts map[string]string, timeout time.Duration) *fence.Agent {
	tb.Helper()
	a, err := fence.NewAgent(path, opts, timeout)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// helperAgent returns an Agent that runs this test binary as a fence agent
// over the device named by mode ("process", "docker").
func helperAgent(tb testing.TB, mode string, opts map[string]string) *fence.Agent {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	// The race detector waits a second before a successful exit, unless
	// told not to.
	script := writeScript(tb, tb.TempDir(), "fence_"+mode, fmt.Sprintf(
		"GORACE=\"${GORACE:+$GORACE }atexit_sleep_ms=0\" %s=%s exec %s\n", helperEnv, mode, quote(exe)))
	return newAgent(tb, script, opts, time.Minute)
}

// startPeer starts a process that would run forever (the peer of the
// Process device), writes its pid file and returns both. The process is
// killed and reaped at the end of the test.
func startPeer(tb testing.TB) (*exec.Cmd, string) {
	tb.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	wait := func() { once.Do(func() { cmd.Wait() }) }
	tb.Cleanup(func() {
		cmd.Process.Kill()
		wait()
	})
	pidFile := filepath.Join(tb.TempDir(), "peer.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return cmd, pidFile
}

// gone reports whether the process whose PID is in pidFile has ended (or
// is a zombie), as the Process device sees it.
func gone(tb testing.TB, pidFile string) bool {
	tb.Helper()
	p, err := fence.NewProcess(pidFile)
	if err != nil {
		tb.Fatal(err)
	}
	power, err := p.Status(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return power == fence.Off
}

// dockerd emulates the two (three) endpoints of the Docker Engine API that
// the Docker device uses, on a unix socket.
type dockerd struct {
	mu        sync.Mutex
	running   map[string]bool // by container name; absent: no such container
	broken    map[string]bool // containers whose every request fails with a 500
	comesBack map[string]bool // containers running again as soon as killed
	kills     int
}

// newDockerd starts a fake daemon with the given containers (name →
// running) and returns it with its socket.
func newDockerd(tb testing.TB, containers map[string]bool) (*dockerd, string) {
	tb.Helper()
	d := &dockerd{running: containers, broken: map[string]bool{}, comesBack: map[string]bool{}}
	socket := filepath.Join(tb.TempDir(), "docker.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1.41/containers/{name}/kill", d.kill)
	mux.HandleFunc("POST /v1.41/containers/{name}/start", d.start)
	mux.HandleFunc("GET /v1.41/containers/{name}/json", d.inspect)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	tb.Cleanup(srv.Close)
	return d, socket
}

// breaks makes every request about the container fail with a 500.
func (d *dockerd) breaks(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.broken[name] = true
}

// restarts makes the container run again as soon as it is killed (a
// restart policy at work).
func (d *dockerd) restarts(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.comesBack[name] = true
}

func (d *dockerd) isRunning(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running[name]
}

func (d *dockerd) killCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.kills
}

func apiMessage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// lookup answers for a missing or broken container, and reports whether
// the request may go on.
func (d *dockerd) lookup(w http.ResponseWriter, name string) (running, ok bool) {
	if d.broken[name] {
		apiMessage(w, http.StatusInternalServerError, "driver failed programming external connectivity")
		return false, false
	}
	running, exists := d.running[name]
	if !exists {
		apiMessage(w, http.StatusNotFound, "No such container: "+name)
		return false, false
	}
	return running, true
}

func (d *dockerd) kill(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	name := r.PathValue("name")
	if sig := r.URL.Query().Get("signal"); sig != "KILL" {
		apiMessage(w, http.StatusBadRequest, "test daemon: want signal=KILL, got "+strconv.Quote(sig))
		return
	}
	running, ok := d.lookup(w, name)
	if !ok {
		return
	}
	if !running {
		apiMessage(w, http.StatusConflict, "Cannot kill container: "+name+": Container 4f2a9c is not running")
		return
	}
	d.kills++
	d.running[name] = d.comesBack[name]
	w.WriteHeader(http.StatusNoContent)
}

func (d *dockerd) start(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	name := r.PathValue("name")
	running, ok := d.lookup(w, name)
	if !ok {
		return
	}
	if running {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	d.running[name] = true
	w.WriteHeader(http.StatusNoContent)
}

func (d *dockerd) inspect(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	name := r.PathValue("name")
	running, ok := d.lookup(w, name)
	if !ok {
		return
	}
	status := "exited"
	if running {
		status = "running"
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"Id":   "4f2a9c",
		"Name": "/" + name,
		"State": map[string]any{
			"Status": status, "Running": running, "Paused": false,
			"Restarting": false, "Dead": false, "ExitCode": 137,
		},
	})
}

// agentError returns err as an *AgentError, failing the test if it is not
// one.
func agentError(tb testing.TB, err error) *fence.AgentError {
	tb.Helper()
	var ae *fence.AgentError
	if !errors.As(err, &ae) {
		tb.Fatalf("error %v (%T) is not an *AgentError", err, err)
	}
	return ae
}
