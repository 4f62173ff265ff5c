package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// BlobID is the SHA-256 of a blob's bytes. A message body's ID is the hash of
// the whole message as received, however it is split into pieces on disk.
type BlobID [32]byte

// HashBlob returns the content address of b.
func HashBlob(b []byte) BlobID { return sha256.Sum256(b) }

// String returns the ID in lower-case hex.
func (id BlobID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero value (no blob).
func (id BlobID) IsZero() bool { return id == BlobID{} }

// ParseBlobID parses the hex form produced by String.
func ParseBlobID(s string) (BlobID, error) {
	var id BlobID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("store: bad blob id %q", s)
	}
	copy(id[:], b)
	return id, nil
}

// Segment is one contiguous run of a message's bytes: either stored inline in
// the manifest or a reference to a part blob (a large MIME leaf body).
type Segment struct {
	Inline []byte `cbor:"1,keyasint,omitempty"`
	Ref    BlobID `cbor:"2,keyasint,omitempty"`
	Len    int64  `cbor:"3,keyasint,omitempty"` // length of the referenced blob; 0 for inline
}

// IsRef reports whether the segment refers to a part blob.
func (s Segment) IsRef() bool { return !s.Ref.IsZero() }

// Size is the number of message bytes the segment stands for.
func (s Segment) Size() int64 {
	if s.IsRef() {
		return s.Len
	}
	return int64(len(s.Inline))
}

// Manifest describes a message body as the concatenation of its segments.
// Concatenating the segments gives back the exact bytes received.
type Manifest struct {
	Segments []Segment `cbor:"1,keyasint"`
}

// Size is the length of the assembled message.
func (m Manifest) Size() int64 {
	var n int64
	for _, s := range m.Segments {
		n += s.Size()
	}
	return n
}

// Refs lists the part blobs the manifest refers to, in order, with repeats.
func (m Manifest) Refs() []BlobID {
	var ids []BlobID
	for _, s := range m.Segments {
		if s.IsRef() {
			ids = append(ids, s.Ref)
		}
	}
	return ids
}

// sum hashes the assembled message without assembling it: each segment is
// fed to the hash in turn, so checking a body's address copies nothing. It
// returns the hash and the length, and checks each part's length.
func (m Manifest) sum(get func(BlobID) ([]byte, error)) (BlobID, int64, error) {
	h := sha256.New()
	var n int64
	for i, s := range m.Segments {
		b := s.Inline
		if s.IsRef() {
			var err error
			if b, err = get(s.Ref); err != nil {
				return BlobID{}, 0, fmt.Errorf("store: segment %d (blob %s): %w", i, s.Ref, err)
			}
			if int64(len(b)) != s.Len {
				return BlobID{}, 0, fmt.Errorf("store: segment %d (blob %s): %d bytes, manifest says %d: %w", i, s.Ref, len(b), s.Len, ErrCorrupt)
			}
		}
		h.Write(b)
		n += int64(len(b))
	}
	var id BlobID
	h.Sum(id[:0])
	return id, n, nil
}

// Assemble concatenates the segments, fetching referenced parts with get.
// It checks each part's length against the manifest.
func (m Manifest) Assemble(get func(BlobID) ([]byte, error)) ([]byte, error) {
	out := make([]byte, 0, m.Size())
	for i, s := range m.Segments {
		if !s.IsRef() {
			out = append(out, s.Inline...)
			continue
		}
		b, err := get(s.Ref)
		if err != nil {
			return nil, fmt.Errorf("store: segment %d (blob %s): %w", i, s.Ref, err)
		}
		if int64(len(b)) != s.Len {
			return nil, fmt.Errorf("store: segment %d (blob %s): %d bytes, manifest says %d: %w", i, s.Ref, len(b), s.Len, ErrCorrupt)
		}
		out = append(out, b...)
	}
	return out, nil
}
