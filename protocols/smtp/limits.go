package smtp

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// Replies to connections over a limit.
var (
	errTooManyConns = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0},
		Message: "Too many connections, try again later"}
	errTooManyFromAddr = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0},
		Message: "Too many connections from your address, try again later"}
)

const (
	// logEvery is how often connections turned away over a limit are
	// logged: a flood of them must not become a flood of log lines.
	logEvery = 10 * time.Second
	// maxTurning bounds the connections being answered 421 at once; past
	// it, one over a limit is closed without a word (a flood is not owed
	// replies, and each reply may wait closeTimeout for a slow client).
	maxTurning = 64
	// lingerTimeout and lingerBytes bound the reading of what a client
	// still sends after a final reply, before the connection is closed
	// (so that the client reads the reply instead of a reset).
	lingerTimeout = 2 * time.Second
	lingerBytes   = 1 << 20
)

// connLimits counts open connections, overall and per client address.
type connLimits struct {
	max, perAddr int

	mu     sync.Mutex
	total  int
	byAddr map[string]int
}

func newConnLimits(max, perAddr int) *connLimits {
	return &connLimits{max: max, perAddr: perAddr, byAddr: make(map[string]int)}
}

// acquire counts a connection from addr ("" for one without an IP
// address, which only the overall limit applies to), or returns the reply
// for one over a limit.
func (l *connLimits) acquire(addr string) (release func(), over *gosmtp.SMTPError) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max {
		return nil, errTooManyConns
	}
	if addr != "" && l.byAddr[addr] >= l.perAddr {
		return nil, errTooManyFromAddr
	}
	l.total++
	if addr != "" {
		l.byAddr[addr]++
	}
	var once sync.Once
	return func() { once.Do(func() { l.release(addr) }) }, nil
}

func (l *connLimits) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if addr != "" {
		if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
			delete(l.byAddr, addr)
		}
	}
}

func (l *connLimits) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// budget is a count of bytes held against a maximum.
type budget struct {
	max int64

	mu   sync.Mutex
	used int64
}

// take counts n more bytes, or reports false if they do not fit.
func (b *budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

// held is the number of bytes counted.
func (b *budget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// clientAddr is the IP address a TCP connection comes from, the key of
// the per-address limit, or "" where that limit does not apply: a unix
// socket, and loopback unless limitLoopback.
func clientAddr(a net.Addr, limitLoopback bool) string {
	t, ok := a.(*net.TCPAddr)
	if !ok || t.IP.IsLoopback() && !limitLoopback {
		return ""
	}
	return t.IP.String()
}

// conn is an accepted connection, counted against the limits until it is
// closed. It lies beneath TLS, so that deadlines and accounting see the
// connection itself.
type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// CloseWrite half-closes the connection where the network allows it.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ourConn finds this package's conn in what go-smtp holds: the conn
// itself, or a *tls.Conn on top of it.
func ourConn(nc net.Conn) *conn {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}

// listener hands go-smtp the connections within the limits and answers
// the others with 421: all of them while the server drains or shuts down,
// and those over a connection limit.
type listener struct {
	net.Listener
	s *Server
}

func (l listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if nc := l.s.admit(c); nc != nil {
			return nc, nil
		}
	}
}

// admit returns c ready for go-smtp, or nil once it has turned c away.
func (s *Server) admit(c net.Conn) net.Conn {
	s.mu.Lock()
	reply := s.refusalLocked()
	s.mu.Unlock()
	if reply != nil {
		s.turnAway(c, reply)
		return nil
	}
	addr := clientAddr(c.RemoteAddr(), s.opts.LimitLoopback)
	release, over := s.conns.acquire(addr)
	if over != nil {
		s.refusals.do(func(skipped int) {
			s.log.Warn("connection refused over a limit", "remote", c.RemoteAddr().String(), "reply", over.Message,
				"max", s.opts.MaxConnections, "max_per_addr", s.opts.MaxConnectionsPerAddr,
				"refused_before_unlogged", skipped)
		})
		s.turnAway(c, over)
		return nil
	}
	tc, isTLS := c.(*tls.Conn)
	if !isTLS {
		return &conn{Conn: c, release: release}
	}
	if s.opts.TLSConfig == nil {
		// The listener's configuration is out of reach: keep its TLS
		// layer and count above it (go-smtp then sees no TLS).
		s.tlsOnce.Do(func() {
			s.log.Error("a TLS listener is served without Options.TLSConfig: clients get no TLS features")
		})
		return &conn{Conn: c, release: release}
	}
	// tls.NewListener's connections have not shaken hands yet: put a
	// fresh TLS layer, with the same configuration, on the counted
	// connection beneath.
	return tls.Server(&conn{Conn: tc.NetConn(), release: release}, s.opts.TLSConfig)
}

// turnAway answers reply and closes c, apart from the accept loop (a TLS
// connection's handshake waits for the client). Past maxTurning replies
// in flight, c is closed at once.
func (s *Server) turnAway(c net.Conn, reply *gosmtp.SMTPError) {
	if s.turningN.Add(1) > maxTurning {
		s.turningN.Add(-1)
		c.Close()
		return
	}
	s.turning.Add(1)
	go func() {
		defer s.turning.Done()
		defer s.turningN.Add(-1)
		say(c, reply)
	}()
}

// sometimes runs a function at most once per interval and tells it how
// many calls it skipped since the last run.
type sometimes struct {
	every time.Duration

	mu      sync.Mutex
	last    time.Time
	skipped int
}

func (s *sometimes) do(f func(skipped int)) {
	s.mu.Lock()
	now := time.Now()
	if !s.last.IsZero() && now.Sub(s.last) < s.every {
		s.skipped++
		s.mu.Unlock()
		return
	}
	skipped := s.skipped
	s.last, s.skipped = now, 0
	s.mu.Unlock()
	f(skipped)
}

// linger writes the reply lines on nc, half-closes it and reads what the client
// still sends, within lingerTimeout and lingerBytes, before closing it:
// a client that is still sending then reads the reply instead of a reset.
func linger(nc net.Conn, lines string) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(closeTimeout))
	if _, err := io.WriteString(nc, lines); err != nil {
		return
	}
	rd := nc
	if t, ok := nc.(*tls.Conn); ok {
		_ = t.CloseWrite() // close_notify
	}
	if c := ourConn(nc); c != nil {
		_ = c.CloseWrite()
		rd = c.Conn // what follows is discarded: read it beneath TLS
	} else if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = rd.SetReadDeadline(time.Now().Add(lingerTimeout))
	// The client's EOF, the deadline or a reset: each ends it.
	_, _ = io.Copy(io.Discard, io.LimitReader(rd, lingerBytes))
}

// isTimeout reports whether err is a network deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
