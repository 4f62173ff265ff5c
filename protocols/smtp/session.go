package smtp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// session is one SMTP or LMTP connection.
type session struct {
	srv    *Server
	conn   *gosmtp.Conn
	remote string
	start  time.Time

	mu   sync.Mutex
	inTx bool // between MAIL and the end of the transaction
	// committing is set while a received message is being written: the
	// transaction deadline does not cut it (the writer is bounded).
	committing bool
	// bye, once set (draining or shutting down), is the 421 the session
	// is closed with as soon as no transaction is in progress.
	bye    *gosmtp.SMTPError
	closed bool
	done   chan struct{} // closed with closed

	from  string
	rcpts []rcpt
	txAt  time.Time
	// txEnd is the transaction's deadline; txTimer cuts the session then,
	// unless the transaction of generation txGen has ended.
	txEnd   time.Time
	txTimer *time.Timer
	txGen   uint64
}

// rcpt is one accepted RCPT TO, in order.
type rcpt struct {
	addr string // as given
	user string
}

var (
	_ gosmtp.Session     = (*session)(nil)
	_ gosmtp.LMTPSession = (*session)(nil)
)

// errTxTimeout closes a session whose transaction outlived
// TransactionTimeout.
var errTxTimeout = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2},
	Message: "Transaction time limit exceeded, closing connection"}

func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	if err := checkPath(from, true); err != nil {
		return err
	}
	if opts != nil && opts.Size > s.srv.opts.MaxMessageBytes {
		return tooLarge(s.srv.opts.MaxMessageBytes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bye != nil {
		return s.bye
	}
	if s.closed {
		return errShuttingDown
	}
	if un := s.srv.unavailable.Load(); un != nil {
		return un
	}
	if ro := s.srv.readOnly.Load(); ro != nil {
		return ro
	}
	s.from = from
	if s.inTx {
		return nil // a second MAIL does not move the deadline
	}
	s.inTx = true
	s.txAt = time.Now()
	d := s.srv.opts.TransactionTimeout
	s.txEnd = s.txAt.Add(d)
	s.txGen++
	gen := s.txGen
	s.txTimer = time.AfterFunc(d, func() { s.expire(gen) })
	return nil
}

// expire cuts the session if the transaction of generation gen is still
// in progress and not being written.
func (s *session) expire(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.txGen || !s.inTx || s.committing || s.closed {
		return
	}
	s.srv.log.Info("transaction time limit exceeded, closing", "remote", s.remote,
		"limit", s.srv.opts.TransactionTimeout)
	s.sayLocked(errTxTimeout)
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	if err := checkPath(to, false); err != nil {
		return err
	}
	user, err := s.srv.localUser(to)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.rcpts = append(s.rcpts, rcpt{addr: to, user: user})
	s.mu.Unlock()
	return nil
}

// localUser maps a recipient address to a local user, or refuses it.
func (s *Server) localUser(addr string) (string, error) {
	local, domain := addr, ""
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		local, domain = addr[:at], addr[at+1:]
		if !s.isLocalDomain(domain) {
			return "", &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1},
				Message: fmt.Sprintf("Relay access denied: %s is not a local domain", domain)}
		}
	}
	if store.ValidUser(local) != nil || !s.opts.Users.Lookup(local) {
		return "", &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1},
			Message: "No such user here"}
	}
	return local, nil
}

func (s *Server) isLocalDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	for _, l := range s.opts.LocalDomains {
		if strings.EqualFold(d, l) {
			return true
		}
	}
	return false
}

// envelope is a transaction's MAIL FROM and accepted RCPT TOs, copied
// when DATA begins: a session closed meanwhile (Shutdown's Logout) resets
// the session's own.
type envelope struct {
	from  string
	rcpts []rcpt
}

func (s *session) envelope() envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return envelope{from: s.from, rcpts: slices.Clone(s.rcpts)}
}

func (s *session) Data(r io.Reader) error {
	return s.deliver(r, s.envelope())
}

