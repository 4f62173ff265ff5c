package imap

import (
	"bytes"
	"errors"
	"sort"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// msgRef is a message as this session sees it: its sequence number in the
// client's view and its UID.
type msgRef struct{ seq, uid uint32 }

func refUIDs(refs []msgRef) []uint32 {
	out := make([]uint32, len(refs))
	for i, r := range refs {
		out[i] = r.uid
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// resolve turns a sequence or UID set into the messages of the client's
// view, in ascending order. Messages the client has not been told about
// yet, or that are expunged but not yet reported, are left out.
func (s *session) resolve(set imap.NumSet) []msgRef {
	v, st := s.sel.view, s.sel.tracker
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []msgRef
	switch set := set.(type) {
	case imap.UIDSet:
		if len(v.uids) == 0 {
			return nil
		}
		maxUID := v.uids[len(v.uids)-1]
		for _, r := range set {
			lo, hi := uint32(r.Start), uint32(r.Stop)
			if lo == 0 {
				lo = maxUID
			}
			if hi == 0 {
				hi = maxUID
			}
			if lo > hi {
				lo, hi = hi, lo
			}
			i := sort.Search(len(v.uids), func(i int) bool { return v.uids[i] >= lo })
			for ; i < len(v.uids) && v.uids[i] <= hi; i++ {
				if seq := st.EncodeSeqNum(uint32(i) + 1); seq != 0 {
					out = append(out, msgRef{seq, v.uids[i]})
				}
			}
		}
	case imap.SeqSet:
		// The client's highest sequence number, for "*".
		var clientMax uint32
		for i := len(v.uids); i > 0 && clientMax == 0; i-- {
			clientMax = st.EncodeSeqNum(uint32(i))
		}
		if clientMax == 0 {
			return nil
		}
		for _, r := range set {
			lo, hi := r.Start, r.Stop
			if lo == 0 {
				lo = clientMax
			}
			if hi == 0 {
				hi = clientMax
			}
			if lo > hi {
				lo, hi = hi, lo
			}
			hi = min(hi, clientMax)
			for seq := lo; seq <= hi; seq++ {
				if ss := st.DecodeSeqNum(seq); ss != 0 && int(ss) <= len(v.uids) {
					out = append(out, msgRef{seq, v.uids[ss-1]})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].uid < out[j].uid })
	return compactRefs(out)
}

func compactRefs(refs []msgRef) []msgRef {
	if len(refs) < 2 {
		return refs
	}
	out := refs[:1]
	for _, r := range refs[1:] {
		if r.uid != out[len(out)-1].uid {
			out = append(out, r)
		}
	}
	return out
}

// resolveUIDs gives the client's sequence numbers of UIDs (ascending).
func (s *session) resolveUIDs(uids []uint32) []msgRef {
	var set imap.UIDSet
	for _, u := range uids {
		set.AddNum(imap.UID(u))
	}
	if len(set) == 0 {
		return nil
	}
	return s.resolve(set)
}

func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) (err error) {
	defer s.begin("FETCH")(&err)
	refs := s.resolve(numSet)
	if len(refs) == 0 {
		return nil
	}
	// A BODY[...] without PEEK sets \Seen (RFC 3501 6.4.5).
	setSeen := false
	for _, sec := range options.BodySection {
		setSeen = setSeen || !sec.Peek
	}
	for _, sec := range options.BinarySection {
		setSeen = setSeen || !sec.Peek
	}
	if setSeen && !s.sel.readOnly && !s.srv.isReadOnly() {
		op := &store.StoreFlags{User: s.user, Mailbox: s.sel.name, UIDs: refUIDs(refs),
			Action: store.FlagsAdd, Flags: []string{store.FlagSeen}}
		if _, err := s.write(op, op.UIDs); err != nil {
			return mapError(err)
		}
		o := *options
		o.Flags = true
		options = &o
	}
	return s.fetchRefs(w, refs, options)
}

// fetchRefs writes the FETCH responses of refs.
func (s *session) fetchRefs(w *imapserver.FetchWriter, refs []msgRef, options *imap.FetchOptions) error {
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
			if options.ChangedSince > 0 && m.ModSeq <= options.ChangedSince {
				continue
			}
			if err := s.fetchOne(w, r, m, options); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *session) fetchOne(w *imapserver.FetchWriter, r msgRef, m *store.Message, o *imap.FetchOptions) error {
	ctx := s.ctx()
	rw := w.CreateMessage(r.seq)
	if o.UID {
		rw.WriteUID(imap.UID(m.UID))
	}
	if o.Flags {
		rw.WriteFlags(imapFlags(m.Flags))
	}
	if o.InternalDate {
		rw.WriteInternalDate(m.InternalDate)
	}
	if o.RFC822Size {
		rw.WriteRFC822Size(m.Size)
	}
	var meta *store.Meta
	needMeta := o.Envelope || o.BodyStructure != nil
	for _, sec := range o.BodySection {
		needMeta = needMeta || (len(sec.Part) == 0 && sec.Specifier != imap.PartSpecifierNone)
	}
	if needMeta {
		var err error
		if meta, err = s.srv.opts.Reader.Meta(ctx, m.Body); err != nil {
			rw.Close()
			return mapError(err)
		}
	}
	if o.Envelope {
		rw.WriteEnvelope(envelope(&meta.Envelope))
	}
	if o.BodyStructure != nil {
		rw.WriteBodyStructure(bodyStructure(&meta.Root, o.BodyStructure.Extended))
	}
	if len(o.BodySection) > 0 || len(o.BinarySection) > 0 || len(o.BinarySectionSize) > 0 {
		body, err := s.srv.opts.Reader.Body(ctx, m.Body)
		if err != nil {
			rw.Close()
			return mapError(err)
		}
		var lit []byte // prefix + body, made only when a section needs it
		literal := func() []byte {
			if lit == nil {
				lit = make([]byte, 0, len(m.Prefix)+len(body))
				lit = append(append(lit, m.Prefix...), body...)
			}
			return lit
		}
		for _, sec := range o.BodySection {
			var b []byte
			switch {
			case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone && sec.Partial == nil:
				// BODY[]: the prefix then the shared body, not a copy of both.
				wc := rw.WriteBodySection(sec, int64(len(m.Prefix)+len(body)))
				if _, err := wc.Write(m.Prefix); err != nil {
					wc.Close()
					return err
				}
				if err := writeLiteral(wc, body); err != nil {
					return err
				}
				continue
			case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone:
				b = partial(literal(), sec.Partial)
			case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierText:
				b = partial(body[meta.Root.BodyStart:], sec.Partial)
			case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierHeader:
				// Only the header is parsed (HEADER.FIELDS is what
				// clients fetch for every message of a list).
				hdr := make([]byte, 0, len(m.Prefix)+int(meta.Root.BodyStart))
				hdr = append(append(hdr, m.Prefix...), body[:meta.Root.BodyStart]...)
				b = imapserver.ExtractBodySection(bytes.NewReader(hdr), sec)
			default:
				b = imapserver.ExtractBodySection(bytes.NewReader(literal()), sec)
			}
			if err := writeLiteral(rw.WriteBodySection(sec, int64(len(b))), b); err != nil {
				return err
			}
		}
		for _, sec := range o.BinarySection {
			b := imapserver.ExtractBinarySection(bytes.NewReader(literal()), sec)
			if err := writeLiteral(rw.WriteBinarySection(sec, int64(len(b))), b); err != nil {
				return err
			}
		}
		for _, sec := range o.BinarySectionSize {
			rw.WriteBinarySectionSize(sec, imapserver.ExtractBinarySectionSize(bytes.NewReader(literal()), sec))
		}
	}
	return rw.Close()
}

func writeLiteral(wc interface {
	Write([]byte) (int, error)
	Close() error
}, b []byte) error {
	if _, err := wc.Write(b); err != nil {
		wc.Close()
		return err
	}
	return wc.Close()
}

// partial applies a <offset.size> to a section.
func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) {
		return nil
	}
	b = b[p.Offset:]
	if p.Size >= 0 && p.Size < int64(len(b)) {
		b = b[:p.Size]
	}
	return b
}

func imapFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, len(flags))
	for i, f := range flags {
		out[i] = imap.Flag(f)
	}
	return out
}

