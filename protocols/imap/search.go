package imap

import (
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/twinbox/twinbox/store"
)

// returnOptions reads an optional RETURN (...) of ESEARCH (RFC 4731) or
// ESORT (RFC 5267) and the space after it: the options (ALL when the
// list is empty) and whether RETURN was given.
func (s *session) returnOptions(cmd string) (ret []string, extended bool, err error) {
	p := &s.p
	w := s.peekWord()
	if !strings.EqualFold(w, "RETURN") {
		return nil, false, nil
	}
	p.pos += len(w)
	if err := p.sp(); err != nil {
		return nil, false, err
	}
	err = p.list(func() error {
		a, err := p.atom()
		if err != nil {
			return err
		}
		a = strings.ToUpper(a)
		switch a {
		case "MIN", "MAX", "ALL", "COUNT":
		default:
			return bad("Unknown %s return option %s", cmd, a)
		}
		ret = append(ret, a)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if err := p.sp(); err != nil {
		return nil, false, err
	}
	if len(ret) == 0 {
		ret = []string{"ALL"}
	}
	return ret, true, nil
}

// cmdSearch runs SEARCH and UID SEARCH, with ESEARCH's RETURN (RFC 4731).
func (s *session) cmdSearch(uid bool) error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	ret, esearch, err := s.returnOptions("SEARCH")
	if err != nil {
		return err
	}
	if w := s.peekWord(); strings.EqualFold(w, "CHARSET") {
		p.pos += len(w)
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
	}
	c := &store.Criteria{}
	s.searchModSeq = false
	for {
		if err := s.searchKey(c); err != nil {
			return err
		}
		if !p.maybe(' ') {
			break
		}
	}
	if err := p.end(); err != nil {
		return err
	}
	uids, err := s.srv.opts.Reader.Search(s.user, s.sel.name, c)
	if err != nil {
		return mapError(err)
	}
	var nums []uint32
	for _, u := range uids {
		k, ok := slices.BinarySearch(s.sel.uids, u)
		if !ok {
			continue // not known to the client yet
		}
		if uid {
			nums = append(nums, u)
		} else {
			nums = append(nums, uint32(k+1))
		}
	}
	slices.Sort(nums)
	// With a MODSEQ key, the highest mod-sequence of what matched (RFC
	// 7162 3.1.5).
	var highest uint64
	if s.searchModSeq && len(nums) > 0 {
		// ESEARCH with MIN and MAX only: of the messages returned (RFC
		// 4731 3.2).
		var matched []uint32
		for _, u := range uids {
			k, ok := slices.BinarySearch(s.sel.uids, u)
			if !ok {
				continue
			}
			n := u
			if !uid {
				n = uint32(k + 1)
			}
			if esearch && !slices.Contains(ret, "ALL") && !slices.Contains(ret, "COUNT") &&
				!(slices.Contains(ret, "MIN") && n == nums[0]) && !(slices.Contains(ret, "MAX") && n == nums[len(nums)-1]) {
				continue
			}
			matched = append(matched, u)
		}
		msgs, err := s.srv.opts.Reader.Messages(s.user, s.sel.name, matched)
		if err != nil {
			return mapError(err)
		}
		for _, m := range msgs {
			highest = max(highest, m.ModSeq)
		}
	}
	if !esearch {
		s.w.raw("* SEARCH")
		for _, n := range nums {
			s.w.raw(" ").num(n)
		}
		if highest > 0 {
			s.w.raw(" (MODSEQ ").num64(highest).raw(")")
		}
		s.w.crlf()
		return nil
	}
	s.w.raw(`* ESEARCH (TAG "`).raw(s.curTag).raw(`")`)
	if uid {
		s.w.raw(" UID")
	}
	for _, r := range ret {
		switch r {
		case "MIN":
			if len(nums) > 0 {
				s.w.raw(" MIN ").num(nums[0])
			}
		case "MAX":
			if len(nums) > 0 {
				s.w.raw(" MAX ").num(nums[len(nums)-1])
			}
		case "COUNT":
			s.w.raw(" COUNT ").num(uint32(len(nums)))
		case "ALL":
			if len(nums) > 0 {
				s.w.raw(" ALL ").raw(uidSetString(nums))
			}
		}
	}
	if highest > 0 {
		s.w.raw(" MODSEQ ").num64(highest)
	}
	s.w.crlf()
	return nil
}

func noBadCharset() error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "BADCHARSET (UTF-8 US-ASCII)", Text: "Unknown charset"}
}