// LMTPData delivers once for all recipients and answers each in RCPT
// order. The delivery is one atomic write, so every recipient gets the
// same answer.
func (s *session) LMTPData(r io.Reader, status gosmtp.StatusCollector) error {
	env := s.envelope()
	err := s.deliver(r, env)
	for _, rc := range env.rcpts {
		status.SetStatus(rc.addr, err)
	}
	return nil
}

// deliver receives the message and writes one Deliver for all recipients.
func (s *session) deliver(r io.Reader, env envelope) (err error) {
	start := time.Now()
	defer func() {
		if obs := s.srv.opts.Observe; obs != nil {
			obs("DATA", time.Since(start), err)
		}
	}()
	body, held, err := s.receive(r, env)
	defer s.srv.inFlight.give(held)
	if err != nil {
		return err
	}
	received := s.receivedHeader(env)
	op := &store.Deliver{Body: *dedupe.Prepare(body, nil), InternalDate: time.Now().UnixNano()}
	op.Retry = retryKey(env, op.Body.ID)
	seen := make(map[string]bool, len(env.rcpts))
	for _, rc := range env.rcpts {
		if seen[rc.user] {
			continue // the same mailbox twice gets one copy
		}
		seen[rc.user] = true
		op.Targets = append(op.Targets, store.Target{
			User: rc.user, Mailbox: store.Inbox,
			Prefix: []byte("Return-Path: <" + headerPath(env.from) + ">\r\nDelivered-To: " + headerPath(rc.addr) + "\r\n" + received),
		})
	}
	s.mu.Lock()
	if s.closed {
		// Cut meanwhile (the transaction deadline, a drain): the client
		// was told 421, so nothing may be stored.
		s.mu.Unlock()
		return errShuttingDown
	}
	s.committing = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.committing = false
		s.mu.Unlock()
	}()
	ctx := context.Background()
	err = s.srv.write(ctx, op)
	if errors.Is(err, store.ErrNoUser) {
		// A user of the passwd-file not yet in the store (added a moment
		// ago, before the node's sync of the file ran): create the missing
		// ones and deliver again. Nothing of the refused delivery was
		// applied; the common case pays no lookup.
		for _, t := range op.Targets {
			if err := s.srv.ensureUser(ctx, t.User); err != nil {
				return s.srv.replyFor(err)
			}
		}
		err = s.srv.write(ctx, op)
	}
	if err != nil {
		return s.srv.replyFor(err)
	}
	if d := s.srv.opts.Delivered; d != nil {
		d(len(op.Targets), int64(len(body)))
	}
	return nil
}

// write commits op; a refusal by the store is returned as the error. A
// delivery the store recognises as the retry of one it holds (its first
// attempt was told to retry, but became durable) is logged and succeeds.
func (s *Server) write(ctx context.Context, op store.Op) error {
	res, err := s.opts.Writer.Write(ctx, op, nil)
	if err == nil {
		err = res.Err
	}
	if err == nil && res.Duplicate {
		s.log.Info("a retried delivery was stored already: acknowledged without a second copy", "seq", res.Seq)
	}
	return err
}

// retryKey names a delivery for its retries (store.Deliver.Retry): the
// envelope sender, the recipients' mailboxes and the body.
func retryKey(env envelope, body store.BlobID) []byte {
	users := make([]string, 0, len(env.rcpts))
	for _, r := range env.rcpts {
		users = append(users, r.user)
	}
	slices.Sort(users)
	users = slices.Compact(users)
	h := sha256.New()
	h.Write([]byte(env.from))
	for _, u := range users {
		h.Write([]byte{0})
		h.Write([]byte(u))
	}
	h.Write([]byte{0})
	h.Write(body[:])
	return h.Sum(nil)
}

// ensureUser creates a user of the passwd-file in the store on its first
// delivery.
func (s *Server) ensureUser(ctx context.Context, user string) error {
	ok, err := s.opts.Reader.HasUser(user)
	if err != nil || ok {
		return err
	}
	err = s.write(ctx, &store.CreateUser{User: user, UIDValidity: uint32(time.Now().Unix())})
	if errors.Is(err, store.ErrUserExists) {
		return nil
	}
	return err
}

