package imap

import (
	"errors"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// mailboxArg reads a mailbox name: an astring in modified UTF-7, made
// canonical. A name that cannot be one is the client's error: BAD for
// bad encoding, NO [CANNOT] for a name the store refuses.
func (s *session) mailboxArg() (string, error) {
	raw, err := s.p.astring()
	if err != nil {
		return "", err
	}
	return canonicalName(raw)
}

func canonicalName(raw string) (string, error) {
	name, err := decodeUTF7(raw)
	if err != nil {
		return "", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "Mailbox name is not valid modified UTF-7"}
	}
	if strings.ContainsAny(name, "\x00\r\n") {
		return "", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "Mailbox name contains a control character"}
	}
	c, err := store.CanonicalMailbox(name)
	if err != nil {
		return "", mapError(err)
	}
	return c, nil
}

// cmdSelect runs SELECT and EXAMINE. On a read-only server every SELECT
// is an EXAMINE.
func (s *session) cmdSelect(examine bool) error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		s.unselect()
		return err
	}
	var qr *qresyncParams
	if p.maybe(' ') {
		// RFC 4466 select parameters: (CONDSTORE), (QRESYNC (...)).
		err := p.list(func() error {
			a, err := p.atom()
			if err != nil {
				return err
			}
			switch strings.ToUpper(a) {
			case "CONDSTORE":
				s.condstore = true
			case "QRESYNC":
				if !s.qresync {
					return bad("QRESYNC must be enabled first")
				}
				if err := p.sp(); err != nil {
					return err
				}
				qr, err = s.qresyncArg()
				return err
			default:
				return bad("Unknown SELECT parameter %s", a)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := p.end(); err != nil {
		return err
	}
	if s.sel != nil {
		s.unselect()
		s.w.raw("* OK [CLOSED] Previous mailbox is now closed").crlf()
	}
	ro := examine || s.srv.isReadOnly()
	o, err := s.srv.hub.open(protocols.MailboxRef{User: s.user, Mailbox: name}, s, ro)
	if err != nil {
		return mapError(err)
	}
	s.srv.gone.begin(o.view.ref, o.info.UIDValidity, o.info.HighestModSeq)
	sel := &selected{name: name, view: o.view, readOnly: ro, uids: o.uids,
		recent: make(map[uint32]struct{}, len(o.recent)), keywords: o.keywords, shown: make(map[uint32]uint64),
		lastKnown: o.info.UIDNext - 1, uidValidity: o.info.UIDValidity}
	for _, u := range o.recent {
		sel.recent[u] = struct{}{}
	}
	if ro {
		// EXAMINE shows what no session has claimed, without claiming it.
		for _, u := range s.srv.hub.unclaimed(sel.view.ref, o.info.UIDValidity, sel.uids) {
			sel.recent[u] = struct{}{}
		}
	}
	s.pmu.Lock()
	s.pending = nil
	s.pmu.Unlock()
	s.sel = sel
	s.state = stateSelected
	s.writeFlags(sel)
	s.w.raw("* ").num(uint32(len(sel.uids))).raw(" EXISTS").crlf()
	s.w.raw("* ").num(uint32(len(sel.recent))).raw(" RECENT").crlf()
	if o.info.Unseen > 0 { // else no search
		if seq := s.firstUnseen(); seq > 0 {
			s.w.raw("* OK [UNSEEN ").num(seq).raw("] First unseen").crlf()
		}
	}
	s.w.raw("* OK [UIDVALIDITY ").num(o.info.UIDValidity).raw("] UIDs valid").crlf()
	s.w.raw("* OK [UIDNEXT ").num(o.info.UIDNext).raw("] Predicted next UID").crlf()
	if s.condstore {
		s.w.raw("* OK [HIGHESTMODSEQ ").num64(o.info.HighestModSeq).raw("] Highest").crlf()
	}
	if qr != nil && qr.uidValidity == o.info.UIDValidity {
		if err := s.resync(qr); err != nil {
			return err
		}
	}
	if ro {
		s.doneCode, s.doneText = "READ-ONLY", "EXAMINE completed"
		if !examine {
			s.doneText = "SELECT completed; this node is read-only"
		}
	} else {
		s.doneCode, s.doneText = "READ-WRITE", "SELECT completed"
	}
	return nil
}

// firstUnseen is the sequence number of the first message without \Seen,
// or 0. It reads the view's messages in order, from its lowest UID (not
// a search, which walks the whole mailbox key range), and stops at the
// first unseen.
func (s *session) firstUnseen() uint32 {
	uids := s.sel.uids
	for start := 0; start < len(uids); start += 256 {
		part := uids[start:min(start+256, len(uids))]
		msgs, err := s.srv.opts.Reader.Messages(s.user, s.sel.name, part)
		if err != nil {
			return 0
		}
		for _, m := range msgs {
			if !slices.Contains(m.Flags, store.FlagSeen) {
				k, _ := slices.BinarySearch(uids, m.UID)
				return uint32(k + 1)
			}
		}
	}
	return 0
}

// unselect leaves the Selected state, if in it.
func (s *session) unselect() {
	sel := s.sel
	if sel == nil {
		return
	}
	s.sel = nil
	s.state = stateAuth
	s.srv.hub.close(sel.view, s)
	s.pmu.Lock()
	s.pending = nil
	s.pmu.Unlock()
}

// cmdClose runs CLOSE (expunge, then unselect) and UNSELECT. CLOSE on a
// mailbox selected read-only just closes it (RFC 3501 6.4.2).
func (s *session) cmdClose(expunge bool) error {
	if err := s.p.end(); err != nil {
		return err
	}
	if expunge && s.writable() == nil {
		if err := s.expungeDeleted(); err != nil {
			return err
		}
	}
	s.unselect()
	return nil
}

func (s *session) cmdCreate() error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	raw, err := p.astring()
	if err != nil {
		return err
	}
	op := &store.CreateMailbox{User: s.user, UIDValidity: uidValidityNow()}
	if p.maybe(' ') {
		// RFC 6154 CREATE (USE (\Sent ...)).
		err := p.list(func() error {
			kw, err := p.atom()
			if err != nil {
				return err
			}
			if !strings.EqualFold(kw, "USE") {
				return bad("Unknown CREATE parameter %s", kw)
			}
			if err := p.sp(); err != nil {
				return err
			}
			return p.list(func() error {
				f, err := p.flag()
				if err != nil {
					return err
				}
				if !isSpecialUse(f) {
					return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "Unknown special-use attribute " + f}
				}
				op.SpecialUse = append(op.SpecialUse, specialUseName(f))
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	if err := p.end(); err != nil {
		return err
	}
	name, err := canonicalName(strings.TrimSuffix(raw, string(store.Delimiter)))
	if err != nil {
		return err
	}
	op.Name = name
	_, err = s.write(op, nil)
	return mapError(err)
}

var specialUses = []imap.MailboxAttr{imap.MailboxAttrAll, imap.MailboxAttrArchive, imap.MailboxAttrDrafts,
	imap.MailboxAttrFlagged, imap.MailboxAttrJunk, imap.MailboxAttrSent, imap.MailboxAttrTrash}

func isSpecialUse(f string) bool { return specialUseName(f) != "" }

// specialUseName is the canonical spelling of a special-use attribute.
func specialUseName(f string) string {
	for _, a := range specialUses {
		if strings.EqualFold(string(a), f) {
			return string(a)
		}
	}
	return ""
}

func (s *session) cmdDelete() error {
	if err := s.p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	_, err = s.write(&store.DeleteMailbox{User: s.user, Name: name}, nil)
	return mapError(err)
}

func (s *session) cmdRename() error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	from, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := p.sp(); err != nil {
		return err
	}
	to, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := p.end(); err != nil {
		return err
	}
	_, err = s.write(&store.RenameMailbox{User: s.user, From: from, To: to, UIDValidity: uidValidityNow()}, nil)
	return mapError(err)
}

func (s *session) cmdSubscribe(on bool) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	_, err = s.write(&store.Subscribe{User: s.user, Name: name, Subscribed: on}, nil)
	return mapError(err)
}

func (s *session) cmdNamespace() error {
	if err := s.p.end(); err != nil {
		return err
	}
	s.w.raw(`* NAMESPACE (("" "/")) NIL NIL`).crlf()
	return nil
}

// statusItems are the STATUS data items asked for, in order.
type statusItems []string

func (s *session) statusItemsArg() (statusItems, error) {
	var items statusItems
	err := s.p.list(func() error {
		a, err := s.p.atom()
		if err != nil {
			return err
		}
		a = strings.ToUpper(a)
		switch a {
		case "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "DELETED":
		case "HIGHESTMODSEQ":
			s.enableCondStore()
		default:
			return bad("Unknown STATUS item %s", a)
		}
		items = append(items, a)
		return nil
	})
	return items, err
}

func (s *session) cmdStatus() error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := p.sp(); err != nil {
		return err
	}
	items, err := s.statusItemsArg()
	if err != nil {
		return err
	}
	if err := p.end(); err != nil {
		return err
	}
	info, err := s.srv.opts.Reader.Mailbox(s.user, name)
	if err != nil {
		return mapError(err)
	}
	s.writeStatus(info, items)
	return nil
}

func (s *session) writeStatus(info store.MailboxInfo, items statusItems) {
	s.w.raw("* STATUS ").mailbox(info.Name).raw(" (")
	for i, it := range items {
		if i > 0 {
			s.w.raw(" ")
		}
		s.w.raw(it).raw(" ")
		switch it {
		case "MESSAGES":
			s.w.num(info.Messages)
		case "RECENT":
			s.w.num(s.srv.hub.recentCount(protocols.MailboxRef{User: s.user, Mailbox: info.Name}, info))
		case "UIDNEXT":
			s.w.num(info.UIDNext)
		case "UIDVALIDITY":
			s.w.num(info.UIDValidity)
		case "UNSEEN":
			s.w.num(info.Unseen)
		case "SIZE":
			s.w.num64(uint64(max(info.Size, 0)))
		case "DELETED":
			s.w.num(info.Deleted)
		case "HIGHESTMODSEQ":
			s.w.num64(info.HighestModSeq)
		}
	}
	s.w.raw(")").crlf()
}

// listOptions are LIST-EXTENDED's selection and return options.
type listOptions struct {
	subscribed, recursive, specialUse bool // selection
	retSubscribed, retChildren        bool
	retSpecialUse                     bool
	retStatus                         statusItems
	extended                          bool // any selection option or return option given
}

// cmdList runs LIST (RFC 3501, RFC 5258 LIST-EXTENDED, RFC 5819
// LIST-STATUS, RFC 6154 SPECIAL-USE) and LSUB.
func (s *session) cmdList(lsub bool) error {
	p := &s.p
	var o listOptions
	if err := p.sp(); err != nil {
		return err
	}
	if !lsub && p.peek() == '(' {
		o.extended = true
		err := p.list(func() error {
			a, err := p.atom()
			if err != nil {
				return err
			}
			switch strings.ToUpper(a) {
			case "SUBSCRIBED":
				o.subscribed = true
			case "REMOTE":
			case "RECURSIVEMATCH":
				o.recursive = true
			case "SPECIAL-USE":
				o.specialUse = true
			default:
				return bad("Unknown LIST selection option %s", a)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if o.recursive && !o.subscribed {
			return bad("RECURSIVEMATCH needs another selection option")
		}
		if err := p.sp(); err != nil {
			return err
		}
	}
	refRaw, err := p.astring()
	if err != nil {
		return err
	}
	if err := p.sp(); err != nil {
		return err
	}
	var patterns []string
	if !lsub && p.peek() == '(' {
		o.extended = true
		err = p.list(func() error {
			pat, err := p.listMailbox()
			patterns = append(patterns, pat)
			return err
		})
	} else {
		var pat string
		pat, err = p.listMailbox()
		patterns = append(patterns, pat)
	}
	if err != nil {
		return err
	}
	if !lsub && p.maybe(' ') {
		kw, err := p.atom()
		if err != nil {
			return err
		}
		if !strings.EqualFold(kw, "RETURN") {
			return bad("Expected RETURN")
		}
		if err := p.sp(); err != nil {
			return err
		}
		o.extended = true
		err = p.list(func() error {
			a, err := p.atom()
			if err != nil {
				return err
			}
			switch strings.ToUpper(a) {
			case "SUBSCRIBED":
				o.retSubscribed = true
			case "CHILDREN":
				o.retChildren = true
			case "SPECIAL-USE":
				o.retSpecialUse = true
			case "STATUS":
				if err := p.sp(); err != nil {
					return err
				}
				o.retStatus, err = s.statusItemsArg()
				return err
			default:
				return bad("Unknown LIST return option %s", a)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := p.end(); err != nil {
		return err
	}
	// A reference or pattern that is not valid modified UTF-7 matches
	// no name (names are stored decoded), as in Dovecot: OK, nothing.
	ref, err := decodeUTF7(refRaw)
	if err != nil {
		return nil
	}
	for i, pat := range patterns {
		if patterns[i], err = decodeUTF7(pat); err != nil {
			patterns[i] = "\x00" // matches nothing
		}
	}
	verb := "LIST"
	if lsub {
		verb = "LSUB"
		o.subscribed = true
	}
	if len(patterns) == 1 && patterns[0] == "" && !o.extended {
		// The hierarchy delimiter and the root of ref (RFC 3501 6.3.8).
		root := ""
		if i := strings.IndexByte(ref, store.Delimiter); i >= 0 {
			root = ref[:i+1]
		}
		s.w.raw("* ").raw(verb).raw(` (\Noselect) "/" `).mailbox(root).crlf()
		return nil
	}
	return s.list(verb, ref, patterns, &o)
}

// listEntry is one name a LIST may return.
type listEntry struct {
	name       string
	box        *store.MailboxInfo // nil: not a mailbox (a parent level)
	subscribed bool
	children   bool
	subChild   bool // a child level is subscribed (CHILDINFO)
}

func (s *session) list(verb, ref string, patterns []string, o *listOptions) error {
	boxes, err := s.srv.opts.Reader.Mailboxes(s.user)
	if err != nil {
		return mapError(err)
	}
	entries := map[string]*listEntry{}
	get := func(name string) *listEntry {
		e := entries[name]
		if e == nil {
			e = &listEntry{name: name}
			entries[name] = e
		}
		return e
	}
	for i := range boxes {
		b := &boxes[i]
		e := get(b.Name)
		e.box = b
		e.subscribed = b.Subscribed
		for j := range b.Name {
			if b.Name[j] != store.Delimiter {
				continue
			}
			parent := get(b.Name[:j])
			parent.children = true
			if b.Subscribed {
				parent.subChild = true
			}
		}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if a == "INBOX" {
			return -1
		}
		if b == "INBOX" {
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, n := range names {
		e := entries[n]
		var attrs []string
		childInfo := false
		switch {
		case o.subscribed:
			if !e.subscribed {
				// LSUB and RECURSIVEMATCH name a level above a subscribed
				// mailbox that "%" stops at (RFC 3501 6.3.9, RFC 5258 3.5).
				if !e.subChild || !matchAny(n, ref, patterns) || !unmatchedBelow(n, ref, patterns, entries, true) {
					continue
				}
				if verb == "LSUB" {
					attrs = append(attrs, `\Noselect`)
				} else if o.recursive {
					childInfo = true
				} else {
					continue
				}
			} else {
				if !matchAny(n, ref, patterns) {
					continue
				}
				if verb == "LIST" {
					attrs = append(attrs, `\Subscribed`)
				}
				if e.box == nil {
					attrs = append(attrs, `\NonExistent`)
				}
			}
		case e.box == nil:
			// A level that is not a mailbox is listed when "%" stops at
			// it (RFC 3501 6.3.8's example).
			if !matchAny(n, ref, patterns) || !unmatchedBelow(n, ref, patterns, entries, false) {
				continue
			}
			attrs = append(attrs, `\Noselect`)
		default:
			if !matchAny(n, ref, patterns) {
				continue
			}
			if o.specialUse && len(e.box.SpecialUse) == 0 {
				continue
			}
			if o.retSubscribed && e.subscribed {
				attrs = append(attrs, `\Subscribed`)
			}
		}
		if verb == "LIST" {
			if e.children {
				attrs = append(attrs, `\HasChildren`)
			} else if e.box != nil {
				attrs = append(attrs, `\HasNoChildren`)
			}
		}
		if e.box != nil && verb == "LIST" {
			attrs = append(attrs, e.box.SpecialUse...)
		}
		s.w.raw("* ").raw(verb).raw(" (").raw(strings.Join(attrs, " ")).raw(`) "/" `).mailbox(n)
		if childInfo {
			s.w.raw(` ("CHILDINFO" ("SUBSCRIBED"))`)
		}
		s.w.crlf()
		if o.retStatus != nil && e.box != nil {
			s.writeStatus(*e.box, o.retStatus)
		}
	}
	return nil
}

// unmatchedBelow reports whether an entry below name (a subscribed one,
// or a mailbox) is matched by no pattern: name then stands for it (LSUB's
// \Noselect parent, RECURSIVEMATCH's CHILDINFO, a level "%%" stops at).
func unmatchedBelow(name, ref string, patterns []string, entries map[string]*listEntry, subscribedOnly bool) bool {
	prefix := name + string(store.Delimiter)
	for n, e := range entries {
		if !strings.HasPrefix(n, prefix) || (subscribedOnly && !e.subscribed) || (!subscribedOnly && e.box == nil) {
			continue
		}
		if !matchAny(n, ref, patterns) {
			return true
		}
	}
	return false
}

func matchAny(name, ref string, patterns []string) bool {
	for _, p := range patterns {
		if imapserver.MatchList(name, store.Delimiter, ref, p) {
			return true
		}
	}
	return false
}

// cmdAppend runs APPEND: one message, refused whole if anything follows
// its literal but the end of the line.
func (s *session) cmdAppend() error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := p.sp(); err != nil {
		return err
	}
	var flags []string
	if p.peek() == '(' {
		err := p.list(func() error {
			f, err := p.flag()
			if err != nil {
				return err
			}
			if f == `\Recent` || f == `\*` {
				return bad("%s cannot be stored", f)
			}
			flags = append(flags, f)
			return nil
		})
		if err != nil {
			return err
		}
		if err := p.sp(); err != nil {
			return err
		}
	}
	var date int64
	if p.peek() == '"' {
		t, err := p.dateTime()
		if err != nil {
			return err
		}
		date = t.UnixNano()
		if err := p.sp(); err != nil {
			return err
		}
	}
	if p.peek() != '{' {
		return bad("Expected the message as a literal")
	}
	raw, err := p.literalLimit(int64(s.appendLimit()))
	if err != nil {
		return err
	}
	if err := p.end(); err != nil {
		return err
	}
	if len(raw) == 0 {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Empty message"}
	}
	if date == 0 {
		date = timeNow().UnixNano()
	}
	res, err := s.appendOne(name, raw, flags, date)
	if err != nil {
		return err
	}
	s.doneCode = "APPENDUID " + uitoa(res.Placed[0].UIDValidity) + " " + uitoa(res.Placed[0].UID)
	s.doneText = "APPEND completed"
	return nil
}

func (s *session) appendOne(name string, raw []byte, flags []string, date int64) (store.Result, error) {
	op := deliverOp(name, s.user, raw, flags, date)
	res, err := s.write(op, nil)
	if err != nil {
		if errors.Is(err, store.ErrNoMailbox) {
			return res, tryCreate()
		}
		return res, mapError(err)
	}
	if len(res.Placed) != 1 {
		return res, errors.New("imap: append placed no message")
	}
	return res, nil
}
