package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/protocols"
)

// Defaults for Options' zero values. Together they keep a 2-core node
// with a few GB of memory serving under abuse; docs/limits.md explains
// each.
const (
	DefaultMaxRecipients = 1000
	// DefaultMaxLineLength bounds a line of commands and of message data.
	// RFC 5322 allows 998 bytes, but real mail (HTML without line breaks)
	// exceeds it, and a refused line makes the sender retry forever; 64 KiB
	// keeps memory bounded without refusing such mail.
	DefaultMaxLineLength = 64 << 10
	// DefaultReadTimeout is the idle deadline: the wait for a command.
	// RFC 5321 4.5.3.2.7 asks a server for at least 5 minutes, written for
	// links and senders of 1982; an MTA sends its next command at once
	// (with PIPELINING, several), and one cut while idle loses nothing:
	// it reconnects, and no transaction in progress was acknowledged.
	// Postfix drops to 10 s under load for the same reason. One minute
	// lets a slow sender through and frees a slot five times sooner.
	DefaultReadTimeout  = time.Minute
	DefaultWriteTimeout = time.Minute
	// DefaultMaxConnections bounds the open connections of one server
	// (SMTP and LMTP each): a goroutine, two buffers and a descriptor
	// each, and up to MaxMessageBytes in DATA. Postfix runs 100 smtpd
	// processes by default; 256 is more than a mail store's inbound
	// traffic needs and far below the descriptors a node has.
	DefaultMaxConnections = 256
	// DefaultMaxConnectionsPerAddr bounds the connections from one client
	// address (SMTP; LMTP's clients are the site's own MTAs, so its
	// default is MaxConnections). An MTA opens a few to one destination
	// (Postfix: 20 at most); 16 keeps one address from taking every slot.
	// Loopback clients are exempt (Options.LimitLoopback).
	DefaultMaxConnectionsPerAddr = 16
	// DefaultTransactionTimeout bounds a transaction from MAIL to the
	// reply to DATA: the DATA deadline plus time for the commands.
	DefaultTransactionTimeout = 15 * time.Minute
	// DefaultDataTimeout bounds the reception of one message: the
	// largest (50 MiB by default) then needs 87 KB/s, any server link.
	DefaultDataTimeout = 10 * time.Minute
	// DefaultDataMinRate is the least average rate of DATA after its
	// first ReadTimeout: 4 KiB/s (32 kbit/s) is slower than any real
	// sender, and a slowloris at 1 byte/s is cut a minute after DATA.
	DefaultDataMinRate = 4 << 10
	// DefaultMaxHeaderBytes bounds a message's header section, as Exim's
	// header_maxsize (1 MiB) does. The largest real headers (long
	// Received chains, DKIM and ARC sets) stay under 100 KB.
	DefaultMaxHeaderBytes = 1 << 20
	// DefaultMaxHeaderFields bounds the fields of a header section. Real
	// mail has dozens (a few hundred with a long trace); 10 000 is also
	// the number of fields the store's metadata lists, so every admitted
	// field is described there.
	DefaultMaxHeaderFields = 10000
	// DefaultMaxBytesInFlight bounds the message bytes one server holds
	// at once, across its sessions: without it, 256 connections sending
	// 50 MiB each would ask for 12.5 GiB. Holding a message while it is
	// received and written costs a few times its size (its bytes, their
	// metadata and log entry), so 256 MiB keeps a server's peak near a
	// gigabyte, and still admits five messages of the largest size at
	// once, or thousands of ordinary ones.
	DefaultMaxBytesInFlight = 256 << 20
)

