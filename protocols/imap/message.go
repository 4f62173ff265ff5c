package imap

import (
	"bytes"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

var timeNow = time.Now

func uitoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func deliverOp(mailbox, user string, raw []byte, flags []string, date int64) *store.Deliver {
	return &store.Deliver{
		Body:         *dedupe.Prepare(raw, nil),
		Targets:      []store.Target{{User: user, Mailbox: mailbox, Flags: flags}},
		InternalDate: date,
	}
}

// msgRef is a message as this session sees it: its sequence number in the
// client's view and its UID.
type msgRef struct{ seq, uid uint32 }

func refUIDs(refs []msgRef) []uint32 {
	out := make([]uint32, len(refs))
	for i, r := range refs {
		out[i] = r.uid
	}
	slices.Sort(out)
	return out
}

// resolve turns a sequence or UID set into the messages of the client's
// view, in ascending order. Messages the client has not been told about
// yet are left out; so are UIDs that are not in the view (RFC 3501 6.4.8:
// no error for those). A sequence number beyond the view is the client's
// error.
func (s *session) resolve(set numSet, uid bool) ([]msgRef, error) {
	uids := s.sel.uids
	if len(uids) == 0 {
		if uid {
			return nil, nil
		}
		return nil, bad("No messages")
	}
	var out []msgRef
	if uid {
		maxUID := uids[len(uids)-1]
		for _, r := range set {
			lo, hi := r.lo, r.hi
			if lo == 0 {
				lo = maxUID
			}
			if hi == 0 {
				hi = maxUID
			}
			if lo > hi {
				lo, hi = hi, lo
			}
			i, _ := slices.BinarySearch(uids, lo)
			for ; i < len(uids) && uids[i] <= hi; i++ {
				out = append(out, msgRef{uint32(i + 1), uids[i]})
			}
		}
	} else {
		n := uint32(len(uids))
		for _, r := range set {
			lo, hi := r.lo, r.hi
			if lo == 0 {
				lo = n
			}
			if hi == 0 {
				hi = n
			}
			if lo > hi {
				lo, hi = hi, lo
			}
			if hi > n {
				return nil, bad("Sequence number %d is beyond the last message (%d)", hi, n)
			}
			for seq := lo; seq <= hi; seq++ {
				out = append(out, msgRef{seq, uids[seq-1]})
			}
			if len(out) > 10*len(uids)+1000 {
				return nil, bad("Sequence set repeats itself too much")
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].uid < out[j].uid })
	return slices.CompactFunc(out, func(a, b msgRef) bool { return a.uid == b.uid }), nil
}

func (s *session) writable() error {
	if err := s.srv.refuseWrites(); err != nil {
		return err
	}
	if s.sel.readOnly {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "Mailbox is selected read-only (EXAMINE)"}
	}
	return nil
}

// fetchItem is one data item of a FETCH.
type fetchItem struct {
	kind    fetchKind
	name    string // the response's name for sections, e.g. BODY[1.MIME]<0>
	section *imap.FetchItemBodySection
	binary  *imap.FetchItemBinarySection
	binSize *imap.FetchItemBinarySectionSize
}

type fetchKind int

const (
	fetchUID fetchKind = iota
	fetchFlags
	fetchInternalDate
	fetchSize
	fetchEnvelope
	fetchBody          // BODY: the structure without extension data
	fetchBodyStructure // BODYSTRUCTURE
	fetchSection       // BODY[...], RFC822, RFC822.HEADER, RFC822.TEXT
	fetchBinary
	fetchBinarySize
	fetchModSeq // MODSEQ (RFC 7162)
)

func (s *session) fetchItemsArg() ([]fetchItem, error) {
	p := &s.p
	if p.peek() == '(' {
		var items []fetchItem
		err := p.list(func() error {
			it, err := s.fetchItemArg(false)
			items = append(items, it...)
			return err
		})
		return items, err
	}
	return s.fetchItemArg(true)
}

