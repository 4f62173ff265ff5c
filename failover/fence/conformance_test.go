package fence_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/fence"
)

// subjects are the fence devices the conformance suite runs against, each
// made with a fresh peer that is running. Manual needs an operator and has
// tests of its own.
var subjects = []struct {
	name string
	new  func(t *testing.T) fence.Device
}{
	{"Fake", func(t *testing.T) fence.Device { return &fence.Fake{} }},
	{"Process", func(t *testing.T) fence.Device {
		_, pidFile := startPeer(t)
		p, err := fence.NewProcess(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}},
	{"Docker", func(t *testing.T) fence.Device {
		_, socket := newDockerd(t, map[string]bool{"peer": true})
		d, err := fence.NewDocker("peer", socket)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}},
	{"Agent/script", func(t *testing.T) fence.Device {
		return newAgent(t, powerScript(t), nil, time.Minute)
	}},
	// The real stdin protocol end to end: Agent → this test binary as a
	// fence agent → ServeAgent → the device.
	{"Agent/ServeAgent/Process", func(t *testing.T) fence.Device {
		_, pidFile := startPeer(t)
		return helperAgent(t, "process", map[string]string{"port": pidFile})
	}},
	{"Agent/ServeAgent/Docker", func(t *testing.T) fence.Device {
		_, socket := newDockerd(t, map[string]bool{"peer": true})
		return helperAgent(t, "docker", map[string]string{"port": "peer", "socket": socket, "nodename": "node-b"})
	}},
}

// powerScript writes a fence agent that keeps a simulated peer's power in
// a file, switched on at first.
func powerScript(t *testing.T) string {
	dir := t.TempDir()
	state := filepath.Join(dir, "power")
	if err := os.WriteFile(state, []byte("on\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return writeScript(t, dir, "fence_power", fmt.Sprintf(`state=%s
action=
while IFS= read -r line; do
	case "$line" in action=*) action=${line#action=} ;; esac
done
case "$action" in
off|reboot) echo off >"$state" ;;
on) echo on >"$state" ;;
status) [ "$(cat "$state")" = off ] && exit 2; exit 0 ;;
monitor) ;;
*) echo "Failed: unknown action $action" >&2; exit 1 ;;
esac
`, quote(state)))
}

func TestConformance(t *testing.T) {
	for _, s := range subjects {
		t.Run(s.name, func(t *testing.T) { testDevice(t, s.new) })
	}
}

// testDevice is the behaviour every Device shares.
func testDevice(t *testing.T, newDevice func(t *testing.T) fence.Device) {
	t.Run("RunningPeerIsOn", func(t *testing.T) {
		d := newDevice(t)
		p, err := d.Status(testContext(t))
		if err != nil || p != fence.On {
			t.Fatalf("Status of a running peer = %v, %v; want on", p, err)
		}
	})
	t.Run("FenceConfirmsOff", func(t *testing.T) {
		ctx := testContext(t)
		d := newDevice(t)
		if err := fence.Fence(ctx, d, 30*time.Second); err != nil {
			t.Fatalf("Fence: %v", err)
		}
		if p, err := d.Status(ctx); err != nil || p != fence.Off {
			t.Fatalf("Status after Fence = %v, %v; want off", p, err)
		}
		// Fencing a peer that is already off succeeds.
		if err := d.Off(ctx); err != nil {
			t.Fatalf("Off of a peer already off: %v", err)
		}
		if err := fence.Fence(ctx, d, 30*time.Second); err != nil {
			t.Fatalf("Fence of a peer already off: %v", err)
		}
	})
	t.Run("DoneContextDoesNothing", func(t *testing.T) {
		d := newDevice(t)
		done, cancel := context.WithCancel(testContext(t))
		cancel()
		if err := d.Off(done); err == nil {
			t.Fatal("Off with a done context succeeded")
		}
		if p, err := d.Status(done); err == nil {
			t.Fatalf("Status with a done context = %v, no error", p)
		}
		err := fence.Fence(done, d, time.Minute)
		if err == nil {
			t.Fatal("Fence with a done context succeeded")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Fence with a cancelled context: %v; want it to say so", err)
		}
		if p, err := d.Status(testContext(t)); err != nil || p != fence.On {
			t.Fatalf("Status after Off with a done context = %v, %v; want still on", p, err)
		}
	})
}
