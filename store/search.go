package store

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"
)

// UIDRange is an inclusive range of UIDs.
type UIDRange struct{ Lo, Hi uint32 }

// Criteria select messages, as IMAP SEARCH keys do: every field that is set
// must match (AND). Sequence numbers and "*" are resolved to UIDs by the
// caller. Dates compare by calendar day in the location of the criterion's
// time, as RFC 3501 asks ("disregarding time and timezone").
type Criteria struct {
	UID [][]UIDRange // each set must contain the UID

	Since, Before         time.Time // internal date
	SentSince, SentBefore time.Time // Date: header

	Header []HeaderMatch
	// Address matches an address field (From, To, Cc, Bcc) by its parsed
	// addresses, "Name <mailbox@host>", as SEARCH FROM does: comments
	// and folding in the raw field do not hide an address. The raw
	// field is matched too.
	Address []HeaderMatch
	Body    []string // in the decoded text of the body
	Text    []string // in the header or the decoded text of the body

	Flag    []string
	NotFlag []string

	Larger, Smaller int64
	MinModSeq       uint64 // MODSEQ: modseq at least this

	Not []Criteria
	Or  [][2]Criteria
}

// HeaderMatch matches messages with a header field whose value contains
// Value (case-insensitively); an empty Value matches any such field.
type HeaderMatch struct{ Name, Value string }

// Search returns the UIDs of the messages of a mailbox that match c.
func (s *Store) Search(user, name string, c *Criteria) ([]uint32, error) {
	return s.SearchWith(user, name, c, nil)
}

// Loaders read a body's metadata and bytes for SearchWith; a nil field (or
// a nil *Loaders) reads from the store. A read cache passes its own, so a
// search of SUBJECT or FROM does not decode every message's metadata anew.
type Loaders struct {
	Meta func(BlobID) (*Meta, error) // the result is not modified
	Body func(BlobID) ([]byte, error)
}

// SearchWith is Search reading through l.
func (s *Store) SearchWith(user, name string, c *Criteria, l *Loaders) ([]uint32, error) {
	msgs, err := s.Messages(user, name, nil)
	if err != nil {
		return nil, err
	}
	ld := Loaders{Meta: s.Meta, Body: s.Body}
	if l != nil && l.Meta != nil {
		ld.Meta = l.Meta
	}
	if l != nil && l.Body != nil {
		ld.Body = l.Body
	}
	var out []uint32
	for i := range msgs {
		m := &msgs[i]
		lm := &lazyMsg{ld: &ld, m: m}
		ok, err := c.match(lm)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, m.UID)
		}
	}
	return out, nil
}

// lazyMsg loads metadata, bytes and text only when a criterion needs them.
type lazyMsg struct {
	ld     *Loaders
	m      *Message
	meta   *Meta
	prefix []Field
	raw    []byte
	text   *string
}

func (l *lazyMsg) loadMeta() error {
	if l.meta != nil {
		return nil
	}
	meta, err := l.ld.Meta(l.m.Body)
	if err != nil {
		return err
	}
	l.meta = meta
	l.prefix = prefixFields(l.m.Prefix)
	return nil
}

func (l *lazyMsg) body() ([]byte, error) {
	if l.raw != nil {
		return l.raw, nil
	}
	raw, err := l.ld.Body(l.m.Body)
	if err != nil {
		return nil, err
	}
	l.raw = raw
	return raw, nil
}

// addressHas reports whether an address of the field h names (From, To,
// Cc or Bcc) contains h's value, or the raw field does.
func (l *lazyMsg) addressHas(h HeaderMatch) (bool, error) {
	if h.Value == "" {
		return l.headerHas(h)
	}
	if err := l.loadMeta(); err != nil {
		return false, err
	}
	e := &l.meta.Envelope
	var list []Address
	switch strings.ToLower(h.Name) {
	case "from":
		list = e.From
	case "to":
		list = e.To
	case "cc":
		list = e.Cc
	case "bcc":
		list = e.Bcc
	}
	want := strings.ToLower(h.Value)
	for _, a := range list {
		if a.Group {
			continue
		}
		s := a.Mailbox
		if a.Host != "" {
			s += "@" + a.Host
		}
		if a.Name != "" {
			s = a.Name + " <" + s + ">"
		}
		if strings.Contains(strings.ToLower(s), want) {
			return true, nil
		}
	}
	return l.headerHas(h)
}

// headerHas reports whether a field of the message (its prefix or its
// header) matches h. The header's fields come from Meta where it lists
// them all, else from the stored header, read field by field, so that a
// field beyond Meta's limits is found too.
func (l *lazyMsg) headerHas(h HeaderMatch) (bool, error) {
	if err := l.loadMeta(); err != nil {
		return false, err
	}
	if headerHas(l.prefix, h) {
		return true, nil
	}
	if FieldsComplete(l.meta) {
		return headerHas(l.meta.Fields, h), nil
	}
	raw, err := l.body()
	if err != nil {
		return false, err
	}
	hdrEnd, _ := splitHeader(raw, 0, len(raw))
	want := strings.ToLower(h.Value)
	found := false
	eachField(raw[:hdrEnd], func(name, value []byte) bool {
		found = fieldMatches(string(name), unfold(value), h.Name, want)
		return !found
	})
	return found, nil
}

func (l *lazyMsg) bodyText() (string, error) {
	if l.text != nil {
		return *l.text, nil
	}
	raw, err := l.body()
	if err != nil {
		return "", err
	}
	t := strings.ToLower(decodedText(raw))
	l.text = &t
	return t, nil
}

