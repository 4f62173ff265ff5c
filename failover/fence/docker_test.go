package fence_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/fence"
)

func newDocker(t *testing.T, name, socket string) *fence.Docker {
	d, err := fence.NewDocker(name, socket)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDockerKillsAndStarts(t *testing.T) {
	ctx := testContext(t)
	daemon, socket := newDockerd(t, map[string]bool{"node-b": true})
	d := newDocker(t, "node-b", socket)
	if err := fence.Fence(ctx, d, time.Minute); err != nil {
		t.Fatal(err)
	}
	if daemon.isRunning("node-b") || daemon.killCount() != 1 {
		t.Fatalf("after Fence: running %v, %d kills", daemon.isRunning("node-b"), daemon.killCount())
	}
	if err := d.On(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.On(ctx); err != nil {
		t.Fatalf("On of a running container: %v", err)
	}
	if !daemon.isRunning("node-b") {
		t.Fatal("On did not start the container")
	}
}

func TestDockerNotRunningIsAlreadyOff(t *testing.T) {
	// 409 "is not running"
	daemon, socket := newDockerd(t, map[string]bool{"node-b": false})
	if err := newDocker(t, "node-b", socket).Off(testContext(t)); err != nil {
		t.Fatalf("Off of a stopped container: %v", err)
	}
	if daemon.killCount() != 0 {
		t.Fatal("the daemon killed a stopped container")
	}
}

func TestDockerRestartedIsNotConfirmed(t *testing.T) {
	// A container that a restart policy brings straight back is not off.
	daemon, socket := newDockerd(t, map[string]bool{"node-b": true})
	daemon.restarts("node-b")
	err := fence.Fence(testContext(t), newDocker(t, "node-b", socket), shortTimeout)
	if !errors.Is(err, fence.ErrNotConfirmed) {
		t.Fatalf("Fence of a container that comes back: %v; want ErrNotConfirmed", err)
	}
	if daemon.killCount() != 1 {
		t.Errorf("%d kills, want 1", daemon.killCount())
	}
}

func TestDockerErrorsCarryTheAPIMessage(t *testing.T) {
	ctx := testContext(t)
	daemon, socket := newDockerd(t, map[string]bool{"broken": true})
	daemon.breaks("broken")

	ghost := newDocker(t, "ghost", socket)
	err := ghost.Off(ctx)
	for _, want := range []string{"ghost", socket, "kill", "404", "No such container: ghost"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Off of a missing container: %v; want it to say %q", err, want)
		}
	}
	p, err := ghost.Status(ctx)
	if p != fence.Unknown || err == nil || !strings.Contains(err.Error(), "No such container: ghost") {
		t.Errorf("Status of a missing container = %v, %v", p, err)
	}
	if err := ghost.On(ctx); err == nil || !strings.Contains(err.Error(), "No such container: ghost") {
		t.Errorf("On of a missing container: %v", err)
	}

	if err := newDocker(t, "broken", socket).Off(ctx); err == nil || !strings.Contains(err.Error(), "500") ||
		!strings.Contains(err.Error(), "driver failed") {
		t.Errorf("Off with a daemon failing: %v", err)
	}
}

func TestDockerNoDaemon(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "docker.sock")
	d := newDocker(t, "node-b", socket)
	if err := d.Off(testContext(t)); err == nil || !strings.Contains(err.Error(), socket) {
		t.Errorf("Off with no daemon: %v", err)
	}
	if _, err := d.Status(testContext(t)); err == nil {
		t.Error("Status with no daemon succeeded")
	}
}

func TestDockerNames(t *testing.T) {
	for _, bad := range []string{"", "/", "a/b", "../etc", "node b", "-x"} {
		if _, err := fence.NewDocker(bad, ""); err == nil {
			t.Errorf("NewDocker(%q) accepted", bad)
		}
	}
	for _, good := range []string{"node-b", "/twinbox_node-b_1", "4f2a9c0e1d"} {
		if _, err := fence.NewDocker(good, ""); err != nil {
			t.Errorf("NewDocker(%q): %v", good, err)
		}
	}
	if _, err := fence.NewDockerFromOptions(map[string]string{"socket": "/x"}); err == nil || !strings.Contains(err.Error(), "port=") {
		t.Errorf("NewDockerFromOptions without port: %v", err)
	}
}