// fetchItemArg reads one fetch-att; with macros, ALL, FAST and FULL too.
func (s *session) fetchItemArg(macros bool) ([]fetchItem, error) {
	p := &s.p
	name := strings.ToUpper(p.word(func(c byte) bool {
		return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.'
	}))
	simple := map[string]fetchKind{"UID": fetchUID, "FLAGS": fetchFlags, "INTERNALDATE": fetchInternalDate,
		"RFC822.SIZE": fetchSize, "ENVELOPE": fetchEnvelope, "BODYSTRUCTURE": fetchBodyStructure,
		"MODSEQ": fetchModSeq}
	if k, ok := simple[name]; ok {
		if k == fetchModSeq {
			s.enableCondStore()
		}
		return []fetchItem{{kind: k}}, nil
	}
	if macros {
		fast := []fetchItem{{kind: fetchFlags}, {kind: fetchInternalDate}, {kind: fetchSize}}
		switch name {
		case "FAST":
			return fast, nil
		case "ALL":
			return append(fast, fetchItem{kind: fetchEnvelope}), nil
		case "FULL":
			return append(fast, fetchItem{kind: fetchEnvelope}, fetchItem{kind: fetchBody}), nil
		}
	}
	switch name {
	case "RFC822":
		return []fetchItem{{kind: fetchSection, name: "RFC822", section: &imap.FetchItemBodySection{}}}, nil
	case "RFC822.HEADER":
		return []fetchItem{{kind: fetchSection, name: "RFC822.HEADER",
			section: &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}}}, nil
	case "RFC822.TEXT":
		return []fetchItem{{kind: fetchSection, name: "RFC822.TEXT",
			section: &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText}}}, nil
	case "BODY", "BODY.PEEK":
		if p.peek() != '[' {
			if name == "BODY" {
				return []fetchItem{{kind: fetchBody}}, nil
			}
			return nil, bad("BODY.PEEK needs a section")
		}
		sec, text, err := s.sectionArg(true)
		if err != nil {
			return nil, err
		}
		sec.Peek = name == "BODY.PEEK"
		it := fetchItem{kind: fetchSection, section: sec, name: "BODY[" + text + "]"}
		if sec.Partial, err = s.partialArg(); err != nil {
			return nil, err
		}
		if sec.Partial != nil {
			it.name += "<" + strconv.FormatInt(sec.Partial.Offset, 10) + ">"
		}
		return []fetchItem{it}, nil
	case "BINARY", "BINARY.PEEK", "BINARY.SIZE":
		sec, text, err := s.sectionArg(false)
		if err != nil {
			return nil, err
		}
		if name == "BINARY.SIZE" {
			return []fetchItem{{kind: fetchBinarySize, name: "BINARY.SIZE[" + text + "]",
				binSize: &imap.FetchItemBinarySectionSize{Part: sec.Part}}}, nil
		}
		b := &imap.FetchItemBinarySection{Part: sec.Part, Peek: name == "BINARY.PEEK"}
		it := fetchItem{kind: fetchBinary, binary: b, name: "BINARY[" + text + "]"}
		if b.Partial, err = s.partialArg(); err != nil {
			return nil, err
		}
		if b.Partial != nil {
			it.name += "<" + strconv.FormatInt(b.Partial.Offset, 10) + ">"
		}
		return []fetchItem{it}, nil
	}
	if name == "" {
		return nil, bad("Expected a FETCH item at column %d", p.pos+1)
	}
	return nil, bad("Unknown FETCH item %s", name)
}

