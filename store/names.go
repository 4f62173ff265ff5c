package store

import (
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Delimiter separates the levels of a mailbox hierarchy.
const Delimiter = '/'

// Inbox is the one mailbox name that is case-insensitive (RFC 3501 5.1).
const Inbox = "INBOX"

// Limits on names. Mailbox names are compared byte for byte (after INBOX is
// canonicalised); user names too.
const (
	MaxMailboxName = 512
	MaxUserName    = 255
	MaxFlagLen     = 128
	MaxFlags       = 64
)

// CanonicalMailbox validates a mailbox name and returns its stored form:
// "INBOX" in any case becomes "INBOX" (also as the first level, "inbox/x").
func CanonicalMailbox(name string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: mailbox %q: %s", ErrInvalidName, name, why)
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > MaxMailboxName:
		return bad(fmt.Sprintf("longer than %d bytes", MaxMailboxName))
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == unicode.ReplacementChar {
			return bad("contains a control character")
		}
		if r == '*' || r == '%' {
			return bad("contains a LIST wildcard")
		}
	}
	levels := strings.Split(name, string(Delimiter))
	for _, l := range levels {
		switch {
		case l == "":
			return bad("empty hierarchy level")
		case l == "." || l == "..":
			return bad("'.' or '..' as a hierarchy level")
		case strings.TrimSpace(l) != l:
			return bad("hierarchy level starts or ends with white space")
		}
	}
	if strings.EqualFold(levels[0], Inbox) {
		levels[0] = Inbox
	}
	return strings.Join(levels, string(Delimiter)), nil
}

// ValidUser reports whether user is acceptable as a user name: printable,
// no white space, no ':' (the passwd-file separator) and no '/'.
func ValidUser(user string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: user %q: %s", ErrInvalidName, user, why)
	}
	switch {
	case user == "":
		return bad("empty")
	case len(user) > MaxUserName:
		return bad(fmt.Sprintf("longer than %d bytes", MaxUserName))
	case !utf8.ValidString(user):
		return bad("not valid UTF-8")
	}
	for _, r := range user {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) || r == ':' || r == '/' || r == 0 {
			return bad(fmt.Sprintf("contains %q", r))
		}
	}
	return nil
}

// System flags (RFC 3501 2.3.2). \Recent is per session and never stored.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
)

var systemFlags = map[string]string{
	`\seen`: FlagSeen, `\answered`: FlagAnswered, `\flagged`: FlagFlagged,
	`\deleted`: FlagDeleted, `\draft`: FlagDraft,
}

// CanonicalFlags validates flags and returns them canonical (system flags in
// their usual case), without case-insensitive duplicates, sorted.
func CanonicalFlags(flags []string) ([]string, error) {
	if len(flags) > MaxFlags {
		return nil, fmt.Errorf("%w: %d flags, at most %d", ErrInvalidFlag, len(flags), MaxFlags)
	}
	seen := make(map[string]bool, len(flags))
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		c, err := canonicalFlag(f)
		if err != nil {
			return nil, err
		}
		k := strings.ToLower(c)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, c)
	}
	sort.Strings(out)
	return out, nil
}

func canonicalFlag(f string) (string, error) {
	if f == "" || len(f) > MaxFlagLen {
		return "", fmt.Errorf("%w: %q: empty or longer than %d bytes", ErrInvalidFlag, f, MaxFlagLen)
	}
	if strings.HasPrefix(f, `\`) {
		if c, ok := systemFlags[strings.ToLower(f)]; ok {
			return c, nil
		}
		return "", fmt.Errorf("%w: %q is not a storable system flag", ErrInvalidFlag, f)
	}
	for i := 0; i < len(f); i++ {
		c := f[i]
		// atom-char without list-wildcards, quoted-specials and resp-specials.
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return "", fmt.Errorf("%w: %q contains %q", ErrInvalidFlag, f, c)
		}
	}
	return f, nil
}

// hasFlag reports whether sorted canonical flags contain f (case-insensitive
// for keywords, as IMAP compares them).
func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}
