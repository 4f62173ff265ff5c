// Package smtp takes inbound mail for local users over SMTP and LMTP,
// through go-smtp, and delivers it into the store with one write per
// transaction: the body stored once, linked into every recipient's INBOX,
// with Return-Path and Delivered-To kept per recipient outside the shared
// body.
//
// 250 (for LMTP, each recipient's 250) is sent only after protocols.Writer
// returned, that is once the delivery is durable as the node promises. A
// temporary failure of the writer answers 451 4.3.0 so that the sender
// retries; nothing half-stored is ever acknowledged.
//
// A Server is safe for concurrent use.
package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/protocols"
)

// Defaults for Options' zero values.
const (
	DefaultMaxRecipients = 1000
	// DefaultMaxLineLength bounds a line of commands and of message data.
	// RFC 5322 allows 998 bytes, but real mail (HTML without line breaks)
	// exceeds it, and a refused line makes the sender retry forever; 64 KiB
	// keeps memory bounded without refusing such mail.
	DefaultMaxLineLength = 64 << 10
	DefaultReadTimeout   = 5 * time.Minute // RFC 5321 4.5.3.2
	DefaultWriteTimeout  = 5 * time.Minute
)

// Options configure a Server. Reader, Writer and Users are required.
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
	// MaxMessageBytes defaults to the store's limit.
	MaxMessageBytes int64
	MaxRecipients   int
	MaxLineLength   int
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	// TLSConfig enables STARTTLS (and is used by ServeTLS).
	TLSConfig *tls.Config

	// Delivered, if set, is told of each acknowledged delivery: the number
	// of recipients and the message's size.
	Delivered func(recipients int, size int64)
	// Observe, if set, is told each transaction's duration and outcome.
	Observe func(cmd string, d time.Duration, err error)

	Logger *slog.Logger
}

// Server is an SMTP or LMTP server that delivers to the store.
type Server struct {
	opts  Options
	log   *slog.Logger
	srv   *gosmtp.Server
	proto string // "SMTP" or "LMTP"

	mu        sync.Mutex
	sessions  map[*session]struct{}
	listeners []net.Listener
	closing   bool
	draining  int            // calls of Drain in progress
	turning   sync.WaitGroup // connections being turned away with 421

	// readOnly, when set, refuses transactions at MAIL FROM (a passive),
	// before the sender transfers the message.
	readOnly atomic.Pointer[gosmtp.SMTPError]
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
	if o.LMTP {
		s.proto = "LMTP"
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = o.Reader.MaxMessageSize()
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = DefaultMaxRecipients
	}
	if o.MaxLineLength <= 0 {
		o.MaxLineLength = DefaultMaxLineLength
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Hostname == "" {
		o.Hostname = "localhost"
	}
	s.log = o.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", map[bool]string{false: "smtp", true: "lmtp"}[o.LMTP])

	srv := gosmtp.NewServer(backend{s})
	srv.LMTP = o.LMTP
	srv.Domain = o.Hostname
	srv.MaxMessageBytes = o.MaxMessageBytes
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
// connections it accepts are answered 421 and closed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.srv.Serve(drainListener{ln, s})
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

// Sessions is the number of open connections.
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

// drainListener answers the connections it accepts while the server
// drains with 421 and closes them, instead of handing them to go-smtp.
type drainListener struct {
	net.Listener
	s *Server
}

func (l drainListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.s.mu.Lock()
		reply := l.s.refusalLocked()
		if reply != nil {
			l.s.turning.Add(1)
		}
		l.s.mu.Unlock()
		if reply == nil {
			return c, nil
		}
		// Apart from the accept loop: a TLS connection's handshake
		// waits for the client.
		go func() {
			defer l.s.turning.Done()
			say(c, reply)
		}()
	}
}

// say writes reply on c, bounded in time, and closes c.
func say(c net.Conn, reply *gosmtp.SMTPError) {
	_ = c.SetDeadline(time.Now().Add(closeTimeout))
	_, _ = fmt.Fprintf(c, "%d %d.%d.%d %s\r\n", reply.Code,
		reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2], reply.Message)
	_ = c.Close()
}

// closeTimeout bounds the write of a closing 421.
const closeTimeout = 5 * time.Second

type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Printf(format string, v ...any) { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a logAdapter) Println(v ...any)               { a.l.Warn(fmt.Sprint(v...)) }
