package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
	"github.com/fxamacker/cbor/v2"
	"github.com/twinbox/twinbox/internal/testmail"
)

// crlf turns the LF line ends of a test message into CRLF.
func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

// partAt follows a 1-based IMAP section path ("1.2") from the root.
func partAt(t *testing.T, m Meta, path ...int) Part {
	t.Helper()
	p := m.Root
	for _, n := range path {
		if n < 1 || n > len(p.Children) {
			t.Fatalf("section %v: part %s has %d children", path, p.Type+"/"+p.Subtype, len(p.Children))
		}
		p = p.Children[n-1]
	}
	return p
}

func bodyOf(b []byte, p Part) string   { return string(b[p.BodyStart:p.End]) }
func headerOf(b []byte, p Part) string { return string(b[p.HeaderStart:p.BodyStart]) }

// shape lists the media types of the tree in depth-first order.
func shape(p Part) []string {
	out := []string{p.Type + "/" + p.Subtype}
	for _, c := range p.Children {
		out = append(out, shape(c)...)
	}
	return out
}

// checkMeta verifies the invariants ParseMeta promises.
func checkMeta(body []byte, m Meta) error {
	n := int64(len(body))
	r := m.Root
	if r.HeaderStart != 0 || r.End != n {
		return fmt.Errorf("root spans [%d,%d), want [0,%d)", r.HeaderStart, r.End, n)
	}
	count := 0
	if err := checkPart(r, "root", 0, n, &count); err != nil {
		return err
	}
	if count > maxParts+maxDepth+1 {
		return fmt.Errorf("%d parts, limit %d", count, maxParts)
	}
	if _, err := cbor.Marshal(m); err != nil {
		return fmt.Errorf("cbor encode: %w", err)
	}
	return nil
}

func checkPart(p Part, name string, lo, hi int64, count *int) error {
	*count++
	if !(lo <= p.HeaderStart && p.HeaderStart <= p.BodyStart && p.BodyStart <= p.End && p.End <= hi) {
		return fmt.Errorf("%s: offsets %d/%d/%d outside [%d,%d]", name, p.HeaderStart, p.BodyStart, p.End, lo, hi)
	}
	if p.Type == "" || p.Subtype == "" || p.Type != strings.ToLower(p.Type) || p.Subtype != strings.ToLower(p.Subtype) {
		return fmt.Errorf("%s: bad type %q/%q", name, p.Type, p.Subtype)
	}
	switch {
	case p.IsMultipart():
		if len(p.Children) == 0 {
			return fmt.Errorf("%s: multipart without children", name)
		}
	case p.Type == "message" && p.Subtype == "rfc822":
		if len(p.Children) != 1 || p.Embedded == nil {
			return fmt.Errorf("%s: message/rfc822 with %d children, embedded %v", name, len(p.Children), p.Embedded != nil)
		}
		if c := p.Children[0]; c.HeaderStart != p.BodyStart || c.End != p.End {
			return fmt.Errorf("%s: embedded message spans [%d,%d), body [%d,%d)", name, c.HeaderStart, c.End, p.BodyStart, p.End)
		}
	default:
		if len(p.Children) != 0 {
			return fmt.Errorf("%s: leaf %s/%s with children", name, p.Type, p.Subtype)
		}
	}
	prev := p.BodyStart
	for i, c := range p.Children {
		cn := fmt.Sprintf("%s.%d", name, i+1)
		if c.HeaderStart < prev {
			return fmt.Errorf("%s: starts at %d before %d", cn, c.HeaderStart, prev)
		}
		if err := checkPart(c, cn, p.BodyStart, p.End, count); err != nil {
			return err
		}
		prev = c.End
	}
	return nil
}

// goMessageShape lists the media types go-message sees, depth first, or an
// error if it cannot parse the message cleanly.
func goMessageShape(raw []byte) ([]string, error) {
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil && !tolerable(err) {
		return nil, err
	}
	var out []string
	err = walkEntity(e, false, 0, &out)
	return out, err
}

func tolerable(err error) bool {
	return message.IsUnknownCharset(err) || message.IsUnknownEncoding(err)
}

func walkEntity(e *message.Entity, inDigest bool, depth int, out *[]string) error {
	if depth > maxDepth {
		return errors.New("too deep to compare")
	}
	mt, _, err := e.Header.ContentType()
	if err != nil {
		return err
	}
	if inDigest && !e.Header.Has("Content-Type") {
		mt = "message/rfc822"
	}
	*out = append(*out, mt)
	if mr := e.MultipartReader(); mr != nil {
		n := 0
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil && !tolerable(err) {
				return err
			}
			n++
			if err := walkEntity(p, mt == "multipart/digest", depth+1, out); err != nil {
				return err
			}
		}
		if n == 0 {
			return errors.New("multipart without parts")
		}
		return nil
	}
	if mt == "message/rfc822" {
		child, err := message.Read(e.Body)
		if err != nil && !tolerable(err) {
			return err
		}
		return walkEntity(child, false, depth+1, out)
	}
	_, err = io.Copy(io.Discard, e.Body)
	return err
}