func prefixFields(prefix []byte) []Field {
	if len(prefix) == 0 {
		return nil
	}
	// The prefix is a few unfolded lines (Return-Path, Delivered-To):
	// split them directly, and leave anything else to the header parser.
	var out []Field
	simple := true
	for rest := prefix; len(rest) > 0 && simple; {
		line, after, _ := bytes.Cut(rest, []byte("\n"))
		rest = after
		line = bytes.TrimSuffix(line, []byte("\r"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || line[0] == ' ' || line[0] == '\t' {
			simple = false
			break
		}
		out = append(out, Field{Name: string(name), Value: string(bytes.TrimSpace(value))})
	}
	if simple {
		return out
	}
	out = nil
	h, err := textproto.ReadHeader(bufio.NewReader(io.MultiReader(bytes.NewReader(prefix), strings.NewReader("\r\n"))))
	if err != nil {
		return nil
	}
	for f := h.Fields(); f.Next(); {
		out = append(out, Field{Name: f.Key(), Value: f.Value()})
	}
	return out
}

var searchDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// maxSearchText bounds how much decoded text of one message a search reads.
const maxSearchText = 16 << 20

// decodedText returns the text/* parts of a message decoded to UTF-8
// (transfer encoding and charset), or the raw body where it cannot be parsed.
func decodedText(raw []byte) string {
	e, err := message.Read(bytes.NewReader(raw))
	if e == nil {
		return string(raw)
	}
	var sb strings.Builder
	walkErr := e.Walk(func(path []int, part *message.Entity, err error) error {
		if err != nil {
			return nil // an unknown charset or encoding: skip the part
		}
		mt, _, _ := part.Header.ContentType()
		if !strings.HasPrefix(mt, "text/") && mt != "" {
			return nil
		}
		_, _ = io.Copy(&sb, io.LimitReader(part.Body, maxSearchText-int64(sb.Len())))
		sb.WriteByte('\n')
		return nil
	})
	if walkErr != nil && sb.Len() == 0 || err != nil && sb.Len() == 0 {
		return string(raw)
	}
	return sb.String()
}

func (c *Criteria) match(l *lazyMsg) (bool, error) {
	m := l.m
	for _, set := range c.UID {
		if !inRanges(set, m.UID) {
			return false, nil
		}
	}
	if !c.Since.IsZero() && dayOf(m.InternalDate, c.Since) < dayOf(c.Since, c.Since) {
		return false, nil
	}
	if !c.Before.IsZero() && dayOf(m.InternalDate, c.Before) >= dayOf(c.Before, c.Before) {
		return false, nil
	}
	for _, f := range c.Flag {
		if !hasFlag(m.Flags, f) {
			return false, nil
		}
	}
	for _, f := range c.NotFlag {
		if hasFlag(m.Flags, f) {
			return false, nil
		}
	}
	if c.Larger > 0 && m.Size <= c.Larger {
		return false, nil
	}
	if c.Smaller > 0 && m.Size >= c.Smaller {
		return false, nil
	}
	if c.MinModSeq > 0 && m.ModSeq < c.MinModSeq {
		return false, nil
	}
	if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		if err := l.loadMeta(); err != nil {
			return false, err
		}
		sent := l.meta.Envelope.Date
		if sent.IsZero() {
			return false, nil
		}
		if !c.SentSince.IsZero() && dayOf(sent, sent) < dayOf(c.SentSince, c.SentSince) {
			return false, nil
		}
		if !c.SentBefore.IsZero() && dayOf(sent, sent) >= dayOf(c.SentBefore, c.SentBefore) {
			return false, nil
		}
	}
	for _, h := range c.Header {
		ok, err := l.headerHas(h)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, h := range c.Address {
		ok, err := l.addressHas(h)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, want := range c.Body {
		t, err := l.bodyText()
		if err != nil {
			return false, err
		}
		if !strings.Contains(t, strings.ToLower(want)) {
			return false, nil
		}
	}
	for _, want := range c.Text {
		inHeader, err := l.headerHas(HeaderMatch{Value: want})
		if err != nil {
			return false, err
		}
		if inHeader {
			continue
		}
		t, err := l.bodyText()
		if err != nil {
			return false, err
		}
		if !strings.Contains(t, strings.ToLower(want)) {
			return false, nil
		}
	}
	for i := range c.Not {
		ok, err := c.Not[i].match(l)
		if err != nil || ok {
			return false, err
		}
	}
	for i := range c.Or {
		a, err := c.Or[i][0].match(l)
		if err != nil {
			return false, err
		}
		if a {
			continue
		}
		b, err := c.Or[i][1].match(l)
		if err != nil || !b {
			return false, err
		}
	}
	return true, nil
}

// headerHas reports whether a field named h.Name (any field when Name is
// empty) contains h.Value, case-insensitively, decoding RFC 2047 words.
func headerHas(fields []Field, h HeaderMatch) bool {
	want := strings.ToLower(h.Value)
	for _, f := range fields {
		if fieldMatches(f.Name, f.Value, h.Name, want) {
			return true
		}
	}
	return false
}

// fieldMatches reports whether the field name: value is named wantName
// (any name when empty) and contains want (lower case; empty matches any
// value).
func fieldMatches(name, value, wantName, want string) bool {
	if wantName != "" && !strings.EqualFold(name, wantName) {
		return false
	}
	if want == "" {
		return true
	}
	if strings.Contains(value, "=?") {
		if d, err := searchDecoder.DecodeHeader(value); err == nil {
			value = d
		}
	}
	return strings.Contains(strings.ToLower(value), want)
}

func inRanges(set []UIDRange, uid uint32) bool {
	for _, r := range set {
		if uid >= r.Lo && uid <= r.Hi {
			return true
		}
	}
	return false
}

// dayOf returns t's calendar day in the location of ref as a comparable int.
func dayOf(t, ref time.Time) int {
	y, m, d := t.In(ref.Location()).Date()
	return y*10000 + int(m)*100 + d
}
