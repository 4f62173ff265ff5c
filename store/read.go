package store

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// MailboxInfo is a mailbox as IMAP's SELECT, STATUS and LIST report it.
type MailboxInfo struct {
	Name          string
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
	Subscribed    bool
	SpecialUse    []string
	Messages      uint32
	Unseen        uint32
	Deleted       uint32
	Size          int64 // sum of message sizes (STATUS=SIZE)
}

// Message is a message record of a mailbox.
type Message struct {
	UID          uint32
	Body         BlobID
	Prefix       []byte // per-recipient header lines, before the shared body
	Flags        []string
	InternalDate time.Time
	Size         int64
	ModSeq       uint64
}

// Admit checks an operation before it enters the log: its fields, this
// node's limits, and a delivered body against its address. It also encodes
// the body for storage, so that the serial part of applying it is short:
// writers call Admit in their own goroutines, then hand the operation to the
// log. Applying never checks limits, so every node applies the same log the
// same way whatever its configuration. Admit modifies op's internal
// encoding cache; op must not be used concurrently while it runs.
func (s *Store) Admit(op Op) error {
	if err := op.check(); err != nil {
		return err
	}
	if im, ok := op.(*Import); ok {
		for i := range im.Messages {
			if b := &im.Messages[i].Body; b.Size > s.opts.MaxMessageSize {
				return fmt.Errorf("%w: UID %d: %d bytes, the limit is %d", ErrTooLarge, im.Messages[i].UID, b.Size, s.opts.MaxMessageSize)
			}
		}
		return checkBodies(op)
	}
	d, ok := op.(*Deliver)
	if !ok {
		return nil
	}
	if d.Body.Size > s.opts.MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, d.Body.Size, s.opts.MaxMessageSize)
	}
	for _, t := range d.Targets {
		if n := len(t.Prefix); n > MaxPrefixSize {
			return fmt.Errorf("%w: per-recipient lines of %d bytes, the limit is %d", ErrTooLarge, n, MaxPrefixSize)
		}
	}
	return d.Body.checkContent()
}

// MaxMessageSize is the configured limit on a message.
func (s *Store) MaxMessageSize() int64 { return s.opts.MaxMessageSize }

// Users lists the users in byte order.
func (s *Store) Users() ([]string, error) {
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{pUser}, UpperBound: []byte{pUser + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var users []string
	for ok := it.First(); ok; ok = it.Next() {
		users = append(users, string(it.Key()[1:]))
	}
	return users, it.Error()
}

// HasUser reports whether user exists.
func (s *Store) HasUser(user string) (bool, error) {
	db, done, err := s.reader()
	if err != nil {
		return false, err
	}
	defer done()
	_, closer, err := db.Get(userKey(user))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// Mailboxes lists a user's mailboxes in name order.
func (s *Store) Mailboxes(user string) ([]MailboxInfo, error) {
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	if err := needUser(db, user); err != nil {
		return nil, err
	}
	p := mboxPrefix(user)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []MailboxInfo
	for ok := it.First(); ok; ok = it.Next() {
		var m mailboxRec
		if err := unmarshal(it.Value(), &m); err != nil {
			return nil, err
		}
		out = append(out, m.info(string(it.Key()[len(p):])))
	}
	return out, it.Error()
}

func (m *mailboxRec) info(name string) MailboxInfo {
	return MailboxInfo{
		Name: name, UIDValidity: m.UIDValidity, UIDNext: m.UIDNext,
		HighestModSeq: m.HighestModSeq, Subscribed: m.Subscribed, SpecialUse: m.SpecialUse,
		Messages: m.Messages, Unseen: m.Unseen, Deleted: m.Deleted, Size: m.Size,
	}
}

func needUser(db *pebble.DB, user string) error {
	_, closer, err := db.Get(userKey(user))
	if errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("%w: %q", ErrNoUser, user)
	}
	if err != nil {
		return err
	}
	return closer.Close()
}

func getMailbox(db pebble.Reader, user, name string) (mailboxRec, error) {
	var m mailboxRec
	v, closer, err := db.Get(mboxKey(user, name))
	if errors.Is(err, pebble.ErrNotFound) {
		if _, c2, uerr := db.Get(userKey(user)); errors.Is(uerr, pebble.ErrNotFound) {
			return m, fmt.Errorf("%w: %q", ErrNoUser, user)
		} else if uerr == nil {
			c2.Close()
		}
		return m, fmt.Errorf("%w: %q of user %q", ErrNoMailbox, name, user)
	}
	if err != nil {
		return m, err
	}
	defer closer.Close()
	return m, unmarshal(v, &m)
}

// Mailbox returns one mailbox. The name is canonicalised first.
func (s *Store) Mailbox(user, name string) (MailboxInfo, error) {
	name, err := CanonicalMailbox(name)
	if err != nil {
		return MailboxInfo{}, err
	}
	db, done, err := s.reader()
	if err != nil {
		return MailboxInfo{}, err
	}
	defer done()
	m, err := getMailbox(db, user, name)
	if err != nil {
		return MailboxInfo{}, err
	}
	return m.info(name), nil
}

// UIDList is the ascending UIDs of a mailbox; the message with sequence
// number n has UID l[n-1].
type UIDList []uint32

// SeqNum returns the sequence number of uid, or 0 if it is not in the list.
func (l UIDList) SeqNum(uid uint32) uint32 {
	i := sort.Search(len(l), func(i int) bool { return l[i] >= uid })
	if i < len(l) && l[i] == uid {
		return uint32(i + 1)
	}
	return 0
}

// UID returns the UID at sequence number seq (1-based), or 0.
func (l UIDList) UID(seq uint32) uint32 {
	if seq == 0 || int(seq) > len(l) {
		return 0
	}
	return l[seq-1]
}

// UIDs returns the UIDs of a mailbox in ascending order.
func (s *Store) UIDs(user, name string) (UIDList, error) {
	name, err := CanonicalMailbox(name)
	if err != nil {
		return nil, err
	}
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	snap := db.NewSnapshot()
	defer snap.Close()
	m, err := getMailbox(snap, user, name)
	if err != nil {
		return nil, err
	}
	p := msgPrefix(m.ID)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	uids := make(UIDList, 0, m.Messages)
	for ok := it.First(); ok; ok = it.Next() {
		uids = append(uids, uidOfMsgKey(it.Key()))
	}
	return uids, it.Error()
}

// UIDsAfter returns a mailbox's info and its UIDs above after, ascending,
// read from one snapshot: what an IMAP view that knows the UIDs up to
// after needs to learn of new messages without listing the rest (the
// count in the info tells whether any it knew were expunged).
func (s *Store) UIDsAfter(user, name string, after uint32) (MailboxInfo, UIDList, error) {
	name, err := CanonicalMailbox(name)
	if err != nil {
		return MailboxInfo{}, nil, err
	}
	db, done, err := s.reader()
	if err != nil {
		return MailboxInfo{}, nil, err
	}
	defer done()
	snap := db.NewSnapshot()
	defer snap.Close()
	m, err := getMailbox(snap, user, name)
	if err != nil {
		return MailboxInfo{}, nil, err
	}
	if after == math.MaxUint32 {
		return m.info(name), nil, nil
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: msgKey(m.ID, after+1), UpperBound: prefixEnd(msgPrefix(m.ID))})
	if err != nil {
		return MailboxInfo{}, nil, err
	}
	defer it.Close()
	var uids UIDList
	for ok := it.First(); ok; ok = it.Next() {
		uids = append(uids, uidOfMsgKey(it.Key()))
	}
	return m.info(name), uids, it.Error()
}