// sectionArg reads "[section]" and returns it with its canonical text.
func (s *session) sectionArg(text bool) (*imap.FetchItemBodySection, string, error) {
	p := &s.p
	if err := p.expect('['); err != nil {
		return nil, "", err
	}
	sec := &imap.FetchItemBodySection{}
	var b strings.Builder
	for p.peek() >= '0' && p.peek() <= '9' {
		n, err := p.number()
		if err != nil {
			return nil, "", err
		}
		if n == 0 {
			return nil, "", bad("Part numbers start at 1")
		}
		sec.Part = append(sec.Part, int(n))
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(uitoa(n))
		if !p.maybe('.') {
			break
		}
		if len(sec.Part) > 50 {
			return nil, "", bad("Part number too deep")
		}
	}
	if text && p.peek() != ']' {
		spec := strings.ToUpper(p.word(func(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '.' }))
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(spec)
		switch spec {
		case "HEADER":
			sec.Specifier = imap.PartSpecifierHeader
		case "TEXT":
			sec.Specifier = imap.PartSpecifierText
		case "MIME":
			if len(sec.Part) == 0 {
				return nil, "", bad("MIME needs a part number")
			}
			sec.Specifier = imap.PartSpecifierMIME
		case "HEADER.FIELDS", "HEADER.FIELDS.NOT":
			sec.Specifier = imap.PartSpecifierHeader
			if err := p.sp(); err != nil {
				return nil, "", err
			}
			var fields []string
			err := p.list(func() error {
				f, err := p.astring()
				if err == nil && strings.ContainsAny(f, " :\x00\r\n") {
					err = bad("Invalid header field name")
				}
				fields = append(fields, f)
				return err
			})
			if err != nil {
				return nil, "", err
			}
			if len(fields) == 0 {
				return nil, "", bad("Empty header field list")
			}
			if spec == "HEADER.FIELDS" {
				sec.HeaderFields = fields
			} else {
				sec.HeaderFieldsNot = fields
			}
			b.WriteString(" (")
			for i, f := range fields {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(strings.ToUpper(f))
			}
			b.WriteString(")")
		default:
			return nil, "", bad("Unknown section %q", spec)
		}
	}
	if err := p.expect(']'); err != nil {
		return nil, "", err
	}
	return sec, b.String(), nil
}

// partialArg reads an optional "<offset.size>".
func (s *session) partialArg() (*imap.SectionPartial, error) {
	p := &s.p
	if !p.maybe('<') {
		return nil, nil
	}
	off, err := p.number()
	if err != nil {
		return nil, err
	}
	if err := p.expect('.'); err != nil {
		return nil, err
	}
	n, err := p.number()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, bad("A partial of 0 bytes")
	}
	if err := p.expect('>'); err != nil {
		return nil, err
	}
	return &imap.SectionPartial{Offset: int64(off), Size: int64(n)}, nil
}

func (s *session) cmdFetch(uid bool) error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	set, err := p.seqSet()
	if err != nil {
		return err
	}
	if err := p.sp(); err != nil {
		return err
	}
	items, err := s.fetchItemsArg()
	if err != nil {
		return err
	}
	var changedSince uint64
	vanished := false
	if p.maybe(' ') {
		// RFC 7162 3.1.4: FETCH ... (CHANGEDSINCE modseq [VANISHED])
		err := p.list(func() error {
			a, err := p.atom()
			if err != nil {
				return err
			}
			switch strings.ToUpper(a) {
			case "CHANGEDSINCE":
				if err := p.sp(); err != nil {
					return err
				}
				changedSince, err = p.number64()
				return err
			case "VANISHED":
				vanished = true
				return nil
			}
			return bad("Unknown FETCH modifier %s", a)
		})
		if err != nil {
			return err
		}
		if changedSince == 0 {
			return bad("CHANGEDSINCE needs a mod-sequence above 0")
		}
		if vanished && (!uid || !s.qresync) {
			return bad("VANISHED needs UID FETCH and QRESYNC enabled")
		}
		s.enableCondStore()
	}
	if err := p.end(); err != nil {
		return err
	}
	if uid && !slices.ContainsFunc(items, func(it fetchItem) bool { return it.kind == fetchUID }) {
		items = append([]fetchItem{{kind: fetchUID}}, items...)
	}
	if changedSince > 0 && !slices.ContainsFunc(items, func(it fetchItem) bool { return it.kind == fetchModSeq }) {
		items = append(items, fetchItem{kind: fetchModSeq})
	}
	if vanished {
		if v := s.vanished(set, changedSince); v != "" {
			s.w.raw("* VANISHED (EARLIER) ").raw(v).crlf()
		}
	}
	refs, err := s.resolve(set, uid)
	if err != nil || len(refs) == 0 {
		return err
	}
	if changedSince > 0 {
		if refs, err = s.changedSince(refs, changedSince); err != nil || len(refs) == 0 {
			return err
		}
	}
	// A body section without PEEK sets \Seen (RFC 3501 6.4.5).
	setSeen := false
	for _, it := range items {
		setSeen = setSeen || (it.section != nil && !it.section.Peek) || (it.binary != nil && !it.binary.Peek)
	}
	if setSeen && s.writable() == nil {
		op := &store.StoreFlags{User: s.user, Mailbox: s.sel.name, UIDs: refUIDs(refs),
			Action: store.FlagsAdd, Flags: []string{store.FlagSeen}}
		if _, err := s.write(op, op.UIDs); err != nil {
			return mapError(err)
		}
		if !slices.ContainsFunc(items, func(it fetchItem) bool { return it.kind == fetchFlags }) {
			items = append(items, fetchItem{kind: fetchFlags})
		}
		if s.condstore {
			if !slices.ContainsFunc(items, func(it fetchItem) bool { return it.kind == fetchUID }) {
				items = append(items, fetchItem{kind: fetchUID})
			}
			if !slices.ContainsFunc(items, func(it fetchItem) bool { return it.kind == fetchModSeq }) {
				items = append(items, fetchItem{kind: fetchModSeq})
			}
		}
	}
	return s.fetchRefs(refs, items)
}

