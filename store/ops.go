package store

import (
	"fmt"
	"time"
)

// Entry is one operation together with the log position it came from. Apply
// takes entries in ascending Seq order; an entry at or below the store's
// applied sequence is skipped, so applying the same entry twice changes
// nothing. Time is when the writer made the entry: it stamps reference counts
// that reach zero (for the collection grace period) and nothing else, so the
// same entries give the same state on every node.
type Entry struct {
	Seq  uint64
	Time int64 // Unix nanoseconds
	Op   Op
}

// OpKind names an operation in its encoding. Values are part of the log
// format: never renumber them.
type OpKind uint8

// Operation kinds.
const (
	KindCreateUser    OpKind = 1
	KindDeleteUser    OpKind = 2
	KindCreateMailbox OpKind = 3
	KindDeleteMailbox OpKind = 4
	KindRenameMailbox OpKind = 5
	KindSubscribe     OpKind = 6
	KindDeliver       OpKind = 7
	KindCopy          OpKind = 8
	KindMove          OpKind = 9
	KindStoreFlags    OpKind = 10
	KindExpunge       OpKind = 11
	KindCollect       OpKind = 12
	KindSkipUIDs      OpKind = 13
	KindMerged        OpKind = 14
	KindImportMailbox OpKind = 15
	KindImport        OpKind = 16
)

// Op is a mutation of the store. Ops are plain values: they are encoded with
// EncodeOp, shipped over the replication log and applied on every node.
type Op interface {
	Kind() OpKind
	// check validates the op's own fields (not against the store's state).
	check() error
}

// CreateUser creates a user with an INBOX.
type CreateUser struct {
	User        string `cbor:"1,keyasint"`
	UIDValidity uint32 `cbor:"2,keyasint"` // for INBOX; raised if not above the user's last
}

// DeleteUser removes a user, every mailbox and every message link.
type DeleteUser struct {
	User string `cbor:"1,keyasint"`
}

// CreateMailbox creates a mailbox. Missing parent levels are created too, as
// RFC 3501 CREATE allows.
type CreateMailbox struct {
	User        string   `cbor:"1,keyasint"`
	Name        string   `cbor:"2,keyasint"`
	UIDValidity uint32   `cbor:"3,keyasint"` // raised if not above the user's last
	SpecialUse  []string `cbor:"4,keyasint,omitempty"`
	Subscribe   bool     `cbor:"5,keyasint,omitempty"`
}

// DeleteMailbox removes a mailbox and its messages. Its children stay.
type DeleteMailbox struct {
	User string `cbor:"1,keyasint"`
	Name string `cbor:"2,keyasint"`
}

// RenameMailbox renames a mailbox and every level below it, keeping
// UIDVALIDITY and UIDs. Renaming INBOX moves its messages to a new mailbox
// and leaves INBOX empty (RFC 3501 6.3.5).
type RenameMailbox struct {
	User        string `cbor:"1,keyasint"`
	From        string `cbor:"2,keyasint"`
	To          string `cbor:"3,keyasint"`
	UIDValidity uint32 `cbor:"4,keyasint,omitempty"` // for the new mailbox when renaming INBOX
}

// Subscribe sets or clears a mailbox's subscription.
type Subscribe struct {
	User       string `cbor:"1,keyasint"`
	Name       string `cbor:"2,keyasint"`
	Subscribed bool   `cbor:"3,keyasint,omitempty"`
}

// Deliver links one body into one or more mailboxes, atomically: an SMTP
// transaction's recipients or one IMAP APPEND. The body is stored once.
type Deliver struct {
	Body         Body     `cbor:"1,keyasint"`
	Targets      []Target `cbor:"2,keyasint"`
	InternalDate int64    `cbor:"3,keyasint"` // Unix nanoseconds
	// Retry, when set, names the delivery for retries (a hash of the
	// envelope and the body, made by SMTP and LMTP): a delivery with the
	// same Retry within RetryWindow of an earlier one is that sender's
	// retry of it (the first attempt got a temporary failure but became
	// durable): it stores nothing, and its result is the first one's,
	// with Result.Duplicate set.
	Retry []byte `cbor:"4,keyasint,omitempty"`
}

// RetryWindow is how long a delivery is recognised when its sender
// retries it: longer than an MTA's first retries (Postfix: 5 minutes,
// then doubling), short enough that the index stays small.
const RetryWindow = 2 * time.Hour

