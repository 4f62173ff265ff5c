package imap

import (
	"bytes"
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/twinbox/twinbox/store"
)

// THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 3).

// threadMsg is what threading needs of a message.
type threadMsg struct {
	seq, uid uint32
	date     time.Time // sent date, else internal date
	subject  string    // base subject, case-mapped
	reply    bool      // the subject was a reply or forward
	id       string    // Message-ID
	refs     []string  // References, else the first In-Reply-To
}

// container is a node of the thread tree; msg is nil for a dummy.
type container struct {
	msg      *threadMsg
	parent   *container
	children []*container
}

func (s *session) cmdThread(uid bool) error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	alg, err := p.atom()
	if err != nil {
		return err
	}
	alg = strings.ToUpper(alg)
	if alg != "ORDEREDSUBJECT" && alg != "REFERENCES" {
		return bad("Unknown threading algorithm %s", alg)
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
	msgs, err := s.threadMessages(c)
	if err != nil {
		return err
	}
	var roots []*container
	if alg == "ORDEREDSUBJECT" {
		roots = orderedSubject(msgs)
	} else {
		roots = references(msgs)
	}
	s.w.raw("* THREAD ")
	for _, r := range roots {
		s.w.raw("(")
		s.writeThreadNode(r, uid)
		s.w.raw(")")
	}
	s.w.crlf()
	return nil
}

// writeThreadNode writes a node: its number, then its one child's chain,
// or each of several children in parentheses.
func (s *session) writeThreadNode(c *container, uid bool) {
	if c.msg != nil {
		if uid {
			s.w.num(c.msg.uid)
		} else {
			s.w.num(c.msg.seq)
		}
	}
	switch {
	case len(c.children) == 1 && c.msg != nil:
		s.w.raw(" ")
		s.writeThreadNode(c.children[0], uid)
	case len(c.children) > 0:
		if c.msg != nil {
			s.w.raw(" ")
		}
		for _, ch := range c.children {
			s.w.raw("(")
			s.writeThreadNode(ch, uid)
			s.w.raw(")")
		}
	}
}

func (s *session) threadMessages(c *store.Criteria) ([]*threadMsg, error) {
	uids, err := s.srv.opts.Reader.Search(s.user, s.sel.name, c)
	if err != nil {
		return nil, mapError(err)
	}
	uids = slices.DeleteFunc(uids, func(u uint32) bool {
		_, ok := slices.BinarySearch(s.sel.uids, u)
		return !ok
	})
	var out []*threadMsg
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
			base, reply := baseSubjectReply(meta.Envelope.Subject)
			tm := &threadMsg{seq: uint32(k + 1), uid: m.UID, date: meta.Envelope.Date,
				subject: caseMap(base), reply: reply, id: meta.Envelope.MessageID}
			if tm.date.IsZero() {
				tm.date = m.InternalDate
			}
			refs, err := s.referencesOf(meta, m.Body)
			if err != nil {
				return nil, err
			}
			tm.refs = refs
			if len(tm.refs) == 0 && len(meta.Envelope.InReplyTo) > 0 {
				tm.refs = meta.Envelope.InReplyTo[:1]
			}
			out = append(out, tm)
		}
	}
	return out, nil
}

// referencesOf is the message IDs of the References field.
func (s *session) referencesOf(meta *store.Meta, body store.BlobID) ([]string, error) {
	if store.FieldsComplete(meta) {
		for _, f := range meta.Fields {
			if strings.EqualFold(f.Name, "References") {
				return msgIDList(f.Value), nil
			}
		}
		return nil, nil
	}
	raw, err := s.srv.opts.Reader.Body(s.ctx, body)
	if err != nil {
		return nil, mapError(err)
	}
	hdr := raw[:meta.Root.BodyStart]
	for _, line := range unfoldFields(hdr) {
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "References") {
			return msgIDList(value), nil
		}
	}
	return nil, nil
}

// unfoldFields splits a header into its unfolded fields.
func unfoldFields(hdr []byte) []string {
	var out []string
	for _, l := range bytes.Split(hdr, []byte("\n")) {
		l = bytes.TrimRight(l, "\r")
		if len(l) == 0 {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(out) > 0 {
			out[len(out)-1] += " " + strings.TrimSpace(string(l))
			continue
		}
		out = append(out, string(l))
	}
	return out
}

// msgIDList is the <id>s of a field, without brackets.
func msgIDList(v string) []string {
	var ids []string
	for {
		i := strings.IndexByte(v, '<')
		if i < 0 {
			return ids
		}
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return ids
		}
		if id := strings.TrimSpace(v[i+1 : i+j]); id != "" {
			ids = append(ids, id)
		}
		v = v[i+j+1:]
	}
}

