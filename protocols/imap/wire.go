package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The wire format of RFC 3501 section 9 (and RFC 9051's), read one command
// at a time. A command is parsed as it is read: a literal is announced at
// the end of a line, judged by the connection's literal policy before a
// synchronizing one is invited with "+" or a non-synchronizing one read,
// and the parse goes on with the line after it. Nothing a client sends is
// held beyond maxLine bytes per line and the literal policy's limit.

const (
	// maxLine is the longest command line (RFC 7162 3.2.1.5 asks servers to
	// take 8 KiB at least; long UID sets need more).
	maxLine = 64 << 10
	// maxLiteral is the largest literal of a command other than APPEND's
	// message (a mailbox name, a search string).
	maxLiteral = 64 << 10
	// maxDepth bounds nested parenthesised lists (SEARCH keys).
	maxDepth = 32
)

// badError is a client's error in a command: the answer is BAD, the
// session goes on.
type badError struct{ text string }

func (e *badError) Error() string { return e.text }

func bad(format string, args ...any) error {
	return &badError{text: fmt.Sprintf(format, args...)}
}

// fatalError ends the session after its answer (a literal that was
// refused but is on its way, a line that never ends).
type fatalError struct {
	resp string // the tagged response, without the tag (may be empty)
	bye  string
}

func (e *fatalError) Error() string { return e.bye }

// errLiteralTooBig is returned by a literal policy for a literal it
// refuses; the parser answers NO [TOOBIG] or, for a non-synchronizing
// literal, closes the session.
var errLiteralTooBig = errors.New("imap: literal too big")

// literalPolicy decides on a literal of size bytes: it returns nil to
// take it (after sending "+" for a synchronizing one) or an error.
type literalPolicy func(size int64, nonSync bool, limit int64) error

// parser reads and parses one command.
type parser struct {
	br     *bufio.Reader
	accept literalPolicy
	line   []byte // the current line, without CRLF
	pos    int
	depth  int
	// litLimit is the size above which a literal is refused.
	litLimit int64
	// lastLiteral is set when the token just read was a literal.
	lastLiteral bool
}

// readLine reads the next line into p.line. A line longer than maxLine is
// discarded to its end and reported as a BAD, with its first maxLine bytes
// left in p.line (for the tag); if its end announced a non-synchronizing
// literal, that literal would be read as commands: the session ends. A
// connection error is returned as it is.
func (p *parser) readLine() error {
	p.line = p.line[:0]
	p.pos = 0
	for {
		chunk, err := p.br.ReadSlice('\n')
		if len(p.line)+len(chunk) > maxLine {
			p.line = append(p.line, chunk[:maxLine-len(p.line)]...)
			// Skip to the end of the line, keeping only its tail.
			tail := append([]byte(nil), chunk[max(0, len(chunk)-32):]...)
			for errors.Is(err, bufio.ErrBufferFull) {
				chunk, err = p.br.ReadSlice('\n')
				tail = append(tail, chunk...)
				tail = tail[max(0, len(tail)-32):]
			}
			if err != nil {
				return err
			}
			tail = bytes.TrimRight(tail, "\r\n")
			if _, nonSync, ok := literalAtEnd(tail); ok && nonSync {
				return &fatalError{bye: "Command line too long, with a literal on its way; closing"}
			}
			return &badError{text: "Command line too long"}
		}
		p.line = append(p.line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
	p.line = bytes.TrimSuffix(p.line, []byte("\n"))
	p.line = bytes.TrimSuffix(p.line, []byte("\r"))
	return nil
}

// skip discards the rest of the command after an error: the rest of the
// line and, if it announced a non-synchronizing literal, the literal and
// the lines after it. A synchronizing literal was never invited, so the
// client sends nothing more for this command. It returns a fatalError
// when the rest cannot be skipped safely.
func (p *parser) skip() error {
	for {
		rest := p.line[min(p.pos, len(p.line)):]
		p.pos = len(p.line)
		n, nonSync, ok := literalAtEnd(rest)
		if !ok || !nonSync {
			return nil
		}
		if n > p.litLimit {
			return &fatalError{bye: "Refused literal is on its way; closing"}
		}
		if _, err := io.CopyN(io.Discard, p.br, n); err != nil {
			return err
		}
		if err := p.readLine(); err != nil {
			var be *badError
			if errors.As(err, &be) {
				continue
			}
			return err
		}
	}
}

// literalAtEnd reports whether b ends with a literal announcement.
func literalAtEnd(b []byte) (n int64, nonSync, ok bool) {
	if len(b) < 3 || b[len(b)-1] != '}' {
		return 0, false, false
	}
	i := bytes.LastIndexByte(b, '{')
	if i < 0 {
		return 0, false, false
	}
	digits := b[i+1 : len(b)-1]
	if len(digits) > 0 && (digits[len(digits)-1] == '+' || digits[len(digits)-1] == '-') {
		nonSync = digits[len(digits)-1] == '+'
		digits = digits[:len(digits)-1]
	}
	v, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil || v < 0 {
		return 0, false, false
	}
	return v, nonSync, true
}

func (p *parser) peek() byte {
	if p.pos < len(p.line) {
		return p.line[p.pos]
	}
	return 0
}

func (p *parser) atEnd() bool { return p.pos >= len(p.line) }

// sp expects one space.
func (p *parser) sp() error {
	if p.peek() != ' ' {
		return bad("Expected a space at column %d", p.pos+1)
	}
	p.pos++
	return nil
}

// end expects the end of the command.
func (p *parser) end() error {
	if !p.atEnd() {
		return bad("Unexpected text at the end of the command: %.20q", p.line[p.pos:])
	}
	return nil
}

// maybe consumes c if it is next.
func (p *parser) maybe(c byte) bool {
	if p.peek() == c {
		p.pos++
		return true
	}
	return false
}

func (p *parser) expect(c byte) error {
	if !p.maybe(c) {
		return bad("Expected %q at column %d", c, p.pos+1)
	}
	return nil
}

// isAtomChar: ATOM-CHAR of RFC 3501 (any CHAR except atom-specials).
func isAtomChar(c byte) bool {
	if c <= 0x20 || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// word reads a run of bytes for which ok holds.
func (p *parser) word(ok func(byte) bool) string {
	start := p.pos
	for p.pos < len(p.line) && ok(p.line[p.pos]) {
		p.pos++
	}
	return string(p.line[start:p.pos])
}

// atom reads an atom.
func (p *parser) atom() (string, error) {
	a := p.word(isAtomChar)
	if a == "" {
		return "", bad("Expected an atom at column %d", p.pos+1)
	}
	return a, nil
}

// tag reads a command tag: an atom without '+' (RFC 3501 tag).
func (p *parser) tag() (string, error) {
	t := p.word(func(c byte) bool { return isAtomChar(c) && c != '+' })
	if t == "" || (p.pos < len(p.line) && p.line[p.pos] != ' ') {
		return "", bad("Invalid tag")
	}
	return t, nil
}

// number reads a number (RFC 3501 number: 32 bits unsigned).
func (p *parser) number() (uint32, error) {
	n, err := p.number64()
	if err != nil {
		return 0, err
	}
	if n > 1<<32-1 {
		return 0, bad("Number out of range")
	}
	return uint32(n), nil
}

// number64 reads a mod-sequence value or a 63-bit number.
func (p *parser) number64() (uint64, error) {
	d := p.word(func(c byte) bool { return c >= '0' && c <= '9' })
	if d == "" {
		return 0, bad("Expected a number at column %d", p.pos+1)
	}
	n, err := strconv.ParseUint(d, 10, 63)
	if err != nil {
		return 0, bad("Number out of range")
	}
	return n, nil
}

// quoted reads a quoted string (the opening quote is next).
func (p *parser) quoted() (string, error) {
	p.pos++
	var b strings.Builder
	for p.pos < len(p.line) {
		c := p.line[p.pos]
		p.pos++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.pos >= len(p.line) || (p.line[p.pos] != '"' && p.line[p.pos] != '\\') {
				return "", bad("Invalid escape in a quoted string")
			}
			b.WriteByte(p.line[p.pos])
			p.pos++
		case 0:
			return "", bad("NUL in a quoted string")
		default:
			b.WriteByte(c)
		}
	}
	return "", bad("Unterminated quoted string")
}

// literal reads a literal (the '{' is next) and the line after it.
func (p *parser) literal() ([]byte, error) {
	return p.literalLimit(p.litLimit)
}

func (p *parser) literalLimit(limit int64) ([]byte, error) {
	rest := p.line[p.pos:]
	n, nonSync, ok := literalAtEnd(rest)
	if !ok || bytes.IndexByte(rest, '}') != len(rest)-1 {
		return nil, bad("Invalid literal")
	}
	p.pos = len(p.line)
	if err := p.accept(n, nonSync, limit); err != nil {
		if errors.Is(err, errLiteralTooBig) && nonSync {
			return nil, &fatalError{resp: "NO [TOOBIG] Literal too large", bye: "Refused literal is on its way; closing"}
		}
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(p.br, buf); err != nil {
		return nil, err
	}
	p.lastLiteral = true
	if err := p.readLine(); err != nil {
		return nil, err
	}
	return buf, nil
}

// str reads a string: quoted or literal.
func (p *parser) str() (string, error) {
	switch p.peek() {
	case '"':
		return p.quoted()
	case '{', '~':
		p.maybe('~')
		b, err := p.literal()
		if err != nil {
			return "", err
		}
		if bytes.IndexByte(b, 0) >= 0 {
			return "", bad("NUL in a string")
		}
		return string(b), nil
	}
	return "", bad("Expected a string at column %d", p.pos+1)
}

// astring reads an astring.
func (p *parser) astring() (string, error) {
	switch p.peek() {
	case '"', '{':
		return p.str()
	}
	s := p.word(func(c byte) bool { return isAtomChar(c) || c == ']' })
	if s == "" {
		return "", bad("Expected a string at column %d", p.pos+1)
	}
	return s, nil
}

// listMailbox reads a LIST pattern (list-mailbox: with % and *).
func (p *parser) listMailbox() (string, error) {
	switch p.peek() {
	case '"', '{':
		return p.str()
	}
	s := p.word(func(c byte) bool { return isAtomChar(c) || c == ']' || c == '%' || c == '*' })
	if s == "" {
		return "", bad("Expected a mailbox pattern at column %d", p.pos+1)
	}
	return s, nil
}

// maybeNIL consumes NIL if it is next.
func (p *parser) maybeNIL() bool {
	if len(p.line)-p.pos >= 3 && strings.EqualFold(string(p.line[p.pos:p.pos+3]), "NIL") &&
		(p.pos+3 == len(p.line) || !isAtomChar(p.line[p.pos+3])) {
		p.pos += 3
		return true
	}
	return false
}

// nstring reads a string or NIL ("").
func (p *parser) nstring() (string, error) {
	if p.maybeNIL() {
		return "", nil
	}
	return p.str()
}

// list reads a parenthesised list, calling item for each element.
func (p *parser) list(item func() error) error {
	if err := p.expect('('); err != nil {
		return err
	}
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return bad("Lists nested too deep")
	}
	if p.maybe(')') {
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		if p.maybe(')') {
			return nil
		}
		if err := p.sp(); err != nil {
			return err
		}
	}
}

// flag reads a flag: \Atom or a keyword atom.
func (p *parser) flag() (string, error) {
	if p.maybe('\\') {
		if p.maybe('*') {
			return `\*`, nil
		}
		a, err := p.atom()
		return `\` + a, err
	}
	return p.atom()
}

// seqSet reads a sequence set; "*" is 0 in it. "$" (SEARCHRES) is not
// taken.
func (p *parser) seqSet() (numSet, error) {
	var set numSet
	for {
		lo, err := p.seqNumber()
		if err != nil {
			return nil, err
		}
		hi := lo
		if p.maybe(':') {
			if hi, err = p.seqNumber(); err != nil {
				return nil, err
			}
		}
		set = append(set, numRange{lo, hi})
		if !p.maybe(',') {
			return set, nil
		}
	}
}

func (p *parser) seqNumber() (uint32, error) {
	if p.maybe('*') {
		return 0, nil
	}
	n, err := p.number()
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, bad("Sequence numbers and UIDs start at 1")
	}
	return n, nil
}

// date reads a date (SEARCH: d-MMM-yyyy, quoted or not).
func (p *parser) date() (time.Time, error) {
	var s string
	var err error
	if p.peek() == '"' {
		s, err = p.quoted()
	} else {
		s, err = p.atom()
	}
	if err != nil {
		return time.Time{}, err
	}
	t, perr := time.Parse("2-Jan-2006", s)
	if perr != nil {
		return time.Time{}, bad("Invalid date %q", s)
	}
	return t, nil
}

// dateTime reads an APPEND date-time ("dd-Mmm-yyyy hh:mm:ss +zzzz").
func (p *parser) dateTime() (time.Time, error) {
	if p.peek() != '"' {
		return time.Time{}, bad("Expected a date-time")
	}
	s, err := p.quoted()
	if err != nil {
		return time.Time{}, err
	}
	t, perr := time.Parse("_2-Jan-2006 15:04:05 -0700", s)
	if perr != nil {
		return time.Time{}, bad("Invalid date-time %q", s)
	}
	return t, nil
}

// numRange is an inclusive range of sequence numbers or UIDs; 0 is "*".
type numRange struct{ lo, hi uint32 }

// numSet is a sequence set as the client wrote it.
type numSet []numRange

// respWriter writes responses to a connection. Errors are sticky: after
// one, writes do nothing and flush returns it.
type respWriter struct {
	bw  *bufio.Writer
	err error
	// utf8 quotes UTF-8 strings as they are (UTF8=ACCEPT, IMAP4rev2).
	utf8 bool
}

func (w *respWriter) raw(s string) *respWriter {
	if w.err == nil {
		_, w.err = w.bw.WriteString(s)
	}
	return w
}

func (w *respWriter) bytes(b []byte) *respWriter {
	if w.err == nil {
		_, w.err = w.bw.Write(b)
	}
	return w
}

func (w *respWriter) num(n uint32) *respWriter { return w.raw(strconv.FormatUint(uint64(n), 10)) }

func (w *respWriter) num64(n uint64) *respWriter { return w.raw(strconv.FormatUint(n, 10)) }

func (w *respWriter) crlf() *respWriter { return w.raw("\r\n") }

// str writes s as a quoted string, or as a literal when it cannot be
// quoted.
func (w *respWriter) str(s string) *respWriter {
	if !quotable(s, w.utf8) {
		return w.literal([]byte(s))
	}
	w.raw(`"`)
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			w.raw(`\`)
		}
		if w.err == nil {
			w.err = w.bw.WriteByte(s[i])
		}
	}
	return w.raw(`"`)
}

// nstr writes s, or NIL for "".
func (w *respWriter) nstr(s string) *respWriter {
	if s == "" {
		return w.raw("NIL")
	}
	return w.str(s)
}

// literal writes b as a literal.
func (w *respWriter) literal(b []byte) *respWriter {
	w.raw("{").raw(strconv.Itoa(len(b))).raw("}\r\n")
	return w.bytes(b)
}

func quotable(s string, utf8 bool) bool {
	if len(s) > 1024 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 || c == '\r' || c == '\n' || (c >= 0x80 && !utf8) {
			return false
		}
	}
	return true
}

// mailbox writes a mailbox name, in modified UTF-7 unless UTF-8 is on.
func (w *respWriter) mailbox(name string) *respWriter {
	if strings.EqualFold(name, "INBOX") {
		return w.raw("INBOX")
	}
	if !w.utf8 {
		name = encodeUTF7(name)
	}
	return w.str(name)
}
