package dedupe

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/internal/testmail"
	"github.com/twinbox/twinbox/store"
)

func readCorpus(tb testing.TB) map[string][]byte { return testmail.Corpus(tb) }

// checkBody verifies everything Prepare promises about b for raw.
func checkBody(raw []byte, b *store.Body) error {
	if b.ID != store.HashBlob(raw) || b.Size != int64(len(raw)) {
		return fmt.Errorf("id/size %s/%d, want %s/%d", b.ID, b.Size, store.HashBlob(raw), len(raw))
	}
	parts := make(map[store.BlobID][]byte, len(b.Parts))
	for _, p := range b.Parts {
		if _, dup := parts[p.ID]; dup {
			return fmt.Errorf("part %s listed twice", p.ID)
		}
		if store.HashBlob(p.Data) != p.ID {
			return fmt.Errorf("part %s: data hashes to %s", p.ID, store.HashBlob(p.Data))
		}
		parts[p.ID] = p.Data
	}
	used := make(map[store.BlobID]bool)
	off := int64(0)
	for i, s := range b.Manifest.Segments {
		var data []byte
		switch {
		case s.IsRef():
			if len(s.Inline) != 0 {
				return fmt.Errorf("segment %d is both inline and a reference", i)
			}
			d, ok := parts[s.Ref]
			if !ok {
				return fmt.Errorf("segment %d: part %s not in Parts", i, s.Ref)
			}
			if int64(len(d)) != s.Len {
				return fmt.Errorf("segment %d: Len %d, part has %d bytes", i, s.Len, len(d))
			}
			used[s.Ref] = true
			data = d
		default:
			if len(s.Inline) == 0 || s.Len != 0 {
				return fmt.Errorf("segment %d: empty inline segment or inline with Len %d", i, s.Len)
			}
			if i > 0 && !b.Manifest.Segments[i-1].IsRef() {
				return fmt.Errorf("segments %d and %d are adjacent inline runs", i-1, i)
			}
			data = s.Inline
		}
		if off+int64(len(data)) > int64(len(raw)) || !bytes.Equal(raw[off:off+int64(len(data))], data) {
			return fmt.Errorf("segment %d does not match the message at offset %d", i, off)
		}
		off += int64(len(data))
	}
	if off != int64(len(raw)) || b.Manifest.Size() != int64(len(raw)) {
		return fmt.Errorf("segments cover %d bytes, message has %d", off, len(raw))
	}
	if len(used) != len(parts) {
		return fmt.Errorf("%d parts, %d used by the manifest", len(parts), len(used))
	}
	got, err := Assemble(b.Manifest, parts)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, raw) {
		return errors.New("assembled bytes differ from the message")
	}
	return nil
}

func TestRoundTripCorpus(t *testing.T) {
	withRefs := 0
	for name, raw := range readCorpus(t) {
		for _, opts := range []*Options{nil, {MinPartSize: 1}, {MinPartSize: 1 << 10}} {
			b := Prepare(raw, opts)
			if err := checkBody(raw, b); err != nil {
				t.Errorf("%s, options %+v: %v", name, opts, err)
			}
			if opts == nil && len(b.Parts) > 0 {
				withRefs++
			}
		}
	}
	if withRefs == 0 {
		t.Error("no corpus message has a part above the default threshold; the corpus no longer exercises references")
	}
}

// attachment returns n random bytes, base64 encoded in CRLF lines of 76.
func attachment(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, seed))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc)
	return b.String()
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func withAttachment(subject, boundary, filename, att string) []byte {
	return []byte(crlf(`From: Alice <alice@example.com>
To: Bob <bob@example.org>
Subject: `+subject+`
Message-ID: <`+subject+`@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="`+boundary+`"

--`+boundary+`
Content-Type: text/plain; charset=utf-8

Please find the report attached.
--`+boundary+`
Content-Type: application/pdf; name="`+filename+`"
Content-Disposition: attachment; filename="`+filename+`"
Content-Transfer-Encoding: base64

`) + att + crlf(`
--`+boundary+`--
`))
}

func forward(inner []byte) []byte {
	return append(append([]byte(crlf(`From: Bob <bob@example.org>
To: Carol <carol@example.net>
Subject: Fwd: report
Content-Type: multipart/mixed; boundary=fwd

--fwd
Content-Type: text/plain

FYI, see the forwarded message.
--fwd
Content-Type: message/rfc822
Content-Disposition: inline

`)), inner...), crlf("\n--fwd--\n")...)
}

func partIDs(b *store.Body) []store.BlobID {
	var ids []store.BlobID
	for _, p := range b.Parts {
		ids = append(ids, p.ID)
	}
	return ids
}

