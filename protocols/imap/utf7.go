package imap

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Mailbox names travel in modified UTF-7 (RFC 3501 section 5.1.3): printable
// ASCII stands for itself, "&-" for "&", and anything else is base64 (with
// "," for "/") of its UTF-16 between "&" and "-".

var b64 = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding)

// errUTF7 is a name that is not valid modified UTF-7.
var errUTF7 = errors.New("imap: mailbox name is not valid modified UTF-7")

func encodeUTF7(s string) string {
	var b strings.Builder
	var run []uint16
	flush := func() {
		if len(run) == 0 {
			return
		}
		buf := make([]byte, 2*len(run))
		for i, u := range run {
			buf[2*i], buf[2*i+1] = byte(u>>8), byte(u)
		}
		b.WriteByte('&')
		b.WriteString(b64.EncodeToString(buf))
		b.WriteByte('-')
		run = run[:0]
	}
	for _, r := range s {
		if r >= 0x20 && r <= 0x7e {
			flush()
			if r == '&' {
				b.WriteString("&-")
			} else {
				b.WriteRune(r)
			}
			continue
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			run = append(run, uint16(r1), uint16(r2))
		} else {
			run = append(run, uint16(r))
		}
	}
	flush()
	return b.String()
}

// decodeUTF7 decodes a modified UTF-7 name strictly: bytes outside
// printable ASCII, an unterminated or empty shift, base64 that is not
// minimal, characters that should have stood for themselves, or a broken
// surrogate pair are all errors.
func decodeUTF7(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return "", errUTF7
		}
		if c != '&' {
			b.WriteByte(c)
			i++
			continue
		}
		j := strings.IndexByte(s[i+1:], '-')
		if j < 0 {
			return "", errUTF7
		}
		enc := s[i+1 : i+1+j]
		i += j + 2
		if enc == "" {
			b.WriteByte('&')
			continue
		}
		raw, err := b64.DecodeString(enc)
		if err != nil || len(raw)%2 != 0 || b64.EncodeToString(raw) != enc {
			return "", errUTF7
		}
		units := make([]uint16, len(raw)/2)
		for k := range units {
			units[k] = uint16(raw[2*k])<<8 | uint16(raw[2*k+1])
		}
		for k := 0; k < len(units); k++ {
			u := units[k]
			var r rune
			switch {
			case utf16.IsSurrogate(rune(u)):
				if k+1 >= len(units) {
					return "", errUTF7
				}
				r = utf16.DecodeRune(rune(u), rune(units[k+1]))
				k++
				if r == utf8.RuneError {
					return "", errUTF7
				}
			case u >= 0x20 && u <= 0x7e:
				return "", errUTF7 // should stand for itself
			default:
				r = rune(u)
			}
			b.WriteRune(r)
		}
		if i < len(s) && s[i] == '&' && i+1 < len(s) && s[i+1] != '-' {
			return "", errUTF7 // two shifts in a row should be one
		}
	}
	return b.String(), nil
}
