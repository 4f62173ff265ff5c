package smtp

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// readChunk is how much of a message is read at a time. go-smtp's DATA
// reader returns only once a read is full, so this is also the grain of
// the DATA deadline: a client at the minimum rate needs readChunk /
// DataMinRate seconds per read, well within the ReadTimeout it starts with.
const readChunk = 4 << 10

// Replies to a message refused while it is received.
var (
	errDataTimeout = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2},
		Message: "Message data too slow or too late, closing connection"}
	errNotReceived = &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
		Message: "Message not received in full"}
	errBusy = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 3, 1},
		Message: "Insufficient system storage for the messages in progress, try again later"}
)

// tooLarge is the refusal of a message above limit bytes.
func tooLarge(limit int64) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 3, 4},
		Message: fmt.Sprintf("Message size exceeds fixed maximum message size (%d bytes)", limit)}
}

// receive reads a message from DATA or BDAT and returns it as the client
// sent it, or the error to answer. The message's bytes are counted against
// MaxBytesInFlight: the caller gives back held once it is done with them
// (held is also set with an error).
//
// Over the size or header limits it keeps reading, discarding, until the
// message ends, then returns the 552 (one reply, and the session goes on).
// Too slow or too late, it closes the session with 421. A line longer
// than MaxLineLength cannot be read past (go-smtp's line reader stops for
// good), so it answers 552 and closes the session.
func (s *session) receive(r io.Reader, env envelope) (body []byte, held int64, err error) {
	o := &s.srv.opts
	s.mu.Lock()
	txEnd := s.txEnd
	s.mu.Unlock()
	start := time.Now()
	end := start.Add(o.DataTimeout)
	if !txEnd.IsZero() && txEnd.Before(end) {
		end = txEnd
	}
	// deadline is when the bytes got so far stop buying time: the first
	// ReadTimeout is free, then each DataMinRate bytes buy a second.
	deadline := func(got int64) time.Time {
		d := start.Add(o.ReadTimeout + time.Duration(float64(got)/float64(o.DataMinRate)*float64(time.Second)))
		if d.After(end) {
			d = end
		}
		return d
	}
	// DATA is read on the session's goroutine: the read deadline is ours
	// until the reply. BDAT chunks are read by go-smtp under its own
	// per-command deadline and piped here; their pace is checked as they
	// come, and a stall is bounded by that deadline and the transaction's.
	_, bdat := r.(*io.PipeReader)
	nc := s.conn.Conn()

	var (
		buf     = make([]byte, 0, readChunk)
		scratch []byte // once the message is refused
		got     int64
		hdr     headerScan
		refused *gosmtp.SMTPError
	)
	// drop lets the buffer and its count go once the message is refused:
	// nothing more of it is kept.
	drop := func() {
		if refused != nil && scratch == nil {
			buf, scratch = nil, make([]byte, readChunk)
			s.srv.inFlight.give(held)
			held = 0
		}
	}
	for {
		if !bdat {
			_ = nc.SetReadDeadline(deadline(got))
		}
		if refused == nil && int64(len(buf))+readChunk > held {
			if s.srv.inFlight.take(readChunk) {
				held += readChunk
			} else {
				refused = errBusy
				s.srv.log.Warn("message refused: too many bytes in flight", "remote", s.remote,
					"max", s.srv.opts.MaxBytesInFlight)
				drop()
			}
		}
		var p []byte
		if refused == nil {
			buf = slices.Grow(buf, readChunk)
			p = buf[len(buf) : len(buf)+readChunk]
		} else {
			p = scratch
		}
		n, err := r.Read(p)
		got += int64(n)
		if refused == nil {
			buf = buf[:len(buf)+n]
			if !hdr.done {
				hdr.scan(p[:n])
			}
			switch {
			case got > o.MaxMessageBytes:
				refused = tooLarge(o.MaxMessageBytes)
			case hdr.bytes > o.MaxHeaderBytes:
				refused = &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 3, 4},
					Message: fmt.Sprintf("Message header exceeds fixed maximum header size (%d bytes)", o.MaxHeaderBytes)}
			case hdr.fields > o.MaxHeaderFields:
				refused = &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 3, 4},
					Message: fmt.Sprintf("Message header exceeds fixed maximum number of fields (%d)", o.MaxHeaderFields)}
			}
		}
		drop()
		if err == io.EOF {
			if refused != nil {
				return nil, held, refused
			}
			return buf, held, nil
		}
		if err == nil && bdat && time.Now().After(deadline(got)) {
			err = errDataTimeout
		}
		if err != nil {
			return nil, held, s.receiveFailed(err, env, got, time.Since(start))
		}
	}
}