func envelope(e *store.Envelope) *imap.Envelope {
	return &imap.Envelope{
		Date: e.Date, Subject: e.Subject,
		From: addresses(e.From), Sender: addresses(e.Sender), ReplyTo: addresses(e.ReplyTo),
		To: addresses(e.To), Cc: addresses(e.Cc), Bcc: addresses(e.Bcc),
		InReplyTo: e.InReplyTo, MessageID: e.MessageID,
	}
}

func addresses(l []store.Address) []imap.Address {
	if len(l) == 0 {
		return nil
	}
	out := make([]imap.Address, len(l))
	for i, a := range l {
		out[i] = imap.Address{Name: a.Name, Mailbox: a.Mailbox, Host: a.Host}
	}
	return out
}

// bodyStructure converts the MIME tree parsed at delivery.
func bodyStructure(p *store.Part, ext bool) imap.BodyStructure {
	if p.IsMultipart() {
		mp := &imap.BodyStructureMultiPart{Subtype: p.Subtype}
		for i := range p.Children {
			mp.Children = append(mp.Children, bodyStructure(&p.Children[i], ext))
		}
		if ext {
			mp.Extended = &imap.BodyStructureMultiPartExt{
				Params: p.Params, Disposition: disposition(p),
				Language: p.Language, Location: p.Location,
			}
		}
		return mp
	}
	sp := &imap.BodyStructureSinglePart{
		Type: p.Type, Subtype: p.Subtype, Params: p.Params,
		ID: p.ID, Description: p.Description, Encoding: strings.ToUpper(p.Encoding),
		Size: uint32(min(p.Size(), 1<<32-1)),
	}
	if sp.Encoding == "" {
		sp.Encoding = "7BIT"
	}
	switch {
	case p.Type == "text":
		sp.Text = &imap.BodyStructureText{NumLines: p.Lines}
	case p.Type == "message" && p.Subtype == "rfc822" && p.Embedded != nil && len(p.Children) == 1:
		sp.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope:      envelope(p.Embedded),
			BodyStructure: bodyStructure(&p.Children[0], ext),
			NumLines:      p.Lines,
		}
	}
	if ext {
		sp.Extended = &imap.BodyStructureSinglePartExt{
			Disposition: disposition(p), Language: p.Language, Location: p.Location,
		}
	}
	return sp
}