// goMessageRawLeaves returns the undecoded leaf bodies of raw, depth first,
// as go-message's textproto multipart reader cuts them.
func goMessageRawLeaves(raw []byte) ([][]byte, error) {
	var leaves [][]byte
	var walk func(r *bufio.Reader, depth int) error
	walk = func(r *bufio.Reader, depth int) error {
		h, err := textproto.ReadHeader(r)
		if err != nil {
			return err
		}
		mh := message.Header{Header: h}
		mt, params, _ := mh.ContentType()
		switch {
		case strings.HasPrefix(mt, "multipart/"):
			mr := textproto.NewMultipartReader(r, params["boundary"])
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				// Re-read the part with its header so that the walk
				// handles it like a message.
				var buf bytes.Buffer
				if err := textproto.WriteHeader(&buf, p.Header); err != nil {
					return err
				}
				if _, err := io.Copy(&buf, p); err != nil {
					return err
				}
				if err := walk(bufio.NewReader(&buf), depth+1); err != nil {
					return err
				}
			}
		case mt == "message/rfc822":
			return walk(r, depth+1)
		default:
			b, err := io.ReadAll(r)
			leaves = append(leaves, b)
			return err
		}
	}
	return leaves, walk(bufio.NewReader(bytes.NewReader(raw)), 0)
}

// splitMbox splits an mbox into messages, dropping each "From " line and
// the blank line the mbox writer puts after each message.
func splitMbox(data []byte) [][]byte {
	var msgs [][]byte
	var starts []int
	for i := 0; i < len(data); {
		if bytes.HasPrefix(data[i:], []byte("From ")) {
			starts = append(starts, i)
		}
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
	}
	for k, s := range starts {
		e := len(data)
		if k+1 < len(starts) {
			e = starts[k+1]
		}
		msg := data[s:e]
		if j := bytes.IndexByte(msg, '\n'); j >= 0 {
			msg = msg[j+1:]
		}
		switch {
		case bytes.HasSuffix(msg, []byte("\r\n\r\n")):
			msg = msg[:len(msg)-2]
		case bytes.HasSuffix(msg, []byte("\n\n")):
			msg = msg[:len(msg)-1]
		}
		msgs = append(msgs, msg)
	}
	return msgs
}

func readCorpus(tb testing.TB) map[string][]byte { return testmail.Corpus(tb) }

// checkAgainstGoMessage checks the invariants and, where go-message can
// parse raw, that both see the same tree. It reports whether go-message
// could compare.
func checkAgainstGoMessage(t *testing.T, name string, raw []byte) bool {
	t.Helper()
	m := ParseMeta(raw)
	if err := checkMeta(raw, m); err != nil {
		t.Errorf("%s: %v", name, err)
		return false
	}
	want, err := goMessageShape(raw)
	if err != nil {
		t.Logf("%s: go-message cannot parse it (%v); invariants only", name, err)
		return false
	}
	if got := shape(m.Root); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: tree %v, go-message sees %v", name, got, want)
		return true
	}
	// The raw leaf bodies go-message's multipart reader returns are exactly
	// the slices the offsets give.
	leaves, err := goMessageRawLeaves(raw)
	if err != nil {
		t.Errorf("%s: go-message raw walk: %v", name, err)
		return true
	}
	var mine [][]byte
	var walk func(p Part)
	walk = func(p Part) {
		if len(p.Children) == 0 {
			mine = append(mine, raw[p.BodyStart:p.End])
		}
		for _, c := range p.Children {
			walk(c)
		}
	}
	walk(m.Root)
	if len(mine) != len(leaves) {
		t.Errorf("%s: %d leaves, go-message has %d", name, len(mine), len(leaves))
		return true
	}
	for i := range mine {
		if !bytes.Equal(mine[i], leaves[i]) {
			t.Errorf("%s: leaf %d differs:\n got %.80q\nwant %.80q", name, i, mine[i], leaves[i])
		}
	}
	return true
}

func TestParseMetaCorpusSamples(t *testing.T) {
	for name, raw := range readCorpus(t) {
		if !checkAgainstGoMessage(t, name, raw) {
			t.Errorf("%s: a corpus sample must be comparable with go-message", name)
		}
		m := ParseMeta(raw)
		if m.Envelope.Date.IsZero() || len(m.Envelope.From) == 0 || m.Envelope.MessageID == "" || len(m.Fields) == 0 {
			t.Errorf("%s: incomplete envelope %+v", name, m.Envelope)
		}
	}
}