// Target is one mailbox a delivery lands in.
type Target struct {
	User    string   `cbor:"1,keyasint"`
	Mailbox string   `cbor:"2,keyasint"`
	Prefix  []byte   `cbor:"3,keyasint,omitempty"` // per-recipient header lines the server writes (Return-Path, Delivered-To, Received), CRLF-terminated
	Flags   []string `cbor:"4,keyasint,omitempty"`
}

// Copy links messages into another mailbox of the same user (no body copy).
type Copy struct {
	User string   `cbor:"1,keyasint"`
	From string   `cbor:"2,keyasint"`
	To   string   `cbor:"3,keyasint"`
	UIDs []uint32 `cbor:"4,keyasint"` // ascending; UIDs not present are ignored
}

// Move is Copy followed by removing the messages from the source, atomically.
type Move Copy

// FlagAction says how StoreFlags combines flags.
type FlagAction uint8

// Flag actions, as IMAP STORE's FLAGS, +FLAGS and -FLAGS.
const (
	FlagsSet    FlagAction = 1
	FlagsAdd    FlagAction = 2
	FlagsRemove FlagAction = 3
)

// StoreFlags changes the flags of messages. Each changed message gets the
// mailbox's next modseq; unchanged messages keep theirs.
type StoreFlags struct {
	User    string     `cbor:"1,keyasint"`
	Mailbox string     `cbor:"2,keyasint"`
	UIDs    []uint32   `cbor:"3,keyasint"`
	Action  FlagAction `cbor:"4,keyasint"`
	Flags   []string   `cbor:"5,keyasint,omitempty"`
	// UnchangedSince, when not zero, leaves alone messages whose modseq is
	// above it (RFC 7162 CONDSTORE) and reports them in Result.Modified.
	UnchangedSince uint64 `cbor:"6,keyasint,omitempty"`
}

// Expunge removes messages flagged \Deleted: all of them when All is set
// (EXPUNGE, CLOSE), or only those of UIDs (UID EXPUNGE).
type Expunge struct {
	User    string   `cbor:"1,keyasint"`
	Mailbox string   `cbor:"2,keyasint"`
	UIDs    []uint32 `cbor:"3,keyasint,omitempty"`
	All     bool     `cbor:"4,keyasint,omitempty"`
}

// Collect deletes blobs whose reference count reached zero at or before
// Before (Unix nanoseconds): the garbage collection of bodies, as a logged
// operation so both nodes collect the same blobs.
type Collect struct {
	Before int64 `cbor:"1,keyasint"`
	Limit  int   `cbor:"2,keyasint,omitempty"` // at most this many blobs (0: no limit)
}

// SkipUIDs makes a mailbox's next UID at least Next: UIDs may have gaps
// (RFC 3501 2.3.1.1), and a node that writes while it cannot be sure that
// no other node shows UIDs of this mailbox (it acknowledges alone after
// fencing its peer, or merges what the other side of a split brain
// acknowledged) skips ahead, so that no UID a client has seen is ever
// given to a different message. When Next is beyond the UID space the
// mailbox gets a new UIDVALIDITY and its messages are numbered again from
// 1 (clients re-download it; still no UID is reused).
type SkipUIDs struct {
	User    string `cbor:"1,keyasint"`
	Mailbox string `cbor:"2,keyasint"`
	Next    uint64 `cbor:"3,keyasint"`
}

// Merged applies an operation at most once under ID, however often it is
// applied: a merge re-applies what a former active acknowledged alone,
// and an interrupted merge that starts again must not apply anything
// twice. Op is the operation's encoding (EncodeOp). Applying an ID already
// applied changes nothing and sets Result.Duplicate.
type Merged struct {
	ID string `cbor:"1,keyasint"`
	Op []byte `cbor:"2,keyasint"`
}

// Inner decodes the merged operation.
func (o *Merged) Inner() (Op, error) {
	op, err := DecodeOp(o.Op)
	if err != nil {
		return nil, err
	}
	if _, nested := op.(*Merged); nested {
		return nil, fmt.Errorf("%w: a merged operation inside another", ErrInvalidOp)
	}
	return op, nil
}

