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
	// BaseDelay is the delay after a first failure; each consecutive
	// failure doubles it, up to MaxDelay. 0 means the defaults. A check
	// that would have to wait longer than MaxDelay for its turn is
	// refused unchecked.
	BaseDelay, MaxDelay time.Duration
	// MaxTracked bounds the remote addresses and, apart, the user names
	// whose failures are counted; beyond it the least recently failed is
	// forgotten. 0 means DefaultMaxTracked.
	MaxTracked int
	// ForgetAfter is how long after its last failure a count starts again
	// from zero. 0 means DefaultForgetAfter.
	ForgetAfter time.Duration
	// Now and Sleep replace the clock and the wait, for tests. Sleep must
	// return ctx's error when ctx is done before the time is up. nil means
	// the real ones.
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

// GuardStats counts the logins a Guard was asked to check.
type GuardStats struct {
	Successes, Failures uint64
	// Throttled logins were refused unchecked: the wait before their
	// check would have exceeded MaxDelay.
	Throttled uint64
	// Abandoned logins went unchecked: their client left (ctx was done)
	// before their check.
	Abandoned uint64
}

// Guard checks logins against a File and limits the guessing rate: after
// a failure it holds back the answer, and it spaces the checks that
// follow, longer with each consecutive failure from the same remote
// address or for the same user; a success resets both counts. Because the
// wait comes before the check, a client that gives up early gets nothing
// checked, and a right password after failures waits as long as a wrong
// one. It is safe for concurrent use.
type Guard struct {
	f    *File
	opts GuardOptions
	log  *slog.Logger

	successes, failures, throttled, abandoned atomic.Uint64

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
// address, with or without a port; "" counts by user only).
//
// ctx must be cancelled when the client goes away (its connection
// closes): Check then returns at once, with an error wrapping ErrAbandoned
// and ErrAuthFailed, and checks nothing.
//
// After failures from remote or for user, Check first waits for its turn:
// checks for the same address or user start at least Delay apart, so
// concurrent attempts queue rather than guess in parallel. When the wait
// would exceed MaxDelay it refuses at once, unchecked, with an error
// wrapping ErrThrottled and ErrAuthFailed. A failed check returns an
// error wrapping ErrAuthFailed after holding the answer back by the delay
// the next attempt will face.
func (g *Guard) Check(ctx context.Context, user, password, remote string) error {
	rkey := remoteKey(remote)
	wait, err := g.admit(user, rkey)
	if err != nil {
		g.throttled.Add(1)
		g.log.Info("login refused unchecked: too many failures", "user", user, "remote", remote)
		return err
	}
	if wait > 0 {
		if err := g.opts.Sleep(ctx, wait); err != nil {
			return g.abandon(user, remote, err)
		}
	}
	if err := context.Cause(ctx); err != nil {
		return g.abandon(user, remote, err)
	}
	err = g.f.Authenticate(user, password)
	if err == nil {
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
	n := max(g.users.fail(user, now, g.opts.ForgetAfter), g.remotes.fail(rkey, now, g.opts.ForgetAfter))
	d := g.delay(n)
	g.users.notBefore(user, now.Add(d))
	g.remotes.notBefore(rkey, now.Add(d))
	g.mu.Unlock()
	g.log.Info("login failed", "user", user, "remote", remote, "failures", n, "delay", d, "err", err)
	_ = g.opts.Sleep(ctx, d)
	return err
}

// admit returns how long an attempt for user from rkey waits before its
// check, and reserves its turn; or ErrThrottled when that is above
// MaxDelay.
func (g *Guard) admit(user, rkey string) (time.Duration, error) {
	now := g.opts.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	su := g.users.get(user, now, g.opts.ForgetAfter)
	sr := g.remotes.get(rkey, now, g.opts.ForgetAfter)
	n, start := 0, now
	for _, s := range []*strike{su, sr} {
		if s != nil {
			n = max(n, s.n)
			if s.next.After(start) {
				start = s.next
			}
		}
	}
	if n == 0 {
		return 0, nil
	}
	wait := start.Sub(now)
	if wait > g.opts.MaxDelay {
		return 0, fmt.Errorf("%w: %w", ErrAuthFailed, ErrThrottled)
	}
	// The turn after this one comes a delay later, as if this attempt
	// failed too; a success resets it.
	next := start.Add(g.delay(n))
	for _, s := range []*strike{su, sr} {
		if s != nil && s.next.Before(next) {
			s.next = next
		}
	}
	return wait, nil
}

// abandon counts a login whose client left (why: the context's cause)
// before its check.
func (g *Guard) abandon(user, remote string, why error) error {
	g.abandoned.Add(1)
	g.log.Debug("login abandoned by the client before its check", "user", user, "remote", remote, "why", why)
	return fmt.Errorf("%w: %w: %w", ErrAuthFailed, ErrAbandoned, why)
}

// Delay returns how long Check would hold back its answer if user failed
// to log in from remote now.
func (g *Guard) Delay(user, remote string) time.Duration {
	rkey := remoteKey(remote)
	now := g.opts.Now()
	g.mu.Lock()
	n := max(g.users.get(user, now, g.opts.ForgetAfter).count(), g.remotes.get(rkey, now, g.opts.ForgetAfter).count())
	g.mu.Unlock()
	return g.delay(n + 1)
}

// Wait returns how long a Check for user from remote would wait now
// before checking the password.
func (g *Guard) Wait(user, remote string) time.Duration {
	rkey := remoteKey(remote)
	now := g.opts.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	var wait time.Duration
	for _, s := range []*strike{g.users.get(user, now, g.opts.ForgetAfter), g.remotes.get(rkey, now, g.opts.ForgetAfter)} {
		if s != nil && s.n > 0 {
			wait = max(wait, s.next.Sub(now))
		}
	}
	return wait
}

// Stats returns the counts of logins checked so far.
func (g *Guard) Stats() GuardStats {
	return GuardStats{
		Successes: g.successes.Load(), Failures: g.failures.Load(),
		Throttled: g.throttled.Load(), Abandoned: g.abandoned.Load(),
	}
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
	n    int       // consecutive failures
	last time.Time // of the last failure
	next time.Time // the earliest start of the next check
}

func (s *strike) count() int {
	if s == nil {
		return 0
	}
	return s.n
}

func newStrikes(max int) *strikes {
	return &strikes{max: max, byKey: make(map[string]*list.Element)}
}

// get returns key's strike, or nil if it has none or its last failure is
// older than forget (which is then dropped).
func (c *strikes) get(key string, now time.Time, forget time.Duration) *strike {
	e, ok := c.byKey[key]
	if !ok || key == "" {
		return nil
	}
	s := e.Value.(*strike)
	if now.Sub(s.last) >= forget {
		c.order.Remove(e)
		delete(c.byKey, key)
		return nil
	}
	return s
}

// fail records a failure for key and returns its count.
func (c *strikes) fail(key string, now time.Time, forget time.Duration) int {
	if key == "" {
		return 0
	}
	if s := c.get(key, now, forget); s != nil {
		s.n++
		s.last = now
		c.order.MoveToFront(c.byKey[key])
		return s.n
	}
	c.byKey[key] = c.order.PushFront(&strike{key: key, n: 1, last: now})
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.byKey, old.Value.(*strike).key)
	}
	return 1
}

// notBefore makes key's next check start at t or later.
func (c *strikes) notBefore(key string, t time.Time) {
	if e, ok := c.byKey[key]; ok {
		if s := e.Value.(*strike); s.next.Before(t) {
			s.next = t
		}
	}
}

func (c *strikes) reset(key string) {
	if e, ok := c.byKey[key]; ok {
		c.order.Remove(e)
		delete(c.byKey, key)
	}
}
