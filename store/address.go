package store

import (
	"strings"
)

// An RFC 5322 address-list parser for the IMAP ENVELOPE (RFC 3501 7.4.2):
// groups are kept as their markers, a source route (obs-route) lands in
// Address.Route rather than in the mailbox, and comments are dropped from
// an addr-spec (`<user (c)@ (c) domain.org>` is user@domain.org); a
// comment after an address without a display name becomes its name, as
// Dovecot reads `user@domain (Real Name)`.

// addrToken is a lexical token of an address header.
type addrToken struct {
	kind byte   // 'a' atom, 'q' quoted string, 'd' domain literal, or the special itself
	text string // the atom, the unquoted string, the literal with brackets
	// comment is the text of the comments just after this token.
	comment string
}

// lexAddresses splits s into tokens, dropping whitespace and comments (a
// comment's text is kept on the token before it). ok is false for an
// unterminated quote, comment or literal.
func lexAddresses(s string) (toks []addrToken, lead string, ok bool) {
	addComment := func(c string) {
		c = strings.TrimSpace(c)
		if c == "" {
			return
		}
		if len(toks) == 0 {
			lead = c
			return
		}
		t := &toks[len(toks)-1]
		if t.comment != "" {
			t.comment += " "
		}
		t.comment += c
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '(':
			depth, j := 0, i
			var b strings.Builder
			for ; j < len(s); j++ {
				ch := s[j]
				if ch == '\\' && j+1 < len(s) {
					j++
					b.WriteByte(s[j])
					continue
				}
				if ch == '(' {
					depth++
					if depth > 1 {
						b.WriteByte(ch)
					}
					continue
				}
				if ch == ')' {
					depth--
					if depth == 0 {
						break
					}
				}
				b.WriteByte(ch)
			}
			if depth != 0 {
				return nil, "", false
			}
			addComment(b.String())
			i = j + 1
		case c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, "", false
			}
			toks = append(toks, addrToken{kind: 'q', text: b.String()})
			i = j + 1
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, "", false
			}
			toks = append(toks, addrToken{kind: 'd', text: s[i : i+j+1]})
			i += j + 1
		case strings.IndexByte("<>:;@,.", c) >= 0:
			toks = append(toks, addrToken{kind: c})
			i++
		default:
			j := i
			for j < len(s) && strings.IndexByte(" \t\r\n()\"[]<>:;@,.\\", s[j]) < 0 {
				j++
			}
			if j == i { // a lone backslash or ']'
				j++
			}
			toks = append(toks, addrToken{kind: 'a', text: s[i:j]})
			i = j
		}
	}
	return toks, lead, true
}

// addrParser parses tokens into addresses.
type addrParser struct {
	p    *parser
	toks []addrToken
	i    int
	out  []Address
}

func (a *addrParser) peek() byte {
	if a.i < len(a.toks) {
		return a.toks[a.i].kind
	}
	return 0
}

// words reads words and dots up to a special; it returns them as a
// phrase (words joined by spaces) and as a dot-atom (joined as written),
// and the comments after them.
func (a *addrParser) words() (phrase, dotted, comment string) {
	var ph, dt []string
	var cm []string
	for a.i < len(a.toks) {
		t := a.toks[a.i]
		if t.kind != 'a' && t.kind != 'q' && t.kind != '.' {
			break
		}
		a.i++
		if t.kind == '.' {
			dt = append(dt, ".")
			if len(ph) > 0 {
				ph[len(ph)-1] += "."
			}
		} else {
			dt = append(dt, t.text)
			ph = append(ph, t.text)
		}
		if t.comment != "" {
			cm = append(cm, t.comment)
		}
	}
	return strings.Join(ph, " "), strings.Join(dt, ""), strings.Join(cm, " ")
}

// domain reads a domain (atoms and dots, or a literal).
func (a *addrParser) domain() (string, string) {
	var b strings.Builder
	var cm []string
	for a.i < len(a.toks) {
		t := a.toks[a.i]
		if t.kind != 'a' && t.kind != 'd' && t.kind != '.' {
			break
		}
		a.i++
		if t.kind == '.' {
			b.WriteByte('.')
		} else {
			b.WriteString(t.text)
		}
		if t.comment != "" {
			cm = append(cm, t.comment)
		}
	}
	return b.String(), strings.Join(cm, " ")
}

// list parses an address-list up to the end (or, inside a group, a ';').
// It reports false where the list does not follow the grammar.
func (a *addrParser) list(inGroup bool) bool {
	for a.i < len(a.toks) {
		switch a.peek() {
		case ',':
			a.i++
			continue
		case ';':
			return inGroup
		}
		if len(a.out) >= maxAddresses {
			return true
		}
		if !a.address(inGroup) {
			return false
		}
		switch a.peek() {
		case ',', 0:
		case ';':
			if !inGroup {
				return false
			}
		default:
			return false
		}
	}
	return !inGroup
}

// address parses one mailbox, or a group when not in one.
func (a *addrParser) address(inGroup bool) bool {
	phrase, dotted, comment := a.words()
	switch a.peek() {
	case ':':
		if inGroup {
			return false
		}
		a.i++
		a.out = append(a.out, Address{Group: true, Mailbox: a.p.decodeText(phrase)})
		if !a.list(true) {
			return false
		}
		if a.peek() == ';' {
			a.i++
		}
		a.out = append(a.out, Address{Group: true})
		return true
	case '<':
		a.i++
		var route string
		if a.peek() == '@' {
			var hops []string
			for a.peek() == '@' {
				a.i++
				d, _ := a.domain()
				hops = append(hops, "@"+d)
				if a.peek() != ',' {
					break
				}
				a.i++
			}
			if a.peek() != ':' {
				return false
			}
			a.i++
			route = strings.Join(hops, ",")
		}
		_, local, _ := a.words()
		host := ""
		if a.peek() == '@' {
			a.i++
			host, _ = a.domain()
		}
		if a.peek() != '>' {
			return false
		}
		a.i++
		name := phrase
		if name == "" {
			name = comment
		}
		if local == "" && host == "" && route == "" {
			return true // <> : no address
		}
		a.add(name, local, host, route)
		return true
	case '@':
		a.i++
		host, hcomment := a.domain()
		if host == "" {
			return false
		}
		if comment == "" {
			comment = hcomment
		}
		a.add(comment, dotted, host, "")
		return true
	}
	if dotted == "" {
		return false
	}
	a.add(comment, dotted, "", "") // a local part alone
	return true
}

func (a *addrParser) add(name, local, host, route string) {
	a.out = append(a.out, Address{
		Name: cleanString(a.p.decodeText(name)), Mailbox: cleanString(local),
		Host: cleanString(host), Route: cleanString(route),
	})
}

// parseAddressList parses v (unfolded) by RFC 5322; ok is false if it
// does not follow the grammar.
func (p *parser) parseAddressList(v string) ([]Address, bool) {
	toks, _, ok := lexAddresses(v)
	if !ok {
		return nil, false
	}
	a := &addrParser{p: p, toks: toks}
	if !a.list(false) {
		return nil, false
	}
	return a.out, true
}
