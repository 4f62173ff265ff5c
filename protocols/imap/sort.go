package imap

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/twinbox/twinbox/store"
)

// SORT (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267).

// sortKey is one SORT criterion.
type sortKey struct {
	name    string // ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO, DISPLAYFROM, DISPLAYTO
	reverse bool
}

// sortMsg is what sorting a message needs.
type sortMsg struct {
	uid, seq uint32
	arrival  time.Time
	date     time.Time
	size     int64
	env      *store.Envelope
	subject  string // base subject, case-mapped
}

func (s *session) cmdSort(uid bool) error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	ret, esort, err := s.returnOptions("SORT")
	if err != nil {
		return err
	}
	var keys []sortKey
	reverse := false
	err = p.list(func() error {
		a, err := p.atom()
		if err != nil {
			return err
		}
		a = strings.ToUpper(a)
		switch a {
		case "REVERSE":
			if reverse {
				return bad("REVERSE twice")
			}
			reverse = true
			return nil
		case "ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO":
		default:
			return bad("Unknown SORT criterion %s", a)
		}
		keys = append(keys, sortKey{name: a, reverse: reverse})
		reverse = false
		return nil
	})
	if err != nil {
		return err
	}
	if len(keys) == 0 || reverse {
		return bad("SORT needs criteria, and REVERSE a criterion after it")
	}
	if err := p.sp(); err != nil {
		return err
	}
	cs, err := p.astring()
	if err != nil {
		return err
	}
	if !strings.EqualFold(cs, "UTF-8") && !strings.EqualFold(cs, "US-ASCII") {
		return noBadCharset()
	}
	if err := p.sp(); err != nil {
		return err
	}
	c, err := s.searchKeys()
	if err != nil {
		return err
	}
	msgs, err := s.sortMessages(c)
	if err != nil {
		return err
	}
	slices.SortStableFunc(msgs, func(a, b *sortMsg) int {
		for _, k := range keys {
			r := compareBy(k.name, a, b)
			if k.reverse {
				r = -r
			}
			if r != 0 {
				return r
			}
		}
		return cmp.Compare(a.seq, b.seq) // RFC 5256: ties go by sequence number
	})
	nums := make([]uint32, len(msgs))
	for i, m := range msgs {
		nums[i] = m.seq
		if uid {
			nums[i] = m.uid
		}
	}
	if !esort {
		s.w.raw("* SORT")
		for _, n := range nums {
			s.w.raw(" ").num(n)
		}
		s.w.crlf()
		return nil
	}
	s.w.raw(`* ESEARCH (TAG "`).raw(s.curTag).raw(`")`)
	if uid {
		s.w.raw(" UID")
	}
	for _, r := range ret {
		switch {
		case r == "MIN" && len(nums) > 0:
			s.w.raw(" MIN ").num(nums[0])
		case r == "MAX" && len(nums) > 0:
			s.w.raw(" MAX ").num(nums[len(nums)-1])
		case r == "COUNT":
			s.w.raw(" COUNT ").num(uint32(len(nums)))
		case r == "ALL" && len(nums) > 0:
			s.w.raw(" ALL ").raw(uidSetString(nums))
		}
	}
	s.w.crlf()
	return nil
}

// searchKeys reads search keys to the end of the command (AND).
func (s *session) searchKeys() (*store.Criteria, error) {
	c := &store.Criteria{}
	s.searchModSeq = false
	for {
		if err := s.searchKey(c); err != nil {
			return nil, err
		}
		if !s.p.maybe(' ') {
			break
		}
	}
	return c, s.p.end()
}

// sortMessages searches and reads what sorting needs of each match that
// the client knows of.
func (s *session) sortMessages(c *store.Criteria) ([]*sortMsg, error) {
	uids, err := s.srv.opts.Reader.Search(s.user, s.sel.name, c)
	if err != nil {
		return nil, mapError(err)
	}
	uids = slices.DeleteFunc(uids, func(u uint32) bool {
		_, ok := slices.BinarySearch(s.sel.uids, u)
		return !ok
	})
	var out []*sortMsg
	for len(uids) > 0 {
		n := min(256, len(uids))
		part := uids[:n]
		uids = uids[n:]
		recs, err := s.srv.opts.Reader.Messages(s.user, s.sel.name, part)
		if err != nil {
			return nil, mapError(err)
		}
		for i := range recs {
			m := &recs[i]
			meta, err := s.srv.opts.Reader.Meta(s.ctx, m.Body)
			if err != nil {
				return nil, mapError(err)
			}
			k, _ := slices.BinarySearch(s.sel.uids, m.UID)
			sm := &sortMsg{uid: m.UID, seq: uint32(k + 1), arrival: m.InternalDate, size: m.Size,
				env: &meta.Envelope, date: meta.Envelope.Date, subject: caseMap(baseSubject(meta.Envelope.Subject))}
			if sm.date.IsZero() {
				sm.date = sm.arrival
			}
			out = append(out, sm)
		}
	}
	return out, nil
}

