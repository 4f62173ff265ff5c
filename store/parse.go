package store

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/charset"
)

// Limits that keep ParseMeta bounded on hostile input. Whatever lies beyond
// them is still stored and served byte for byte; it is only not described.
const (
	// maxDepth is how deep multiparts and embedded messages are descended
	// into. A multipart or message/rfc822 part at this depth is described
	// as an opaque application/octet-stream leaf. Each level of the tree
	// costs two CBOR nesting levels (a Part map and its Children array),
	// and fxamacker/cbor refuses to decode more than 32 levels by default:
	// at 14 the deepest Meta (an embedded envelope's address at depth 13)
	// is 31 levels deep, so Meta always decodes with default options.
	// Seven forwards nested as attachments still fit.
	maxDepth = 14
	// maxParts caps the number of parts in a tree. Once reached, further
	// parts of a multipart are left undescribed (like an epilogue) and
	// containers not yet descended into become opaque leaves.
	maxParts = 5000
	// maxFields caps the number of top-level header fields kept in
	// Meta.Fields. Real mail has a few dozen.
	maxFields = 10000
	// maxFieldBytes caps the raw bytes (names and values) of the fields
	// kept in Meta.Fields: the field that crosses it is kept cut, and no
	// later field is kept. Meta travels in the log and sits in the read
	// cache, so it must not grow with a hostile header (issue 14, D7). A
	// search reads the stored header instead when Fields may be
	// incomplete (FieldsComplete).
	maxFieldBytes = 1 << 20
	// maxTextField caps the bytes of an unstructured field (Subject,
	// Message-ID, In-Reply-To, Content-ID, Content-Description...) that
	// are described in the envelope and the MIME tree.
	maxTextField = 64 << 10
	// maxAddressHeader caps the bytes of an address header that are parsed
	// for the envelope.
	maxAddressHeader = 256 << 10
	// maxDateHeader caps the bytes of a Date header that are parsed.
	maxDateHeader = 256
	// maxParamHeader caps the bytes of a Content-Type or
	// Content-Disposition value whose parameters are parsed.
	maxParamHeader = 64 << 10
	// maxParams caps the parameters kept per part and header; beyond it
	// only well-known ones are kept (the store's CBOR decoder also limits
	// map sizes).
	maxParams = 64
	// maxList caps Content-Language entries and In-Reply-To IDs.
	maxList = 64
	// maxAddresses caps the addresses kept per address header.
	maxAddresses = 10000
	// maxDecodedText caps the bytes searched for RFC 2047 encoded words
	// (mime.WordDecoder is quadratic on crafted input); the rest is kept
	// as it is.
	maxDecodedText = 16 << 10
)

// ParseMeta computes the metadata IMAP needs from a message body: the
// envelope, the top-level header fields and the MIME tree with byte offsets
// into body, so that BODY[1.2], BODY[1.2.HEADER] and BODY[1.MIME] are served
// by slicing the stored bytes.
//
// ParseMeta never fails and never panics: malformed MIME (no blank line after
// a header, missing or unterminated boundaries, binary junk) gives a
// best-effort tree. Its time and memory are linear in len(body) (nesting is
// capped, so each byte is scanned a bounded number of times).
//
// The tree obeys these rules, which the IMAP layer may rely on:
//   - 0 <= HeaderStart <= BodyStart <= End <= len(body) for every part, and
//     children lie within their parent's body, in order, without overlap;
//   - a part with Type "multipart" has at least one child: a multipart whose
//     parts cannot be found (no boundary parameter, no delimiter line), or
//     that lies beyond the depth or part limits, is described as an opaque
//     application/octet-stream leaf instead;
//   - a message/rfc822 part has exactly one child (the embedded message,
//     whose HeaderStart is the part's BodyStart) and a non-nil Embedded;
//   - Lines counts the LF characters of the body of text/* and
//     message/rfc822 parts, as Dovecot and go-imap do (a part's body inside
//     a multipart ends before the line break that precedes the boundary);
//   - every string is valid UTF-8 (invalid bytes become U+FFFD), so Meta can
//     always be encoded as CBOR text; the raw bytes stay available by slicing.
//
// Line ends may be CRLF or bare LF, mixed freely.
func ParseMeta(body []byte) Meta {
	p := &parser{b: body}
	p.words = &mime.WordDecoder{CharsetReader: lenientCharsetReader}
	p.addrs = &mail.AddressParser{WordDecoder: p.words}

	var m Meta
	hdrEnd, _ := splitHeader(body, 0, len(body))
	m.Fields = topFields(body[:hdrEnd])
	m.Envelope = p.envelope(body[:hdrEnd])
	m.Root = p.part(0, len(body), 0, false)
	return m
}

