package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"

	"github.com/cockroachdb/pebble/v2"
)

// Sum is a SHA-256 digest of logical state.
type Sum [32]byte

func (s Sum) String() string { return hex.EncodeToString(s[:]) }

// MarshalText writes a Sum as hex (JSON, /digest).
func (s Sum) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a Sum written by MarshalText.
func (s *Sum) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(s) {
		return fmt.Errorf("store: digest sum: %d hex digits, want %d", len(b), 2*len(s))
	}
	_, err := hex.Decode(s[:], b)
	return err
}

// Digest summarises the logical state at one applied sequence. Two stores
// that applied the same entries have equal digests; the per-mailbox sums
// point at the first mailbox that differs when they do not.
type Digest struct {
	Applied   uint64
	Store     Sum // every key and value of the store
	Mailboxes []MailboxSum
}

// MailboxSum is the digest of one mailbox: its record, its messages and the
// bodies they link to (by content address).
type MailboxSum struct {
	User, Name string
	Sum        Sum
}

// Digest computes the store's digest from one consistent snapshot.
func (s *Store) Digest() (Digest, error) {
	db, done, err := s.reader()
	if err != nil {
		return Digest{}, err
	}
	defer done()
	snap := db.NewSnapshot()
	defer snap.Close()
	return digestOf(snap)
}

func digestOf(snap *pebble.Snapshot) (Digest, error) {
	var d Digest
	raw, closer, err := snap.Get(keyApplied)
	if err == nil {
		d.Applied = u64(raw)
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return d, err
	}
	all := sha256.New()
	// Everything but what one node keeps for itself: undo records of
	// tentative entries, and the firm position.
	if err := hashRange(snap, all, nil, keyFirm, nil); err != nil {
		return d, err
	}
	if err := hashRange(snap, all, prefixEnd(keyFirm), []byte{pUndo}, nil); err != nil {
		return d, err
	}
	if err := hashRange(snap, all, []byte{pUndo + 1}, nil, nil); err != nil {
		return d, err
	}
	copy(d.Store[:], all.Sum(nil))

	// Per mailbox.
	var boxes []struct {
		user, name string
		rec        []byte
	}
	err = hashRange(snap, nil, []byte{pMbox}, []byte{pMbox + 1}, func(k, v []byte) error {
		user, name, ok := splitMboxKey(k)
		if !ok {
			return fmt.Errorf("%w: mailbox key %q", ErrCorrupt, k)
		}
		boxes = append(boxes, struct {
			user, name string
			rec        []byte
		}{user, name, append([]byte(nil), v...)})
		return nil
	})
	if err != nil {
		return d, err
	}
	for _, b := range boxes {
		var m mailboxRec
		if err := unmarshal(b.rec, &m); err != nil {
			return d, err
		}
		h := sha256.New()
		writeLP(h, b.rec)
		p := msgPrefix(m.ID)
		if err := hashRange(snap, h, p, prefixEnd(p), nil); err != nil {
			return d, err
		}
		var sum Sum
		copy(sum[:], h.Sum(nil))
		d.Mailboxes = append(d.Mailboxes, MailboxSum{User: b.user, Name: b.name, Sum: sum})
	}
	return d, nil
}

// hashRange feeds every key and value in [lo, hi) to h (when not nil),
// length-prefixed, and calls each (when not nil) with them.
func hashRange(r pebble.Reader, h hash.Hash, lo, hi []byte, each func(k, v []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if h != nil {
			writeLP(h, it.Key())
			writeLP(h, v)
		}
		if each != nil {
			if err := each(it.Key(), v); err != nil {
				return err
			}
		}
	}
	return it.Error()
}

func writeLP(h hash.Hash, b []byte) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
	h.Write(b)
}

func splitMboxKey(k []byte) (user, name string, ok bool) {
	if len(k) < 2 || k[0] != pMbox {
		return "", "", false
	}
	for i := 1; i < len(k); i++ {
		if k[i] == 0 {
			return string(k[1:i]), string(k[i+1:]), true
		}
	}
	return "", "", false
}