// Messages returns the messages of a mailbox with the given UIDs (ascending;
// absent ones are skipped), or all messages when uids is nil.
func (s *Store) Messages(user, name string, uids []uint32) ([]Message, error) {
	name, err := CanonicalMailbox(name)
	if err != nil {
		return nil, err
	}
	if err := checkUIDs(uids); err != nil {
		return nil, err
	}
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	snap := db.NewSnapshot()
	defer snap.Close()
	m, err := getMailbox(snap, user, name)
	if err != nil {
		return nil, err
	}
	recs, err := scanMessages(snap, m.ID, uids)
	if err != nil {
		return nil, err
	}
	out := make([]Message, len(recs))
	for i, r := range recs {
		out[i] = r.rec.message(r.uid)
	}
	return out, nil
}

func (r *msgRec) message(uid uint32) Message {
	return Message{
		UID: uid, Body: r.Body, Prefix: r.Prefix, Flags: r.Flags,
		InternalDate: time.Unix(0, r.Date), Size: r.Size, ModSeq: r.ModSeq,
	}
}

// Message returns one message.
func (s *Store) Message(user, name string, uid uint32) (Message, error) {
	msgs, err := s.Messages(user, name, []uint32{uid})
	if err != nil {
		return Message{}, err
	}
	if len(msgs) == 0 {
		return Message{}, fmt.Errorf("%w: UID %d in %q of user %q", ErrNoMessage, uid, name, user)
	}
	return msgs[0], nil
}

// Meta returns the metadata parsed from a body at delivery.
func (s *Store) Meta(id BlobID) (*Meta, error) {
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	v, closer, err := db.Get(metaKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("%w: metadata of body %s", ErrMissingBlob, id)
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	var m Meta
	if err := unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("metadata of body %s: %w", id, err)
	}
	return &m, nil
}

// Body returns the exact bytes of a stored message body.
func (s *Store) Body(id BlobID) ([]byte, error) {
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	snap := db.NewSnapshot()
	defer snap.Close()
	man, err := readManifest(snap, id)
	if err != nil {
		return nil, err
	}
	return man.Assemble(func(pid BlobID) ([]byte, error) { return readPart(snap, pid) })
}

// Literal returns a message as IMAP's BODY[] gives it: the per-recipient
// prefix followed by the shared body.
func (s *Store) Literal(m Message) ([]byte, error) {
	body, err := s.Body(m.Body)
	if err != nil {
		return nil, err
	}
	if len(m.Prefix) == 0 {
		return body, nil
	}
	return append(append(make([]byte, 0, len(m.Prefix)+len(body)), m.Prefix...), body...), nil
}

func readValue(r pebble.Reader, k []byte, what string, id BlobID) ([]byte, error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s %s", ErrMissingBlob, what, id)
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

func readPart(r pebble.Reader, id BlobID) ([]byte, error) {
	return readValue(r, partDataKey(id), "part", id)
}

func readManifest(r pebble.Reader, id BlobID) (Manifest, error) {
	var man Manifest
	raw, err := readValue(r, dataKey(id), "body", id)
	if err != nil {
		return man, err
	}
	if err := unmarshal(raw, &man); err != nil {
		return man, fmt.Errorf("manifest of body %s: %w", id, err)
	}
	return man, nil
}

// HasBody reports whether a message body is stored (replication need not
// send it again).
func (s *Store) HasBody(id BlobID) (bool, error) { return s.has(blobKey(id)) }

// HasPart reports whether a part blob is stored.
func (s *Store) HasPart(id BlobID) (bool, error) { return s.has(partKey(id)) }

func (s *Store) has(k []byte) (bool, error) {
	db, done, err := s.reader()
	if err != nil {
		return false, err
	}
	defer done()
	_, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}