// parser holds the state of one ParseMeta call.
type parser struct {
	b     []byte
	parts int // parts created so far
	words *mime.WordDecoder
	addrs *mail.AddressParser
}

// part describes the entity in p.b[start:end]: a header, a blank line and a
// body. depth is the nesting level of the entity; inDigest says whether its
// parent is a multipart/digest (which changes the default Content-Type).
func (p *parser) part(start, end, depth int, inDigest bool) Part {
	p.parts++
	hdrEnd, bodyStart := splitHeader(p.b, start, end)
	pt := Part{
		HeaderStart: int64(start),
		BodyStart:   int64(bodyStart),
		End:         int64(end),
	}
	boundary := p.contentFields(&pt, p.b[start:hdrEnd], inDigest)

	descend := depth < maxDepth && p.parts < maxParts
	switch {
	case pt.Type == "multipart":
		if descend {
			pt.Children = p.multipart(bodyStart, end, depth, boundary, pt.Subtype == "digest")
		}
		if len(pt.Children) == 0 {
			makeOpaque(&pt)
		}
	case pt.Type == "message" && pt.Subtype == "rfc822":
		if !descend {
			makeOpaque(&pt)
			break
		}
		child := p.part(bodyStart, end, depth+1, false)
		env := p.envelope(p.b[child.HeaderStart:headerEnd(p.b, int(child.HeaderStart), int(child.BodyStart))])
		pt.Children = []Part{child}
		pt.Embedded = &env
	}
	if pt.Type == "text" || (pt.Type == "message" && pt.Subtype == "rfc822") {
		pt.Lines = int64(bytes.Count(p.b[bodyStart:end], []byte{'\n'}))
	}
	return pt
}

// makeOpaque turns a container part that is not descended into into a leaf
// that IMAP can describe consistently.
func makeOpaque(pt *Part) {
	pt.Type, pt.Subtype, pt.Params = "application", "octet-stream", nil
	pt.Children, pt.Embedded = nil, nil
}

// multipart splits the body p.b[start:end] of a multipart at its delimiter
// lines (RFC 2046 5.1.1) and describes each part. The preamble and epilogue
// are ignored. The line break before a delimiter line belongs to the
// delimiter, so a part ends before it. A missing close delimiter ends the
// last part at end.
func (p *parser) multipart(start, end, depth int, boundary string, digest bool) []Part {
	if boundary == "" || strings.ContainsAny(boundary, "\r\n") {
		return nil // RFC 2046 bchars have no line break characters
	}
	b := p.b
	dash := []byte("--" + boundary)
	var children []Part
	partStart := -1 // start of the current part; -1 in the preamble
	pos := start
	for pos < end {
		i := bytes.Index(b[pos:end], dash)
		if i < 0 {
			break
		}
		i += pos
		tail := i + len(dash)
		// The boundary has no line break, so no line can start inside
		// this match: skipping it is safe and keeps the scan linear.
		pos = tail
		if i != start && b[i-1] != '\n' {
			continue // not at a line start
		}
		closing := tail+1 < end && b[tail] == '-' && b[tail+1] == '-'
		next := end // where the next part starts
		if !closing {
			u := tail
			for u < end && (b[u] == ' ' || b[u] == '\t') {
				u++
			}
			switch {
			case u == end:
			case b[u] == '\n':
				next = u + 1
			case b[u] == '\r' && u+1 == end:
			case b[u] == '\r' && b[u+1] == '\n':
				next = u + 2
			default:
				continue // "--boundary" followed by text: not a delimiter
			}
		}
		if partStart >= 0 {
			children = append(children, p.part(partStart, trimLineBreak(b, partStart, i), depth+1, digest))
		}
		if closing || p.parts >= maxParts {
			return children
		}
		partStart = next
		pos = next
	}
	if partStart >= 0 {
		children = append(children, p.part(partStart, end, depth+1, digest))
	}
	return children
}

