package smtp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
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
	// bye, once set (draining or shutting down), is the 421 the session
	// is closed with as soon as no transaction is in progress.
	bye    *gosmtp.SMTPError
	closed bool
	done   chan struct{} // closed with closed

	from  string
	rcpts []rcpt
	txAt  time.Time
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

func (s *session) Mail(from string, _ *gosmtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bye != nil {
		return s.bye
	}
	if s.closed {
		return errShuttingDown
	}
	if ro := s.srv.readOnly.Load(); ro != nil {
		return ro
	}
	s.inTx = true
	s.from = from
	s.txAt = time.Now()
	return nil
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	user, err := s.srv.localUser(to)
	if err != nil {
		return err
	}
	s.rcpts = append(s.rcpts, rcpt{addr: to, user: user})
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

func (s *session) Data(r io.Reader) error {
	err := s.deliver(r)
	return err
}

// LMTPData delivers once for all recipients and answers each in RCPT
// order. The delivery is one atomic write, so every recipient gets the
// same answer.
func (s *session) LMTPData(r io.Reader, status gosmtp.StatusCollector) error {
	err := s.deliver(r)
	for _, rc := range s.rcpts {
		status.SetStatus(rc.addr, err)
	}
	return nil
}

// deliver reads the message and writes one Deliver for all recipients.
// go-smtp's reader stops at MaxMessageBytes (552): at most the limit is
// held in memory, and the rest is discarded by the library.
func (s *session) deliver(r io.Reader) (err error) {
	start := time.Now()
	defer func() {
		if obs := s.srv.opts.Observe; obs != nil {
			obs("DATA", time.Since(start), err)
		}
	}()
	// The message is read straight after its Received header, so the
	// body is held once.
	var buf bytes.Buffer
	hdr := s.receivedHeader()
	buf.Grow(len(hdr) + 16<<10)
	buf.WriteString(hdr)
	if _, err := buf.ReadFrom(r); err != nil {
		var se *gosmtp.SMTPError
		if errors.As(err, &se) {
			return err // 552 from the size limit
		}
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
			Message: "Message not received in full"}
	}
	body := buf.Bytes()
	if int64(len(body)) > s.srv.opts.MaxMessageBytes {
		return gosmtp.ErrDataTooLarge
	}
	ctx := context.Background()
	op := &store.Deliver{Body: *dedupe.Prepare(body, nil), InternalDate: time.Now().UnixNano()}
	seen := make(map[string]bool, len(s.rcpts))
	for _, rc := range s.rcpts {
		if seen[rc.user] {
			continue // the same mailbox twice gets one copy
		}
		seen[rc.user] = true
		op.Targets = append(op.Targets, store.Target{
			User: rc.user, Mailbox: store.Inbox,
			Prefix: []byte("Return-Path: <" + s.from + ">\r\nDelivered-To: " + rc.addr + "\r\n"),
		})
	}
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

// write commits op; a refusal by the store is returned as the error.
func (s *Server) write(ctx context.Context, op store.Op) error {
	res, err := s.opts.Writer.Write(ctx, op, nil)
	if err == nil {
		err = res.Err
	}
	return err
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
	switch {
	case errors.Is(err, store.ErrTooLarge):
		return gosmtp.ErrDataTooLarge
	case errors.Is(err, protocols.ErrReadOnly):
		// A passive: the sender retries, or its next MX is the active.
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
			Message: "This node is a read-only replica, deliver to the active; try again later"}
	case errors.Is(err, protocols.ErrUnavailable):
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
			Message: "Temporarily unavailable, try again later"}
	}
	s.log.Error("delivery failed", "err", err)
	return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
		Message: "Local error in processing, try again later"}
}

// receivedHeader is the trace header of this transaction (RFC 5321
// 4.4). It names the recipient only when there is one, as Postfix does.
func (s *session) receivedHeader() string {
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
	if len(s.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", sanitize(s.rcpts[0].addr))
	}
	fmt.Fprintf(&b, "; %s\r\n", time.Now().Format(time.RFC1123Z))
	return b.String()
}

// sanitize keeps a client-given string from breaking the header.
func sanitize(v string) string {
	if v == "" {
		return "unknown"
	}
	b := []byte(v)
	for i, c := range b {
		if c < 0x21 || c == 0x7f || c == '<' || c == '>' || c == ';' {
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