func disposition(p *store.Part) *imap.BodyStructureDisposition {
	if p.Disposition == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispositionParams}
}

// criteria converts IMAP SEARCH keys to the store's, resolving sequence
// numbers to UIDs in this session's view.
func (s *session) criteria(c *imap.SearchCriteria) (*store.Criteria, error) {
	out := &store.Criteria{
		Since: c.Since, Before: c.Before, SentSince: c.SentSince, SentBefore: c.SentBefore,
		Body: c.Body, Text: c.Text, Larger: c.Larger, Smaller: c.Smaller,
	}
	for _, h := range c.Header {
		out.Header = append(out.Header, store.HeaderMatch{Name: h.Key, Value: h.Value})
	}
	for _, f := range c.Flag {
		if f == "\\Recent" { // no message is recent to a new session
			out.UID = append(out.UID, nil)
			continue
		}
		out.Flag = append(out.Flag, string(f))
	}
	for _, f := range c.NotFlag {
		if f == "\\Recent" {
			continue
		}
		out.NotFlag = append(out.NotFlag, string(f))
	}
	if c.ModSeq != nil {
		out.MinModSeq = c.ModSeq.ModSeq
	}
	for _, set := range c.SeqNum {
		out.UID = append(out.UID, uidRanges(s.resolve(set)))
	}
	for _, set := range c.UID {
		out.UID = append(out.UID, uidRanges(s.resolve(set)))
	}
	for i := range c.Not {
		n, err := s.criteria(&c.Not[i])
		if err != nil {
			return nil, err
		}
		out.Not = append(out.Not, *n)
	}
	for _, pair := range c.Or {
		a, err := s.criteria(&pair[0])
		if err != nil {
			return nil, err
		}
		b, err := s.criteria(&pair[1])
		if err != nil {
			return nil, err
		}
		out.Or = append(out.Or, [2]store.Criteria{*a, *b})
	}
	return out, nil
}

// uidRanges makes a UID set of refs; an empty result matches nothing.
func uidRanges(refs []msgRef) []store.UIDRange {
	out := make([]store.UIDRange, 0, len(refs))
	for _, r := range refs {
		if n := len(out); n > 0 && out[n-1].Hi+1 == r.uid {
			out[n-1].Hi = r.uid
		} else {
			out = append(out, store.UIDRange{Lo: r.uid, Hi: r.uid})
		}
	}
	return out
}

// mapError chooses the IMAP response for an error; internals are logged
// by imapserver and never shown to the client.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
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
		return &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Invalid flag"}
	case errors.Is(err, store.ErrTooLarge):
		return no(imap.ResponseCodeTooBig, "Message too large")
	case errors.Is(err, store.ErrNoUser):
		return no(imap.ResponseCodeNonExistent, "No such user")
	case errors.Is(err, store.ErrInvalidOp):
		return no(imap.ResponseCodeCannot, "Operation refused")
	}
	return err // imapserver answers NO [SERVERBUG] and logs it
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