// Kind implementations.
func (*CreateUser) Kind() OpKind    { return KindCreateUser }
func (*DeleteUser) Kind() OpKind    { return KindDeleteUser }
func (*CreateMailbox) Kind() OpKind { return KindCreateMailbox }
func (*DeleteMailbox) Kind() OpKind { return KindDeleteMailbox }
func (*RenameMailbox) Kind() OpKind { return KindRenameMailbox }
func (*Subscribe) Kind() OpKind     { return KindSubscribe }
func (*Deliver) Kind() OpKind       { return KindDeliver }
func (*Copy) Kind() OpKind          { return KindCopy }
func (*Move) Kind() OpKind          { return KindMove }
func (*StoreFlags) Kind() OpKind    { return KindStoreFlags }
func (*Expunge) Kind() OpKind       { return KindExpunge }
func (*Collect) Kind() OpKind       { return KindCollect }
func (*SkipUIDs) Kind() OpKind      { return KindSkipUIDs }
func (*Merged) Kind() OpKind        { return KindMerged }
func (*ImportMailbox) Kind() OpKind { return KindImportMailbox }
func (*Import) Kind() OpKind        { return KindImport }

func newOp(k OpKind) (Op, error) {
	switch k {
	case KindCreateUser:
		return new(CreateUser), nil
	case KindDeleteUser:
		return new(DeleteUser), nil
	case KindCreateMailbox:
		return new(CreateMailbox), nil
	case KindDeleteMailbox:
		return new(DeleteMailbox), nil
	case KindRenameMailbox:
		return new(RenameMailbox), nil
	case KindSubscribe:
		return new(Subscribe), nil
	case KindDeliver:
		return new(Deliver), nil
	case KindCopy:
		return new(Copy), nil
	case KindMove:
		return new(Move), nil
	case KindStoreFlags:
		return new(StoreFlags), nil
	case KindExpunge:
		return new(Expunge), nil
	case KindCollect:
		return new(Collect), nil
	case KindSkipUIDs:
		return new(SkipUIDs), nil
	case KindMerged:
		return new(Merged), nil
	case KindImportMailbox:
		return new(ImportMailbox), nil
	case KindImport:
		return new(Import), nil
	}
	return nil, fmt.Errorf("%w: unknown operation kind %d", ErrInvalidOp, k)
}

