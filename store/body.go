package store

import "fmt"

// Body is a message body prepared for storage: its content address, how it is
// split into pieces (see package dedupe) and the metadata parsed from it.
// A Deliver operation carries one.
type Body struct {
	ID       BlobID   `cbor:"1,keyasint"` // HashBlob of the whole body
	Size     int64    `cbor:"2,keyasint"`
	Manifest Manifest `cbor:"3,keyasint"`
	// Parts holds the part blobs the manifest refers to, each once. Data may
	// be nil for a part the receiving store already holds; applying fails
	// with ErrMissingBlob if it does not.
	Parts []PartBlob `cbor:"4,keyasint,omitempty"`
	Meta  Meta       `cbor:"5,keyasint"`
	// Stored marks a reference to a body the receiving store already
	// holds: only ID and Size travel (the replication log sends a body
	// once). Applying fails with ErrMissingBlob if the store lacks it.
	Stored bool `cbor:"6,keyasint,omitempty"`

	// The stored encodings of Manifest and Meta, made by checkContent
	// outside the store's write lock so that the serial part of applying
	// stays short. Nil until then.
	encManifest, encMeta []byte
}

// PartBlob is a content-addressed piece of a body (a large MIME leaf body).
type PartBlob struct {
	ID   BlobID `cbor:"1,keyasint"`
	Data []byte `cbor:"2,keyasint,omitempty"`
}

// checkContent re-hashes the body when the delivery carries all of it, so a
// body whose bytes do not match its address is never stored. (A delivery
// that relies on parts already stored is checked by Verify instead.)
func (b *Body) checkContent() error {
	if b.Stored {
		return nil // nothing travels to check; the store holds the checked body
	}
	if b.encManifest != nil {
		return nil // checked and encoded already (by Admit)
	}
	data := make(map[BlobID][]byte, len(b.Parts))
	for _, p := range b.Parts {
		if p.Data == nil {
			b.encode()
			return nil
		}
		data[p.ID] = p.Data
	}
	id, _, err := b.Manifest.sum(func(id BlobID) ([]byte, error) { return data[id], nil })
	if err != nil {
		return fmt.Errorf("%w: body %s: %v", ErrInvalidOp, b.ID, err)
	}
	if id != b.ID {
		return fmt.Errorf("%w: body %s: content does not match its address", ErrCorrupt, b.ID)
	}
	b.encode()
	return nil
}

// encode fills encManifest and encMeta.
func (b *Body) encode() {
	b.encManifest = marshal(b.Manifest)
	b.encMeta = marshal(b.Meta)
}

// Reference returns a body that refers to b by address, for a store that
// already holds it.
func (b *Body) Reference() Body { return Body{ID: b.ID, Size: b.Size, Stored: true} }
