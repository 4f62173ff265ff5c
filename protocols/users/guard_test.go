package users_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinbox/twinbox/protocols/users"
)

// fakeTime is a clock and a sleep that only records: the tests never wait.
type fakeTime struct {
	mu     sync.Mutex
	now    time.Time
	slept  []time.Duration
	ctxErr error // what Sleep returns
}

func newFakeTime() *fakeTime { return &fakeTime{now: time.Unix(1_800_000_000, 0)} }

func (c *fakeTime) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeTime) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeTime) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	return c.ctxErr
}

// lastSleep returns the last wait, 0 if none.
func (c *fakeTime) lastSleep() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.slept) == 0 {
		return 0
	}
	return c.slept[len(c.slept)-1]
}

func newTestGuard(t *testing.T, opts users.GuardOptions) (*users.Guard, *fakeTime) {
	t.Helper()
	ft := newFakeTime()
	opts.Now, opts.Sleep, opts.Logger = ft.Now, ft.Sleep, testLogger(t)
	g, err := users.NewGuard(openFile(t, copyTestdata(t)), &opts)
	if err != nil {
		t.Fatal(err)
	}
	return g, ft
}

// fail checks a wrong password and returns the wait it got, after
// checking that Delay foretold it.
func fail(t *testing.T, g *users.Guard, ft *fakeTime, user, remote string) time.Duration {
	t.Helper()
	want := g.Delay(user, remote)
	if err := g.Check(context.Background(), user, "wrong", remote); !errors.Is(err, users.ErrAuthFailed) {
		t.Fatalf("Check(%q, wrong) = %v", user, err)
	}
	if got := ft.lastSleep(); got != want {
		t.Fatalf("waited %v, Delay said %v", got, want)
	}
	return want
}

func TestGuardDelaysGrowAndReset(t *testing.T) {
	g, ft := newTestGuard(t, users.GuardOptions{})
	s := time.Second
	var got []time.Duration
	for range 7 {
		got = append(got, fail(t, g, ft, "alice", "192.0.2.1:40000"))
	}
	want := []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	ctx := context.Background()
	if err := g.Check(ctx, "alice", testdataPasswords["alice"], "192.0.2.1:40001"); err != nil {
		t.Fatalf("right password after failures: %v", err)
	}
	if n := len(ft.slept); n != 7 {
		t.Errorf("a success waited: %d waits", n)
	}
	if d := g.Delay("alice", "192.0.2.1"); d != s {
		t.Errorf("Delay after a success = %v, want %v", d, s)
	}
	if st := g.Stats(); st != (users.GuardStats{Successes: 1, Failures: 7}) {
		t.Errorf("Stats() = %+v", st)
	}
}

func TestGuardCountsByUserAndByRemote(t *testing.T) {
	g, ft := newTestGuard(t, users.GuardOptions{BaseDelay: time.Millisecond, MaxDelay: time.Hour})
	ms := time.Millisecond

	// One user from many addresses: the user's count grows.
	for i, remote := range []string{"192.0.2.1:1", "198.51.100.7:2", "[2001:db8::1]:3"} {
		if d := fail(t, g, ft, "bob", remote); d != ms<<i {
			t.Fatalf("failure %d for bob from %s waited %v", i+1, remote, d)
		}
	}
	// Many users, some unknown, from one address: the address's count grows.
	for i, user := range []string{"carol@example.org", "nobody", "root", "admin"} {
		if d := fail(t, g, ft, user, "203.0.113.9:5555"); d != ms<<i {
			t.Fatalf("failure %d from one address (user %s) waited %v", i+1, user, d)
		}
	}
	// Another port, the same address; an IPv6 address in the same /64.
	if d := g.Delay("dave", "203.0.113.9:6666"); d != 16*ms {
		t.Errorf("another port of the same address: Delay %v, want 16ms", d)
	}
	if d := g.Delay("dave", "[2001:db8::ffff]:9"); d != 2*ms {
		t.Errorf("the same IPv6 /64: Delay %v, want 2ms", d)
	}
	if d := g.Delay("dave", "[2001:db8:0:1::1]:9"); d != ms {
		t.Errorf("another IPv6 /64: Delay %v, want 1ms", d)
	}
	if d := g.Delay("dave", ""); d != ms {
		t.Errorf("no remote: Delay %v, want 1ms", d)
	}
	// A success resets the user's count and the address's.
	if err := g.Check(context.Background(), "bob", "sesame", "203.0.113.9:1"); err != nil {
		t.Fatal(err)
	}
	if d := g.Delay("bob", "203.0.113.9"); d != ms {
		t.Errorf("Delay after bob's success = %v, want 1ms", d)
	}
}

func TestGuardForgetsOldFailures(t *testing.T) {
	g, ft := newTestGuard(t, users.GuardOptions{ForgetAfter: time.Minute})
	for range 3 {
		fail(t, g, ft, "alice", "192.0.2.1")
	}
	ft.Advance(59 * time.Second)
	if d := g.Delay("alice", "192.0.2.1"); d != 8*time.Second {
		t.Errorf("Delay before ForgetAfter = %v", d)
	}
	ft.Advance(time.Second)
	if d := g.Delay("alice", "192.0.2.1"); d != time.Second {
		t.Errorf("Delay after ForgetAfter = %v", d)
	}
	if d := fail(t, g, ft, "alice", "192.0.2.1"); d != time.Second {
		t.Errorf("failure after ForgetAfter waited %v", d)
	}
}

func TestGuardForgetsOldestBeyondMaxTracked(t *testing.T) {
	g, ft := newTestGuard(t, users.GuardOptions{MaxTracked: 3})
	remotes := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"}
	for i, r := range remotes {
		fail(t, g, ft, "user"+string(rune('a'+i)), r)
	}
	for i, r := range remotes {
		want := 2 * time.Second // still counted
		if i < len(remotes)-3 {
			want = time.Second // forgotten, oldest first
		}
		if d := g.Delay("fresh", r); d != want {
			t.Errorf("Delay from %s = %v, want %v", r, d, want)
		}
	}
}

// The real wait ends with the context.
func TestGuardWaitEndsWithContext(t *testing.T) {
	g, err := users.NewGuard(openFile(t, copyTestdata(t)), &users.GuardOptions{BaseDelay: time.Hour, MaxDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Check(ctx, "alice", "wrong", "192.0.2.1"); !errors.Is(err, users.ErrAuthFailed) {
		t.Fatalf("Check = %v", err)
	}
}

func TestGuardOptionsValidate(t *testing.T) {
	_, err := users.NewGuard(nil, &users.GuardOptions{BaseDelay: -1, MaxTracked: -2, ForgetAfter: -3})
	for _, want := range []string{"BaseDelay -1ns is negative", "MaxTracked -2 is negative", "ForgetAfter -3ns is negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	_, err = users.NewGuard(nil, &users.GuardOptions{BaseDelay: time.Minute, MaxDelay: time.Second})
	if err == nil || !strings.Contains(err.Error(), "above MaxDelay") {
		t.Errorf("BaseDelay above MaxDelay: %v", err)
	}
}