// Options configure a Server. Reader, Writer and Users are required; a
// zero limit means its default.
type Options struct {
	Reader protocols.Reader
	Writer protocols.Writer
	Users  protocols.Users

	// LMTP serves LMTP (RFC 2033) instead of SMTP.
	LMTP bool
	// Hostname names this node in the greeting and Received headers.
	Hostname string
	// LocalDomains are the domains whose users are local; mail for any
	// other domain is refused (this is not a relay).
	LocalDomains []string
	// MaxMessageBytes bounds a message as the client sends it; it
	// defaults to the store's limit.
	MaxMessageBytes int64
	MaxRecipients   int
	MaxLineLength   int
	// ReadTimeout is the idle deadline: the wait for each command (and
	// for the first bytes after DATA). WriteTimeout bounds each reply.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// MaxConnections bounds the open connections; MaxConnectionsPerAddr
	// those from one client IP address. Loopback clients (a local MTA,
	// scripts, benchmarks) and unix sockets are exempt from the latter,
	// as Postfix exempts $mynetworks, unless LimitLoopback is set.
	MaxConnections        int
	MaxConnectionsPerAddr int
	LimitLoopback         bool
	// TransactionTimeout bounds a transaction from MAIL to the reply to
	// DATA; DataTimeout the reception of the message; DataMinRate, in
	// bytes per second, its average rate after a first ReadTimeout.
	TransactionTimeout time.Duration
	DataTimeout        time.Duration
	DataMinRate        int64
	// MaxHeaderBytes and MaxHeaderFields bound a message's header
	// section.
	MaxHeaderBytes  int64
	MaxHeaderFields int
	// MaxBytesInFlight bounds the bytes of the messages the server holds
	// at once (received or being written), across its sessions. A message
	// that does not fit is refused 452 4.3.1 (temporary) once it ends.
	MaxBytesInFlight int64
	// TLSConfig enables STARTTLS, and is needed to serve a listener made
	// by tls.NewListener (see the package documentation).
	TLSConfig *tls.Config

	// Delivered, if set, is told of each acknowledged delivery: the number
	// of recipients and the message's size.
	Delivered func(recipients int, size int64)
	// Observe, if set, is told each transaction's duration and outcome.
	Observe func(cmd string, d time.Duration, err error)

	Logger *slog.Logger
}

// withDefaults fills the zero values and reports every negative one.
func (o *Options) withDefaults() error {
	var bad []string
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxMessageBytes", o.MaxMessageBytes}, {"MaxRecipients", int64(o.MaxRecipients)},
		{"MaxLineLength", int64(o.MaxLineLength)}, {"ReadTimeout", int64(o.ReadTimeout)},
		{"WriteTimeout", int64(o.WriteTimeout)}, {"MaxConnections", int64(o.MaxConnections)},
		{"MaxConnectionsPerAddr", int64(o.MaxConnectionsPerAddr)},
		{"TransactionTimeout", int64(o.TransactionTimeout)}, {"DataTimeout", int64(o.DataTimeout)},
		{"DataMinRate", o.DataMinRate}, {"MaxHeaderBytes", o.MaxHeaderBytes},
		{"MaxHeaderFields", int64(o.MaxHeaderFields)}, {"MaxBytesInFlight", o.MaxBytesInFlight},
	} {
		if f.v < 0 {
			bad = append(bad, fmt.Sprintf("%s %d: must not be negative", f.name, f.v))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("smtp: %s", strings.Join(bad, "; "))
	}
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxMessageBytes, o.Reader.MaxMessageSize())
	defInt(&o.MaxRecipients, DefaultMaxRecipients)
	defInt(&o.MaxLineLength, DefaultMaxLineLength)
	defDur(&o.ReadTimeout, DefaultReadTimeout)
	defDur(&o.WriteTimeout, DefaultWriteTimeout)
	defInt(&o.MaxConnections, DefaultMaxConnections)
	if o.LMTP {
		defInt(&o.MaxConnectionsPerAddr, o.MaxConnections)
	}
	defInt(&o.MaxConnectionsPerAddr, DefaultMaxConnectionsPerAddr)
	defDur(&o.TransactionTimeout, DefaultTransactionTimeout)
	defDur(&o.DataTimeout, DefaultDataTimeout)
	def(&o.DataMinRate, DefaultDataMinRate)
	def(&o.MaxHeaderBytes, DefaultMaxHeaderBytes)
	defInt(&o.MaxHeaderFields, DefaultMaxHeaderFields)
	def(&o.MaxBytesInFlight, DefaultMaxBytesInFlight)
	if o.Hostname == "" {
		o.Hostname = "localhost"
	}
	return nil
}