// changedSince keeps the refs whose modseq is above modseq.
func (s *session) changedSince(refs []msgRef, modseq uint64) ([]msgRef, error) {
	uids, err := s.srv.opts.Reader.Search(s.user, s.sel.name, &store.Criteria{
		UID: [][]store.UIDRange{uidRanges(refUIDs(refs))}, MinModSeq: modseq + 1})
	if err != nil {
		return nil, mapError(err)
	}
	return slices.DeleteFunc(refs, func(r msgRef) bool {
		_, ok := slices.BinarySearch(uids, r.uid)
		return !ok
	}), nil
}

// fetchRefs writes the FETCH responses of refs.
func (s *session) fetchRefs(refs []msgRef, items []fetchItem) error {
	const chunk = 256 // records read per store call, to bound memory
	for len(refs) > 0 {
		n := min(chunk, len(refs))
		part := refs[:n]
		refs = refs[n:]
		msgs, err := s.srv.opts.Reader.Messages(s.user, s.sel.name, refUIDs(part))
		if err != nil {
			return mapError(err)
		}
		byUID := make(map[uint32]*store.Message, len(msgs))
		for i := range msgs {
			byUID[msgs[i].UID] = &msgs[i]
		}
		for _, r := range part {
			m := byUID[r.uid]
			if m == nil {
				continue // expunged meanwhile; its EXPUNGE follows
			}
			if err := s.fetchOne(r, m, items); err != nil {
				return err
			}
		}
		if s.w.err != nil {
			return s.w.err
		}
	}
	return nil
}

