package fence_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/fence"
)

func newProcess(t *testing.T, pidFile string) *fence.Process {
	p, err := fence.NewProcess(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProcessFenceKillsThePeer(t *testing.T) {
	cmd, pidFile := startPeer(t)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := fence.Fence(testContext(t), newProcess(t, pidFile), time.Minute); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	err := <-exited
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the peer ended with %v, want SIGKILL", err)
	}
}

func TestProcessZombieIsOff(t *testing.T) {
	// Not reaped: Status must see the zombie as off.
	cmd, pidFile := startPeer(t)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p := newProcess(t, pidFile)
	if err := fence.Fence(testContext(t), p, time.Minute); err != nil {
		t.Fatalf("Fence of a zombie: %v", err)
	}
}

func TestProcessAlreadyGone(t *testing.T) {
	cmd, pidFile := startPeer(t)
	cmd.Process.Kill()
	cmd.Wait()
	ctx := testContext(t)
	p := newProcess(t, pidFile)
	if err := p.Off(ctx); err != nil {
		t.Fatalf("Off of a process that is gone: %v", err)
	}
	if power, err := p.Status(ctx); power != fence.Off || err != nil {
		t.Fatalf("Status of a process that is gone = %v, %v", power, err)
	}
}

func TestProcessBadPIDFile(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	for _, c := range []struct{ name, content, want string }{
		{"missing", "", "cannot tell which process"},
		{"text", "node-b\n", "not a PID"},
		{"empty", "", "not a PID"},
		{"zero", "0", "not a peer's PID"},
		{"init", "1\n", "not a peer's PID"},
		{"negative", "-1", "not a peer's PID"},
		{"self", strconv.Itoa(os.Getpid()), "own PID"},
	} {
		pidFile := filepath.Join(dir, c.name+".pid")
		if c.name != "missing" {
			if err := os.WriteFile(pidFile, []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p := newProcess(t, pidFile)
		if err := p.Off(ctx); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), pidFile) {
			t.Errorf("%s: Off: %v; want an error naming the file and saying %q", c.name, err, c.want)
		}
		if power, err := p.Status(ctx); err == nil || power != fence.Unknown {
			t.Errorf("%s: Status = %v, %v; want an error", c.name, power, err)
		}
		if err := fence.Fence(ctx, p, time.Minute); err == nil {
			t.Errorf("%s: Fence succeeded", c.name)
		}
	}
}

func TestProcessFromOptions(t *testing.T) {
	if _, err := fence.NewProcessFromOptions(map[string]string{"nodename": "node-b"}); err == nil || !strings.Contains(err.Error(), "port=") {
		t.Errorf("no port: %v", err)
	}
	_, pidFile := startPeer(t)
	d, err := fence.NewProcessFromOptions(map[string]string{"plug": pidFile})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := d.Status(testContext(t)); p != fence.On || err != nil {
		t.Errorf("Status through plug= = %v, %v", p, err)
	}
	if _, err := fence.NewProcess(""); err == nil {
		t.Error("NewProcess accepted no pid file")
	}
}
