package dedupe

import (
	"fmt"

	"github.com/twinbox/twinbox/store"
)

// DefaultMinPartSize is the smallest leaf body stored as its own part blob.
// Below 16 KiB the overhead of a separate blob (its key and reference count
// in the store, a manifest entry, a replication record and one more lookup
// on every read) outweighs the chance of sharing: small parts are mostly
// message text, rarely identical across messages, while the parts that do
// repeat (forwarded documents, images, logos) are usually far larger.
const DefaultMinPartSize = 16 << 10

// Options tune Prepare. A nil *Options means the defaults.
type Options struct {
	// MinPartSize is the smallest leaf body, in bytes, that becomes a part
	// blob; smaller ones stay inline in the manifest. Zero or less means
	// DefaultMinPartSize.
	MinPartSize int64
}

func (o *Options) minPartSize() int64 {
	if o == nil || o.MinPartSize <= 0 {
		return DefaultMinPartSize
	}
	return o.MinPartSize
}

// Prepare splits raw, a message body as received, into a store.Body: its
// content address, metadata (store.ParseMeta) and a manifest whose segments
// cover raw contiguously. Each MIME leaf body of at least the minimum part
// size is a reference to a part blob; the bytes between them are inline
// segments. Body.Parts holds each referenced part once, in order of first
// use.
//
// Prepare does not copy: inline segments and part data are sub-slices of raw
// (with capacity clipped, so appending to one cannot overwrite raw). The
// caller must not modify raw while the Body is in use.
//
// Prepare never fails; malformed MIME only means fewer or no part blobs.
func Prepare(raw []byte, opts *Options) *store.Body {
	minSize := opts.minPartSize()
	body := &store.Body{
		ID:   store.HashBlob(raw),
		Size: int64(len(raw)),
		Meta: store.ParseMeta(raw),
	}

	var segs []store.Segment
	seen := make(map[store.BlobID]bool)
	pos := int64(0)
	inline := func(end int64) {
		if end > pos {
			segs = append(segs, store.Segment{Inline: raw[pos:end:end]})
		}
	}
	var walk func(p *store.Part)
	walk = func(p *store.Part) {
		if len(p.Children) > 0 {
			for i := range p.Children {
				walk(&p.Children[i])
			}
			return
		}
		// ParseMeta guarantees that leaves come in order and do not
		// overlap; the check keeps the manifest contiguous regardless.
		if p.Size() < minSize || p.BodyStart < pos || p.End > int64(len(raw)) {
			return
		}
		data := raw[p.BodyStart:p.End:p.End]
		id := store.HashBlob(data)
		inline(p.BodyStart)
		segs = append(segs, store.Segment{Ref: id, Len: int64(len(data))})
		if !seen[id] {
			seen[id] = true
			body.Parts = append(body.Parts, store.PartBlob{ID: id, Data: data})
		}
		pos = p.End
	}
	walk(&body.Meta.Root)
	inline(int64(len(raw)))
	body.Manifest = store.Manifest{Segments: segs}
	return body
}

// Assemble rebuilds a message from its manifest and its part blobs held in
// memory. It fails with store.ErrMissingBlob if a part is absent and with
// store.ErrCorrupt if one has the wrong length. It does not hash the parts;
// callers wanting end-to-end integrity compare store.HashBlob of the result
// with the body ID.
func Assemble(m store.Manifest, parts map[store.BlobID][]byte) ([]byte, error) {
	b, err := m.Assemble(func(id store.BlobID) ([]byte, error) {
		data, ok := parts[id]
		if !ok {
			return nil, store.ErrMissingBlob
		}
		return data, nil
	})
	if err != nil {
		return nil, fmt.Errorf("dedupe: assemble: %w", err)
	}
	return b, nil
}
