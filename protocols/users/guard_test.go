package users_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/protocols/users"
)

// fakeTime is a clock and a sleep that moves it: the tests never wait.
type fakeTime struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
	// leave, when set, is what Sleep returns at once, the clock unmoved:
	// a client that hung up during the wait.
	leave error
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
	if c.leave != nil {
		return c.leave
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.now = c.now.Add(d)
	return nil
}

// sleeps returns the waits so far and forgets them.
func (c *fakeTime) sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slept
	c.slept = nil
	return s
}

func newTestGuard(t *testing.T, opts users.GuardOptions) (*users.Guard, *fakeTime) {
	t.Helper()
	return newGuardFor(t, openFile(t, copyTestdata(t)), opts)
}

// fail checks a wrong password and returns how long the answer was held
// back, after checking that Delay foretold it and that nothing was waited
// before the check.
func fail(t *testing.T, g *users.Guard, ft *fakeTime, user, remote string) time.Duration {
	t.Helper()
	if w := g.Wait(user, remote); w != 0 {
		t.Fatalf("Wait(%q, %q) = %v before a sequential retry", user, remote, w)
	}
	want := g.Delay(user, remote)
	if err := g.Check(context.Background(), user, "wrong", remote); !errors.Is(err, users.ErrAuthFailed) {
		t.Fatalf("Check(%q, wrong) = %v", user, err)
	}
	s := ft.sleeps()
	if len(s) != 1 || s[0] != want {
		t.Fatalf("waited %v, Delay said %v", s, want)
	}
	return want
}

// A client that retries after each answer: the answers are held back
// longer each time, the checks start at once, a success resets.
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
	if w := ft.sleeps(); len(w) != 0 {
		t.Errorf("a success waited: %v", w)
	}
	if d, w := g.Delay("alice", "192.0.2.1"), g.Wait("alice", "192.0.2.1"); d != s || w != 0 {
		t.Errorf("after a success: Delay %v, Wait %v; want 1s, 0", d, w)
	}
	if st := g.Stats(); st != (users.GuardStats{Successes: 1, Failures: 7}) {
		t.Errorf("Stats() = %+v", st)
	}
}

// D10: the right password after failures is checked only after the same
// wait as a wrong one, so its answer comes no sooner.
func TestGuardRightPasswordWaitsLikeWrong(t *testing.T) {
	for _, right := range []bool{false, true} {
		g, ft := newTestGuard(t, users.GuardOptions{})
		for range 5 {
			if err := g.Check(context.Background(), "alice", "wrong", "192.0.2.1"); err == nil {
				t.Fatal("wrong password accepted")
			}
		}
		ft.sleeps()
		// The client did not wait for its fifth answer (held back 16 s)
		// and came back at once on another connection.
		ft.Advance(-16 * time.Second)
		wait := g.Wait("alice", "192.0.2.1")
		pw := "wrong"
		if right {
			pw = testdataPasswords["alice"]
		}
		err := g.Check(context.Background(), "alice", pw, "192.0.2.1")
		if right != (err == nil) {
			t.Fatalf("right=%v: Check = %v", right, err)
		}
		s := ft.sleeps()
		if wait <= 0 || len(s) == 0 || s[0] != wait {
			t.Errorf("right=%v: waited %v before the check, want %v first", right, s, wait)
		}
	}
}

// D10: a client that leaves while it waits gets nothing checked, even the
// right password; one whose context is done gets no check at all.
func TestGuardClientGoneGetsNoCheck(t *testing.T) {
	g, ft := newTestGuard(t, users.GuardOptions{})
	ctx := context.Background()
	if err := g.Check(ctx, "alice", "wrong", "192.0.2.1"); err == nil {
		t.Fatal("wrong password accepted")
	}
	ft.Advance(-time.Second) // retried at once
	ft.sleeps()

	ft.leave = context.Canceled
	err := g.Check(ctx, "alice", testdataPasswords["alice"], "192.0.2.1")
	if !errors.Is(err, users.ErrAbandoned) || !errors.Is(err, users.ErrAuthFailed) || !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "%!") {
		t.Fatalf("Check after the client left = %v, want ErrAbandoned", err)
	}
	ft.leave = nil

	gone, cancel := context.WithCancel(ctx)
	cancel()
	// No failures for bob from here: no wait, and still no check.
	err = g.Check(gone, "bob", "sesame", "198.51.100.1")
	if !errors.Is(err, users.ErrAbandoned) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a done context = %v, want ErrAbandoned", err)
	}
	if st := g.Stats(); st != (users.GuardStats{Failures: 1, Abandoned: 2}) {
		t.Errorf("Stats() = %+v, want one failure, two abandoned, no success", st)
	}
	// The right password was never checked: the failure still counts.
	if g.Delay("alice", "") != 2*time.Second {
		t.Errorf("alice's count was reset by an unchecked login")
	}
}