func (s *session) fetchOne(r msgRef, m *store.Message, items []fetchItem) error {
	var (
		meta *store.Meta
		body []byte
		lit  []byte
	)
	needMeta := func() error {
		if meta == nil {
			var err error
			meta, err = s.srv.opts.Reader.Meta(s.ctx, m.Body)
			return err
		}
		return nil
	}
	needBody := func() error {
		if body == nil {
			var err error
			body, err = s.srv.opts.Reader.Body(s.ctx, m.Body)
			return err
		}
		return nil
	}
	literal := func() []byte { // prefix + body, made only when a section needs it
		if lit == nil {
			lit = make([]byte, 0, len(m.Prefix)+len(body))
			lit = append(append(lit, m.Prefix...), body...)
		}
		return lit
	}
	// Read what is needed before the response starts, so that a failure
	// leaves no half-written response.
	for _, it := range items {
		var err error
		switch it.kind {
		case fetchEnvelope, fetchBody, fetchBodyStructure:
			err = needMeta()
		case fetchSection:
			if err = needBody(); err == nil && len(it.section.Part) == 0 && it.section.Specifier != imap.PartSpecifierNone {
				err = needMeta()
			}
		case fetchBinary, fetchBinarySize:
			err = needBody()
		}
		if err != nil {
			return mapError(err)
		}
	}
	w := &s.w
	if slices.ContainsFunc(items, func(it fetchItem) bool { return it.kind == fetchFlags }) {
		s.ensureKeywords(m.Flags)
	}
	w.raw("* ").num(r.seq).raw(" FETCH (")
	for i, it := range items {
		if i > 0 {
			w.raw(" ")
		}
		switch it.kind {
		case fetchUID:
			w.raw("UID ").num(m.UID)
		case fetchFlags:
			w.raw("FLAGS ")
			s.writeFlagList(m.Flags, m.UID)
		case fetchInternalDate:
			w.raw(`INTERNALDATE "`).raw(m.InternalDate.Format("02-Jan-2006 15:04:05 -0700")).raw(`"`)
		case fetchSize:
			w.raw("RFC822.SIZE ").raw(strconv.FormatInt(m.Size, 10))
		case fetchEnvelope:
			w.raw("ENVELOPE ")
			writeEnvelope(w, &meta.Envelope)
		case fetchBody:
			w.raw("BODY ")
			writeBodyStructure(w, &meta.Root, false)
		case fetchBodyStructure:
			w.raw("BODYSTRUCTURE ")
			writeBodyStructure(w, &meta.Root, true)
		case fetchSection:
			w.raw(it.name).raw(" ")
			sec := it.section
			switch {
			case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone && sec.Partial == nil:
				// BODY[]: the prefix then the shared body, not a copy of both.
				w.raw("{").raw(strconv.Itoa(len(m.Prefix) + len(body))).raw("}\r\n")
				w.bytes(m.Prefix).bytes(body)
			case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone:
				w.literal(partial(literal(), sec.Partial))
			case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierText:
				w.literal(partial(body[meta.Root.BodyStart:], sec.Partial))
			case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierHeader:
				hdr := make([]byte, 0, len(m.Prefix)+int(meta.Root.BodyStart))
				hdr = append(append(hdr, m.Prefix...), body[:meta.Root.BodyStart]...)
				w.literal(imapserver.ExtractBodySection(bytes.NewReader(hdr), sec))
			default:
				b := imapserver.ExtractBodySection(bytes.NewReader(literal()), sec)
				if b == nil {
					w.raw(`""`)
				} else {
					w.literal(b)
				}
			}
		case fetchBinary:
			w.raw(it.name).raw(" ")
			b := imapserver.ExtractBinarySection(bytes.NewReader(literal()), it.binary)
			w.raw("~").literal(b)
		case fetchBinarySize:
			w.raw(it.name).raw(" ").num(imapserver.ExtractBinarySectionSize(bytes.NewReader(literal()), it.binSize))
		case fetchModSeq:
			w.raw("MODSEQ (").num64(m.ModSeq).raw(")")
		}
	}
	w.raw(")").crlf()
	if slices.ContainsFunc(items, func(it fetchItem) bool { return it.kind == fetchFlags || it.kind == fetchModSeq }) {
		s.dropStaleFlags(m.UID, m.ModSeq)
	}
	return w.err
}

// partial applies a <offset.size> to a section.
func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) {
		return []byte{}
	}
	b = b[p.Offset:]
	if p.Size >= 0 && p.Size < int64(len(b)) {
		b = b[:p.Size]
	}
	return b
}

