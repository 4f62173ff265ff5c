package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Tentative entries.
//
// An entry applied before the other node of a pair holds it (a node
// acknowledging alone after fencing its peer, or any entry in async mode)
// may have to be taken back: if that node's log turns out to have diverged
// from the new active's, its store must return to the last position the
// two logs share before it follows the new active. ApplyTentative keeps,
// for each entry, what the entry overwrote (an undo record, in the same
// Pebble batch), and whether it was acknowledged to a client; Rollback
// restores the store to an earlier position from those records, in place,
// without copying the whole store from the peer; Confirm forgets them once
// the peer holds the entries.
//
// The store keeps a firm position: every entry at or below it was applied
// firmly (Apply, ApplyLogged, ApplyNext) or confirmed. Rollback cannot go
// below it.

// ErrNotTentative: a rollback would undo an entry that was applied firmly.
var ErrNotTentative = errors.New("store: entry was not applied tentatively; it cannot be undone")

// undoRec is an entry's undo record: what it overwrote, in the order it
// wrote, and whether a client was told it was done.
type undoRec struct {
	Acked  bool        `cbor:"1,keyasint,omitempty"`
	Writes []undoWrite `cbor:"2,keyasint,omitempty"`
}

// undoWrite is one key's value before the entry wrote it.
type undoWrite struct {
	Key     []byte `cbor:"1,keyasint"`
	Prior   []byte `cbor:"2,keyasint,omitempty"`
	Existed bool   `cbor:"3,keyasint,omitempty"`
}

// Undo records live under pUndo, by sequence; keyFirm holds the firm
// position. Neither is part of the replicated state (Digest skips them).
const pUndo = 'r' // r seq(8) -> undoRec

var keyFirm = []byte{pSys, 'F'}

func undoKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pUndo}, seq)
}

// undoLog collects an entry's undo record while it applies.
type undoLog struct {
	writes []undoWrite
	seen   map[string]bool
}

// txBatch is the batch an entry writes through: with an undoLog, the first
// write of each key records the key's value before it.
type txBatch struct {
	*pebble.Batch
	undo *undoLog
}

func (b txBatch) capture(k []byte) error {
	u := b.undo
	if u == nil {
		return nil
	}
	if u.seen == nil {
		u.seen = map[string]bool{}
	}
	if u.seen[string(k)] {
		return nil
	}
	u.seen[string(k)] = true
	w := undoWrite{Key: bytes.Clone(k)}
	v, closer, err := b.Batch.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return err
	default:
		w.Prior, w.Existed = bytes.Clone(v), true
		closer.Close()
	}
	u.writes = append(u.writes, w)
	return nil
}

// Set sets k, recording its value before when the entry is tentative.
func (b txBatch) Set(k, v []byte, o *pebble.WriteOptions) error {
	if err := b.capture(k); err != nil {
		return err
	}
	return b.Batch.Set(k, v, o)
}

// Delete deletes k, recording its value before when the entry is
// tentative.
func (b txBatch) Delete(k []byte, o *pebble.WriteOptions) error {
	if err := b.capture(k); err != nil {
		return err
	}
	return b.Batch.Delete(k, o)
}

// ApplyTentative applies entries as ApplyLogged does, keeping an undo
// record of each so that Rollback can take them back; acked[i] records
// whether entry i is acknowledged to a client (what a merge after a split
// brain re-applies on the other node).
//
// The entries are durable in the log already, but that an entry was
// acknowledged is known only here: when any is, the batch is fsynced
// before ApplyTentative returns (and so before the client is told). A
// batch left to the next fsync would lose its acknowledged marks in a
// crash, and the merge after the restart would then drop acknowledged
// mail as never acknowledged (seen: async mode, kill -9 of the active).
func (s *Store) ApplyTentative(ctx context.Context, entries []Entry, acked []bool) ([]Result, error) {
	return s.apply(ctx, entries, applyMode{tentative: true, acked: acked, sync: slices.Contains(acked, true)})
}

// Firm returns the firm position: entries up to it cannot be rolled back.
func (s *Store) Firm() (uint64, error) {
	v, err := s.get(keyFirm)
	if errors.Is(err, pebble.ErrNotFound) {
		// A store from before undo records: all of it is firm.
		return s.AppliedSeq(), nil
	}
	if err != nil {
		return 0, err
	}
	return u64(v), nil
}

// Confirm makes the entries up to seq firm (the peer holds them) and
// forgets their undo records.
func (s *Store) Confirm(ctx context.Context, seq uint64) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	firm, err := s.Firm()
	if err != nil {
		return err
	}
	seq = min(seq, s.applied)
	if seq <= firm {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(undoKey(0), undoKey(seq+1), nil); err != nil {
		return err
	}
	if err := b.Set(keyFirm, putU64(seq), nil); err != nil {
		return err
	}
	return s.db.Apply(b, pebble.NoSync)
}

