package loadgen

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults used where a config field is zero.
const (
	DefaultSessions    = 16
	DefaultMessageSize = 10 * 1024
	DefaultRecipients  = 1
	DefaultUsers       = 50
	DefaultUserPrefix  = "user"
	DefaultDomain      = "localhost"
	DefaultDuration    = 10 * time.Second
	DefaultTimeout     = 30 * time.Second
)

// Users names the accounts a load is spread over: Prefix1 .. PrefixCount,
// addressed as Prefix1@Domain.
type Users struct {
	Count  int
	Prefix string
	Domain string
}

func (u *Users) setDefaults() {
	if u.Count == 0 {
		u.Count = DefaultUsers
	}
	if u.Prefix == "" {
		u.Prefix = DefaultUserPrefix
	}
	if u.Domain == "" {
		u.Domain = DefaultDomain
	}
}

// Name returns the login name of user i, counted from 0.
func (u Users) Name(i int) string { return u.Prefix + strconv.Itoa(i+1) }

// Address returns the mail address of user i, counted from 0.
func (u Users) Address(i int) string { return u.Name(i) + "@" + u.Domain }

// TLSMode says how a connection is encrypted.
type TLSMode int

const (
	TLSNone     TLSMode = iota // plain text
	TLSImplicit                // TLS from the first byte (IMAPS, SMTPS)
	TLSStartTLS                // plain text upgraded by STARTTLS
)

func (m TLSMode) String() string {
	switch m {
	case TLSNone:
		return "none"
	case TLSImplicit:
		return "tls"
	case TLSStartTLS:
		return "starttls"
	}
	return "TLSMode(" + strconv.Itoa(int(m)) + ")"
}

// Conn says how to reach the server: the part of a config every protocol
// shares.
type Conn struct {
	Target   string        // host:port
	TLS      TLSMode       // how to encrypt
	Insecure bool          // skip certificate verification (self-signed)
	Timeout  time.Duration // per command; DefaultTimeout when zero
}

func (c *Conn) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
}

func (c *Conn) validate() []error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Target); err != nil {
		errs = append(errs, invalid("Conn.Target", c.Target, "want host:port"))
	}
	if c.TLS < TLSNone || c.TLS > TLSStartTLS {
		errs = append(errs, invalid("Conn.TLS", c.TLS, "unknown mode"))
	}
	if c.Timeout < 0 {
		errs = append(errs, invalid("Conn.Timeout", c.Timeout, "must not be negative"))
	}
	return errs
}

func (c *Conn) tlsConfig() *tls.Config {
	host, _, _ := net.SplitHostPort(c.Target)
	return &tls.Config{ServerName: host, InsecureSkipVerify: c.Insecure}
}

// dial connects to the target, with TLS from the first byte when asked;
// STARTTLS is left to the protocol client.
func (c *Conn) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: c.Timeout}
	if c.TLS == TLSImplicit {
		td := tls.Dialer{NetDialer: &d, Config: c.tlsConfig()}
		return td.DialContext(ctx, "tcp", c.Target)
	}
	return d.DialContext(ctx, "tcp", c.Target)
}

// Limits says when a run ends.
type Limits struct {
	// Duration of the measured phase. Zero means DefaultDuration, unless
	// Count is set, in which case only Count ends the run.
	Duration time.Duration
	// Count of transactions (messages or IMAP commands) to start; zero
	// means no limit.
	Count int64
}

func (l *Limits) setDefaults() {
	if l.Duration == 0 && l.Count == 0 {
		l.Duration = DefaultDuration
	}
}

func (l *Limits) validate() []error {
	var errs []error
	if l.Duration < 0 {
		errs = append(errs, invalid("Limits.Duration", l.Duration, "must not be negative"))
	}
	if l.Count < 0 {
		errs = append(errs, invalid("Limits.Count", l.Count, "must not be negative"))
	}
	return errs
}

// gate hands out transactions until the deadline or the count is reached.
type gate struct {
	limits   Limits
	start    time.Time
	deadline time.Time // zero: none
	claimed  atomic.Int64
}

func (g *gate) open(l Limits) {
	g.limits = l
	g.start = time.Now()
	if l.Duration > 0 {
		g.deadline = g.start.Add(l.Duration)
	}
}

// next reports whether another transaction may start.
func (g *gate) next(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	if !g.deadline.IsZero() && !time.Now().Before(g.deadline) {
		return false
	}
	if g.limits.Count > 0 && g.claimed.Add(1) > g.limits.Count {
		return false
	}
	return true
}

// runSessions starts n sessions. Each runs setup, then waits until every
// setup is done, then runs loop. If any setup fails, the others are
// cancelled and the first setup error is returned. The clock (g.open) starts
// when the last setup is done; runSessions returns the time from then until
// the last loop ended.
func runSessions(ctx context.Context, n int, g *gate, limits Limits,
	setup func(ctx context.Context, i int) error,
	loop func(ctx context.Context, i int),
) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		ready    sync.WaitGroup
		start    = make(chan struct{})
		errOnce  sync.Once
		setupErr error
	)
	ready.Add(n)
	for i := range n {
		wg.Go(func() {
			if err := setup(ctx, i); err != nil {
				errOnce.Do(func() { setupErr = err })
				cancel()
				ready.Done()
				return
			}
			ready.Done()
			select {
			case <-start:
			case <-ctx.Done():
				return
			}
			loop(ctx, i)
		})
	}
	ready.Wait()
	if setupErr != nil {
		wg.Wait()
		return 0, setupErr
	}
	g.open(limits)
	close(start)
	wg.Wait()
	return time.Since(g.start), nil
}

// backoff waits before reconnect attempt n (0, 1, ...): 50 ms doubling to
// 1 s. It returns false if ctx ended first.
func backoff(ctx context.Context, n int) bool {
	d := min(50*time.Millisecond<<min(n, 5), time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// invalid describes a bad config field: its name, its value, the problem.
func invalid(field string, value any, problem string) error {
	if s, ok := value.(string); ok {
		value = strconv.Quote(s)
	}
	return fmt.Errorf("loadgen: %s = %v: %s", field, value, problem)
}