// D10: guesses in parallel queue for their turn, per address and per
// user; a turn further than MaxDelay away is refused unchecked.
func TestGuardParallelGuessesQueue(t *testing.T) {
	for _, tc := range []struct {
		name   string
		remote func(i int) string
		user   func(i int) string
	}{
		{"one address, many users", func(int) string { return "203.0.113.9" }, func(i int) string { return fmt.Sprintf("user%d", i) }},
		{"one user, many addresses", func(i int) string { return fmt.Sprintf("198.51.100.%d:4000", i) }, func(int) string { return "alice" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, ft := newTestGuard(t, users.GuardOptions{MaxDelay: 10 * time.Second})
			if err := g.Check(context.Background(), tc.user(0), "wrong", tc.remote(0)); err == nil {
				t.Fatal("wrong password accepted")
			}
			ft.Advance(-time.Second)
			ft.sleeps()
			// 15 attempts arrive together; each client hangs up during its
			// wait, so time does not move.
			ft.leave = context.Canceled
			var throttled int
			for i := 1; i <= 15; i++ {
				err := g.Check(context.Background(), tc.user(i), "guess", tc.remote(i))
				switch {
				case errors.Is(err, users.ErrThrottled):
					throttled++
				case !errors.Is(err, users.ErrAbandoned):
					t.Fatalf("attempt %d: %v", i, err)
				}
			}
			s := ft.sleeps()
			for i, d := range s {
				if want := time.Duration(i+1) * time.Second; d != want {
					t.Fatalf("waits %v, want 1s, 2s, 3s, ...", s)
				}
			}
			if len(s) != 10 || throttled != 5 {
				t.Errorf("%d waited, %d refused; want 10 and 5", len(s), throttled)
			}
			if st := g.Stats(); st.Failures != 1 || st.Successes != 0 || st.Throttled != 5 || st.Abandoned != 10 {
				t.Errorf("Stats() = %+v", st)
			}
		})
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
	// The clock moved by the 4 s the last answer was held back.
	ft.Advance(55 * time.Second)
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

// D10: with the real clock, a session waiting for its turn ends when its
// client does.
func TestGuardWaitEndsWithContext(t *testing.T) {
	g, err := users.NewGuard(openFile(t, copyTestdata(t)), &users.GuardOptions{BaseDelay: time.Hour, MaxDelay: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// A first failure whose held-back answer the client does not wait for.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Check(gone, "alice", "wrong", "192.0.2.1"); !errors.Is(err, users.ErrAbandoned) {
		t.Fatalf("Check = %v", err)
	}
	// That one was not checked either. A real failure, whose answer
	// would be held back an hour, comes as soon as its client leaves.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Check(ctx, "alice", "wrong", "192.0.2.1") }()
	waitErr(t, done, users.ErrAuthFailed)

	// The next attempt waits an hour for its turn, and ends with its
	// client, the right password unchecked.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- g.Check(ctx, "alice", testdataPasswords["alice"], "192.0.2.1") }()
	poll.Eventually(t, 10*time.Second, "the check to wait", func() bool { return g.Wait("alice", "192.0.2.1") > time.Hour })
	cancel()
	waitErr(t, done, users.ErrAbandoned)
	if st := g.Stats(); st.Successes != 0 || st.Failures != 1 || st.Abandoned != 2 {
		t.Errorf("Stats() = %+v", st)
	}
}

// waitErr waits at most 10 s for an answer that wraps want.
func waitErr(t *testing.T, done <-chan error, want error) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, want) {
			t.Fatalf("Check = %v, want %v", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Check did not return after its client left")
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