func writeEnvelope(w *respWriter, e *store.Envelope) {
	w.raw("(")
	if e.Date.IsZero() {
		w.raw("NIL")
	} else {
		w.str(e.Date.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	}
	w.raw(" ").nstr(e.Subject).raw(" ")
	for _, l := range [][]store.Address{e.From, e.Sender, e.ReplyTo, e.To, e.Cc, e.Bcc} {
		writeAddresses(w, l)
		w.raw(" ")
	}
	ids := make([]string, len(e.InReplyTo))
	for i, id := range e.InReplyTo {
		ids[i] = "<" + id + ">"
	}
	w.nstr(strings.Join(ids, " ")).raw(" ")
	if e.MessageID == "" {
		w.raw("NIL")
	} else {
		w.str("<" + e.MessageID + ">")
	}
	w.raw(")")
}

func writeAddresses(w *respWriter, l []store.Address) {
	if len(l) == 0 {
		w.raw("NIL")
		return
	}
	w.raw("(")
	for _, a := range l {
		if a.Group { // a group's start (its name) or end (NIL)
			w.raw("(NIL NIL ").nstr(a.Mailbox).raw(" NIL)")
			continue
		}
		w.raw("(").nstr(a.Name).raw(" ").nstr(a.Route).raw(" ").nstr(a.Mailbox).raw(" ").nstr(a.Host).raw(")")
	}
	w.raw(")")
}

// writeBodyStructure writes BODYSTRUCTURE (ext) or BODY of the MIME tree
// parsed at delivery.
func writeBodyStructure(w *respWriter, p *store.Part, ext bool) {
	w.raw("(")
	if p.IsMultipart() {
		for i := range p.Children {
			writeBodyStructure(w, &p.Children[i], ext)
		}
		w.raw(" ").str(p.Subtype)
		if ext {
			w.raw(" ")
			writeParams(w, p.Params)
			w.raw(" ")
			writeDisposition(w, p)
			w.raw(" ")
			writeLanguage(w, p.Language)
			w.raw(" ").nstr(p.Location)
		}
		w.raw(")")
		return
	}
	typ := p.Type
	if typ == "" {
		typ = "text"
	}
	w.str(typ).raw(" ").str(p.Subtype).raw(" ")
	params := p.Params
	if len(params) == 0 && typ == "text" {
		params = map[string]string{"charset": "us-ascii"}
	}
	writeParams(w, params)
	enc := strings.ToUpper(p.Encoding)
	if enc == "" {
		enc = "7BIT"
	}
	w.raw(" ").nstr(p.ID).raw(" ").nstr(p.Description).raw(" ").str(enc).raw(" ").num(uint32(min(p.Size(), 1<<32-1)))
	switch {
	case typ == "text":
		w.raw(" ").num(uint32(p.Lines))
	case typ == "message" && p.Subtype == "rfc822" && p.Embedded != nil && len(p.Children) == 1:
		w.raw(" ")
		writeEnvelope(w, p.Embedded)
		w.raw(" ")
		writeBodyStructure(w, &p.Children[0], ext)
		w.raw(" ").num(uint32(p.Lines))
	}
	if ext {
		w.raw(" ").nstr(p.MD5).raw(" ")
		writeDisposition(w, p)
		w.raw(" ")
		writeLanguage(w, p.Language)
		w.raw(" ").nstr(p.Location)
	}
	w.raw(")")
}

func writeParams(w *respWriter, params map[string]string) {
	if len(params) == 0 {
		w.raw("NIL")
		return
	}
	w.raw("(")
	for i, k := range sortedKeys(params) {
		if i > 0 {
			w.raw(" ")
		}
		w.str(k).raw(" ").str(params[k])
	}
	w.raw(")")
}

func writeDisposition(w *respWriter, p *store.Part) {
	if p.Disposition == "" {
		w.raw("NIL")
		return
	}
	w.raw("(").str(p.Disposition).raw(" ")
	writeParams(w, p.DispositionParams)
	w.raw(")")
}

func writeLanguage(w *respWriter, l []string) {
	if len(l) == 0 {
		w.raw("NIL")
		return
	}
	w.raw("(")
	for i, s := range l {
		if i > 0 {
			w.raw(" ")
		}
		w.str(s)
	}
	w.raw(")")
}

func (s *session) cmdStore(uid bool) error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	set, err := p.seqSet()
	if err != nil {
		return err
	}
	if err := p.sp(); err != nil {
		return err
	}
	op := &store.StoreFlags{User: s.user, Mailbox: s.sel.name}
	unchangedZero := false
	if p.peek() == '(' {
		err := p.list(func() error {
			a, err := p.atom()
			if err != nil {
				return err
			}
			if !strings.EqualFold(a, "UNCHANGEDSINCE") {
				return bad("Unknown STORE modifier %s", a)
			}
			if err := p.sp(); err != nil {
				return err
			}
			op.UnchangedSince, err = p.number64()
			return err
		})
		if err != nil {
			return err
		}
		s.enableCondStore()
		if op.UnchangedSince == 0 {
			// RFC 7162 3.1.3: nothing has a mod-sequence of 0 or below.
			unchangedZero = true
		}
		if err := p.sp(); err != nil {
			return err
		}
	}
	action, err := p.atom()
	if err != nil {
		return err
	}
	action = strings.ToUpper(action)
	silent := strings.HasSuffix(action, ".SILENT")
	switch strings.TrimSuffix(action, ".SILENT") {
	case "FLAGS":
		op.Action = store.FlagsSet
	case "+FLAGS":
		op.Action = store.FlagsAdd
	case "-FLAGS":
		op.Action = store.FlagsRemove
	default:
		return bad("Unknown STORE action %s", action)
	}
	if err := p.sp(); err != nil {
		return err
	}
	addFlag := func() error {
		f, err := p.flag()
		if err != nil {
			return err
		}
		if f == `\*` {
			return bad(`\* is not a flag`)
		}
		if f != `\Recent` { // per session, never stored
			op.Flags = append(op.Flags, f)
		}
		return nil
	}
	if p.peek() == '(' {
		err = p.list(addFlag)
	} else {
		for err = addFlag(); err == nil && p.maybe(' '); {
			err = addFlag()
		}
	}
	if err != nil {
		return err
	}
	if err := p.end(); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	refs, err := s.resolve(set, uid)
	if err != nil || len(refs) == 0 {
		return err
	}
	var modified []uint32
	if unchangedZero {
		modified, refs = refUIDs(refs), nil
	} else {
		op.UIDs = refUIDs(refs)
		res, err := s.write(op, op.UIDs)
		if err != nil {
			return mapError(err)
		}
		modified = res.Modified
		if len(modified) > 0 {
			refs = slices.DeleteFunc(refs, func(r msgRef) bool {
				_, ok := slices.BinarySearch(modified, r.uid)
				return ok
			})
		}
	}
	// A keyword new to the mailbox is announced (FLAGS) before the
	// message that has it.
	s.poll(false)
	var items []fetchItem
	if uid || s.condstore {
		// RFC 7162 3.2: with CONDSTORE on, UID and MODSEQ in every
		// FETCH a flag change causes.
		items = append(items, fetchItem{kind: fetchUID})
	}
	if !silent {
		items = append(items, fetchItem{kind: fetchFlags})
	}
	if s.condstore {
		// RFC 7162 3.2: the new mod-sequence is sent even when silent.
		items = append(items, fetchItem{kind: fetchModSeq})
	}
	if silent && !s.condstore {
		items = nil
	}
	if len(items) > 0 && len(refs) > 0 {
		if err := s.fetchRefs(refs, items); err != nil {
			return err
		}
	}
	if len(modified) > 0 {
		set := modified
		if !uid {
			set = make([]uint32, 0, len(modified))
			for _, u := range modified {
				if k, ok := slices.BinarySearch(s.sel.uids, u); ok {
					set = append(set, uint32(k+1))
				}
			}
		}
		s.doneCode = "MODIFIED " + uidSetString(set)
		s.doneText = "Conditional STORE failed"
	}
	return nil
}