// trimLineBreak returns i moved back over the line break that ends at i, if
// any, but not before lo.
func trimLineBreak(b []byte, lo, i int) int {
	if i > lo && b[i-1] == '\n' {
		i--
		if i > lo && b[i-1] == '\r' {
			i--
		}
	}
	return i
}

// splitHeader finds the end of the header that starts at b[start]: hdrEnd is
// where the blank line begins and bodyStart where the body begins, after the
// blank line. A header without a blank line extends to end (the body is then
// empty), as Dovecot treats it.
func splitHeader(b []byte, start, end int) (hdrEnd, bodyStart int) {
	i := start
	for i < end {
		j := bytes.IndexByte(b[i:end], '\n')
		if j < 0 {
			break
		}
		if j == 0 || (j == 1 && b[i] == '\r') {
			return i, i + j + 1
		}
		i += j + 1
	}
	return end, end
}

// headerEnd returns where the header of an entity spanning b[start:bodyStart]
// ends, without its blank line.
func headerEnd(b []byte, start, bodyStart int) int {
	h, _ := splitHeader(b, start, bodyStart)
	return h
}

// eachField calls fn for each field of the header block h, in order, with the
// field name as written (without white space before the colon) and its raw
// value: the bytes after the colon up to the end of the field's last line,
// inner line breaks of folded lines included. Lines that are neither a field
// nor a continuation are skipped. fn returns false to stop.
func eachField(h []byte, fn func(name, value []byte) bool) {
	var name []byte
	valStart, valEnd := -1, -1
	flush := func() bool {
		if valStart < 0 {
			return true
		}
		ok := fn(name, h[valStart:valEnd])
		valStart = -1
		return ok
	}
	for i := 0; i < len(h); {
		lineEnd := len(h)
		next := len(h)
		if j := bytes.IndexByte(h[i:], '\n'); j >= 0 {
			lineEnd, next = i+j, i+j+1
		}
		line := h[i:lineEnd]
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if valStart >= 0 {
				valEnd = lineEnd // continuation of the current field
			}
			i = next
			continue
		}
		if !flush() {
			return
		}
		if c := bytes.IndexByte(line, ':'); c > 0 {
			n := bytes.TrimRight(line[:c], " \t")
			if validFieldName(n) {
				name, valStart, valEnd = n, i+c+1, lineEnd
			}
		}
		i = next
	}
	flush()
}