// byDate orders messages by sent date, then sequence number.
func byDate(a, b *threadMsg) int {
	if c := a.date.Compare(b.date); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// orderedSubject: messages grouped by base subject, each group a thread
// whose first message (by date) is the parent of the others; threads
// ordered by their first message's date.
func orderedSubject(msgs []*threadMsg) []*container {
	slices.SortStableFunc(msgs, func(a, b *threadMsg) int {
		if c := strings.Compare(a.subject, b.subject); c != 0 {
			return c
		}
		return byDate(a, b)
	})
	var roots []*container
	for i := 0; i < len(msgs); {
		root := &container{msg: msgs[i]}
		j := i + 1
		for ; j < len(msgs) && msgs[j].subject == msgs[i].subject; j++ {
			root.children = append(root.children, &container{msg: msgs[j], parent: root})
		}
		roots = append(roots, root)
		i = j
	}
	slices.SortStableFunc(roots, func(a, b *container) int { return byDate(a.msg, b.msg) })
	return roots
}

// references is RFC 5256's REFERENCES algorithm (after jwz).
func references(msgs []*threadMsg) []*container {
	slices.SortStableFunc(msgs, func(a, b *threadMsg) int { return cmp.Compare(a.seq, b.seq) })
	table := map[string]*container{}
	get := func(id string) *container {
		c := table[id]
		if c == nil {
			c = &container{}
			table[id] = c
		}
		return c
	}
	unique := 0
	for _, m := range msgs {
		// (1A) The message's container; a duplicate or missing
		// Message-ID gets one of its own.
		var c *container
		if m.id != "" {
			if c = get(m.id); c.msg != nil {
				c = nil
			}
		}
		if c == nil {
			unique++
			c = &container{}
			table["\x00"+uitoa(uint32(unique))] = c
		}
		c.msg = m
		// (1B) Link the references in order, parent before child.
		var prev *container
		for _, id := range m.refs {
			r := get(id)
			if prev != nil && r.parent == nil && r != prev && !isAncestor(r, prev) {
				link(prev, r)
			}
			prev = r
		}
		// (1C) The last reference is the message's parent.
		if c.parent != nil {
			unlink(c)
		}
		if prev != nil && prev != c && !isAncestor(c, prev) {
			link(prev, c)
		}
	}
	// (2) The root set.
	var roots []*container
	seen := map[*container]bool{}
	for _, c := range table {
		if c.parent == nil && !seen[c] {
			seen[c] = true
			roots = append(roots, c)
		}
	}
	// (4) Prune dummies.
	roots = prune(roots, true)
	// Sort, so that the subject table keeps the earliest of each subject.
	sortSiblings(roots)
	// (5) Gather roots with the same base subject.
	subjects := map[string]*container{}
	for _, r := range roots {
		m := firstMsg(r)
		if m == nil || m.subject == "" {
			continue
		}
		old := subjects[m.subject]
		if old == nil || (old.msg != nil && r.msg == nil) ||
			(old.msg != nil && r.msg != nil && old.msg.reply && !r.msg.reply) {
			subjects[m.subject] = r
		}
	}
	pos := map[*container]int{}
	for i, r := range roots {
		pos[r] = i
	}
	removed := map[*container]bool{}
	for _, r := range slices.Clone(roots) {
		if r.parent != nil { // moved under a new dummy below
			removed[r] = true
			continue
		}
		m := firstMsg(r)
		if m == nil || m.subject == "" {
			continue
		}
		t := subjects[m.subject]
		if t == r {
			continue
		}
		removed[r] = true
		switch {
		case t.msg == nil && r.msg == nil:
			for _, ch := range r.children {
				ch.parent = t
			}
			t.children = append(t.children, r.children...)
		case t.msg == nil:
			link(t, r)
		case r.msg.reply && !t.msg.reply:
			link(t, r)
		default:
			d := &container{}
			i := pos[t]
			roots[i], pos[d] = d, i
			link(d, t)
			link(d, r)
			subjects[m.subject] = d
		}
	}
	out := slices.DeleteFunc(roots, func(c *container) bool { return removed[c] })
	// (6) Sort every set of siblings by date.
	sortSiblings(out)
	return out
}

func link(parent, child *container) {
	child.parent = parent
	parent.children = append(parent.children, child)
}

func unlink(c *container) {
	p := c.parent
	p.children = slices.DeleteFunc(p.children, func(x *container) bool { return x == c })
	c.parent = nil
}

// isAncestor reports whether a is c or above c.
func isAncestor(a, c *container) bool {
	for ; c != nil; c = c.parent {
		if c == a {
			return true
		}
	}
	return false
}

// prune removes dummies without children and promotes the children of
// the others, except a root dummy with several children.
func prune(list []*container, root bool) []*container {
	var out []*container
	for _, c := range list {
		c.children = prune(c.children, false)
		for _, ch := range c.children {
			ch.parent = c
		}
		switch {
		case c.msg != nil:
			out = append(out, c)
		case len(c.children) == 0:
		case root && len(c.children) > 1:
			out = append(out, c)
		default:
			for _, ch := range c.children {
				ch.parent = c.parent
			}
			out = append(out, c.children...)
		}
	}
	if root {
		for _, c := range out {
			c.parent = nil
		}
	}
	return out
}

// firstMsg is a container's message, or its first child's for a dummy.
func firstMsg(c *container) *threadMsg {
	for c != nil {
		if c.msg != nil {
			return c.msg
		}
		if len(c.children) == 0 {
			return nil
		}
		c = c.children[0]
	}
	return nil
}

// sortSiblings sorts every set of siblings by the date of their message
// (a dummy's: its first child's, once its children are sorted).
func sortSiblings(list []*container) {
	for _, c := range list {
		sortSiblings(c.children)
	}
	slices.SortStableFunc(list, func(a, b *container) int {
		ma, mb := firstMsg(a), firstMsg(b)
		if ma == nil || mb == nil {
			return 0
		}
		return byDate(ma, mb)
	})
}

// baseSubjectReply is baseSubject, and whether the subject was a reply
// or forward (a leader, trailer or [fwd:] was taken off).
func baseSubjectReply(s string) (string, bool) {
	base := baseSubject(s)
	norm := strings.Join(strings.Fields(s), " ")
	if base == norm {
		return base, false
	}
	// Only blobs and whitespace taken off is not a reply.
	t := norm
	for {
		u, ok := stripBlob(t)
		if !ok {
			break
		}
		t = u
	}
	return base, t != base
}