// replyFor chooses the reply for a failed delivery: permanent only when
// the message itself is refused; anything else is temporary, so the
// sender keeps the message and retries.
func (s *Server) replyFor(err error) error {
	if !errors.Is(err, store.ErrTooLarge) {
		// Every temporary failure is logged with its reason: the sender
		// will retry, and an operator should know why.
		s.log.Warn("delivery answered with a temporary failure", "err", err)
	}
	switch {
	case errors.Is(err, store.ErrTooLarge):
		return gosmtp.ErrDataTooLarge
	case errors.Is(err, protocols.ErrReadOnly):
		// A passive: the sender retries, or its next MX is the active.
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
			Message: "This node is a read-only replica, deliver to the active; try again later"}
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, store.ErrDiskFault):
		// A full disk (issue 14 D3): RFC 3463's "mail system full".
		return &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 3, 1},
			Message: "Insufficient system storage, try again later"}
	case errors.Is(err, protocols.ErrUnavailable):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
			Message: "Temporarily unavailable, try again later"}
	}
	return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
		Message: "Local error in processing, try again later"}
}

// receivedHeader is the trace field of this transaction (RFC 5321 4.4),
// CRLF-terminated. It names the recipient only when there is one, as
// Postfix does.
func (s *session) receivedHeader(env envelope) string {
	helo := sanitize(s.conn.Hostname())
	ip := s.remote
	if host, _, err := net.SplitHostPort(s.remote); err == nil {
		ip = host
	}
	with := "ESMTP"
	if s.srv.opts.LMTP {
		with = "LMTP"
	}
	if _, ok := s.conn.TLSConnectionState(); ok {
		with += "S"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (Twinbox) with %s", helo, ip, s.srv.opts.Hostname, with)
	if len(env.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", headerPath(env.rcpts[0].addr))
	}
	fmt.Fprintf(&b, "; %s\r\n", time.Now().Format(time.RFC1123Z))
	return b.String()
}

// sanitize makes a client-given word (the HELO name) a safe token of a
// header field: no white space, control or delimiter characters.
func sanitize(v string) string {
	if v == "" {
		return "unknown"
	}
	b := []byte(v)
	for i, c := range b {
		if c < 0x21 || c == 0x7f || strings.IndexByte(`<>;()"\`, c) >= 0 {
			b[i] = '_'
		}
	}
	if len(b) > 255 {
		b = b[:255]
	}
	return string(b)
}

// Reset ends a transaction. go-smtp calls it after the transaction's
// reply, so a session closing once its transaction ends says 421 after
// that reply.
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endTxLocked()
	if s.bye != nil && !s.closed {
		s.sayLocked(s.bye)
	}
}

func (s *session) endTxLocked() {
	s.inTx = false
	s.from, s.rcpts = "", nil
	s.txGen++
	if s.txTimer != nil {
		s.txTimer.Stop()
		s.txTimer = nil
	}
}

func (s *session) Logout() error {
	s.mu.Lock()
	s.endTxLocked()
	s.closedLocked()
	s.mu.Unlock()
	s.srv.mu.Lock()
	delete(s.srv.sessions, s)
	s.srv.mu.Unlock()
	return nil
}

func (s *session) closedLocked() {
	if !s.closed {
		s.closed = true
		close(s.done)
	}
}

// closeWhenIdle answers reply (421) and closes a session that is between
// transactions; one in a transaction is closed when it ends.
func (s *session) closeWhenIdle(reply *gosmtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bye == nil {
		s.bye = reply
	}
	if !s.inTx && !s.closed {
		s.sayLocked(s.bye)
	}
}

// cut answers reply and closes the session even in a transaction, and
// reports whether it was in one.
func (s *session) cut(reply *gosmtp.SMTPError) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sayLocked(reply)
	return true
}

// sayLocked writes reply on the raw connection and closes it. Outside
// cut, it is called only while the library waits for the next command
// (idle, or right after it answered a transaction), so no reply of its
// own interleaves.
func (s *session) sayLocked(reply *gosmtp.SMTPError) {
	s.closedLocked()
	say(s.conn.Conn(), reply)
}