// validFieldName reports whether n is a field name (RFC 5322 ftext).
func validFieldName(n []byte) bool {
	if len(n) == 0 {
		return false
	}
	for _, c := range n {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// unfold removes the line breaks of a folded field value and trims the white
// space around it.
func unfold(v []byte) string {
	if bytes.IndexByte(v, '\n') < 0 {
		return cleanString(string(bytes.Trim(v, " \t\r")))
	}
	var sb strings.Builder
	sb.Grow(len(v))
	for len(v) > 0 {
		j := bytes.IndexByte(v, '\n')
		if j < 0 {
			sb.Write(v)
			break
		}
		line := v[:j]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		sb.Write(line)
		v = v[j+1:]
	}
	return cleanString(strings.Trim(sb.String(), " \t\r"))
}

// cleanString makes s valid UTF-8, replacing invalid bytes with U+FFFD.
func cleanString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// topFields lists the fields of the top-level header, at most maxFields
// of them and maxFieldBytes of their raw names and values.
func topFields(h []byte) []Field {
	var fields []Field
	budget := maxFieldBytes
	eachField(h, func(name, value []byte) bool {
		budget -= len(name)
		if budget <= 0 {
			return false
		}
		whole := len(value) <= budget
		if !whole {
			value = value[:budget]
		}
		budget -= len(value)
		fields = append(fields, Field{Name: cleanString(string(name)), Value: unfold(value)})
		return whole && len(fields) < maxFields
	})
	return fields
}

// FieldsComplete reports whether m.Fields lists every field of the
// message's top-level header whole. Only a header of at least maxFields
// fields or more than maxFieldBytes bytes may be described in part; a
// search then reads the stored header itself.
func FieldsComplete(m *Meta) bool {
	return len(m.Fields) < maxFields && m.Root.BodyStart <= maxFieldBytes
}

// fieldIs reports whether the field name n is want, ignoring case.
func fieldIs(n []byte, want string) bool {
	return len(n) == len(want) && bytes.EqualFold(n, []byte(want))
}

// contentFields fills the Content-* fields of pt from its header h and
// returns the multipart boundary, if any. The first occurrence of each field
// counts.
func (p *parser) contentFields(pt *Part, h []byte, inDigest bool) (boundary string) {
	var ctype, cte, cid, cdesc, cdisp, clang, cloc, cmd5 []byte
	seen := func(dst *[]byte, v []byte) {
		if *dst == nil {
			*dst = v[:len(v):len(v)]
		}
	}
	eachField(h, func(name, value []byte) bool {
		if len(name) < len("content-id") || !bytes.EqualFold(name[:8], []byte("content-")) {
			return true
		}
		switch {
		case fieldIs(name, "content-type"):
			seen(&ctype, value)
		case fieldIs(name, "content-transfer-encoding"):
			seen(&cte, value)
		case fieldIs(name, "content-id"):
			seen(&cid, value)
		case fieldIs(name, "content-description"):
			seen(&cdesc, value)
		case fieldIs(name, "content-disposition"):
			seen(&cdisp, value)
		case fieldIs(name, "content-language"):
			seen(&clang, value)
		case fieldIs(name, "content-location"):
			seen(&cloc, value)
		case fieldIs(name, "content-md5"):
			seen(&cmd5, value)
		}
		return true
	})

	ok := false
	if ctype != nil {
		v := unfold(limitParams(ctype))
		if mt, params, good := parseMediaType(v); good {
			pt.Type, pt.Subtype, ok = splitMediaType(mt)
			pt.Params = params
		}
		if ok && pt.Type == "multipart" {
			boundary = pt.Params["boundary"]
			if boundary == "" {
				boundary = lenientParam(v, "boundary")
			}
		}
		pt.Params = capParams(pt.Params)
	}
	if !ok {
		if inDigest {
			pt.Type, pt.Subtype, pt.Params = "message", "rfc822", nil
		} else {
			pt.Type, pt.Subtype = "text", "plain"
			pt.Params = map[string]string{"charset": "us-ascii"}
		}
	}
	if cte != nil {
		pt.Encoding = strings.ToLower(firstToken(unfold(limit(cte, maxTextField))))
	}
	if cid != nil {
		pt.ID = unfold(limit(cid, maxTextField))
	}
	if cdesc != nil {
		pt.Description = unfold(limit(cdesc, maxTextField))
	}
	if cdisp != nil {
		if d, params, ok := parseMediaType(unfold(limitParams(cdisp))); ok && isToken(d) {
			pt.Disposition, pt.DispositionParams = d, capParams(params)
		}
	}
	if clang != nil {
		for l := range strings.SplitSeq(unfold(limit(clang, maxTextField)), ",") {
			if l = strings.TrimSpace(l); l != "" {
				pt.Language = append(pt.Language, l)
			}
			if len(pt.Language) == maxList {
				break
			}
		}
	}
	if cloc != nil {
		pt.Location = unfold(limit(cloc, maxTextField))
	}
	if cmd5 != nil {
		pt.MD5 = unfold(limit(cmd5, maxTextField))
	}
	return boundary
}

// parseMediaType parses a Content-Type or Content-Disposition value: the
// lower-case value before the parameters ("text/plain", "attachment") and the
// parameters, keys in lower case. Bad parameters are dropped; ok is false if
// no usable value remains.
func parseMediaType(v string) (value string, params map[string]string, ok bool) {
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		params = nil
		if !errors.Is(err, mime.ErrInvalidMediaParameter) {
			// Duplicate parameters and the like: keep the value alone.
			mt, _, _ = strings.Cut(v, ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
		}
	}
	if mt == "" {
		return "", nil, false
	}
	for k, val := range params {
		if !utf8.ValidString(k) || !utf8.ValidString(val) {
			clean := make(map[string]string, len(params))
			for k, val := range params {
				clean[cleanString(k)] = cleanString(val)
			}
			params = clean
			break
		}
	}
	if len(params) == 0 {
		params = nil
	}
	return mt, params, true
}

// limitParams cuts a parameter header longer than maxParamHeader at its
// last ';' before the limit, so that only whole parameters remain.
func limitParams(v []byte) []byte {
	if len(v) <= maxParamHeader {
		return v
	}
	v = v[:maxParamHeader]
	if i := bytes.LastIndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return v
}

// wellKnownParams are the parameters kept when a header has too many.
var wellKnownParams = []string{"boundary", "charset", "name", "filename", "format", "delsp", "type", "start", "protocol", "micalg", "report-type", "size"}

// capParams keeps at most maxParams parameters, preferring well-known ones,
// deterministically.
func capParams(params map[string]string) map[string]string {
	if len(params) <= maxParams {
		return params
	}
	kept := make(map[string]string)
	for _, k := range wellKnownParams {
		if v, ok := params[k]; ok {
			kept[k] = v
		}
	}
	return kept
}

// splitMediaType splits "type/subtype", both MIME tokens.
func splitMediaType(mt string) (typ, sub string, ok bool) {
	typ, sub, ok = strings.Cut(mt, "/")
	if !ok || !isToken(typ) || !isToken(sub) {
		return "", "", false
	}
	return typ, sub, true
}

// isToken reports whether s is a non-empty MIME token (RFC 2045).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return true
}

// lenientParam finds parameter key in a header value that mime.ParseMediaType
// rejected, e.g. an unquoted boundary containing '=' or a parameter list with
// a stray token. It returns "" if there is none.
func lenientParam(v, key string) string {
	lv := strings.ToLower(v)
	for from := 0; ; {
		i := strings.Index(lv[from:], key)
		if i < 0 {
			return ""
		}
		i += from
		from = i + len(key)
		if i > 0 && !strings.ContainsRune("; \t", rune(lv[i-1])) {
			continue
		}
		rest := strings.TrimLeft(v[from:], " \t")
		if !strings.HasPrefix(rest, "=") {
			continue
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		if strings.HasPrefix(rest, `"`) {
			if j := strings.IndexByte(rest[1:], '"'); j >= 0 {
				return rest[1 : j+1]
			}
			return rest[1:]
		}
		if j := strings.IndexAny(rest, "; \t"); j >= 0 {
			rest = rest[:j]
		}
		return rest
	}
}

// firstToken returns the first word of s, ignoring a trailing comment or
// parameters.
func firstToken(s string) string {
	if i := strings.IndexAny(s, " \t;("); i >= 0 {
		s = s[:i]
	}
	return s
}

// lenientCharsetReader converts from charset to UTF-8 with go-message's
// charset tables. An unknown charset passes the bytes through unchanged
// (they are made valid UTF-8 later) instead of failing the whole header.
func lenientCharsetReader(cs string, input io.Reader) (io.Reader, error) {
	r, err := charset.Reader(cs, input)
	if err != nil {
		return input, nil // best effort: keep the raw bytes
	}
	return r, nil
}

// envelope computes the IMAP ENVELOPE from a header block.
func (p *parser) envelope(h []byte) Envelope {
	const (
		fDate = iota
		fSubject
		fFrom
		fSender
		fReplyTo
		fTo
		fCc
		fBcc
		fInReplyTo
		fMessageID
		nFields
	)
	names := [nFields]string{"date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id"}
	var raw [nFields][]byte
	eachField(h, func(name, value []byte) bool {
		for i, n := range names {
			if raw[i] == nil && fieldIs(name, n) {
				raw[i] = value[:len(value):len(value)]
				break
			}
		}
		return true
	})

	var env Envelope
	if raw[fDate] != nil {
		env.Date = parseDate(unfold(limit(raw[fDate], maxDateHeader)))
	}
	if raw[fSubject] != nil {
		env.Subject = p.decodeText(unfold(limit(raw[fSubject], maxTextField)))
	}
	env.From = p.addressList(raw[fFrom])
	env.Sender = p.addressList(raw[fSender])
	env.ReplyTo = p.addressList(raw[fReplyTo])
	env.To = p.addressList(raw[fTo])
	env.Cc = p.addressList(raw[fCc])
	env.Bcc = p.addressList(raw[fBcc])
	// RFC 3501 7.4.2: absent or empty Sender and Reply-To take From.
	if len(env.Sender) == 0 {
		env.Sender = env.From
	}
	if len(env.ReplyTo) == 0 {
		env.ReplyTo = env.From
	}
	if raw[fInReplyTo] != nil {
		env.InReplyTo = msgIDs(unfold(limit(raw[fInReplyTo], maxTextField)))
	}
	if raw[fMessageID] != nil {
		if ids := msgIDs(unfold(limit(raw[fMessageID], maxTextField))); len(ids) > 0 {
			env.MessageID = ids[0]
		}
	}
	return env
}

// limit returns at most n bytes of b.
func limit(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// decodeText decodes RFC 2047 encoded words in the first maxDecodedText
// bytes of s; on failure it keeps s.
func (p *parser) decodeText(s string) string {
	if !strings.Contains(s, "=?") {
		return cleanString(s)
	}
	head, tail := s, ""
	if len(s) > maxDecodedText {
		head, tail = s[:maxDecodedText], s[maxDecodedText:]
	}
	d, err := p.words.DecodeHeader(head)
	if err != nil {
		return cleanString(s)
	}
	return cleanString(d + tail)
}

// addressList parses an address header leniently: by RFC 5322 first
// (address.go: groups kept, routes apart, comments out of addr-specs),
// then net/mail, then address by address, then a best-effort guess per
// address; the lenient paths drop group names and list their members.
func (p *parser) addressList(raw []byte) []Address {
	if raw == nil {
		return nil
	}
	v := unfold(raw)
	if len(v) > maxAddressHeader {
		v = v[:maxAddressHeader]
		if i := strings.LastIndexByte(v, ','); i >= 0 {
			v = v[:i]
		}
	}
	if strings.TrimSpace(v) == "" {
		return nil
	}
	if list, ok := p.parseAddressList(v); ok {
		return list
	}
	if list, err := p.addrs.ParseList(v); err == nil {
		out := make([]Address, 0, min(len(list), maxAddresses))
		for _, a := range list[:min(len(list), maxAddresses)] {
			out = append(out, p.makeAddress(a.Name, a.Address))
		}
		return out
	}
	var out []Address
	for _, piece := range splitAddresses(v) {
		if a, err := p.addrs.Parse(piece); err == nil {
			out = append(out, p.makeAddress(a.Name, a.Address))
		} else if a, ok := p.guessAddress(piece); ok {
			out = append(out, a)
		}
		if len(out) == maxAddresses {
			break
		}
	}
	return out
}

// makeAddress splits an addr-spec at its last '@'.
func (p *parser) makeAddress(name, spec string) Address {
	mbox, host := spec, ""
	if i := strings.LastIndexByte(spec, '@'); i >= 0 {
		mbox, host = spec[:i], spec[i+1:]
	}
	return Address{Name: cleanString(name), Mailbox: cleanString(mbox), Host: cleanString(host)}
}

// guessAddress makes the best of an address net/mail rejects, such as
// `Bob <bob@[bad>` or a bare local part.
func (p *parser) guessAddress(s string) (Address, bool) {
	s = strings.TrimSpace(s)
	name, spec := "", s
	if i := strings.LastIndexByte(s, '<'); i >= 0 {
		spec = s[i+1:]
		if j := strings.IndexByte(spec, '>'); j >= 0 {
			spec = spec[:j]
		}
		name = strings.TrimSpace(s[:i])
		if len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"' {
			name = strings.ReplaceAll(name[1:len(name)-1], `\"`, `"`)
		} else {
			name = strings.Trim(name, `"`)
		}
		name = p.decodeText(name)
	} else {
		spec = stripComments(s)
		if f := strings.Fields(spec); len(f) > 0 {
			spec = f[0]
			for _, w := range f {
				if strings.Contains(w, "@") {
					spec = w
					break
				}
			}
		}
	}
	spec = strings.TrimSpace(spec)
	if spec == "" && name == "" {
		return Address{}, false
	}
	return p.makeAddress(name, spec), true
}

// stripComments removes parenthesized comments (not nested in quotes).
func stripComments(s string) string {
	if !strings.Contains(s, "(") {
		return s
	}
	var sb strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			if depth == 0 {
				sb.WriteByte(c)
				sb.WriteByte(s[i+1])
			}
			i++
			continue
		case c == '"' && depth == 0:
			quoted = !quoted
		case c == '(' && !quoted:
			depth++
			continue
		case c == ')' && !quoted && depth > 0:
			depth--
			sb.WriteByte(' ')
			continue
		}
		if depth == 0 {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// splitAddresses splits an address list at top-level commas, dropping group
// names ("name:") and group ends (';'). Quotes, comments and angle brackets
// are respected unless one is left open, in which case they are ignored.
func splitAddresses(s string) []string {
	if out, ok := splitAddressesStrict(s, true); ok {
		return out
	}
	out, _ := splitAddressesStrict(s, false)
	return out
}

// splitAddressesStrict does the work of splitAddresses; with nesting false it
// ignores quotes, comments and angle brackets. ok is false if one is left
// open at the end.
func splitAddressesStrict(s string, nesting bool) (out []string, ok bool) {
	start, depth, angle, quoted := 0, 0, false, false
	emit := func(end int) {
		if piece := strings.TrimSpace(s[start:end]); piece != "" {
			out = append(out, piece)
		}
		start = end + 1
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case !nesting:
			if c == ',' || c == ';' {
				emit(i)
			}
		case c == '\\':
			i++
		case quoted:
			if c == '"' {
				quoted = false
			}
		case c == '"' && depth == 0:
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case angle:
		case c == ',' || c == ';':
			emit(i)
		case c == ':':
			start = i + 1 // group name
		}
	}
	emit(len(s))
	return out, !quoted && depth == 0 && !angle
}

// msgIDs extracts at most maxList message IDs without their angle brackets.
// Without any angle brackets, words that look like IDs are taken as they are.
func msgIDs(s string) []string {
	var ids []string
	rest := s
	for {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i+1:], '>')
		if j < 0 {
			break
		}
		if id := strings.TrimSpace(rest[i+1 : i+1+j]); id != "" {
			ids = append(ids, id)
			if len(ids) == maxList {
				break
			}
		}
		rest = rest[i+1+j+1:]
	}
	if len(ids) > 0 {
		return ids
	}
	words := strings.Fields(stripComments(s))
	for _, w := range words {
		if strings.Contains(w, "@") {
			ids = append(ids, strings.Trim(w, "<>"))
			if len(ids) == maxList {
				break
			}
		}
	}
	if len(ids) == 0 && len(words) == 1 {
		ids = append(ids, strings.Trim(words[0], "<>"))
	}
	return ids
}