// Tentative describes one entry applied tentatively.
type Tentative struct {
	Seq   uint64
	Acked bool
}

// TentativeEntries lists the entries above the firm position, in order.
func (s *Store) TentativeEntries() ([]Tentative, error) {
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{pUndo}, UpperBound: []byte{pUndo + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Tentative
	for ok := it.First(); ok; ok = it.Next() {
		var u undoRec
		if err := unmarshal(it.Value(), &u); err != nil {
			return nil, err
		}
		out = append(out, Tentative{Seq: binary.BigEndian.Uint64(it.Key()[1:]), Acked: u.Acked})
	}
	return out, it.Error()
}

// Rollback takes the store back to position to: every entry above it is
// undone, newest first, from its undo record, and the applied position
// becomes to, in one fsynced batch. It fails, changing nothing, when an
// entry above to was applied firmly (ErrNotTentative).
func (s *Store) Rollback(ctx context.Context, to uint64) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if to >= s.applied {
		return nil
	}
	firm, err := s.Firm()
	if err != nil {
		return err
	}
	if to < firm {
		return fmt.Errorf("%w: the store is firm up to %d, asked to go back to %d", ErrNotTentative, firm, to)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.undoInto(b, to, s.applied); err != nil {
		return err
	}
	if err := b.Set(keyApplied, putU64(to), nil); err != nil {
		return err
	}
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return fmt.Errorf("store: roll back to %d: %w", to, err)
	}
	s.applied = to
	return nil
}

// undoWriter is what undo records are applied to: a batch to commit, or
// an in-memory overlay (ViewAt).
type undoWriter interface {
	Set(k, v []byte, o *pebble.WriteOptions) error
	Delete(k []byte, o *pebble.WriteOptions) error
}

// undoInto writes into b what takes the store from applied back to to:
// the undo records of the entries above to, newest first, and their
// deletion.
func (s *Store) undoInto(b undoWriter, to, applied uint64) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: undoKey(to + 1), UpperBound: undoKey(applied + 1)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.Last(); ok; ok = it.Prev() {
		var u undoRec
		if err := unmarshal(it.Value(), &u); err != nil {
			return err
		}
		for i := len(u.Writes) - 1; i >= 0; i-- {
			w := u.Writes[i]
			var err error
			if w.Existed {
				err = b.Set(w.Key, w.Prior, nil)
			} else {
				err = b.Delete(w.Key, nil)
			}
			if err != nil {
				return err
			}
		}
		if err := b.Delete(bytes.Clone(it.Key()), nil); err != nil {
			return err
		}
	}
	return it.Error()
}

// View is a read-only view of the store as it was at an earlier position
// above the firm one: the undo records applied in memory, nothing
// written. A merge reads the common position and the diverged state side
// by side through it before a rollback. Close releases it.
type View struct {
	b    *pebble.Batch
	done func()
}

// ViewAt returns the store as it was at seq (at or above the firm
// position; the current state when seq is the applied position).
func (s *Store) ViewAt(seq uint64) (*View, error) {
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	s.wmu.Lock()
	applied := s.applied
	firm, err := s.Firm()
	s.wmu.Unlock()
	if err == nil && seq < firm {
		err = fmt.Errorf("%w: the store is firm up to %d, asked for %d", ErrNotTentative, firm, seq)
	}
	if err != nil {
		done()
		return nil, err
	}
	b := db.NewIndexedBatch()
	if seq < applied {
		if err := s.undoInto(b, seq, applied); err != nil {
			b.Close()
			done()
			return nil, err
		}
	}
	return &View{b: b, done: done}, nil
}

// Close releases the view.
func (v *View) Close() {
	v.b.Close()
	v.done()
}

// Users lists the users in byte order.
func (v *View) Users() ([]string, error) {
	it, err := v.b.NewIter(&pebble.IterOptions{LowerBound: []byte{pUser}, UpperBound: []byte{pUser + 1}})
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

// Mailboxes lists a user's mailboxes in name order (none for a user that
// does not exist).
func (v *View) Mailboxes(user string) ([]MailboxInfo, error) {
	p := mboxPrefix(user)
	it, err := v.b.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
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

// Messages returns every message of a mailbox.
func (v *View) Messages(user, name string) ([]Message, error) {
	m, err := getMailbox(v.b, user, name)
	if err != nil {
		return nil, err
	}
	recs, err := scanMessages(v.b, m.ID, nil)
	if err != nil {
		return nil, err
	}
	out := make([]Message, len(recs))
	for i, r := range recs {
		out[i] = r.rec.message(r.uid)
	}
	return out, nil
}

// Body returns the exact bytes of a body held in the view.
func (v *View) Body(id BlobID) ([]byte, error) {
	man, err := readManifest(v.b, id)
	if err != nil {
		return nil, err
	}
	return man.Assemble(func(pid BlobID) ([]byte, error) { return readPart(v.b, pid) })
}
