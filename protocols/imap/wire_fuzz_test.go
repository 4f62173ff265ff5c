package imap

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParser feeds arbitrary bytes to the command parser: it must never
// panic or loop, whatever it is given.
func FuzzParser(f *testing.F) {
	for _, seed := range []string{
		"a1 LOGIN alice secret\r\n",
		"a2 APPEND INBOX (\\Seen) \"24-Nov-2026 10:00:00 +0000\" {5+}\r\nhello\r\n",
		"a3 FETCH 1:*,4 (FLAGS BODY.PEEK[HEADER.FIELDS (Subject)]<0.10>)\r\n",
		"a4 SEARCH OR (FROM x) NOT (SINCE 1-Jan-2026) UID 1:5\r\n",
		"a5 LIST (SUBSCRIBED) \"\" (\"%\" \"*\") RETURN (STATUS (MESSAGES))\r\n",
		"+ NOOP\r\n", "a {3}\r\nabc\r\n", "x \"unterminated\r\n", "t " + strings.Repeat("(", 100) + "\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p := &parser{br: bufio.NewReaderSize(bytes.NewReader(in), 16), litLimit: 1 << 16,
			accept: func(size int64, _ bool, limit int64) error {
				if size > limit {
					return errLiteralTooBig
				}
				return nil
			}}
		for range 100 {
			if err := p.readLine(); err != nil {
				if _, bad := err.(*badError); !bad {
					return
				}
				continue
			}
			if _, err := p.tag(); err != nil {
				continue
			}
			_ = p.sp()
			_, _ = p.atom()
			for range 50 {
				if p.atEnd() || p.sp() != nil {
					break
				}
				var err error
				switch p.peek() {
				case '(':
					err = p.list(func() error { _, err := p.astring(); return err })
				case '*', '1', '2', '3':
					_, err = p.seqSet()
				default:
					_, err = p.astring()
				}
				if err != nil {
					_ = p.skip()
					break
				}
			}
		}
	})
}

// FuzzUTF7 checks that modified UTF-7 round-trips and that decoding never
// panics.
func FuzzUTF7(f *testing.F) {
	for _, s := range []string{"INBOX", "Entwürfe", "&", "a&b", "日本語/メール", "&Jjo-", "&AOQA5A-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := decodeUTF7(s); err == nil && !utf8.ValidString(d) {
			t.Errorf("decodeUTF7(%q) = %q, not UTF-8", s, d)
		}
		if !utf8.ValidString(s) {
			return
		}
		enc := encodeUTF7(s)
		dec, err := decodeUTF7(enc)
		if err != nil || dec != s {
			t.Errorf("round trip of %q: %q → %q, %v", s, enc, dec, err)
		}
	})
}