// dateLayouts are tried, in order, on dates net/mail rejects.
var dateLayouts = []string{
	"Mon, 2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 MST",
	"Mon, 2 Jan 2006 15:04:05",
	"Mon, 2 Jan 2006 15:04 -0700",
	"2 Jan 2006 15:04:05 -0700",
	"2 Jan 2006 15:04:05 MST",
	"2 Jan 2006 15:04:05",
	"Mon, 2-Jan-2006 15:04:05 -0700",
	"2-Jan-2006 15:04:05 -0700",
	"Mon Jan 2 15:04:05 2006",
	"Mon Jan 2 15:04:05 MST 2006",
	"Mon Jan 2 15:04:05 -0700 2006",
	"Monday, 2 Jan 2006 15:04:05 -0700",
	"Monday, January 2, 2006 15:04:05 -0700",
	"2006-01-02 15:04:05 -0700",
	"2006-01-02 15:04:05",
	time.RFC3339,
}

// obsoleteZones are the RFC 5322 4.3 zone names that time.Parse reads with a
// zero offset.
var obsoleteZones = map[string]int{
	"EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
	"MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}

// parseDate parses a Date header with net/mail and tolerant fallbacks. It
// returns the zero time if nothing works.
func parseDate(s string) time.Time {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}
	}
	if t, err := mail.ParseDate(s); err == nil {
		return fixZone(t)
	}
	s = strings.Join(strings.Fields(stripComments(s)), " ")
	s = strings.TrimRight(s, " .,;")
	if t, err := mail.ParseDate(s); err == nil {
		return fixZone(t)
	}
	// Day names without a comma, as in "Mon 1 Jan 2024 ...".
	if len(s) > 4 && s[3] == ' ' && isLetters(s[:3]) && s[4] >= '0' && s[4] <= '9' {
		if t, err := mail.ParseDate(s[:3] + "," + s[3:]); err == nil {
			return fixZone(t)
		}
	}
	for _, layout := range dateLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return fixZone(t)
		}
	}
	return time.Time{}
}

// isLetters reports whether s is ASCII letters only.
func isLetters(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// fixZone gives the RFC 5322 obsolete zone names their offsets, which
// time.Parse does not know.
func fixZone(t time.Time) time.Time {
	name, off := t.Zone()
	if h, ok := obsoleteZones[name]; ok && off == 0 {
		y, mo, d := t.Date()
		hh, mm, ss := t.Clock()
		return time.Date(y, mo, d, hh, mm, ss, t.Nanosecond(), time.FixedZone(name, h*3600))
	}
	return t
}