func (s *session) cmdCopy(uid, move bool) error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	set, err := p.seqSet()
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
	if err := s.srv.refuseWrites(); err != nil {
		return err
	}
	if move {
		if err := s.writable(); err != nil {
			return err
		}
	}
	refs, err := s.resolve(set, uid)
	if err != nil {
		return err
	}
	if ok, err := s.mailboxExists(to); err != nil {
		return mapError(err)
	} else if !ok {
		return tryCreate()
	}
	if len(refs) == 0 {
		return nil
	}
	cp := store.Copy{User: s.user, From: s.sel.name, To: to, UIDs: refUIDs(refs)}
	var op store.Op = &cp
	if move {
		op = (*store.Move)(&cp)
	}
	res, err := s.write(op, nil)
	if err != nil {
		if errors.Is(err, store.ErrNoMailbox) {
			return tryCreate()
		}
		return mapError(err)
	}
	code := "COPYUID " + uitoa(res.UIDValidity) + " " + uidSetString(res.SrcUIDs) + " " + uidSetString(res.DstUIDs)
	if move {
		// COPYUID first, untagged; the EXPUNGEs follow from the poll
		// that ends the command.
		s.w.raw("* OK [").raw(code).raw("] Moved").crlf()
		return nil
	}
	s.doneCode = code
	return nil
}

