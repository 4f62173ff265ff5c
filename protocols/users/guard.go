package users

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Guard defaults.
const (
	DefaultBaseDelay   = time.Second
	DefaultMaxDelay    = 30 * time.Second
	DefaultMaxTracked  = 10000
	DefaultForgetAfter = 15 * time.Minute
)

// GuardOptions configure NewGuard. A nil *GuardOptions means defaults.
type GuardOptions struct {
	// BaseDelay is the wait after a first failure; each consecutive
	// failure doubles it, up to MaxDelay. 0 means the defaults.
	BaseDelay, MaxDelay time.Duration
	// MaxTracked bounds the remote addresses and, apart, the user names
	// whose failures are counted; beyond it the least recently failed is
	// forgotten. 0 means DefaultMaxTracked.
	MaxTracked int
	// ForgetAfter is how long after its last failure a count starts again
	// from zero. 0 means DefaultForgetAfter.
	ForgetAfter time.Duration
	// Now and Sleep replace the clock and the wait, for tests. Sleep must
	// return when ctx is done. nil means the real ones.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives failed logins; nil discards them.
	Logger *slog.Logger
}

// Validate reports every bad field at once.
func (o *GuardOptions) Validate() error {
	if o == nil {
		return nil
	}
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"BaseDelay", o.BaseDelay}, {"MaxDelay", o.MaxDelay}, {"ForgetAfter", o.ForgetAfter}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("users: GuardOptions.%s %v is negative", d.name, d.v))
		}
	}
	if o.MaxTracked < 0 {
		errs = append(errs, fmt.Errorf("users: GuardOptions.MaxTracked %d is negative", o.MaxTracked))
	}
	if o.BaseDelay > 0 && o.MaxDelay > 0 && o.BaseDelay > o.MaxDelay {
		errs = append(errs, fmt.Errorf("users: GuardOptions.BaseDelay %v is above MaxDelay %v", o.BaseDelay, o.MaxDelay))
	}
	return errors.Join(errs...)
}

// GuardStats counts the logins a Guard checked.
type GuardStats struct {
	Successes, Failures uint64
}

// Guard checks logins against a File and slows failed ones: after a failure
// it waits before answering, longer with each consecutive failure from the
// same remote address or for the same user, and a success resets both
// counts. It is safe for concurrent use.
type Guard struct {
	f    *File
	opts GuardOptions
	log  *slog.Logger

	successes, failures atomic.Uint64

	mu      sync.Mutex
	remotes *strikes // by remote address (IPv6 by /64)
	users   *strikes // by user name
}

// NewGuard returns a Guard in front of f. It fails only on bad options.
func NewGuard(f *File, opts *GuardOptions) (*Guard, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if f == nil {
		return nil, errors.New("users: NewGuard needs a File")
	}
	var o GuardOptions
	if opts != nil {
		o = *opts
	}
	if o.BaseDelay == 0 {
		o.BaseDelay = DefaultBaseDelay
		if o.MaxDelay > 0 {
			o.BaseDelay = min(o.BaseDelay, o.MaxDelay)
		}
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = max(DefaultMaxDelay, o.BaseDelay)
	}
	if o.MaxTracked == 0 {
		o.MaxTracked = DefaultMaxTracked
	}
	if o.ForgetAfter == 0 {
		o.ForgetAfter = DefaultForgetAfter
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Guard{
		f: f, opts: o, log: o.Logger.With("component", "users"),
		remotes: newStrikes(o.MaxTracked),
		users:   newStrikes(o.MaxTracked),
	}, nil
}

// Check authenticates user with password for a client at remote (an
// address, with or without a port; "" counts by user only). On failure it
// waits Delay(user, remote), or until ctx is done, and returns
// ErrAuthFailed.
func (g *Guard) Check(ctx context.Context, user, password, remote string) error {
	rkey := remoteKey(remote)
	if err := g.f.Authenticate(user, password); err == nil {
		g.successes.Add(1)
		g.mu.Lock()
		g.users.reset(user)
		g.remotes.reset(rkey)
		g.mu.Unlock()
		return nil
	}
	g.failures.Add(1)
	now := g.opts.Now()
	g.mu.Lock()
	n := max(g.users.add(user, now, g.opts.ForgetAfter), g.remotes.add(rkey, now, g.opts.ForgetAfter))
	g.mu.Unlock()
	d := g.delay(n)
	g.log.Info("login failed", "user", user, "remote", remote, "failures", n, "delay", d)
	_ = g.opts.Sleep(ctx, d)
	return ErrAuthFailed
}

// Delay returns how long Check would wait if user failed to log in from
// remote now.
func (g *Guard) Delay(user, remote string) time.Duration {
	rkey := remoteKey(remote)
	now := g.opts.Now()
	g.mu.Lock()
	n := max(g.users.count(user, now, g.opts.ForgetAfter), g.remotes.count(rkey, now, g.opts.ForgetAfter))
	g.mu.Unlock()
	return g.delay(n + 1)
}

// Stats returns the counts of logins checked so far.
func (g *Guard) Stats() GuardStats {
	return GuardStats{Successes: g.successes.Load(), Failures: g.failures.Load()}
}

// delay is the wait after the nth consecutive failure: BaseDelay doubled
// n-1 times, at most MaxDelay.
func (g *Guard) delay(n int) time.Duration {
	d := g.opts.BaseDelay
	for i := 1; i < n && d < g.opts.MaxDelay; i++ {
		d *= 2
	}
	return min(d, g.opts.MaxDelay)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// remoteKey is what failures are counted by for a remote address: the IP
// without its port, an IPv6 address by its /64 (what one client is
// usually given). Anything else is used as it is.
func remoteKey(remote string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.WithZone("").Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// strikes counts consecutive failures by key, keeping at most max keys:
// the least recently failed is dropped first.
type strikes struct {
	max   int
	byKey map[string]*list.Element // of *strike
	order list.List                // most recently failed first
}

type strike struct {
	key  string
	n    int
	last time.Time
}

func newStrikes(max int) *strikes {
	return &strikes{max: max, byKey: make(map[string]*list.Element)}
}

// count returns key's consecutive failures, 0 if the last is older than
// forget.
func (c *strikes) count(key string, now time.Time, forget time.Duration) int {
	e, ok := c.byKey[key]
	if !ok || key == "" {
		return 0
	}
	f := e.Value.(*strike)
	if now.Sub(f.last) >= forget {
		return 0
	}
	return f.n
}

// add records a failure for key and returns its count.
func (c *strikes) add(key string, now time.Time, forget time.Duration) int {
	if key == "" {
		return 0
	}
	n := c.count(key, now, forget) + 1
	if e, ok := c.byKey[key]; ok {
		f := e.Value.(*strike)
		f.n, f.last = n, now
		c.order.MoveToFront(e)
		return n
	}
	c.byKey[key] = c.order.PushFront(&strike{key: key, n: n, last: now})
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.byKey, old.Value.(*strike).key)
	}
	return n
}

func (c *strikes) reset(key string) {
	if e, ok := c.byKey[key]; ok {
		c.order.Remove(e)
		delete(c.byKey, key)
	}
}