// peekWord is the atom at the parse position, not consumed.
func (s *session) peekWord() string {
	p := &s.p
	end := p.pos
	for end < len(p.line) && isAtomChar(p.line[end]) {
		end++
	}
	return string(p.line[p.pos:end])
}

// searchKey reads one search key into c (AND).
func (s *session) searchKey(c *store.Criteria) error {
	p := &s.p
	if p.peek() == '(' {
		return p.list(func() error { return s.searchKey(c) })
	}
	if b := p.peek(); b >= '0' && b <= '9' || b == '*' {
		set, err := p.seqSet()
		if err != nil {
			return err
		}
		return s.setKey(c, set, false)
	}
	key, err := p.atom()
	if err != nil {
		return err
	}
	key = strings.ToUpper(key)
	arg := func() (string, error) {
		if err := p.sp(); err != nil {
			return "", err
		}
		return p.astring()
	}
	date := func() (time.Time, error) {
		if err := p.sp(); err != nil {
			return time.Time{}, err
		}
		return p.date()
	}
	flags := map[string]string{"ANSWERED": `\Answered`, "DELETED": `\Deleted`, "DRAFT": `\Draft`,
		"FLAGGED": `\Flagged`, "SEEN": `\Seen`}
	if f, ok := flags[key]; ok {
		c.Flag = append(c.Flag, f)
		return nil
	}
	if f, ok := flags[strings.TrimPrefix(key, "UN")]; ok && strings.HasPrefix(key, "UN") {
		c.NotFlag = append(c.NotFlag, f)
		return nil
	}
	switch key {
	case "ALL":
	case "RECENT", "NEW", "OLD":
		recent := make([]uint32, 0, len(s.sel.recent))
		for u := range s.sel.recent {
			recent = append(recent, u)
		}
		slices.Sort(recent)
		set := uidRanges(recent)
		switch key {
		case "RECENT":
			c.UID = append(c.UID, set)
		case "NEW":
			c.UID = append(c.UID, set)
			c.NotFlag = append(c.NotFlag, store.FlagSeen)
		case "OLD":
			c.Not = append(c.Not, store.Criteria{UID: [][]store.UIDRange{set}})
		}
	case "KEYWORD", "UNKEYWORD":
		if err := p.sp(); err != nil {
			return err
		}
		f, err := p.flag()
		if err != nil {
			return err
		}
		if key == "KEYWORD" {
			c.Flag = append(c.Flag, f)
		} else {
			c.NotFlag = append(c.NotFlag, f)
		}
	case "BCC", "CC", "FROM", "TO":
		v, err := arg()
		if err != nil {
			return err
		}
		c.Address = append(c.Address, store.HeaderMatch{Name: key, Value: v})
	case "SUBJECT":
		v, err := arg()
		if err != nil {
			return err
		}
		c.Header = append(c.Header, store.HeaderMatch{Name: key, Value: v})
	case "HEADER":
		name, err := arg()
		if err != nil {
			return err
		}
		v, err := arg()
		if err != nil {
			return err
		}
		c.Header = append(c.Header, store.HeaderMatch{Name: name, Value: v})
	case "BODY", "TEXT":
		v, err := arg()
		if err != nil {
			return err
		}
		if key == "BODY" {
			c.Body = append(c.Body, v)
		} else {
			c.Text = append(c.Text, v)
		}
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE":
		d, err := date()
		if err != nil {
			return err
		}
		sent := strings.HasPrefix(key, "SENT")
		since, before := &c.Since, &c.Before
		if sent {
			since, before = &c.SentSince, &c.SentBefore
		}
		switch strings.TrimPrefix(key, "SENT") {
		case "BEFORE":
			*before = earliest(*before, d)
		case "SINCE":
			*since = latest(*since, d)
		case "ON":
			*since = latest(*since, d)
			*before = earliest(*before, d.AddDate(0, 0, 1))
		}
	case "LARGER", "SMALLER":
		if err := p.sp(); err != nil {
			return err
		}
		n, err := p.number64()
		if err != nil {
			return err
		}
		if key == "LARGER" {
			c.Larger = max(c.Larger, int64(n))
		} else if c.Smaller == 0 || int64(n) < c.Smaller {
			c.Smaller = int64(n)
		}
	case "MODSEQ":
		// MODSEQ ["/flags/name" priv|shared|all] mod-sequence
		if err := p.sp(); err != nil {
			return err
		}
		if p.peek() == '"' {
			if _, err := p.quoted(); err != nil {
				return err
			}
			if err := p.sp(); err != nil {
				return err
			}
			typ, err := p.atom()
			if err != nil {
				return err
			}
			switch strings.ToLower(typ) {
			case "priv", "shared", "all":
			default:
				return bad("Unknown MODSEQ entry type %s", typ)
			}
			if err := p.sp(); err != nil {
				return err
			}
		}
		n, err := p.number64()
		if err != nil {
			return err
		}
		c.MinModSeq = max(c.MinModSeq, n)
		s.searchModSeq = true
		s.enableCondStore()
	case "UID":
		if err := p.sp(); err != nil {
			return err
		}
		set, err := p.seqSet()
		if err != nil {
			return err
		}
		return s.setKey(c, set, true)
	case "NOT":
		if err := p.sp(); err != nil {
			return err
		}
		var n store.Criteria
		if err := s.nested(func() error { return s.searchKey(&n) }); err != nil {
			return err
		}
		c.Not = append(c.Not, n)
	case "OR":
		var a, b store.Criteria
		err := s.nested(func() error {
			if err := p.sp(); err != nil {
				return err
			}
			if err := s.searchKey(&a); err != nil {
				return err
			}
			if err := p.sp(); err != nil {
				return err
			}
			return s.searchKey(&b)
		})
		if err != nil {
			return err
		}
		c.Or = append(c.Or, [2]store.Criteria{a, b})
	default:
		return bad("Unknown search key %s", key)
	}
	return nil
}

