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
	wg        sync.WaitGroup // in-flight transactions
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

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.srv.Serve(ln)
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

// Shutdown stops accepting connections, answers 421 to idle sessions and
// to new transactions, and lets transactions in progress finish within
// ctx; when ctx ends first, the remaining connections are cut (their
// senders were not acknowledged and will retry).
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
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.closeIfIdle()
	}
	txDone := make(chan struct{})
	go func() { s.wg.Wait(); close(txDone) }()
	select {
	case <-txDone:
	case <-ctx.Done():
	}
	err := s.srv.Close() // cut whatever is left
	if errors.Is(err, gosmtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

type backend struct{ s *Server }

func (b backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	s := b.s
	sess := &session{srv: s, conn: c, start: time.Now()}
	if addr := c.Conn().RemoteAddr(); addr != nil {
		sess.remote = addr.String()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, errShuttingDown
	}
	s.sessions[sess] = struct{}{}
	return sess, nil
}

var errShuttingDown = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}

type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Printf(format string, v ...any) { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a logAdapter) Println(v ...any)               { a.l.Warn(fmt.Sprint(v...)) }