// TestParseMetaMbox runs over a whole mbox when TWINBOX_CORPUS names one,
// e.g. TWINBOX_CORPUS=/work/shared/corpus/realistic-300.mbox.
func TestParseMetaMbox(t *testing.T) {
	path := os.Getenv("TWINBOX_CORPUS")
	if path == "" {
		t.Skip("TWINBOX_CORPUS not set")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	msgs := splitMbox(data)
	compared := 0
	for i, raw := range msgs {
		if checkAgainstGoMessage(t, fmt.Sprintf("message %d", i), raw) {
			compared++
		}
	}
	t.Logf("%d messages, %d compared with go-message", len(msgs), compared)
}

func TestParseMetaSimple(t *testing.T) {
	raw := crlf(`From: Alice Example <alice@example.com>
To: bob@example.org,
 "Carol, C." <carol@example.net>
Subject: Hello
 there
Date: Mon, 01 Jan 2024 08:21:14 +0100
Message-ID: <abc.123@example.com>
In-Reply-To: <parent@example.com> (from Bob)

Hello
World
`)
	m := ParseMeta(raw)
	r := m.Root
	if r.Type != "text" || r.Subtype != "plain" || r.Params["charset"] != "us-ascii" {
		t.Errorf("root %s/%s %v, want default text/plain; charset=us-ascii", r.Type, r.Subtype, r.Params)
	}
	if got := bodyOf(raw, r); got != "Hello\r\nWorld\r\n" {
		t.Errorf("body %q", got)
	}
	if !strings.HasSuffix(headerOf(raw, r), "(from Bob)\r\n\r\n") {
		t.Errorf("header %q", headerOf(raw, r))
	}
	if r.Lines != 2 {
		t.Errorf("lines %d, want 2", r.Lines)
	}
	e := m.Envelope
	alice := []Address{{Name: "Alice Example", Mailbox: "alice", Host: "example.com"}}
	want := Envelope{
		Date:      time.Date(2024, 1, 1, 8, 21, 14, 0, time.FixedZone("", 3600)),
		Subject:   "Hello there",
		From:      alice,
		Sender:    alice,
		ReplyTo:   alice,
		To:        []Address{{Mailbox: "bob", Host: "example.org"}, {Name: "Carol, C.", Mailbox: "carol", Host: "example.net"}},
		InReplyTo: []string{"parent@example.com"},
		MessageID: "abc.123@example.com",
	}
	if !e.Date.Equal(want.Date) {
		t.Errorf("date %v, want %v", e.Date, want.Date)
	}
	if _, off := e.Date.Zone(); off != 3600 {
		t.Errorf("date zone offset %d, want 3600", off)
	}
	e.Date, want.Date = time.Time{}, time.Time{}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("envelope\n got %+v\nwant %+v", e, want)
	}
	if len(m.Fields) != 6 || m.Fields[1] != (Field{"To", `bob@example.org, "Carol, C." <carol@example.net>`}) || m.Fields[2].Value != "Hello there" {
		t.Errorf("fields %q", m.Fields)
	}
}