// Server is an SMTP or LMTP server that delivers to the store.
type Server struct {
	opts  Options
	log   *slog.Logger
	srv   *gosmtp.Server
	proto string // "SMTP" or "LMTP"

	conns    *connLimits
	inFlight budget    // message bytes held, against MaxBytesInFlight
	refusals sometimes // logs of connections turned away over a limit
	tlsOnce  sync.Once // the warning about a TLS listener without TLSConfig

	mu        sync.Mutex
	sessions  map[*session]struct{}
	listeners []net.Listener
	closing   bool
	draining  int            // calls of Drain in progress
	turning   sync.WaitGroup // connections being turned away with 421
	turningN  atomic.Int32   // how many

	// readOnly, when set, refuses transactions at MAIL FROM (a passive),
	// before the sender transfers the message.
	readOnly atomic.Pointer[gosmtp.SMTPError]
	// unavailable, when set, refuses transactions at MAIL FROM.
	unavailable atomic.Pointer[gosmtp.SMTPError]
}

// SetAvailable turns serving on or off: while not available (a node that
// does not know yet that its data is current), MAIL FROM is answered 451
// with why.
func (s *Server) SetAvailable(ok bool, why string) {
	if ok {
		s.unavailable.Store(nil)
		return
	}
	s.unavailable.Store(&gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
		Message: "This node does not take mail yet (" + why + "); try again later"})
}

// SetReadOnly turns the read-only mode on or off while serving: on a
// read-only node (a passive) MAIL FROM is answered 451, naming hint
// (where to deliver instead), so the sender retries or tries its next MX
// without transferring the message. Transactions already past MAIL FROM
// meet the node's own refusal at DATA.
func (s *Server) SetReadOnly(readOnly bool, hint string) {
	if !readOnly {
		s.readOnly.Store(nil)
		return
	}
	msg := "This node is a read-only replica; deliver to the active"
	if hint != "" {
		msg += " (" + hint + ")"
	}
	s.readOnly.Store(&gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: msg + "; try again later"})
}

// New returns a Server.
func New(opts *Options) (*Server, error) {
	if opts == nil || opts.Reader == nil || opts.Writer == nil || opts.Users == nil {
		return nil, errors.New("smtp: Reader, Writer and Users are required")
	}
	s := &Server{opts: *opts, sessions: make(map[*session]struct{}), proto: "SMTP"}
	o := &s.opts
	if err := o.withDefaults(); err != nil {
		return nil, err
	}
	if o.LMTP {
		s.proto = "LMTP"
	}
	s.log = o.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", map[bool]string{false: "smtp", true: "lmtp"}[o.LMTP])
	s.conns = newConnLimits(o.MaxConnections, o.MaxConnectionsPerAddr)
	s.inFlight.max = o.MaxBytesInFlight
	s.refusals.every = logEvery

	srv := gosmtp.NewServer(backend{s})
	srv.LMTP = o.LMTP
	srv.Domain = o.Hostname
	// The size limit is this package's (see the package documentation):
	// go-smtp's refuses a message of exactly its limit.
	srv.MaxMessageBytes = 0
	srv.MaxRecipients = o.MaxRecipients
	srv.MaxLineLength = o.MaxLineLength
	srv.ReadTimeout = o.ReadTimeout
	srv.WriteTimeout = o.WriteTimeout
	srv.TLSConfig = o.TLSConfig
	srv.EnableSMTPUTF8 = true
	srv.EnableBINARYMIME = true
	srv.ErrorLog = logAdapter{s.log}
	s.srv = srv
	return s, nil
}

// Serve accepts connections on ln until Shutdown. While Drain runs, the
// connections it accepts are answered 421 4.3.0 and closed; those over a
// connection limit, 421 4.7.0. ln may be a tls.NewListener's if
// Options.TLSConfig is its configuration.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.srv.Serve(listener{ln, s})
	if errors.Is(err, gosmtp.ErrServerClosed) || s.isClosing() {
		return nil
	}
	return err
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Connections is the number of open connections.
func (s *Server) Connections() int { return s.conns.open() }

// BytesInFlight is the number of message bytes the server holds now,
// counted against MaxBytesInFlight.
func (s *Server) BytesInFlight() int64 { return s.inFlight.held() }