func (k OpKind) String() string {
	names := [...]string{"", "create-user", "delete-user", "create-mailbox", "delete-mailbox",
		"rename-mailbox", "subscribe", "deliver", "copy", "move", "store-flags", "expunge", "collect",
		"skip-uids", "merged", "import-mailbox", "import"}
	if int(k) < len(names) && k != 0 {
		return names[k]
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// OpFormatVersion is the version byte that starts every encoded operation.
// Decoding refuses any other version loudly rather than guessing.
const OpFormatVersion = 1

// EncodeOp encodes op as version byte, kind byte, deterministic CBOR body.
func EncodeOp(op Op) []byte {
	return append([]byte{OpFormatVersion, byte(op.Kind())}, marshal(op)...)
}

// DecodeOp decodes an operation encoded by EncodeOp and checks its fields.
func DecodeOp(b []byte) (Op, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: encoded operation of %d bytes", ErrInvalidOp, len(b))
	}
	if b[0] != OpFormatVersion {
		return nil, fmt.Errorf("%w: operation format version %d, this build reads %d", ErrUnknownVersion, b[0], OpFormatVersion)
	}
	op, err := newOp(OpKind(b[1]))
	if err != nil {
		return nil, err
	}
	if err := decMode.Unmarshal(b[2:], op); err != nil {
		return nil, fmt.Errorf("%w: decode %s: %v", ErrInvalidOp, op.Kind(), err)
	}
	if err := op.check(); err != nil {
		return nil, err
	}
	return op, nil
}

// Field checks. They run on every op before it touches the store.

func checkUserMailbox(user, name string) error {
	if err := ValidUser(user); err != nil {
		return err
	}
	c, err := CanonicalMailbox(name)
	if err != nil {
		return err
	}
	if c != name {
		return fmt.Errorf("%w: mailbox %q is not in canonical form %q", ErrInvalidName, name, c)
	}
	return nil
}

func checkUIDs(uids []uint32) error {
	for i, u := range uids {
		if u == 0 || (i > 0 && u <= uids[i-1]) {
			return fmt.Errorf("%w: UIDs must be non-zero and strictly ascending", ErrInvalidOp)
		}
	}
	return nil
}

func (o *CreateUser) check() error { return ValidUser(o.User) }
func (o *DeleteUser) check() error { return ValidUser(o.User) }
func (o *CreateMailbox) check() error {
	if err := checkUserMailbox(o.User, o.Name); err != nil {
		return err
	}
	return checkSpecialUse(o.SpecialUse)
}
func (o *DeleteMailbox) check() error { return checkUserMailbox(o.User, o.Name) }
func (o *RenameMailbox) check() error {
	if err := checkUserMailbox(o.User, o.From); err != nil {
		return err
	}
	return checkUserMailbox(o.User, o.To)
}
func (o *Subscribe) check() error { return checkUserMailbox(o.User, o.Name) }

func (o *Deliver) check() error {
	if len(o.Targets) == 0 {
		return fmt.Errorf("%w: delivery without targets", ErrInvalidOp)
	}
	if len(o.Retry) > 64 {
		return fmt.Errorf("%w: retry key of %d bytes", ErrInvalidOp, len(o.Retry))
	}
	for _, t := range o.Targets {
		if err := checkUserMailbox(t.User, t.Mailbox); err != nil {
			return err
		}
		if _, err := CanonicalFlags(t.Flags); err != nil {
			return err
		}
	}
	return o.Body.checkFields()
}

// checkFields checks a body's fields against each other: a reference
// carries no content; a full body's manifest covers its size and refers
// only to parts it lists, whose data match their hashes.
func (b *Body) checkFields() error {
	if b.Stored {
		if b.ID.IsZero() || b.Size < 0 || len(b.Manifest.Segments) > 0 || len(b.Parts) > 0 {
			return fmt.Errorf("%w: body reference %s carries content", ErrInvalidOp, b.ID)
		}
		return nil
	}
	if b.ID.IsZero() || b.Size < 0 || b.Manifest.Size() != b.Size {
		return fmt.Errorf("%w: body %s: size %d, manifest covers %d", ErrInvalidOp, b.ID, b.Size, b.Manifest.Size())
	}
	have := make(map[BlobID]bool, len(b.Parts))
	for _, p := range b.Parts {
		if p.Data != nil && HashBlob(p.Data) != p.ID {
			return fmt.Errorf("%w: part %s: data does not match its hash", ErrCorrupt, p.ID)
		}
		have[p.ID] = true
	}
	for _, id := range b.Manifest.Refs() {
		if !have[id] {
			return fmt.Errorf("%w: body %s: manifest refers to part %s that the delivery does not list", ErrInvalidOp, b.ID, id)
		}
	}
	return nil
}

func (o *Copy) check() error {
	if err := checkUserMailbox(o.User, o.From); err != nil {
		return err
	}
	if err := checkUserMailbox(o.User, o.To); err != nil {
		return err
	}
	return checkUIDs(o.UIDs)
}
func (o *Move) check() error { return (*Copy)(o).check() }
func (o *SkipUIDs) check() error {
	if err := checkUserMailbox(o.User, o.Mailbox); err != nil {
		return err
	}
	if o.Next == 0 {
		return fmt.Errorf("%w: skip to UID 0", ErrInvalidOp)
	}
	return nil
}
func (o *Merged) check() error {
	if o.ID == "" || len(o.ID) > 200 {
		return fmt.Errorf("%w: merged operation ID of %d bytes", ErrInvalidOp, len(o.ID))
	}
	_, err := o.Inner()
	return err
}

func (o *StoreFlags) check() error {
	if err := checkUserMailbox(o.User, o.Mailbox); err != nil {
		return err
	}
	if o.Action < FlagsSet || o.Action > FlagsRemove {
		return fmt.Errorf("%w: flag action %d", ErrInvalidOp, o.Action)
	}
	if _, err := CanonicalFlags(o.Flags); err != nil {
		return err
	}
	return checkUIDs(o.UIDs)
}

func (o *Expunge) check() error {
	if err := checkUserMailbox(o.User, o.Mailbox); err != nil {
		return err
	}
	if o.All && len(o.UIDs) > 0 {
		return fmt.Errorf("%w: expunge of all messages with a UID list", ErrInvalidOp)
	}
	return checkUIDs(o.UIDs)
}

func (o *Collect) check() error {
	if o.Limit < 0 {
		return fmt.Errorf("%w: collect limit %d", ErrInvalidOp, o.Limit)
	}
	return nil
}

// Special-use attributes (RFC 6154).
var specialUses = map[string]bool{
	`\All`: true, `\Archive`: true, `\Drafts`: true, `\Flagged`: true,
	`\Junk`: true, `\Sent`: true, `\Trash`: true,
}

func checkSpecialUse(uses []string) error {
	for _, u := range uses {
		if !specialUses[u] {
			return fmt.Errorf("%w: unknown special-use attribute %q", ErrInvalidOp, u)
		}
	}
	return nil
}

// Now returns the current time as an Entry timestamp.
func Now() int64 { return time.Now().UnixNano() }