func TestParseMetaStructures(t *testing.T) {
	type part struct {
		path   []int
		typ    string // type/subtype
		header string // exact header (BODY[path.MIME]), if not ""
		body   string // exact body (BODY[path])
	}
	tests := []struct {
		name  string
		raw   []byte
		shape []string
		parts []part
		check func(t *testing.T, raw []byte, m Meta)
		// goMessageDiffers marks messages where go-message, which is
		// stricter or more literal, is expected to see another tree.
		goMessageDiffers bool
	}{
		{
			name: "multipart/alternative",
			raw: crlf(`Content-Type: multipart/alternative; boundary="b1"

preamble
--b1
Content-Type: text/plain; charset=utf-8

plain
--b1 ` + "\t" + `
Content-Type: text/html; charset=utf-8

<p>html</p>

--b1--
epilogue
`),
			shape: []string{"multipart/alternative", "text/plain", "text/html"},
			parts: []part{
				{path: []int{1}, typ: "text/plain", header: "Content-Type: text/plain; charset=utf-8\r\n\r\n", body: "plain"},
				{path: []int{2}, typ: "text/html", body: "<p>html</p>\r\n"},
			},
			check: func(t *testing.T, raw []byte, m Meta) {
				if p := partAt(t, m, 1); p.Params["charset"] != "utf-8" || p.Lines != 0 {
					t.Errorf("part 1: params %v lines %d", p.Params, p.Lines)
				}
				if p := partAt(t, m, 2); p.Lines != 1 {
					t.Errorf("part 2: lines %d, want 1", p.Lines)
				}
			},
		},
		{
			name: "nested multipart/mixed with base64 attachment",
			raw: crlf(`Content-Type: multipart/mixed; boundary=outer
Subject: nested

--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

text
--inner
Content-Type: text/html

<b>html</b>
--inner--

--outer
Content-Type: Application/PDF; Name="a.pdf"
Content-Transfer-Encoding: BASE64
Content-Disposition: Attachment; FileName="a.pdf"
Content-ID: <pdf@x>
Content-Description: the report
Content-Language: en, de
Content-Location: http://example.com/a.pdf

JVBERi0xLjQK
JVBERi0xLjQK
--outer--
`),
			shape: []string{"multipart/mixed", "multipart/alternative", "text/plain", "text/html", "application/pdf"},
			parts: []part{
				{path: []int{1}, typ: "multipart/alternative", body: "--inner\r\nContent-Type: text/plain\r\n\r\ntext\r\n--inner\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--inner--\r\n"},
				{path: []int{1, 1}, typ: "text/plain", header: "Content-Type: text/plain\r\n\r\n", body: "text"},
				{path: []int{1, 2}, typ: "text/html", body: "<b>html</b>"},
				{path: []int{2}, typ: "application/pdf", body: "JVBERi0xLjQK\r\nJVBERi0xLjQK"},
			},
			check: func(t *testing.T, raw []byte, m Meta) {
				p := partAt(t, m, 2)
				want := Part{
					Type: "application", Subtype: "pdf", Params: map[string]string{"name": "a.pdf"},
					ID: "<pdf@x>", Description: "the report", Encoding: "base64",
					Disposition: "attachment", DispositionParams: map[string]string{"filename": "a.pdf"},
					Language: []string{"en", "de"}, Location: "http://example.com/a.pdf",
					HeaderStart: p.HeaderStart, BodyStart: p.BodyStart, End: p.End,
				}
				if !reflect.DeepEqual(p, want) {
					t.Errorf("attachment\n got %+v\nwant %+v", p, want)
				}
			},
		},
		{
			name: "message/rfc822 forward",
			raw: crlf(`Content-Type: multipart/mixed; boundary="fw"
Subject: Fwd: hello

--fw
Content-Type: text/plain

see below
--fw
Content-Type: message/rfc822

From: Carol <carol@example.net>
Subject: =?utf-8?q?caf=C3=A9?=
Message-ID: <inner@example.net>
Content-Type: text/plain; charset=utf-8

inner body
line 2
--fw--
`),
			shape: []string{"multipart/mixed", "text/plain", "message/rfc822", "text/plain"},
			parts: []part{
				{path: []int{2}, typ: "message/rfc822", body: "From: Carol <carol@example.net>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <inner@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ninner body\r\nline 2"},
				{path: []int{2, 1}, typ: "text/plain", header: "From: Carol <carol@example.net>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <inner@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", body: "inner body\r\nline 2"},
			},
			check: func(t *testing.T, raw []byte, m Meta) {
				p := partAt(t, m, 2)
				if p.Embedded == nil || p.Embedded.Subject != "café" || p.Embedded.MessageID != "inner@example.net" || len(p.Embedded.Sender) != 1 {
					t.Errorf("embedded envelope %+v", p.Embedded)
				}
				if p.Lines != 6 {
					t.Errorf("message/rfc822 lines %d, want 6", p.Lines)
				}
				if m.Envelope.Subject != "Fwd: hello" {
					t.Errorf("subject %q", m.Envelope.Subject)
				}
			},
		},
		{
			name: "missing closing boundary",
			raw: crlf(`Content-Type: multipart/mixed; boundary=x

--x
Content-Type: text/plain

one
--x
Content-Type: text/plain

two
`),
			shape: []string{"multipart/mixed", "text/plain", "text/plain"},
			parts: []part{
				{path: []int{1}, typ: "text/plain", body: "one"},
				{path: []int{2}, typ: "text/plain", body: "two\r\n"},
			},
		},
		{
			name: "inner closing boundary missing, outer ends it",
			raw: crlf(`Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=inner

--inner

a
--inner

b
--outer

c
--outer--
`),
			shape: []string{"multipart/mixed", "multipart/alternative", "text/plain", "text/plain", "text/plain"},
			parts: []part{
				{path: []int{1, 1}, header: "\r\n", body: "a"},
				{path: []int{1, 2}, body: "b"},
				{path: []int{2}, body: "c"},
			},
		},
		{
			name:  "LF only",
			raw:   []byte("Content-Type: multipart/alternative; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nplain\n--b1\nContent-Type: text/html\n\n<p>html</p>\n--b1--\n"),
			shape: []string{"multipart/alternative", "text/plain", "text/html"},
			parts: []part{
				{path: []int{1}, header: "Content-Type: text/plain\n\n", body: "plain"},
				{path: []int{2}, body: "<p>html</p>"},
			},
		},
		{
			name:  "mixed line ends",
			raw:   []byte("Content-Type: multipart/mixed; boundary=m\r\n\n--m\nContent-Type: text/plain\r\n\r\nx\r\n--m\r\n\ny\n--m--"),
			shape: []string{"multipart/mixed", "text/plain", "text/plain"},
			parts: []part{
				{path: []int{1}, body: "x"},
				{path: []int{2}, header: "\n", body: "y"},
			},
		},
		{
			name: "boundary text inside lines is not a delimiter",
			raw: crlf(`Content-Type: multipart/mixed; boundary=b

--b
Content-Transfer-Encoding: base64

QUJD--bREVG
 --b
--bx
--b-
--b
Content-Type: text/plain

last
--b--`),
			shape: []string{"multipart/mixed", "text/plain", "text/plain"},
			parts: []part{
				{path: []int{1}, body: "QUJD--bREVG\r\n --b\r\n--bx\r\n--b-"},
				{path: []int{2}, body: "last"},
			},
		},
		{
			name: "multipart/digest defaults to message/rfc822",
			raw: crlf(`Content-Type: multipart/digest; boundary=d

--d

Subject: first

one
--d
Content-Type: text/plain

not a message
--d--
`),
			shape: []string{"multipart/digest", "message/rfc822", "text/plain", "text/plain"},
			parts: []part{
				{path: []int{1, 1}, header: "Subject: first\r\n\r\n", body: "one"},
			},
			check: func(t *testing.T, raw []byte, m Meta) {
				if s := partAt(t, m, 1).Embedded.Subject; s != "first" {
					t.Errorf("digest message subject %q", s)
				}
			},
		},
		{
			name:  "multipart without boundary parameter is opaque",
			raw:   crlf("Content-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n"),
			shape: []string{"application/octet-stream"},
		},
		{
			name:  "multipart without delimiter lines is opaque",
			raw:   crlf("Content-Type: multipart/mixed; boundary=zz\n\n--x\n\nbody\n"),
			shape: []string{"application/octet-stream"},
		},
		{
			name:  "boundary parameter mime.ParseMediaType rejects",
			raw:   crlf("Content-Type: multipart/mixed; boundary=----=_Part_1; junk\n\n------=_Part_1\n\nbody\n------=_Part_1--\n"),
			shape: []string{"multipart/mixed", "text/plain"},
			parts: []part{{path: []int{1}, body: "body"}},
		},
		{
			name: "header without blank line",
			raw:  crlf("Subject: no body\nX-Junk: yes"),
			check: func(t *testing.T, raw []byte, m Meta) {
				if m.Root.BodyStart != int64(len(raw)) || m.Envelope.Subject != "no body" || len(m.Fields) != 2 {
					t.Errorf("root %+v, fields %q", m.Root, m.Fields)
				}
			},
			shape: []string{"text/plain"},
		},
		{
			name:  "invalid Content-Type falls back to text/plain",
			raw:   crlf("Content-Type: bogus\nContent-Transfer-Encoding: 8bit (comment)\n\nx\n"),
			shape: []string{"text/plain"},
			// go-message reports the media type "bogus" as it is.
			goMessageDiffers: true,
			check: func(t *testing.T, raw []byte, m Meta) {
				if m.Root.Encoding != "8bit" || m.Root.Params["charset"] != "us-ascii" {
					t.Errorf("root %+v", m.Root)
				}
			},
		},
		{
			name:  "duplicate parameters keep the type",
			raw:   crlf("Content-Type: text/html; charset=utf-8; charset=latin1\n\nx\n"),
			shape: []string{"text/html"},
			check: func(t *testing.T, raw []byte, m Meta) {
				if m.Root.Params != nil {
					t.Errorf("params %v, want none", m.Root.Params)
				}
			},
		},
		{
			name:  "empty message",
			raw:   nil,
			shape: []string{"text/plain"},
		},
		{
			name:  "body only",
			raw:   crlf("\nhello\n"),
			shape: []string{"text/plain"},
			parts: []part{{path: nil, header: "\r\n", body: "hello\r\n"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ParseMeta(tt.raw)
			if err := checkMeta(tt.raw, m); err != nil {
				t.Fatal(err)
			}
			if got := shape(m.Root); !reflect.DeepEqual(got, tt.shape) {
				t.Errorf("tree %v, want %v", got, tt.shape)
			}
			for _, want := range tt.parts {
				p := partAt(t, m, want.path...)
				if want.typ != "" && p.Type+"/"+p.Subtype != want.typ {
					t.Errorf("part %v: %s/%s, want %s", want.path, p.Type, p.Subtype, want.typ)
				}
				if want.header != "" && headerOf(tt.raw, p) != want.header {
					t.Errorf("part %v: header %q, want %q", want.path, headerOf(tt.raw, p), want.header)
				}
				if got := bodyOf(tt.raw, p); got != want.body {
					t.Errorf("part %v: body %q, want %q", want.path, got, want.body)
				}
			}
			if tt.check != nil {
				tt.check(t, tt.raw, m)
			}
			// Where go-message parses the message, it sees the same tree.
			if gm, err := goMessageShape(tt.raw); err == nil && !tt.goMessageDiffers && !reflect.DeepEqual(gm, tt.shape) {
				t.Errorf("go-message sees %v", gm)
			}
		})
	}
}

func TestParseMetaEnvelope(t *testing.T) {
	tests := []struct {
		name, header string
		check        func(t *testing.T, e Envelope)
	}{
		{"rfc2047 subject", "Subject: =?utf-8?b?w5xiZXIgZGllIEJyw7xja2U=?= =?iso-8859-1?q?_caf=E9?=", func(t *testing.T, e Envelope) {
			if e.Subject != "Über die Brücke café" {
				t.Errorf("subject %q", e.Subject)
			}
		}},
		{"rfc2047 koi8-r subject (go-message charsets)", "Subject: =?koi8-r?b?8NLJ18XU?=", func(t *testing.T, e Envelope) {
			if e.Subject != "Привет" {
				t.Errorf("subject %q", e.Subject)
			}
		}},
		{"unknown charset keeps the text", "Subject: =?x-unknown?q?abc?= tail", func(t *testing.T, e Envelope) {
			if !strings.Contains(e.Subject, "abc") || !strings.HasSuffix(e.Subject, "tail") {
				t.Errorf("subject %q", e.Subject)
			}
		}},
		{"raw latin-1 subject becomes valid UTF-8", "Subject: caf\xe9", func(t *testing.T, e Envelope) {
			if e.Subject != "caf\uFFFD" {
				t.Errorf("subject %q", e.Subject)
			}
		}},
		{"encoded display name", "From: =?utf-8?q?J=C3=B6rg?= <j@example.de>", func(t *testing.T, e Envelope) {
			if len(e.From) != 1 || e.From[0] != (Address{Name: "Jörg", Mailbox: "j", Host: "example.de"}) {
				t.Errorf("from %+v", e.From)
			}
		}},
		{"sender and reply-to explicit", "From: a@x\nSender: s@x\nReply-To: r@x, r2@x", func(t *testing.T, e Envelope) {
			if e.Sender[0].Mailbox != "s" || len(e.ReplyTo) != 2 || e.ReplyTo[1].Mailbox != "r2" {
				t.Errorf("envelope %+v", e)
			}
		}},
		{"empty reply-to defaults to from", "From: a@x\nReply-To: ", func(t *testing.T, e Envelope) {
			if len(e.ReplyTo) != 1 || e.ReplyTo[0].Mailbox != "a" {
				t.Errorf("reply-to %+v", e.ReplyTo)
			}
		}},
		{"group syntax", "To: undisclosed-recipients:;\nCc: team: a@x, b@y;, c@z", func(t *testing.T, e Envelope) {
			// Group markers are kept, as the IMAP ENVELOPE shows them.
			start := func(n string) Address { return Address{Group: true, Mailbox: n} }
			end := Address{Group: true}
			if !slices.Equal(e.To, []Address{start("undisclosed-recipients"), end}) ||
				!slices.Equal(e.Cc, []Address{start("team"), {Mailbox: "a", Host: "x"}, {Mailbox: "b", Host: "y"}, end, {Mailbox: "c", Host: "z"}}) {
				t.Errorf("to %+v cc %+v", e.To, e.Cc)
			}
		}},
		{"source route and comments", "From: <@route1,@route2:user@domain>\nTo: <user (c)@ (c) domain.org>\nCc: user@domain (Real Name)", func(t *testing.T, e Envelope) {
			if !slices.Equal(e.From, []Address{{Mailbox: "user", Host: "domain", Route: "@route1,@route2"}}) ||
				!slices.Equal(e.To, []Address{{Mailbox: "user", Host: "domain.org"}}) ||
				!slices.Equal(e.Cc, []Address{{Name: "Real Name", Mailbox: "user", Host: "domain"}}) {
				t.Errorf("from %+v to %+v cc %+v", e.From, e.To, e.Cc)
			}
		}},
		{"junk in address list", `To: good@example.com, Bob <bob@[bad>, root, "unterminated <u@x>, <>, last@example.org`, func(t *testing.T, e Envelope) {
			var got []string
			for _, a := range e.To {
				got = append(got, a.Mailbox+"@"+a.Host)
			}
			if len(got) < 3 || got[0] != "good@example.com" || got[len(got)-1] != "last@example.org" || !strings.Contains(strings.Join(got, " "), "root@") {
				t.Errorf("to %q", got)
			}
		}},
		{"bcc and first of repeated fields", "Bcc: hidden@example.com\nSubject: first\nSubject: second", func(t *testing.T, e Envelope) {
			if len(e.Bcc) != 1 || e.Subject != "first" {
				t.Errorf("envelope %+v", e)
			}
		}},
		{"message ids without brackets", "Message-ID: bare@example.com\nIn-Reply-To: <a@x>\n <b@y> (comment)", func(t *testing.T, e Envelope) {
			if e.MessageID != "bare@example.com" || !reflect.DeepEqual(e.InReplyTo, []string{"a@x", "b@y"}) {
				t.Errorf("ids %q %q", e.MessageID, e.InReplyTo)
			}
		}},
		{"unparsable date is zero", "Date: the day after tomorrow", func(t *testing.T, e Envelope) {
			if !e.Date.IsZero() {
				t.Errorf("date %v", e.Date)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := crlf(tt.header + "\n\nbody\n")
			m := ParseMeta(raw)
			if err := checkMeta(raw, m); err != nil {
				t.Fatal(err)
			}
			tt.check(t, m.Envelope)
		})
	}
}

func TestParseDate(t *testing.T) {
	utc := time.UTC
	tests := []struct {
		in     string
		want   time.Time
		offset int // seconds east of UTC
	}{
		{"Mon, 01 Jan 2024 08:21:14 +0100", time.Date(2024, 1, 1, 7, 21, 14, 0, utc), 3600},
		{"Mon, 1 Jan 2024 08:21:14 +0100 (CET)", time.Date(2024, 1, 1, 7, 21, 14, 0, utc), 3600},
		{"1 Jan 2024 08:21 GMT", time.Date(2024, 1, 1, 8, 21, 0, 0, utc), 0},
		{"Mon, 01 Jan 2024 08:21:14 EST", time.Date(2024, 1, 1, 13, 21, 14, 0, utc), -5 * 3600},
		{"Mon Jan  1 08:21:14 2024", time.Date(2024, 1, 1, 8, 21, 14, 0, utc), 0},
		{"Mon, 01 Jan 2024 08:21:14", time.Date(2024, 1, 1, 8, 21, 14, 0, utc), 0},
		{"Mon 01 Jan 2024 08:21:14 +0000", time.Date(2024, 1, 1, 8, 21, 14, 0, utc), 0},
		{"  Mon,  01   Jan 2024 08:21:14 -0800 (PST).", time.Date(2024, 1, 1, 16, 21, 14, 0, utc), -8 * 3600},
		{"2024-01-01T08:21:14Z", time.Date(2024, 1, 1, 8, 21, 14, 0, utc), 0},
		{"garbage", time.Time{}, 0},
		{"", time.Time{}, 0},
	}
	for _, tt := range tests {
		got := parseDate(tt.in)
		if !got.Equal(tt.want) {
			t.Errorf("parseDate(%q) = %v, want %v", tt.in, got, tt.want)
			continue
		}
		if _, off := got.Zone(); !got.IsZero() && off != tt.offset {
			t.Errorf("parseDate(%q) offset %d, want %d", tt.in, off, tt.offset)
		}
	}
}

func TestParseMetaLimits(t *testing.T) {
	t.Run("deep nesting is capped", func(t *testing.T) {
		var b strings.Builder
		const levels = 200
		for i := range levels {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nleaf\r\n")
		for i := levels - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\r\n", i)
		}
		raw := []byte(b.String())
		m := ParseMeta(raw)
		if err := checkMeta(raw, m); err != nil {
			t.Fatal(err)
		}
		depth, p := 0, m.Root
		for len(p.Children) > 0 {
			p, depth = p.Children[0], depth+1
		}
		if depth != maxDepth || p.Type != "application" {
			t.Errorf("deepest part at depth %d is %s/%s, want %d, application/octet-stream", depth, p.Type, p.Subtype, maxDepth)
		}
	})
	t.Run("nested message/rfc822 is capped", func(t *testing.T) {
		raw := []byte(strings.Repeat("Content-Type: message/rfc822\r\n\r\n", 100) + "end\r\n")
		m := ParseMeta(raw)
		if err := checkMeta(raw, m); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("deepest tree decodes with default CBOR options", func(t *testing.T) {
		// Alternate multiparts and embedded messages, each with an
		// address, parameters and languages, down past the limit.
		var b strings.Builder
		for i := range 2 * maxDepth {
			if i%2 == 0 {
				fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\nContent-Language: en\r\n\r\n--b%d\r\n", i, i)
			} else {
				b.WriteString("Content-Type: message/rfc822; x=y\r\nContent-Language: en\r\n\r\nFrom: A <a@b>\r\nDate: Mon, 01 Jan 2024 08:21:14 +0100\r\n")
			}
		}
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Language: en\r\n\r\nleaf\r\n")
		raw := []byte(b.String())
		m := ParseMeta(raw)
		if err := checkMeta(raw, m); err != nil {
			t.Fatal(err)
		}
		tagged, err := cbor.EncOptions{Time: cbor.TimeRFC3339Nano, TimeTag: cbor.EncTagRequired}.EncMode()
		if err != nil {
			t.Fatal(err)
		}
		for _, enc := range []cbor.EncMode{mustEncMode(t), tagged} {
			data, err := enc.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var back Meta
			if err := cbor.Unmarshal(data, &back); err != nil {
				t.Fatalf("decode with default options: %v", err)
			}
		}
	})
	t.Run("part count is capped", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("Content-Type: multipart/mixed; boundary=p\r\n\r\n")
		for range 3 * maxParts {
			b.WriteString("--p\r\n\r\nx\r\n")
		}
		b.WriteString("--p--\r\n")
		raw := []byte(b.String())
		m := ParseMeta(raw)
		if err := checkMeta(raw, m); err != nil {
			t.Fatal(err)
		}
		if n := len(m.Root.Children); n < maxParts-1 || n > maxParts {
			t.Errorf("%d children, want about %d", n, maxParts)
		}
	})
	t.Run("many header fields are capped", func(t *testing.T) {
		raw := []byte(strings.Repeat("X: y\r\n", 2*maxFields) + "\r\nbody")
		m := ParseMeta(raw)
		if len(m.Fields) != maxFields {
			t.Errorf("%d fields, want %d", len(m.Fields), maxFields)
		}
		if FieldsComplete(&m) {
			t.Errorf("FieldsComplete with %d of %d fields", len(m.Fields), 2*maxFields)
		}
	})
	t.Run("a huge header is described in bounded space", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("Subject: =?utf-8?q?big?= ")
		for b.Len() < 8<<20 {
			b.WriteString("\r\n\t" + strings.Repeat("\xff", 76)) // invalid UTF-8 grows 3x when cleaned
		}
		b.WriteString("\r\nMessage-ID: <" + strings.Repeat("m", 1<<20) + "@x>\r\nX-After: 1\r\n\r\nbody\r\n")
		raw := []byte(b.String())
		m := ParseMeta(raw)
		if err := checkMeta(raw, m); err != nil {
			t.Fatal(err)
		}
		if n := len(marshal(m)); n > 4*maxFieldBytes {
			t.Errorf("Meta of an 8 MB header encodes to %d bytes, want at most %d", n, 4*maxFieldBytes)
		}
		if n := len(m.Envelope.Subject); n > 3*maxTextField {
			t.Errorf("envelope subject of %d bytes", n)
		}
		if FieldsComplete(&m) {
			t.Errorf("FieldsComplete for an 8 MB header")
		}
		if len(m.Fields) != 1 || m.Fields[0].Name != "Subject" {
			t.Errorf("fields: %d, the first %q", len(m.Fields), m.Fields[0].Name)
		}
	})
	t.Run("an ordinary header is described whole", func(t *testing.T) {
		raw := []byte("Subject: " + strings.Repeat("s", 100<<10) + "\r\nX: y\r\n\r\nbody")
		m := ParseMeta(raw)
		if !FieldsComplete(&m) || len(m.Fields) != 2 || len(m.Fields[0].Value) != 100<<10 {
			t.Errorf("fields of a 100 KB header: complete %v, %d fields", FieldsComplete(&m), len(m.Fields))
		}
	})
}

func mustEncMode(t *testing.T) cbor.EncMode {
	t.Helper()
	em, err := cbor.EncOptions{}.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	return em
}

// normDates replaces each envelope date by its instant in whole seconds, UTC.
func normDates(m *Meta) {
	norm := func(e *Envelope) { e.Date = time.Unix(e.Date.Unix(), 0).UTC() }
	norm(&m.Envelope)
	var walk func(p *Part)
	walk = func(p *Part) {
		if p.Embedded != nil {
			norm(p.Embedded)
		}
		for i := range p.Children {
			walk(&p.Children[i])
		}
	}
	walk(&m.Root)
}

// hostileInputs are large malformed messages for the benchmark; together
// with the fuzz test they exercise the linear-time paths.
func hostileInputs(size int) map[string][]byte {
	return map[string][]byte{
		"dashes":     []byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n" + strings.Repeat("--a\r\n--ax\r\n-", size/12)),
		"long-line":  []byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\n" + strings.Repeat("--a ", size/4)),
		"no-header":  bytes.Repeat([]byte("Subject: x\r\n"), size/12),
		"addresses":  []byte("To: " + strings.Repeat(`"a" <b@c>, (x) <<, `, size/20) + "\r\n\r\n"),
		"boundaries": []byte("Content-Type: multipart/mixed; boundary=" + strings.Repeat("-", 1000) + "\r\n\r\nx" + strings.Repeat("-", size)),
	}
}

func BenchmarkParseMeta(b *testing.B) {
	inputs := hostileInputs(4 << 20)
	for name, raw := range readCorpus(b) {
		if name == "026.eml" {
			inputs["corpus-"+name] = raw
		}
	}
	for name, raw := range inputs {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				ParseMeta(raw)
			}
		})
	}
}