// nested runs f one level deeper, refusing keys nested beyond maxDepth
// (NOT NOT NOT ... without parentheses).
func (s *session) nested(f func() error) error {
	s.p.depth++
	defer func() { s.p.depth-- }()
	if s.p.depth > maxDepth {
		return bad("Search keys nested too deep")
	}
	return f()
}

// setKey restricts c to a sequence set or UID set of the client's view.
func (s *session) setKey(c *store.Criteria, set numSet, uid bool) error {
	if len(s.sel.uids) == 0 {
		c.UID = append(c.UID, []store.UIDRange{})
		return nil
	}
	refs, err := s.resolve(set, uid)
	if err != nil {
		if !uid {
			// SEARCH 10 in a mailbox of 5 matches nothing; not an error.
			c.UID = append(c.UID, []store.UIDRange{})
			return nil
		}
		return err
	}
	c.UID = append(c.UID, uidRanges(refUIDs(refs)))
	return nil
}

// uidRanges makes a UID set of ascending UIDs; an empty result matches
// nothing.
func uidRanges(uids []uint32) []store.UIDRange {
	out := make([]store.UIDRange, 0, len(uids))
	for _, u := range uids {
		if n := len(out); n > 0 && out[n-1].Hi+1 == u {
			out[n-1].Hi = u
		} else {
			out = append(out, store.UIDRange{Lo: u, Hi: u})
		}
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if a.IsZero() || b.After(a) {
		return b
	}
	return a
}
