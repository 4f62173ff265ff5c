package fence_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/fence"
)

// shortTimeout is for fences meant to run out of time.
const shortTimeout = 200 * time.Millisecond

func TestFenceConfirmsWithStatus(t *testing.T) {
	f := &fence.Fake{}
	f.ScriptStatus(fence.Step{Power: fence.On}, fence.Step{Err: errors.New("ipmi: busy")}, fence.Step{Power: fence.Off})
	if err := fence.Fence(testContext(t), f, time.Minute); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	if off, status := f.Calls(); off != 1 || status != 3 {
		t.Errorf("Off called %d times, Status %d; want 1 and 3", off, status)
	}
}

func TestFenceNotConfirmed(t *testing.T) {
	f := &fence.Fake{}
	f.ScriptStatus(fence.Step{Power: fence.On})
	err := fence.Fence(testContext(t), f, shortTimeout)
	if !errors.Is(err, fence.ErrNotConfirmed) || errors.Is(err, fence.ErrTimeout) {
		t.Fatalf("Fence of a peer that stays on: %v; want ErrNotConfirmed only", err)
	}
	if !strings.Contains(err.Error(), "status still on") {
		t.Errorf("error %q does not tell the last status", err)
	}
	if _, status := f.Calls(); status < 2 {
		t.Errorf("Status asked %d times; want a few", status)
	}
}

func TestFenceStatusFailing(t *testing.T) {
	f := &fence.Fake{}
	broken := errors.New("ipmi: no route to host")
	f.ScriptStatus(fence.Step{Err: broken})
	err := fence.Fence(testContext(t), f, shortTimeout)
	if !errors.Is(err, fence.ErrNotConfirmed) || !errors.Is(err, broken) {
		t.Fatalf("Fence with a failing status: %v; want ErrNotConfirmed wrapping the status error", err)
	}
}

func TestFenceStatusHanging(t *testing.T) {
	f := &fence.Fake{}
	f.ScriptStatus(fence.Step{Hang: true})
	err := fence.Fence(testContext(t), f, shortTimeout)
	if !errors.Is(err, fence.ErrNotConfirmed) {
		t.Fatalf("Fence with a hanging status: %v; want ErrNotConfirmed", err)
	}
}

func TestFenceOffFailing(t *testing.T) {
	f := &fence.Fake{}
	refused := errors.New("ipmi: permission denied")
	f.ScriptOff(fence.Step{Err: refused})
	err := fence.Fence(testContext(t), f, time.Minute)
	if !errors.Is(err, refused) || errors.Is(err, fence.ErrTimeout) || errors.Is(err, fence.ErrNotConfirmed) {
		t.Fatalf("Fence with a failing Off: %v", err)
	}
	if _, status := f.Calls(); status != 0 {
		t.Errorf("Status asked %d times after Off failed", status)
	}
	if f.Power() != fence.On {
		t.Error("a failed Off powered the fake off")
	}
}

func TestFenceOffHanging(t *testing.T) {
	f := &fence.Fake{}
	f.ScriptOff(fence.Step{Hang: true})
	err := fence.Fence(testContext(t), f, shortTimeout)
	if !errors.Is(err, fence.ErrTimeout) {
		t.Fatalf("Fence with a hanging Off: %v; want ErrTimeout", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap the device's error", err)
	}
	if _, status := f.Calls(); status != 0 {
		t.Errorf("Status asked %d times after Off timed out", status)
	}
}

func TestFenceRetriesNothingAfterOffFails(t *testing.T) {
	// Off fails once, then would succeed: Fence itself does not retry, the
	// failover driver decides.
	f := &fence.Fake{}
	f.ScriptOff(fence.Step{Err: errors.New("busy")}, fence.Step{})
	if err := fence.Fence(testContext(t), f, time.Minute); err == nil {
		t.Fatal("Fence succeeded after a failed Off")
	}
	if err := fence.Fence(testContext(t), f, time.Minute); err != nil {
		t.Fatalf("second Fence: %v", err)
	}
}

func TestFakeOn(t *testing.T) {
	ctx := testContext(t)
	f := &fence.Fake{}
	if err := fence.Fence(ctx, f, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := f.On(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := f.Status(ctx); p != fence.On || err != nil {
		t.Fatalf("Status after On = %v, %v", p, err)
	}
}

func TestPowerString(t *testing.T) {
	for p, want := range map[fence.Power]string{fence.Unknown: "unknown", fence.On: "on", fence.Off: "off", 7: "Power(7)"} {
		if p.String() != want {
			t.Errorf("Power %d is %q, want %q", int(p), p, want)
		}
	}
}
