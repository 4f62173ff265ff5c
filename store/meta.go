package store

import "time"

// Meta is what IMAP asks of a message, computed once at delivery by ParseMeta
// so that FETCH ENVELOPE, BODYSTRUCTURE and BODY[section] never re-parse.
// It describes the shared body (without per-recipient prefix headers).
type Meta struct {
	Envelope Envelope `cbor:"1,keyasint"`
	Root     Part     `cbor:"2,keyasint"`
	// Fields lists the top-level header fields in order, names as written,
	// values unfolded but otherwise raw (RFC 2047 words left encoded).
	Fields []Field `cbor:"3,keyasint,omitempty"`
}

// Field is one header field.
type Field struct {
	Name  string `cbor:"1,keyasint"`
	Value string `cbor:"2,keyasint"`
}

// Envelope is the IMAP ENVELOPE of a message (RFC 3501 7.4.2). Strings are
// decoded from RFC 2047 where they were encoded.
type Envelope struct {
	Date      time.Time `cbor:"1,keyasint,omitempty"`
	Subject   string    `cbor:"2,keyasint,omitempty"`
	From      []Address `cbor:"3,keyasint,omitempty"`
	Sender    []Address `cbor:"4,keyasint,omitempty"`
	ReplyTo   []Address `cbor:"5,keyasint,omitempty"`
	To        []Address `cbor:"6,keyasint,omitempty"`
	Cc        []Address `cbor:"7,keyasint,omitempty"`
	Bcc       []Address `cbor:"8,keyasint,omitempty"`
	InReplyTo []string  `cbor:"9,keyasint,omitempty"`  // message IDs without angle brackets
	MessageID string    `cbor:"10,keyasint,omitempty"` // without angle brackets
}

// Address is one mailbox of an address list, or a group's marker: with
// Group set, a Mailbox names the group that begins and an empty one ends
// it (the IMAP ENVELOPE's group syntax, RFC 3501 7.4.2).
type Address struct {
	Name    string `cbor:"1,keyasint,omitempty"`
	Mailbox string `cbor:"2,keyasint,omitempty"` // local part
	Host    string `cbor:"3,keyasint,omitempty"`
	// Route is an obsolete source route ("@a,@b"), ENVELOPE's adl.
	Route string `cbor:"4,keyasint,omitempty"`
	Group bool   `cbor:"5,keyasint,omitempty"`
}

// Part is a node of the MIME tree with byte offsets into the message.
// Offsets are relative to the start of the shared body.
type Part struct {
	Type    string            `cbor:"1,keyasint"`           // lower case, e.g. "text"
	Subtype string            `cbor:"2,keyasint"`           // lower case, e.g. "plain"
	Params  map[string]string `cbor:"3,keyasint,omitempty"` // keys lower case

	ID          string `cbor:"4,keyasint,omitempty"`
	Description string `cbor:"5,keyasint,omitempty"`
	Encoding    string `cbor:"6,keyasint,omitempty"` // Content-Transfer-Encoding, lower case; "" means 7bit

	Disposition       string            `cbor:"7,keyasint,omitempty"` // lower case
	DispositionParams map[string]string `cbor:"8,keyasint,omitempty"`
	Language          []string          `cbor:"9,keyasint,omitempty"`
	Location          string            `cbor:"10,keyasint,omitempty"`
	MD5               string            `cbor:"11,keyasint,omitempty"`

	// HeaderStart is where the part's header begins, BodyStart where its body
	// begins (after the blank line) and End where the body ends (exclusive;
	// for a part inside a multipart, before the CRLF that precedes the next
	// boundary line).
	HeaderStart int64 `cbor:"12,keyasint"`
	BodyStart   int64 `cbor:"13,keyasint"`
	End         int64 `cbor:"14,keyasint"`
	// Lines is the number of lines of the body (text/* and message/rfc822).
	Lines int64 `cbor:"15,keyasint,omitempty"`

	// Children are the parts of a multipart, or the one embedded message of a
	// message/rfc822 part.
	Children []Part `cbor:"16,keyasint,omitempty"`
	// Envelope of an embedded message/rfc822.
	Embedded *Envelope `cbor:"17,keyasint,omitempty"`
}

// Size is the length of the part's body in bytes.
func (p *Part) Size() int64 { return p.End - p.BodyStart }

// IsMultipart reports whether p is a multipart/*.
func (p *Part) IsMultipart() bool { return p.Type == "multipart" }
