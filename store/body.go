package store

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
}

// PartBlob is a content-addressed piece of a body (a large MIME leaf body).
type PartBlob struct {
	ID   BlobID `cbor:"1,keyasint"`
	Data []byte `cbor:"2,keyasint,omitempty"`
}