// Sessions is the number of open sessions: connections that said EHLO,
// HELO or LHLO.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Replies that close a connection.
var (
	errShuttingDown = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2},
		Message: "Service shutting down, try again later"}
	errDraining = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
		Message: "Service not available on this node now, try again later"}
)

// Drain closes every session properly and lets the server go on: idle
// sessions are answered 421 4.3.0 and closed at once; a session in a
// transaction (from MAIL to the end of DATA) may finish it, gets its reply
// (250, or 451 if the delivery failed), then 421 and is closed. Those still
// in a transaction when ctx ends are closed with 421 (their senders were
// not acknowledged and will retry), and Drain returns ctx's error. While
// Drain runs, new connections are answered 421 4.3.0 instead of the
// greeting and closed, and a connection greeted before it that says EHLO
// meanwhile is answered 421 and closed; once Drain returns, the server
// accepts and serves as usual. After Shutdown, Drain does nothing.
//
// A node losing the active role drains, so that the senders retry on the
// new active instead of waiting on this node.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.draining++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.draining--
		s.mu.Unlock()
	}()
	return s.closeSessions(ctx, errDraining)
}

// Shutdown stops accepting connections, answers 421 to idle sessions and
// to new transactions, and lets transactions in progress finish within
// ctx; when ctx ends first, the remaining connections are cut (their
// senders were not acknowledged and will retry). It closes the sessions
// as Drain does, but for good.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	// go-smtp's own Shutdown waits for clients to leave by themselves and
	// races with Close; the listeners are closed here instead.
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	_ = s.closeSessions(ctx, errShuttingDown)
	err := s.srv.Close() // cut whatever is left
	if errors.Is(err, gosmtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	s.turning.Wait()
	return err
}

// closeSessions closes every open session with reply (421): idle ones at
// once, the others when their transaction ends or, at the latest, when
// ctx ends, when it returns ctx's error. The caller has set closing or
// draining first, so that sessions made meanwhile are closed by
// NewSession.
func (s *Server) closeSessions(ctx context.Context, reply *gosmtp.SMTPError) error {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.closeWhenIdle(reply)
	}
	for _, sess := range sessions {
		select {
		case <-sess.done:
		case <-ctx.Done():
			cut := 0
			for _, left := range sessions {
				if left.cut(reply) {
					cut++
				}
			}
			if cut == 0 {
				return nil
			}
			return fmt.Errorf("smtp: %d sessions closed in a transaction: %w", cut, ctx.Err())
		}
	}
	return nil
}

type backend struct{ s *Server }

func (b backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	s := b.s
	sess := &session{srv: s, conn: c, start: time.Now(), done: make(chan struct{})}
	if addr := c.Conn().RemoteAddr(); addr != nil {
		sess.remote = addr.String()
	}
	s.mu.Lock()
	reply := s.refusalLocked()
	if reply == nil {
		s.sessions[sess] = struct{}{}
	}
	s.mu.Unlock()
	if reply != nil {
		// Greeted before the drain or shutdown began: the answer to its
		// EHLO is 421, and the connection is closed. The library's own
		// reply then goes nowhere.
		sess.closeWhenIdle(reply)
	}
	return sess, nil
}

// refusalLocked is the reply to a new connection or session while the
// server is shutting down or draining, or nil. s.mu must be held.
func (s *Server) refusalLocked() *gosmtp.SMTPError {
	switch {
	case s.closing:
		return errShuttingDown
	case s.draining > 0:
		return errDraining
	}
	return nil
}

// say writes reply on c, bounded in time, and closes c.
func say(c net.Conn, reply *gosmtp.SMTPError) {
	_ = c.SetDeadline(time.Now().Add(closeTimeout))
	_, _ = io.WriteString(c, replyLine(reply))
	_ = c.Close()
}

// replyLine is reply as one line on the wire.
func replyLine(reply *gosmtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d %s\r\n", reply.Code,
		reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2], reply.Message)
}

// closeTimeout bounds the write of a closing 421.
const closeTimeout = 5 * time.Second

type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Printf(format string, v ...any) { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a logAdapter) Println(v ...any)               { a.l.Warn(fmt.Sprint(v...)) }