func FuzzParseMeta(f *testing.F) {
	for _, raw := range readCorpus(f) {
		f.Add(raw)
	}
	for _, s := range []string{
		"",
		"\r\n",
		"Subject: only a header",
		"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nunterminated",
		"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x--\r\n",
		"Content-Type: multipart/digest; boundary=d\n\n--d\n\n--d\n\nSubject: a\n--d--",
		"Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\n",
		"Content-Type: multipart/alternative; boundary=\"\"\r\n\r\n--\r\n--\r\n",
		"From: \x00\xff <a@b>\r\nSubject: =?utf-8?b?/w==?=\r\nDate: Mon, 32 Jan 2024 99:99:99 +9999\r\n\r\n\x00\x01",
		"Content-Type: text/plain; name*0*=utf-8''%FF; name*1=x\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := ParseMeta(raw)
		if err := checkMeta(raw, m); err != nil {
			t.Fatal(err)
		}
		enc, err := cbor.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var back Meta
		if err := cbor.Unmarshal(enc, &back); err != nil {
			t.Fatalf("cbor decode: %v", err)
		}
		// The default CBOR time encoding keeps whole seconds, not the
		// zone: compare instants.
		normDates(&m)
		normDates(&back)
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("cbor round trip changed the metadata:\n%+v\n%+v", m, back)
		}
	})
}

// BenchmarkParseMetaHugeHeader parses a message whose header is one field
// folded over 46 MB (issue 14, D7) and prints what the metadata costs: the
// bytes allocated (-benchmem's B/op) and the size of the encoded Meta that
// travels in the log and is stored.
func BenchmarkParseMetaHugeHeader(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("From: a@example.org\r\nSubject: big")
	for sb.Len() < 46<<20 {
		sb.WriteString("\r\n\t" + strings.Repeat("y", 76))
	}
	sb.WriteString("\r\n\r\nHello.\r\n")
	raw := []byte(sb.String())
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	var enc int
	for b.Loop() {
		m := ParseMeta(raw)
		enc = len(marshal(m))
	}
	b.ReportMetric(float64(enc)/(1<<20), "MB-meta")
}
