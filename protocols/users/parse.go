package users

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/twinbox/twinbox/store"
)

// MaxFileSize bounds a passwd-file: about 900,000 users of one bcrypt line.
const MaxFileSize = 64 << 20

// Sentinel errors; wrapped errors name the file, the line or the user.
var (
	ErrAuthFailed = errors.New("users: authentication failed")
	ErrExists     = errors.New("users: user already exists")
	ErrNotFound   = errors.New("users: no such user")
	ErrMalformed  = errors.New("users: malformed passwd-file")
	ErrScheme     = errors.New("users: unsupported password scheme")
	ErrPassword   = errors.New("users: unacceptable password")
)

// ParseError names the line of a passwd-file that could not be read.
// It unwraps to ErrMalformed or ErrScheme.
type ParseError struct {
	Path string
	Line int // 1-based
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

// Schemes as written in a passwd-file, between braces.
const (
	schemeBcrypt = "BLF-CRYPT"
	schemeCrypt  = "CRYPT"
)

// record is one line of a passwd-file.
type record struct {
	text string // the line without its ending
	eol  string // "\n", "\r\n", or "" for a last line without one
	user string // "" for a comment or blank line
	hash string // the bcrypt hash, without its {SCHEME}
	// pwStart and pwEnd delimit the password field in text.
	pwStart, pwEnd int
}

// table is a parsed passwd-file.
type table struct {
	records []record
	index   map[string]int // user → position in records
	maxCost int            // the highest bcrypt cost in the file, 0 with no users
}

func (t *table) hashes() map[string][]byte {
	m := make(map[string][]byte, len(t.index))
	for u, i := range t.index {
		m[u] = []byte(t.records[i].hash)
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

// parse reads a passwd-file; path only names it in errors.
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
		if err := r.parse(); err != nil {
			return nil, &ParseError{Path: path, Line: n, Err: err}
		}
		if r.user != "" {
			if prev, dup := t.index[r.user]; dup {
				return nil, &ParseError{Path: path, Line: n, Err: malformed("user %q is already on line %d", r.user, prev+1)}
			}
			t.index[r.user] = len(t.records)
			if c, _ := bcrypt.Cost([]byte(r.hash)); c > t.maxCost {
				t.maxCost = c
			}
		}
		t.records = append(t.records, r)
	}
	return t, nil
}

// parse fills r's user and password from r.text; a comment or blank line
// leaves them empty.
func (r *record) parse() error {
	trimmed := strings.TrimSpace(r.text)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") {
		return nil
	}
	user, rest, ok := strings.Cut(r.text, ":")
	if !ok {
		return malformed("no ':' after the user name (want user:{BLF-CRYPT}hash)")
	}
	if err := store.ValidUser(user); err != nil {
		return malformed("%v", err)
	}
	pw, _, _ := strings.Cut(rest, ":")
	hash, err := passwordHash(user, pw)
	if err != nil {
		return err
	}
	r.user, r.hash = user, hash
	r.pwStart = len(user) + 1
	r.pwEnd = r.pwStart + len(pw)
	return nil
}

// passwordHash checks user's password field and returns its bcrypt hash.
func passwordHash(user, field string) (string, error) {
	if field == "" {
		return "", malformed("user %q has an empty password field (want {BLF-CRYPT}hash)", user)
	}
	if field[0] != '{' {
		return "", &lineError{kind: ErrScheme, msg: fmt.Sprintf("user %q: password has no {SCHEME} prefix (want {BLF-CRYPT}hash)", user)}
	}
	scheme, hash, ok := strings.Cut(field[1:], "}")
	if !ok {
		return "", malformed("user %q: password scheme has no closing '}'", user)
	}
	switch s := strings.ToUpper(scheme); {
	case s == schemeBcrypt:
		if err := checkBcrypt(hash); err != nil {
			return "", malformed("user %q: {%s}: %v", user, scheme, err)
		}
		return hash, nil
	case s == schemeCrypt && checkBcrypt(hash) == nil:
		return hash, nil
	case s == schemeCrypt:
		return "", &lineError{kind: ErrScheme, msg: fmt.Sprintf("user %q: password scheme {%s} with a hash that is not bcrypt: twinbox reads only {BLF-CRYPT} (set a new password with twinbox user passwd)", user, scheme)}
	}
	return "", &lineError{kind: ErrScheme, msg: fmt.Sprintf("user %q: password scheme %q is not supported: twinbox reads only {BLF-CRYPT} (set a new password with twinbox user passwd, or doveadm pw -s BLF-CRYPT)", user, "{"+shorten(scheme, 40)+"}")}
}

// checkBcrypt accepts a modular-crypt bcrypt hash, $2y$NN$ followed by 53
// characters of bcrypt's base64 alphabet. $2x$ (the hash of a buggy
// implementation) and the pre-1999 $2$ are refused.
func checkBcrypt(h string) error {
	if len(h) != 60 {
		return fmt.Errorf("bcrypt hash is %d characters, want 60", len(h))
	}
	if h[0] != '$' || h[1] != '2' || h[3] != '$' || h[6] != '$' {
		return errors.New("bcrypt hash does not start like $2y$NN$")
	}
	switch h[2] {
	case 'a', 'b', 'y':
	default:
		return fmt.Errorf("bcrypt variant $2%c$ is not supported (want $2y$, $2b$ or $2a$)", h[2])
	}
	if h[4] < '0' || h[4] > '9' || h[5] < '0' || h[5] > '9' {
		return errors.New("bcrypt cost is not two digits")
	}
	for i := 7; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '/') {
			return fmt.Errorf("bcrypt hash has %q at offset %d", c, i)
		}
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return fmt.Errorf("bcrypt hash: %w", err)
	}
	return nil
}

// shorten cuts s for an error message.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
