package fence_test

import (
	"errors"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/fence"
)

func TestManualFenceWaitsForConfirm(t *testing.T) {
	ctx := testContext(t)
	var m fence.Manual
	result := make(chan error, 1)
	go func() { result <- fence.Fence(ctx, &m, time.Minute) }()

	<-m.Requested()
	select {
	case err := <-result:
		t.Fatalf("Fence returned %v before the operator confirmed", err)
	default:
	}
	if p, err := m.Status(ctx); p != fence.Unknown || err != nil {
		t.Fatalf("Status before Confirm = %v, %v; want unknown", p, err)
	}
	m.Confirm()
	if err := <-result; err != nil {
		t.Fatalf("Fence after Confirm: %v", err)
	}
	if p, err := m.Status(ctx); p != fence.Off || err != nil {
		t.Fatalf("Status after Confirm = %v, %v; want off", p, err)
	}
	m.Confirm() // twice is harmless

	// Next incident: nothing confirmed, nothing requested.
	m.Reset()
	if p, _ := m.Status(ctx); p != fence.Unknown {
		t.Fatalf("Status after Reset = %v; want unknown", p)
	}
	select {
	case <-m.Requested():
		t.Fatal("Requested still closed after Reset")
	default:
	}
}

func TestManualTimesOutWithoutConfirm(t *testing.T) {
	var m fence.Manual
	err := fence.Fence(testContext(t), &m, shortTimeout)
	if !errors.Is(err, fence.ErrTimeout) {
		t.Fatalf("Fence without Confirm: %v; want ErrTimeout", err)
	}
	select {
	case <-m.Requested():
	default:
		t.Fatal("Off did not mark the request")
	}
}

func TestManualConfirmedBeforehand(t *testing.T) {
	var m fence.Manual
	m.Confirm()
	if err := fence.Fence(testContext(t), &m, time.Minute); err != nil {
		t.Fatalf("Fence after an early Confirm: %v", err)
	}
}

func TestManualResetWhileWaiting(t *testing.T) {
	ctx := testContext(t)
	var m fence.Manual
	result := make(chan error, 1)
	go func() { result <- m.Off(ctx) }()
	<-m.Requested()
	m.Reset() // an Off is waiting: the request stands
	select {
	case <-m.Requested():
	default:
		t.Fatal("Reset dropped the request of a waiting Off")
	}
	m.Confirm()
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}
