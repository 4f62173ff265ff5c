package cache

import (
	"context"

	"github.com/twinbox/twinbox/store"
)

// Reader serves message bodies and their parsed metadata from byte-bounded
// caches in front of a store. Bodies are content-addressed and never change,
// so a cached body is always the right bytes for its ID; nothing needs
// invalidating when messages are expunged or bodies collected.
//
// A Reader is safe for concurrent use.
type Reader struct {
	s      *store.Store
	bodies *Cache[store.BlobID, []byte]
	metas  *Cache[store.BlobID, *store.Meta]
}

// ReaderOptions size a Reader's two caches. A nil *ReaderOptions means
// defaults: DefaultMaxBytes for bodies and a sixteenth of it for metadata.
type ReaderOptions struct {
	Bodies *Options
	Metas  *Options
}

// NewReader returns a Reader over s.
func NewReader(s *store.Store, opts *ReaderOptions) (*Reader, error) {
	var o ReaderOptions
	if opts != nil {
		o = *opts
	}
	if o.Metas == nil {
		o.Metas = &Options{MaxBytes: DefaultMaxBytes / 16}
	}
	bodies, err := New(o.Bodies, func(_ store.BlobID, b []byte) int64 { return int64(len(b)) })
	if err != nil {
		return nil, err
	}
	metas, err := New(o.Metas, func(_ store.BlobID, m *store.Meta) int64 { return metaWeight(m) })
	if err != nil {
		return nil, err
	}
	return &Reader{s: s, bodies: bodies, metas: metas}, nil
}

// Body returns the exact bytes of a stored body.
func (r *Reader) Body(ctx context.Context, id store.BlobID) ([]byte, error) {
	return r.bodies.Get(ctx, id, func(context.Context, store.BlobID) ([]byte, error) { return r.s.Body(id) })
}

// Meta returns the metadata parsed from a body at delivery. The caller must
// not modify it: it is shared.
func (r *Reader) Meta(ctx context.Context, id store.BlobID) (*store.Meta, error) {
	return r.metas.Get(ctx, id, func(context.Context, store.BlobID) (*store.Meta, error) { return r.s.Meta(id) })
}

// Literal returns a message as BODY[] gives it: its per-recipient prefix and
// the shared body. The result is a new slice the caller may keep.
func (r *Reader) Literal(ctx context.Context, m store.Message) ([]byte, error) {
	body, err := r.Body(ctx, m.Body)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(m.Prefix)+len(body))
	return append(append(out, m.Prefix...), body...), nil
}

// ReaderStats are the counters of both caches.
type ReaderStats struct{ Bodies, Metas Stats }

// Stats returns the counters of both caches (for /metrics: hit rates).
func (r *Reader) Stats() ReaderStats {
	return ReaderStats{Bodies: r.bodies.Stats(), Metas: r.metas.Stats()}
}

// metaWeight estimates the memory a parsed Meta holds.
func metaWeight(m *store.Meta) int64 {
	n := int64(256)
	for _, f := range m.Fields {
		n += int64(len(f.Name) + len(f.Value) + 32)
	}
	var walk func(p *store.Part)
	walk = func(p *store.Part) {
		n += 200
		for k, v := range p.Params {
			n += int64(len(k) + len(v) + 16)
		}
		for i := range p.Children {
			walk(&p.Children[i])
		}
	}
	walk(&m.Root)
	return n
}