// receiveFailed handles a message that could not be read to its end and
// returns the error for go-smtp (whose reply goes nowhere once the
// session is closed here).
func (s *session) receiveFailed(err error, env envelope, got int64, took time.Duration) error {
	switch {
	case errors.Is(err, gosmtp.ErrTooLongLine):
		reply := &gosmtp.SMTPError{Code: 552, EnhancedCode: gosmtp.EnhancedCode{5, 3, 4},
			Message: fmt.Sprintf("Message line too long (the limit is %d bytes), closing connection", s.srv.opts.MaxLineLength)}
		s.srv.log.Info("line too long in message data, closing", "remote", s.remote)
		s.lingerClose(s.finalReplies(reply, env))
		return reply
	case err == errDataTimeout || isTimeout(err):
		s.srv.log.Info("message data too slow or too late, closing", "remote", s.remote,
			"bytes", got, "took", took.Round(time.Millisecond))
		s.lingerClose(replyLine(errDataTimeout))
		return errDataTimeout
	}
	// The client went away, or the session was cut meanwhile.
	return errNotReceived
}

// finalReplies is the answer to a DATA that ends in reply: one line, or
// for LMTP one per recipient, in RCPT order, as go-smtp writes them.
func (s *session) finalReplies(reply *gosmtp.SMTPError, env envelope) string {
	if !s.srv.opts.LMTP || len(env.rcpts) == 0 {
		return replyLine(reply)
	}
	var b strings.Builder
	for _, rc := range env.rcpts {
		r := *reply
		r.Message = "<" + rc.addr + "> " + reply.Message
		b.WriteString(replyLine(&r))
	}
	return b.String()
}

// lingerClose answers lines and closes the session, letting the client
// finish sending first (see linger).
func (s *session) lingerClose(lines string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closedLocked()
	s.mu.Unlock()
	linger(s.conn.Conn(), lines)
}

// headerScan follows a message's header section as it arrives: the bytes
// before the body (the blank line included) and the number of fields. A
// message without a blank line is all header, as the store reads it.
type headerScan struct {
	done    bool
	bytes   int64
	fields  int
	lineLen int  // bytes of the current line so far
	cr      bool // the current line so far is a lone CR
}

func (h *headerScan) scan(p []byte) {
	for _, c := range p {
		h.bytes++
		if c == '\n' {
			if h.lineLen == 0 || h.lineLen == 1 && h.cr {
				h.done = true
				return
			}
			h.lineLen, h.cr = 0, false
			continue
		}
		if h.lineLen == 0 {
			h.cr = c == '\r'
			if c != ' ' && c != '\t' && c != '\r' {
				h.fields++
			}
		}
		h.lineLen++
	}
}

// maxPath is RFC 5321's limit on a reverse- or forward-path (4.5.3.1.3),
// angle brackets included.
const maxPath = 256

// checkPath refuses an address of MAIL FROM (from) or RCPT TO that could
// not be written into a header field as it is meant: a control character
// anywhere (go-smtp passes CR, NUL and others through, quoted or not),
// more than RFC 5321 allows, or a domain with characters no domain has.
func checkPath(addr string, from bool) error {
	ec := gosmtp.EnhancedCode{5, 1, 3}
	if from {
		ec = gosmtp.EnhancedCode{5, 1, 7}
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x20 || c == 0x7f {
			return &gosmtp.SMTPError{Code: 501, EnhancedCode: gosmtp.EnhancedCode{5, 5, 2},
				Message: "Control characters (CR, LF, NUL...) are not allowed in an address"}
		}
	}
	if len(addr)+2 > maxPath {
		return &gosmtp.SMTPError{Code: 501, EnhancedCode: ec,
			Message: fmt.Sprintf("Path too long (the limit is %d octets)", maxPath)}
	}
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		for _, c := range []byte(addr[at+1:]) {
			if !isDomainByte(c) {
				return &gosmtp.SMTPError{Code: 501, EnhancedCode: ec, Message: "Bad address syntax: malformed domain"}
			}
		}
	}
	return nil
}

// isDomainByte reports whether c may appear in a domain or an address
// literal ([192.0.2.1], [IPv6:2001:db8::1]); bytes of UTF-8 are allowed
// for internationalised domains (SMTPUTF8).
func isDomainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c >= 0x80 || strings.IndexByte("-._[]:", c) >= 0
}

// headerPath writes an envelope address (checked by checkPath) as an
// RFC 5322 addr-spec: a local part that is not a dot-atom is quoted, its
// quotes and backslashes escaped. go-smtp hands over local parts unquoted
// ("a b"@c arrives as a b@c).
func headerPath(addr string) string {
	if addr == "" {
		return ""
	}
	local, domain, hasDomain := addr, "", false
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		local, domain, hasDomain = addr[:at], addr[at+1:], true
	}
	if !isDotAtom(local) {
		var b strings.Builder
		b.WriteByte('"')
		for i := 0; i < len(local); i++ {
			if c := local[i]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(local[i])
		}
		b.WriteByte('"')
		local = b.String()
	}
	if !hasDomain {
		return local
	}
	return local + "@" + domain
}

// isDotAtom reports whether s is an RFC 5322 dot-atom (UTF-8 allowed, as
// RFC 6532 does).
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80 ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
