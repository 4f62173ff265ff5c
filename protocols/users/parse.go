package users

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twinbox/twinbox/store"
)

// MaxFileSize bounds a passwd-file: about 900,000 users of one bcrypt line.
const MaxFileSize = 64 << 20

// Sentinel errors; wrapped errors name the file, the line or the user.
// Every login that does not succeed returns an error wrapping
// ErrAuthFailed; ErrDisabled, ErrThrottled and ErrAbandoned say why,
// for logs only: a client must not be told which.
var (
	ErrAuthFailed = errors.New("users: authentication failed")
	ErrExists     = errors.New("users: user already exists")
	ErrNotFound   = errors.New("users: no such user")
	// ErrMalformed: a passwd-file line, or the file, cannot be read.
	ErrMalformed = errors.New("users: malformed passwd-file")
	// ErrScheme: a password scheme twinbox does not read or write.
	ErrScheme   = errors.New("users: unsupported password scheme")
	ErrPassword = errors.New("users: unacceptable password")
	// ErrDisabled: the user's line cannot be read (File.Problems).
	ErrDisabled = errors.New("users: user disabled by an unreadable passwd-file line")
	// ErrThrottled: refused unchecked, the guard's queue being full.
	ErrThrottled = errors.New("users: too many failed logins; try again later")
	// ErrAbandoned: not checked, the client having gone (ctx done).
	ErrAbandoned = errors.New("users: login abandoned by the client")
)

// ParseError names the line of a passwd-file that could not be read.
// It unwraps to ErrMalformed or ErrScheme.
type ParseError struct {
	Path string
	Line int    // 1-based
	User string // the user it disables; "" when the name itself cannot be read
	Err  error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("users: %s:%d: %v", e.Path, e.Line, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// lineError is what is wrong with a line: a message that reads well after
// the file and line, and the sentinel it matches.
type lineError struct {
	kind error
	msg  string
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.kind }

func malformed(format string, a ...any) error {
	return &lineError{kind: ErrMalformed, msg: fmt.Sprintf(format, a...)}
}

// record is one line of a passwd-file.
type record struct {
	text string // the line without its ending
	eol  string // "\n", "\r\n", or "" for a last line without one
	// user is "" for a comment, a blank line, or a line whose user name
	// cannot be read.
	user  string
	field string   // the password field, {SCHEME} included
	v     verifier // nil when the line cannot be read: user is disabled
	// pwStart and pwEnd delimit the password field in text.
	pwStart, pwEnd int
}

// credential is a user's password as served.
type credential struct {
	field string   // as written in the file
	v     verifier // nil: the user is disabled, because of err
	err   *ParseError
}

// table is a parsed passwd-file.
type table struct {
	records  []record
	index    map[string]int // user → the position of the user's first line
	problems []*ParseError  // the lines that cannot be read, in order
}

// credentials returns what the table serves: every user named on a
// readable-enough line, disabled when that line, or a second line for
// the same user, cannot be used.
func (t *table) credentials() map[string]credential {
	m := make(map[string]credential, len(t.index))
	for u, i := range t.index {
		m[u] = credential{field: t.records[i].field, v: t.records[i].v}
	}
	for _, p := range t.problems {
		if p.User == "" {
			continue
		}
		c := m[p.User]
		if c.err == nil {
			c.v, c.err = nil, p
			m[p.User] = c
		}
	}
	return m
}

// bytes renders the table as a file: the lines as read, with edits.
func (t *table) bytes() []byte {
	var b strings.Builder
	for _, r := range t.records {
		b.WriteString(r.text)
		b.WriteString(r.eol)
	}
	return []byte(b.String())
}

// parse reads a passwd-file; path only names it in errors. A line that
// cannot be read is listed in the table's problems and disables its user
// (or, when not even the user name can be read, is ignored); only a file
// above MaxFileSize is an error.
func parse(path string, data []byte) (*table, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than the %d allowed", ErrMalformed, path, len(data), MaxFileSize)
	}
	t := &table{index: make(map[string]int)}
	rest := string(data)
	for n := 1; rest != ""; n++ {
		var r record
		line, after, found := strings.Cut(rest, "\n")
		rest = after
		if found {
			r.eol = "\n"
			if l, ok := strings.CutSuffix(line, "\r"); ok {
				line, r.eol = l, "\r\n"
			}
		}
		r.text = line
		err := r.parse()
		if r.user != "" {
			if prev, dup := t.index[r.user]; dup {
				err = malformed("user %q is already on line %d; neither line is used (twinbox user passwd keeps one)", r.user, prev+1)
				t.problems = append(t.problems, &ParseError{Path: path, Line: prev + 1, User: r.user,
					Err: malformed("user %q is on line %d again; neither line is used (twinbox user passwd keeps one)", r.user, n)})
			} else {
				t.index[r.user] = len(t.records)
			}
		}
		if err != nil {
			t.problems = append(t.problems, &ParseError{Path: path, Line: n, User: r.user, Err: err})
		}
		t.records = append(t.records, r)
	}
	slices.SortStableFunc(t.problems, func(a, b *ParseError) int { return a.Line - b.Line })
	return t, nil
}

// parse fills r from r.text: the user, the password field and its
// verifier. A comment or blank line leaves them empty. When the user can
// be read but the password cannot, the error comes with r.user set and
// r.v nil.
func (r *record) parse() error {
	trimmed := strings.TrimSpace(r.text)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") {
		return nil
	}
	user, rest, ok := strings.Cut(r.text, ":")
	if !ok {
		return malformed("no ':' after the user name (want user:{SCHEME}hash)")
	}
	if err := store.ValidUser(user); err != nil {
		return malformed("%v", err)
	}
	pw, _, _ := strings.Cut(rest, ":")
	r.user, r.field = user, pw
	r.pwStart = len(user) + 1
	r.pwEnd = r.pwStart + len(pw)
	if pw == "" {
		return malformed("user %q has an empty password field (want {SCHEME}hash)", user)
	}
	v, err := parseField(pw)
	if err != nil {
		var le *lineError
		if errors.As(err, &le) {
			le.msg = fmt.Sprintf("user %q: %s", user, le.msg)
			return le
		}
		return fmt.Errorf("user %q: %w", user, err)
	}
	r.v = v
	return nil
}

// shorten cuts s for an error message.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