func compareBy(key string, a, b *sortMsg) int {
	switch key {
	case "ARRIVAL":
		return a.arrival.Compare(b.arrival)
	case "DATE":
		return a.date.Compare(b.date)
	case "SIZE":
		return cmp.Compare(a.size, b.size)
	case "SUBJECT":
		return strings.Compare(a.subject, b.subject)
	case "FROM":
		return strings.Compare(caseMap(firstMailbox(a.env.From)), caseMap(firstMailbox(b.env.From)))
	case "TO":
		return strings.Compare(caseMap(firstMailbox(a.env.To)), caseMap(firstMailbox(b.env.To)))
	case "CC":
		return strings.Compare(caseMap(firstMailbox(a.env.Cc)), caseMap(firstMailbox(b.env.Cc)))
	case "DISPLAYFROM":
		return strings.Compare(caseMap(displayName(a.env.From)), caseMap(displayName(b.env.From)))
	case "DISPLAYTO":
		return strings.Compare(caseMap(displayName(a.env.To)), caseMap(displayName(b.env.To)))
	}
	return 0
}

// firstAddress is the first entry of a list. A group's start counts,
// its name standing as the mailbox, as Dovecot sorts (imaptest's
// sort-addresses and sort-display-to expect it).
func firstAddress(l []store.Address) *store.Address {
	if len(l) == 0 {
		return nil
	}
	return &l[0]
}

// firstMailbox is the local part of the first address (RFC 5256 FROM,
// TO, CC).
func firstMailbox(l []store.Address) string {
	if a := firstAddress(l); a != nil {
		return a.Mailbox
	}
	return ""
}

// displayName is RFC 5957's display string: the first address's name,
// else its addr-spec.
func displayName(l []store.Address) string {
	a := firstAddress(l)
	if a == nil {
		return ""
	}
	if a.Name != "" {
		return a.Name
	}
	if a.Host == "" {
		return a.Mailbox
	}
	return a.Mailbox + "@" + a.Host
}

// caseMap is the i;ascii-casemap collation's key: ASCII letters upper
// case.
func caseMap(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, s)
}

// baseSubject extracts the base subject (RFC 5256 section 2.1): no
// "Re:", "Fwd:", "[blob]" leaders, "(fwd)" trailers or "[fwd: ...]"
// wrapping, whitespace collapsed.
func baseSubject(s string) string {
	s = strings.Join(strings.Fields(s), " ") // (1)
	for {
		for { // (2)
			t := strings.TrimRight(s, " ")
			if strings.HasSuffix(strings.ToLower(t), "(fwd)") {
				s = t[:len(t)-len("(fwd)")]
				continue
			}
			s = t
			break
		}
		for { // (3) and (4), until neither applies
			changed := false
			if t, ok := stripLeader(s); ok {
				s, changed = t, true
			}
			if t, ok := stripBlob(s); ok && t != "" {
				s, changed = t, true
			}
			if !changed {
				break
			}
		}
		// (5)
		if len(s) >= 6 && strings.EqualFold(s[:5], "[fwd:") && s[len(s)-1] == ']' {
			s = s[5 : len(s)-1]
			continue
		}
		return s
	}
}

// stripBlob removes a leading subj-blob: "[" *BLOBCHAR "]" *WSP.
func stripBlob(s string) (string, bool) {
	if !strings.HasPrefix(s, "[") {
		return s, false
	}
	end := strings.IndexAny(s[1:], "[]")
	if end < 0 || s[1+end] != ']' {
		return s, false
	}
	return strings.TrimLeft(s[end+2:], " "), true
}

// stripLeader removes a subj-leader: leading whitespace, or
// *subj-blob subj-refwd where subj-refwd is ("re" / "fw" / "fwd") *WSP
// [subj-blob] ":".
func stripLeader(s string) (string, bool) {
	if t := strings.TrimLeft(s, " "); t != s {
		return t, true
	}
	t := s
	for {
		u, ok := stripBlob(t)
		if !ok {
			break
		}
		t = u
	}
	lower := strings.ToLower(t)
	var rest string
	switch {
	case strings.HasPrefix(lower, "fwd"):
		rest = t[3:]
	case strings.HasPrefix(lower, "fw"), strings.HasPrefix(lower, "re"):
		rest = t[2:]
	default:
		return s, false
	}
	rest = strings.TrimLeft(rest, " ")
	if u, ok := stripBlob(rest); ok {
		rest = u
	}
	if !strings.HasPrefix(rest, ":") {
		return s, false
	}
	return rest[1:], true
}