func TestForwardedAttachmentIsShared(t *testing.T) {
	att := attachment(1, 40<<10)
	orig := withAttachment("report", "b1", "q3.pdf", att)
	fwd := forward(orig)
	reattached := withAttachment("again", "other-boundary", "renamed.pdf", att)
	different := withAttachment("report", "b1", "q3.pdf", attachment(2, 40<<10))

	want := store.HashBlob([]byte(att))
	for name, raw := range map[string][]byte{"original": orig, "forwarded": fwd, "re-attached": reattached} {
		b := Prepare(raw, nil)
		if err := checkBody(raw, b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ids := partIDs(b); len(ids) != 1 || ids[0] != want {
			t.Errorf("%s: parts %v, want the attachment %s", name, ids, want)
		}
	}
	if Prepare(orig, nil).ID == Prepare(fwd, nil).ID {
		t.Error("different messages share a body ID")
	}
	if ids := partIDs(Prepare(different, nil)); len(ids) != 1 || ids[0] == want {
		t.Errorf("another attachment got parts %v", ids)
	}
}

func TestSameBytesSameID(t *testing.T) {
	raw := withAttachment("report", "b1", "q3.pdf", attachment(1, 40<<10))
	a, b := Prepare(raw, nil), Prepare(bytes.Clone(raw), nil)
	if a.ID != b.ID || len(a.Manifest.Segments) != len(b.Manifest.Segments) {
		t.Errorf("same bytes prepared differently: %s %s", a.ID, b.ID)
	}
}

func TestSmallMessageIsOneInlineSegment(t *testing.T) {
	raw := withAttachment("small", "b", "small.pdf", attachment(3, 1<<10))
	b := Prepare(raw, nil)
	if err := checkBody(raw, b); err != nil {
		t.Fatal(err)
	}
	if segs := b.Manifest.Segments; len(segs) != 1 || segs[0].IsRef() || len(b.Parts) != 0 {
		t.Errorf("%d segments, %d parts; want one inline segment", len(segs), len(b.Parts))
	}
	if b := Prepare(nil, nil); len(b.Manifest.Segments) != 0 || b.Size != 0 || checkBody(nil, b) != nil {
		t.Errorf("empty message: %+v", b.Manifest)
	}
}

func TestRepeatedAttachmentStoredOnce(t *testing.T) {
	att := attachment(4, 20<<10)
	raw := []byte(crlf("Content-Type: multipart/mixed; boundary=x\n\n--x\n\n") + att + crlf("\n--x\n\n") + att + crlf("\n--x--\n"))
	b := Prepare(raw, nil)
	if err := checkBody(raw, b); err != nil {
		t.Fatal(err)
	}
	if refs := b.Manifest.Refs(); len(refs) != 2 || len(b.Parts) != 1 {
		t.Errorf("%d references to %d parts, want 2 to 1", len(refs), len(b.Parts))
	}
}

func TestAssembleErrors(t *testing.T) {
	raw := withAttachment("report", "b1", "q3.pdf", attachment(1, 40<<10))
	b := Prepare(raw, nil)
	if _, err := Assemble(b.Manifest, nil); !errors.Is(err, store.ErrMissingBlob) {
		t.Errorf("missing part: %v, want ErrMissingBlob", err)
	}
	short := map[store.BlobID][]byte{b.Parts[0].ID: b.Parts[0].Data[1:]}
	if _, err := Assemble(b.Manifest, short); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("short part: %v, want ErrCorrupt", err)
	}
}

func TestPrepareClipsCapacity(t *testing.T) {
	raw := withAttachment("report", "b1", "q3.pdf", attachment(1, 40<<10))
	b := Prepare(raw, nil)
	for i, s := range b.Manifest.Segments {
		if cap(s.Inline) != len(s.Inline) {
			t.Errorf("segment %d: capacity %d beyond its %d bytes: an append would overwrite the message", i, cap(s.Inline), len(s.Inline))
		}
	}
	for _, p := range b.Parts {
		if cap(p.Data) != len(p.Data) {
			t.Errorf("part %s: capacity %d beyond its %d bytes", p.ID, cap(p.Data), len(p.Data))
		}
	}
}

// benchMessage builds a message of about 1 MB: text, HTML and several
// base64 attachments, one nested in a forwarded message.
func benchMessage() []byte {
	var b strings.Builder
	b.WriteString(crlf("From: Alice <alice@example.com>\nTo: Bob <bob@example.org>\nSubject: quarterly numbers\nContent-Type: multipart/mixed; boundary=outer\n\n"))
	b.WriteString(crlf("--outer\nContent-Type: multipart/alternative; boundary=alt\n\n--alt\nContent-Type: text/plain\n\n"))
	b.WriteString(strings.Repeat("Numbers attached, see the summary below.\r\n", 200))
	b.WriteString(crlf("--alt\nContent-Type: text/html\n\n"))
	b.WriteString(strings.Repeat("<p>Numbers attached, see the summary below.</p>\r\n", 200))
	b.WriteString(crlf("--alt--\n"))
	for i, size := range []int{300 << 10, 200 << 10, 150 << 10, 4 << 10} {
		fmt.Fprintf(&b, "--outer\r\nContent-Type: application/octet-stream; name=f%d\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n", i, attachment(uint64(i), size))
	}
	b.WriteString(crlf("--outer\nContent-Type: message/rfc822\n\n"))
	b.Write(withAttachment("inner", "in", "inner.pdf", attachment(9, 50<<10)))
	b.WriteString(crlf("\n--outer--\n"))
	return []byte(b.String())
}

func BenchmarkPrepare(b *testing.B) {
	raw := benchMessage()
	b.SetBytes(int64(len(raw)))
	var body *store.Body
	for b.Loop() {
		body = Prepare(raw, nil)
	}
	b.ReportMetric(float64(len(raw)), "msg-bytes")
	b.ReportMetric(float64(len(body.Parts)), "parts")
}

func FuzzRoundTrip(f *testing.F) {
	for _, raw := range readCorpus(f) {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, opts := range []*Options{nil, {MinPartSize: 1}, {MinPartSize: 64}} {
			b := Prepare(raw, opts)
			if err := checkBody(raw, b); err != nil {
				t.Fatalf("options %+v: %v", opts, err)
			}
		}
	})
}