// uidSetString writes UIDs in order as a compact set; COPYUID pairs the
// source and destination sets in the order given.
func uidSetString(uids []uint32) string {
	var b strings.Builder
	for i := 0; i < len(uids); {
		j := i
		for j+1 < len(uids) && uids[j+1] == uids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(uitoa(uids[i]))
		if j > i {
			b.WriteByte(':')
			b.WriteString(uitoa(uids[j]))
		}
		i = j + 1
	}
	return b.String()
}

func (s *session) mailboxExists(name string) (bool, error) {
	_, err := s.srv.opts.Reader.Mailbox(s.user, name)
	if errors.Is(err, store.ErrNoMailbox) {
		return false, nil
	}
	return err == nil, err
}

// expungeDeleted expunges every message flagged \Deleted. It names them
// (found by reading the mailbox from its floor, see hub.setFloor) rather
// than asking the store for all, whose scan walks every tombstone of the
// mailbox's past; and when there is none, it writes nothing.
func (s *session) expungeDeleted() error {
	floor := s.sel.lastKnown
	if len(s.sel.uids) > 0 {
		floor = s.sel.uids[0] - 1
	}
	_, uids, err := s.srv.opts.Reader.UIDsAfter(s.user, s.sel.name, floor)
	if err != nil {
		return mapError(err)
	}
	var deleted []uint32
	for start := 0; start < len(uids); start += 256 {
		msgs, err := s.srv.opts.Reader.Messages(s.user, s.sel.name, uids[start:min(start+256, len(uids))])
		if err != nil {
			return mapError(err)
		}
		for _, m := range msgs {
			if slices.Contains(m.Flags, store.FlagDeleted) {
				deleted = append(deleted, m.UID)
			}
		}
	}
	if len(deleted) == 0 {
		return nil
	}
	_, err = s.write(&store.Expunge{User: s.user, Mailbox: s.sel.name, UIDs: deleted}, nil)
	return mapError(err)
}

func (s *session) cmdExpunge(uid bool) error {
	p := &s.p
	op := &store.Expunge{User: s.user, Mailbox: s.sel.name}
	var set numSet
	if uid {
		if err := p.sp(); err != nil {
			return err
		}
		var err error
		if set, err = p.seqSet(); err != nil {
			return err
		}
	}
	if err := p.end(); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	if !uid {
		return s.expungeDeleted()
	}
	refs, err := s.resolve(set, true)
	if err != nil || len(refs) == 0 {
		return err
	}
	op.UIDs = refUIDs(refs)
	// The EXPUNGE responses reach this session through its queue, which
	// the poll after the command writes.
	_, err = s.write(op, nil)
	return mapError(err)
}

// mapError chooses the IMAP response for an error; internals are logged
// and never shown to the client.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	var be *badError
	if errors.As(err, &ie) || errors.As(err, &be) {
		return err
	}
	no := func(code imap.ResponseCode, text string) error {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: text}
	}
	switch {
	case errors.Is(err, protocols.ErrUnavailable):
		return no(imap.ResponseCodeUnavailable, "Temporarily unavailable, try again")
	case errors.Is(err, protocols.ErrReadOnly):
		return readOnlyError("")
	case errors.Is(err, store.ErrNoMailbox):
		return no(imap.ResponseCodeNonExistent, "No such mailbox")
	case errors.Is(err, store.ErrMailboxExists):
		return no(imap.ResponseCodeAlreadyExists, "Mailbox already exists")
	case errors.Is(err, store.ErrInboxNotDeleted):
		return no(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	case errors.Is(err, store.ErrInvalidName):
		return no(imap.ResponseCodeCannot, "Invalid mailbox name")
	case errors.Is(err, store.ErrInvalidFlag):
		return bad("Invalid flag")
	case errors.Is(err, store.ErrTooLarge):
		return no(imap.ResponseCodeTooBig, "Message too large")
	case errors.Is(err, store.ErrNoUser):
		return no(imap.ResponseCodeNonExistent, "No such user")
	case errors.Is(err, store.ErrInvalidOp):
		return no(imap.ResponseCodeCannot, "Operation refused")
	}
	return err // the session answers NO [SERVERBUG] and logs it
}

func readOnlyError(hint string) error {
	text := "This node is a read-only replica"
	if hint != "" {
		text += "; write at " + hint
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: text}
}

func tryCreate() error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
}
