package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Result tells what applying one entry did. Which fields are set depends on
// the operation.
type Result struct {
	Seq uint64
	// Err is set when the operation was refused (a missing mailbox, say);
	// nothing of it was applied, but its sequence is consumed.
	Err error
	// Skipped is set when the entry's sequence was already applied.
	Skipped bool

	// Deliver: where each target landed, in target order.
	Placed []Placement
	// Copy and Move: UIDVALIDITY of the destination, and the UIDs copied
	// with the UIDs they got there (COPYUID).
	UIDValidity uint32
	SrcUIDs     []uint32
	DstUIDs     []uint32
	// Expunge and Move: UIDs removed from the (source) mailbox.
	Expunged []uint32
	// StoreFlags: UIDs whose flags changed, the modseq they got, and UIDs
	// left alone because of UnchangedSince.
	Changed  []uint32
	ModSeq   uint64
	Modified []uint32
	// Collect: blobs deleted and the bytes they held.
	Collected int
	Freed     int64
	// Merged: the operation's ID was applied before; nothing changed.
	Duplicate bool
	// Import: the UIDs placed, those already present (an import that
	// runs again), and those below the mailbox's UIDNEXT but absent
	// (expunged since an earlier run): the last two are not imported.
	Imported, Present, Gone []uint32
}

// Placement is where a delivered message landed.
type Placement struct {
	UIDValidity uint32
	UID         uint32
}

// Apply applies entries in order in one Pebble batch, and records the last
// sequence as applied in the same batch. Each entry is atomic: one that fails
// leaves nothing behind, and the others still apply. Apply returns once the
// batch is fsynced. The returned error reports a storage failure, in which
// case nothing was applied.
//
// Entries are applied one Apply call at a time, but the fsync wait happens
// outside that critical section: while one call waits for its fsync the next
// applies its batch, and Pebble's WAL writer covers every batch waiting with
// one fsync. So concurrent writers share fsyncs (group commit) while each
// still returns only when its own entries are durable; later batches are
// never durable before earlier ones (the WAL is sequential).
func (s *Store) Apply(ctx context.Context, entries ...Entry) ([]Result, error) {
	return s.apply(ctx, entries, applyMode{sync: true})
}

// ApplyLogged applies entries as Apply does but returns without waiting
// for the store's own fsync: for entries already durable in a log that is
// replayed from AppliedSeq after a crash (the replication log). A crash
// can leave the store behind that log, never ahead of it, and never with a
// part of an entry; replaying the log's tail brings it back. The durability
// of an acknowledgement is the log's.
func (s *Store) ApplyLogged(ctx context.Context, entries ...Entry) ([]Result, error) {
	return s.apply(ctx, entries, applyMode{})
}

// ApplyNext applies ops at the next free sequences: the write path of a
// standalone node, where the store's own sequence is the log.
func (s *Store) ApplyNext(ctx context.Context, now int64, ops ...Op) ([]Result, error) {
	entries := make([]Entry, len(ops))
	for i, op := range ops {
		entries[i] = Entry{Time: now, Op: op}
	}
	return s.apply(ctx, entries, applyMode{assign: true, sync: true})
}

// applyMode says how apply applies a batch of entries.
type applyMode struct {
	// assign numbers the entries from the next free sequence, inside the
	// critical section that applies them (a standalone node).
	assign bool
	// sync waits for the store's own fsync.
	sync bool
	// tentative keeps an undo record of each entry (ApplyTentative), with
	// acked[i] saying whether entry i was acknowledged to a client.
	tentative bool
	acked     []bool
}

// apply applies entries as m says. When their fsync fails it closes the
// database at once (heal): the batch was visible, and must not be seen
// while the store cannot tell whether it is on the disk (issue 14 D3).
func (s *Store) apply(ctx context.Context, entries []Entry, m applyMode) ([]Result, error) {
	res, err := s.applyOnce(ctx, entries, m)
	if errors.Is(err, errSyncFailed) {
		s.healNow()
	}
	return res, err
}

// applyOnce is apply, once.
func (s *Store) applyOnce(ctx context.Context, entries []Entry, m applyMode) ([]Result, error) {
	assign := m.assign
	if s.opts.ReadOnly {
		return nil, fmt.Errorf("store: apply: opened read-only")
	}
	if err := s.healIfBroken(); err != nil {
		return nil, err
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The checks that need no state (field syntax, hashing a delivered
	// body) run here, outside the lock, in the caller's goroutine.
	checks := make([]error, len(entries))
	for i, e := range entries {
		checks[i] = checkEntry(e)
	}
	s.wmu.Lock()
	if s.broken != nil {
		s.wmu.Unlock()
		return nil, s.broken
	}
	if assign {
		for i := range entries {
			entries[i].Seq = s.applied + uint64(i) + 1
		}
	}
	results, b, err := s.applyLocked(entries, checks, m)
	s.wmu.Unlock()
	if err != nil || b == nil {
		return results, err
	}
	defer b.Close()
	if err := b.SyncWait(); err != nil {
		// The batch is visible but may not be durable: this store can no
		// longer tell what it holds. Refuse writes until heal opens the
		// database again (it keeps what reached the disk).
		err = fmt.Errorf("%w of entries up to %d: %w", errSyncFailed, results[len(results)-1].Seq, err)
		s.wmu.Lock()
		s.broke(err, results[0].Seq)
		s.wmu.Unlock()
		return nil, err
	}
	return results, nil
}

// skipUIDs raises a mailbox's next UID to op.Next, or renumbers it under a
// new UIDVALIDITY when op.Next is beyond the UID space. It returns the
// mailbox's UIDVALIDITY afterwards.
func (t *txn) skipUIDs(op *SkipUIDs) (uint32, error) {
	m, err := t.mailbox(op.User, op.Mailbox)
	if err != nil {
		return 0, err
	}
	if op.Next <= uint64(m.UIDNext) {
		return m.UIDValidity, nil
	}
	if op.Next < math.MaxUint32 {
		m.UIDNext = uint32(op.Next)
		return m.UIDValidity, t.put(mboxKey(op.User, op.Mailbox), m)
	}
	// No room: a new UIDVALIDITY, and the messages numbered from 1.
	fresh, err := t.newMailbox(op.User, m.UIDValidity+1)
	if err != nil {
		return 0, err
	}
	msgs, err := t.messages(m.ID, nil)
	if err != nil {
		return 0, err
	}
	for i, mm := range msgs {
		if err := t.del(msgKey(m.ID, mm.uid)); err != nil {
			return 0, err
		}
		if err := t.put(msgKey(m.ID, uint32(i+1)), mm.rec); err != nil {
			return 0, err
		}
	}
	m.UIDValidity, m.UIDNext = fresh.UIDValidity, uint32(len(msgs))+1
	return m.UIDValidity, t.put(mboxKey(op.User, op.Mailbox), m)
}

// merged applies op's inner operation unless op.ID was applied before.
func (t *txn) merged(op *Merged, res *Result) error {
	k := mergedKey(op.ID)
	if _, ok, err := t.getRaw(k); err != nil || ok {
		res.Duplicate = ok
		return err
	}
	inner, err := op.Inner()
	if err != nil {
		return err
	}
	if err := t.applyOp(inner, res); err != nil {
		return err
	}
	return t.b.Set(k, putU64(uint64(t.now)), nil)
}

// applyLocked builds the batch of entries and hands it to Pebble without
// waiting for its fsync; the caller must SyncWait and Close the returned
// batch (nil when nothing was written).
func (s *Store) applyLocked(entries []Entry, checks []error, m applyMode) ([]Result, *pebble.Batch, error) {
	sync := m.sync
	results := make([]Result, len(entries))
	b := s.db.NewIndexedBatch()
	applied := s.applied
	// one applies entry i into b, with its undo record when tentative.
	one := func(b *pebble.Batch, i int) (Result, error) {
		if !m.tentative {
			return s.applyOne(b, entries[i], nil)
		}
		u := &undoLog{}
		res, err := s.applyOne(b, entries[i], u)
		if err != nil {
			return res, err
		}
		rec := undoRec{Acked: i < len(m.acked) && m.acked[i], Writes: u.writes}
		return res, b.Set(undoKey(entries[i].Seq), marshal(rec), nil)
	}
	// refusedUndo keeps an empty undo record for an entry refused (its
	// sequence is consumed, nothing else changed), so that every
	// tentative sequence has one.
	refusedUndo := func(b *pebble.Batch, i int) error {
		if !m.tentative {
			return nil
		}
		return b.Set(undoKey(entries[i].Seq), marshal(undoRec{}), nil)
	}
	var done []int // entries applied into b, to rebuild b after a failure
	for i, e := range entries {
		results[i].Seq = e.Seq
		if e.Seq <= applied {
			results[i].Skipped = true
			continue
		}
		applied = e.Seq
		if err := checks[i]; err != nil {
			results[i] = Result{Seq: e.Seq, Err: err} // nothing of it reached b
			if err := refusedUndo(b, i); err != nil {
				b.Close()
				return nil, nil, err
			}
			done = append(done, -i-1)
			continue
		}
		res, err := one(b, i)
		if err == nil {
			results[i] = res
			done = append(done, i)
			continue
		}
		results[i] = Result{Seq: e.Seq, Err: err}
		// Pebble batches cannot roll back: rebuild this one from the
		// entries that succeeded. Refusals are rare; operations are
		// deterministic, so they give the same results again.
		b.Close()
		b = s.db.NewIndexedBatch()
		for _, j := range done {
			if j < 0 {
				if err := refusedUndo(b, -j-1); err != nil {
					b.Close()
					return nil, nil, err
				}
				continue
			}
			if _, err := one(b, j); err != nil {
				b.Close()
				return nil, nil, fmt.Errorf("store: re-apply entry %d: %w", entries[j].Seq, err)
			}
		}
		if err := refusedUndo(b, i); err != nil {
			b.Close()
			return nil, nil, err
		}
		done = append(done, -i-1)
	}
	if applied == s.applied {
		b.Close()
		return results, nil, nil
	}
	if err := b.Set(keyApplied, putU64(applied), nil); err != nil {
		b.Close()
		return nil, nil, err
	}
	if !m.tentative {
		// Every entry up to here is firm: nothing below can be undone.
		if err := b.Set(keyFirm, putU64(applied), nil); err != nil {
			b.Close()
			return nil, nil, err
		}
	}
	if !sync {
		err := s.db.Apply(b, pebble.NoSync)
		b.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("store: commit entries up to %d: %w", applied, err)
		}
		s.applied = applied
		return results, nil, nil
	}
	// ApplyNoSyncWait makes the batch visible at once and lets the caller
	// wait for the fsync outside wmu (see Apply).
	if err := s.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("store: commit entries up to %d: %w", applied, err)
	}
	s.applied = applied
	return results, b, nil
}

// checkEntry checks what an entry says about itself, before it meets the
// store's state: field syntax, and a delivered body against its address.
func checkEntry(e Entry) error {
	if e.Op == nil {
		return fmt.Errorf("%w: entry without an operation", ErrInvalidOp)
	}
	if err := e.Op.check(); err != nil {
		return fmt.Errorf("%s: %w", e.Op.Kind(), err)
	}
	if err := checkBodies(e.Op); err != nil {
		return fmt.Errorf("%s: %w", e.Op.Kind(), err)
	}
	return nil
}

// applyOne applies one entry, already checked by checkEntry, into b; on
// error b may hold part of it.
func (s *Store) applyOne(b *pebble.Batch, e Entry, undo *undoLog) (Result, error) {
	t := &txn{b: txBatch{Batch: b, undo: undo}, now: e.Time}
	res := Result{Seq: e.Seq}
	if err := t.applyOp(e.Op, &res); err != nil {
		return Result{}, fmt.Errorf("%s: %w", e.Op.Kind(), err)
	}
	return res, nil
}

// applyOp applies one operation within an entry.
func (t *txn) applyOp(op Op, res *Result) error {
	var err error
	switch op := op.(type) {
	case *CreateUser:
		err = t.createUser(op)
	case *DeleteUser:
		err = t.deleteUser(op)
	case *CreateMailbox:
		err = t.createMailbox(op.User, op.Name, op.UIDValidity, op.SpecialUse, op.Subscribe)
	case *DeleteMailbox:
		err = t.deleteMailbox(op)
	case *RenameMailbox:
		err = t.renameMailbox(op)
	case *Subscribe:
		err = t.subscribe(op)
	case *Deliver:
		res.Placed, res.Duplicate, err = t.deliverOnce(op)
	case *Copy:
		err = t.copyMessages(op, false, res)
	case *Move:
		err = t.copyMessages((*Copy)(op), true, res)
	case *StoreFlags:
		err = t.storeFlags(op, res)
	case *Expunge:
		res.Expunged, err = t.expunge(op)
	case *Collect:
		res.Collected, res.Freed, err = t.collect(op)
	case *SkipUIDs:
		res.UIDValidity, err = t.skipUIDs(op)
	case *Merged:
		err = t.merged(op, res)
	case *ImportMailbox:
		res.UIDValidity, err = t.importMailbox(op)
	case *Import:
		err = t.importMessages(op, res)
	default:
		err = fmt.Errorf("%w: %T", ErrInvalidOp, op)
	}
	return err
}

// txn is one entry being applied: reads see the batch (earlier entries and
// this one's own writes) over the database.
type txn struct {
	b   txBatch
	now int64
}

func (t *txn) getRaw(k []byte) ([]byte, bool, error) {
	v, closer, err := t.b.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

func (t *txn) getRec(k []byte, v any) (bool, error) {
	raw, ok, err := t.getRaw(k)
	if !ok || err != nil {
		return ok, err
	}
	return true, unmarshal(raw, v)
}

func (t *txn) put(k []byte, v any) error { return t.b.Set(k, marshal(v), nil) }
func (t *txn) del(k []byte) error        { return t.b.Delete(k, nil) }

func (t *txn) user(user string) (userRec, error) {
	var u userRec
	ok, err := t.getRec(userKey(user), &u)
	if err == nil && !ok {
		err = fmt.Errorf("%w: %q", ErrNoUser, user)
	}
	return u, err
}

func (t *txn) mailbox(user, name string) (mailboxRec, error) {
	var m mailboxRec
	ok, err := t.getRec(mboxKey(user, name), &m)
	if err == nil && !ok {
		// Say which is missing: the user or only the mailbox.
		if _, err := t.user(user); err != nil {
			return m, err
		}
		err = fmt.Errorf("%w: %q of user %q", ErrNoMailbox, name, user)
	}
	return m, err
}

// newMailbox makes the record of a new mailbox: the next global mailbox ID
// and a UIDVALIDITY above every one the user had.
func (t *txn) newMailbox(user string, uidValidity uint32) (mailboxRec, error) {
	u, err := t.user(user)
	if err != nil {
		return mailboxRec{}, err
	}
	if uidValidity <= u.LastUIDValidity {
		if u.LastUIDValidity == math.MaxUint32 {
			return mailboxRec{}, fmt.Errorf("%w: user %q has used every UIDVALIDITY", ErrInvalidOp, user)
		}
		uidValidity = u.LastUIDValidity + 1
	}
	u.LastUIDValidity = uidValidity
	if err := t.put(userKey(user), u); err != nil {
		return mailboxRec{}, err
	}
	raw, _, err := t.getRaw(keyNextMbox)
	if err != nil {
		return mailboxRec{}, err
	}
	id := u64(raw) + 1
	if err := t.b.Set(keyNextMbox, putU64(id), nil); err != nil {
		return mailboxRec{}, err
	}
	return mailboxRec{ID: id, UIDValidity: uidValidity, UIDNext: 1, HighestModSeq: 1}, nil
}

func (t *txn) createUser(op *CreateUser) error {
	if _, ok, err := t.getRaw(userKey(op.User)); err != nil || ok {
		if ok {
			err = fmt.Errorf("%w: %q", ErrUserExists, op.User)
		}
		return err
	}
	if err := t.put(userKey(op.User), userRec{}); err != nil {
		return err
	}
	m, err := t.newMailbox(op.User, op.UIDValidity)
	if err != nil {
		return err
	}
	m.Subscribed = true
	return t.put(mboxKey(op.User, Inbox), m)
}

func (t *txn) deleteUser(op *DeleteUser) error {
	if _, err := t.user(op.User); err != nil {
		return err
	}
	names, err := t.mailboxNames(op.User)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := t.removeMailbox(op.User, n); err != nil {
			return err
		}
	}
	return t.del(userKey(op.User))
}

func (t *txn) mailboxNames(user string) ([]string, error) {
	p := mboxPrefix(user)
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var names []string
	for ok := it.First(); ok; ok = it.Next() {
		names = append(names, string(it.Key()[len(p):]))
	}
	return names, it.Error()
}

func (t *txn) createMailbox(user, name string, uidValidity uint32, specialUse []string, subscribe bool) error {
	if _, err := t.user(user); err != nil {
		return err
	}
	if _, ok, err := t.getRaw(mboxKey(user, name)); err != nil || ok {
		if ok {
			err = fmt.Errorf("%w: %q of user %q", ErrMailboxExists, name, user)
		}
		return err
	}
	// Create missing parent levels first (RFC 3501 6.3.3).
	for i := range len(name) {
		if name[i] != Delimiter {
			continue
		}
		parent := name[:i]
		if _, ok, err := t.getRaw(mboxKey(user, parent)); err != nil {
			return err
		} else if !ok {
			if err := t.createMailbox(user, parent, uidValidity, nil, false); err != nil {
				return err
			}
		}
	}
	m, err := t.newMailbox(user, uidValidity)
	if err != nil {
		return err
	}
	m.SpecialUse = slices.Clone(specialUse)
	slices.Sort(m.SpecialUse)
	m.Subscribed = subscribe
	return t.put(mboxKey(user, name), m)
}

func (t *txn) deleteMailbox(op *DeleteMailbox) error {
	if op.Name == Inbox {
		return ErrInboxNotDeleted
	}
	if _, err := t.mailbox(op.User, op.Name); err != nil {
		return err
	}
	return t.removeMailbox(op.User, op.Name)
}

// removeMailbox drops every message of a mailbox and its record.
func (t *txn) removeMailbox(user, name string) error {
	m, err := t.mailbox(user, name)
	if err != nil {
		return err
	}
	msgs, err := t.messages(m.ID, nil)
	if err != nil {
		return err
	}
	for _, mm := range msgs {
		if err := t.del(msgKey(m.ID, mm.uid)); err != nil {
			return err
		}
		if err := t.unlinkBody(mm.rec.Body, 1); err != nil {
			return err
		}
	}
	return t.del(mboxKey(user, name))
}

func (t *txn) renameMailbox(op *RenameMailbox) error {
	from, err := t.mailbox(op.User, op.From)
	if err != nil {
		return err
	}
	if op.From == op.To {
		return fmt.Errorf("%w: %q of user %q", ErrMailboxExists, op.To, op.User)
	}
	if op.From != Inbox && isBelow(op.To, op.From) {
		return fmt.Errorf("%w: cannot rename %q below itself (%q)", ErrInvalidOp, op.From, op.To)
	}
	// Every name that moves, with where it goes.
	moves := [][2]string{{op.From, op.To}}
	if op.From != Inbox {
		names, err := t.mailboxNames(op.User)
		if err != nil {
			return err
		}
		for _, n := range names {
			if isBelow(n, op.From) {
				moves = append(moves, [2]string{n, op.To + n[len(op.From):]})
			}
		}
	}
	for _, mv := range moves {
		if _, ok, err := t.getRaw(mboxKey(op.User, mv[1])); err != nil || ok {
			if ok {
				err = fmt.Errorf("%w: %q of user %q", ErrMailboxExists, mv[1], op.User)
			}
			return err
		}
		if _, err := CanonicalMailbox(mv[1]); err != nil {
			return err
		}
	}
	for _, mv := range moves {
		var m mailboxRec
		if _, err := t.getRec(mboxKey(op.User, mv[0]), &m); err != nil {
			return err
		}
		if err := t.del(mboxKey(op.User, mv[0])); err != nil {
			return err
		}
		if err := t.put(mboxKey(op.User, mv[1]), m); err != nil {
			return err
		}
	}
	// Parents of the new name must exist.
	for i := range len(op.To) {
		if op.To[i] == Delimiter {
			if _, ok, err := t.getRaw(mboxKey(op.User, op.To[:i])); err != nil {
				return err
			} else if !ok {
				if err := t.createMailbox(op.User, op.To[:i], op.UIDValidity, nil, false); err != nil {
					return err
				}
			}
		}
	}
	if op.From == Inbox {
		inbox, err := t.newMailbox(op.User, op.UIDValidity)
		if err != nil {
			return err
		}
		inbox.Subscribed = from.Subscribed
		return t.put(mboxKey(op.User, Inbox), inbox)
	}
	return nil
}

// isBelow reports whether name is an inferior of parent ("a/b" below "a").
func isBelow(name, parent string) bool {
	return len(name) > len(parent) && name[len(parent)] == Delimiter && name[:len(parent)] == parent
}

func (t *txn) subscribe(op *Subscribe) error {
	m, err := t.mailbox(op.User, op.Name)
	if err != nil {
		return err
	}
	m.Subscribed = op.Subscribed
	return t.put(mboxKey(op.User, op.Name), m)
}

// addMessage links a message record into a mailbox record (not yet saved).
func (t *txn) addMessage(m *mailboxRec, rec msgRec) (uint32, error) {
	if m.UIDNext == math.MaxUint32 {
		return 0, fmt.Errorf("%w: mailbox has used every UID", ErrInvalidOp)
	}
	uid := m.UIDNext
	m.UIDNext++
	rec.ModSeq = m.HighestModSeq + 1
	m.HighestModSeq = rec.ModSeq
	m.count(&rec, +1)
	return uid, t.put(msgKey(m.ID, uid), rec)
}

// count adds (sign +1) or removes (sign -1) rec from the mailbox counters.
func (m *mailboxRec) count(rec *msgRec, sign int) {
	d := uint32(1)
	if sign < 0 {
		d = math.MaxUint32 // adding it wraps around: subtracts one
	}
	m.Messages += d
	m.Size += int64(sign) * rec.Size
	if !hasFlag(rec.Flags, FlagSeen) {
		m.Unseen += d
	}
	if hasFlag(rec.Flags, FlagDeleted) {
		m.Deleted += d
	}
}

// retryRec is a delivery recognised for its retries.
type retryRec struct {
	At     int64       `cbor:"1,keyasint"`
	Placed []Placement `cbor:"2,keyasint,omitempty"`
}

// deliverOnce delivers op unless it is the retry of a delivery applied
// within RetryWindow (see Deliver.Retry): then it returns that
// delivery's placements and dup.
func (t *txn) deliverOnce(op *Deliver) (placed []Placement, dup bool, err error) {
	if len(op.Retry) == 0 {
		placed, err = t.deliver(op)
		return placed, false, err
	}
	var r retryRec
	ok, err := t.getRec(retryKey(op.Retry), &r)
	if err != nil {
		return nil, false, err
	}
	if ok && t.now-r.At < int64(RetryWindow) {
		return r.Placed, true, nil
	}
	if ok {
		if err := t.del(retryIndexKey(r.At, op.Retry)); err != nil {
			return nil, false, err
		}
	}
	if placed, err = t.deliver(op); err != nil {
		return nil, false, err
	}
	if err := t.put(retryKey(op.Retry), retryRec{At: t.now, Placed: placed}); err != nil {
		return nil, false, err
	}
	return placed, false, t.b.Set(retryIndexKey(t.now, op.Retry), nil, nil)
}

// forgetRetries drops the retry records older than RetryWindow at t.now
// (Collect), at most limit of them (0: no limit).
func (t *txn) forgetRetries(limit int) error {
	if t.now < int64(RetryWindow) {
		return nil
	}
	hi := retryIndexKey(t.now-int64(RetryWindow), nil)
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: []byte{pRetryIx}, UpperBound: hi})
	if err != nil {
		return err
	}
	var keys [][]byte
	for ok := it.First(); ok && (limit == 0 || len(keys) < limit); ok = it.Next() {
		keys = append(keys, bytes.Clone(it.Key()))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	for _, k := range keys {
		if err := t.del(k); err != nil {
			return err
		}
		if err := t.del(retryKey(k[9:])); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) deliver(op *Deliver) ([]Placement, error) {
	placed := make([]Placement, len(op.Targets))
	for i, tg := range op.Targets {
		m, err := t.mailbox(tg.User, tg.Mailbox)
		if err != nil {
			return nil, err
		}
		flags, _ := CanonicalFlags(tg.Flags) // checked by op.check
		rec := msgRec{
			Body:   op.Body.ID,
			Prefix: tg.Prefix,
			Flags:  flags,
			Date:   op.InternalDate,
			Size:   int64(len(tg.Prefix)) + op.Body.Size,
		}
		uid, err := t.addMessage(&m, rec)
		if err != nil {
			return nil, err
		}
		if err := t.put(mboxKey(tg.User, tg.Mailbox), m); err != nil {
			return nil, err
		}
		placed[i] = Placement{UIDValidity: m.UIDValidity, UID: uid}
	}
	return placed, t.linkBody(&op.Body, int64(len(op.Targets)))
}

// linkBody adds n references to a message body, storing it (and any part
// not yet stored) the first time.
func (t *txn) linkBody(body *Body, n int64) error {
	var br blobRec
	ok, err := t.getRec(blobKey(body.ID), &br)
	if err != nil {
		return err
	}
	if ok {
		return t.addRefs(body.ID, br, n)
	}
	if body.Stored {
		return fmt.Errorf("%w: body %s (sent by reference)", ErrMissingBlob, body.ID)
	}
	data := make(map[BlobID][]byte, len(body.Parts))
	for _, p := range body.Parts {
		data[p.ID] = p.Data
	}
	for _, id := range distinct(body.Manifest.Refs()) {
		var pr blobRec
		ok, err := t.getRec(partKey(id), &pr)
		if err != nil {
			return err
		}
		if ok {
			pr.Refs++
			if err := t.put(partKey(id), pr); err != nil {
				return err
			}
			continue
		}
		d := data[id]
		if d == nil {
			return fmt.Errorf("%w: part %s of body %s", ErrMissingBlob, id, body.ID)
		}
		if err := t.b.Set(partDataKey(id), d, nil); err != nil {
			return err
		}
		if err := t.put(partKey(id), blobRec{Kind: blobPart, Refs: 1, Size: int64(len(d))}); err != nil {
			return err
		}
	}
	if body.encManifest == nil {
		body.encode()
	}
	if err := t.b.Set(dataKey(body.ID), body.encManifest, nil); err != nil {
		return err
	}
	if err := t.b.Set(metaKey(body.ID), body.encMeta, nil); err != nil {
		return err
	}
	return t.put(blobKey(body.ID), blobRec{Kind: blobMessage, Refs: n, Size: body.Size})
}

// addRefs adds n references to a stored body, taking it out of the
// collection index if it was there.
func (t *txn) addRefs(id BlobID, br blobRec, n int64) error {
	if br.Refs == 0 {
		if err := t.del(zeroKey(br.ZeroAt, id)); err != nil {
			return err
		}
		br.ZeroAt = 0
	}
	br.Refs += n
	return t.put(blobKey(id), br)
}

// unlinkBody drops n references; a body left with none is marked for
// collection after the grace period.
func (t *txn) unlinkBody(id BlobID, n int64) error {
	var br blobRec
	ok, err := t.getRec(blobKey(id), &br)
	if err != nil {
		return err
	}
	if !ok || br.Refs < n {
		return fmt.Errorf("%w: body %s has %d references, dropping %d", ErrCorrupt, id, br.Refs, n)
	}
	br.Refs -= n
	if br.Refs == 0 {
		br.ZeroAt = t.now
		if err := t.b.Set(zeroKey(br.ZeroAt, id), nil, nil); err != nil {
			return err
		}
	}
	return t.put(blobKey(id), br)
}

func distinct(ids []BlobID) []BlobID {
	seen := make(map[BlobID]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

type uidRec struct {
	uid uint32
	rec msgRec
}

// messages returns the messages of a mailbox, all of them or those of uids
// (ascending), in UID order.
func (t *txn) messages(mboxID uint64, uids []uint32) ([]uidRec, error) {
	return scanMessages(t.b, mboxID, uids)
}

type iterable interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

func scanMessages(r iterable, mboxID uint64, uids []uint32) ([]uidRec, error) {
	lo, hi := msgPrefix(mboxID), prefixEnd(msgPrefix(mboxID))
	if uids != nil {
		if len(uids) == 0 {
			return nil, nil
		}
		lo = msgKey(mboxID, uids[0])
		if last := uids[len(uids)-1]; last < math.MaxUint32 {
			hi = msgKey(mboxID, last+1)
		}
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []uidRec
	want := uids
	for ok := it.First(); ok; {
		uid := uidOfMsgKey(it.Key())
		if uids != nil {
			for len(want) > 0 && want[0] < uid {
				want = want[1:]
			}
			if len(want) == 0 {
				break
			}
			if want[0] != uid {
				// Skip the messages between: seek to the next wanted UID
				// (want[0] > uid, so this always moves forward).
				ok = it.SeekGE(msgKey(mboxID, want[0]))
				continue
			}
		}
		var rec msgRec
		if err := unmarshal(it.Value(), &rec); err != nil {
			return nil, fmt.Errorf("message %d of mailbox %d: %w", uid, mboxID, err)
		}
		out = append(out, uidRec{uid, rec})
		ok = it.Next()
	}
	return out, it.Error()
}

func (t *txn) copyMessages(op *Copy, move bool, res *Result) error {
	if len(op.UIDs) == 0 {
		// Nothing to copy (nil must not read as "all messages").
		if _, err := t.mailbox(op.User, op.From); err != nil {
			return err
		}
		_, err := t.mailbox(op.User, op.To)
		return err
	}
	src, err := t.mailbox(op.User, op.From)
	if err != nil {
		return err
	}
	dst, err := t.mailbox(op.User, op.To)
	if err != nil {
		return err
	}
	msgs, err := t.messages(src.ID, op.UIDs)
	if err != nil {
		return err
	}
	same := op.From == op.To
	for _, mm := range msgs {
		rec := mm.rec
		uid, err := t.addMessage(&dst, rec)
		if err != nil {
			return err
		}
		res.SrcUIDs = append(res.SrcUIDs, mm.uid)
		res.DstUIDs = append(res.DstUIDs, uid)
		if !move {
			if err := t.linkExisting(rec.Body, 1); err != nil {
				return err
			}
			continue
		}
		// A move keeps the body's reference count as it is.
		if err := t.del(msgKey(src.ID, mm.uid)); err != nil {
			return err
		}
		if same {
			dst.count(&mm.rec, -1)
		} else {
			src.count(&mm.rec, -1)
		}
		res.Expunged = append(res.Expunged, mm.uid)
	}
	res.UIDValidity = dst.UIDValidity
	if move && len(msgs) > 0 && !same {
		src.HighestModSeq++
		if err := t.put(mboxKey(op.User, op.From), src); err != nil {
			return err
		}
	}
	return t.put(mboxKey(op.User, op.To), dst)
}

// linkExisting adds references to a body that is already stored.
func (t *txn) linkExisting(id BlobID, n int64) error {
	var br blobRec
	ok, err := t.getRec(blobKey(id), &br)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: body %s", ErrMissingBlob, id)
	}
	return t.addRefs(id, br, n)
}

func (t *txn) storeFlags(op *StoreFlags, res *Result) error {
	m, err := t.mailbox(op.User, op.Mailbox)
	if err != nil {
		return err
	}
	if len(op.UIDs) == 0 {
		return nil // nil must not read as "all messages"
	}
	flags, _ := CanonicalFlags(op.Flags) // checked by op.check
	msgs, err := t.messages(m.ID, op.UIDs)
	if err != nil {
		return err
	}
	modseq := m.HighestModSeq + 1
	for _, mm := range msgs {
		nf := applyFlags(mm.rec.Flags, op.Action, flags)
		if slices.Equal(nf, mm.rec.Flags) {
			continue
		}
		if op.UnchangedSince > 0 && mm.rec.ModSeq > op.UnchangedSince {
			res.Modified = append(res.Modified, mm.uid)
			continue
		}
		rec := mm.rec
		m.count(&rec, -1)
		rec.Flags = nf
		rec.ModSeq = modseq
		m.count(&rec, +1)
		if err := t.put(msgKey(m.ID, mm.uid), rec); err != nil {
			return err
		}
		res.Changed = append(res.Changed, mm.uid)
	}
	if len(res.Changed) == 0 {
		return nil
	}
	m.HighestModSeq = modseq
	res.ModSeq = modseq
	return t.put(mboxKey(op.User, op.Mailbox), m)
}

// applyFlags returns the canonical flag list after an action.
func applyFlags(cur []string, action FlagAction, flags []string) []string {
	var out []string
	switch action {
	case FlagsSet:
		out = slices.Clone(flags)
	case FlagsAdd:
		out = append(slices.Clone(cur), flags...)
	case FlagsRemove:
		for _, f := range cur {
			if !hasFlag(flags, f) {
				out = append(out, f)
			}
		}
	}
	out, _ = CanonicalFlags(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

func (t *txn) expunge(op *Expunge) ([]uint32, error) {
	m, err := t.mailbox(op.User, op.Mailbox)
	if err != nil {
		return nil, err
	}
	uids := op.UIDs
	if op.All {
		uids = nil // every message (the scan's nil)
	} else if len(uids) == 0 {
		return nil, nil
	}
	msgs, err := t.messages(m.ID, uids)
	if err != nil {
		return nil, err
	}
	var gone []uint32
	for _, mm := range msgs {
		if !hasFlag(mm.rec.Flags, FlagDeleted) {
			continue
		}
		if err := t.del(msgKey(m.ID, mm.uid)); err != nil {
			return nil, err
		}
		if err := t.unlinkBody(mm.rec.Body, 1); err != nil {
			return nil, err
		}
		m.count(&mm.rec, -1)
		gone = append(gone, mm.uid)
	}
	if len(gone) == 0 {
		return nil, nil
	}
	m.HighestModSeq++
	return gone, t.put(mboxKey(op.User, op.Mailbox), m)
}

func (t *txn) collect(op *Collect) (int, int64, error) {
	if err := t.forgetRetries(op.Limit); err != nil {
		return 0, 0, err
	}
	lo := []byte{pZero}
	hi := zeroKey(op.Before+1, BlobID{})
	if op.Before == math.MaxInt64 {
		hi = []byte{pZero + 1}
	}
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, 0, err
	}
	var ids []BlobID
	for ok := it.First(); ok && (op.Limit == 0 || len(ids) < op.Limit); ok = it.Next() {
		var id BlobID
		copy(id[:], it.Key()[9:])
		ids = append(ids, id)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, 0, err
	}
	n, freed := 0, int64(0)
	for _, id := range ids {
		c, f, err := t.deleteBody(id)
		if err != nil {
			return 0, 0, err
		}
		n += c
		freed += f
	}
	return n, freed, nil
}

// deleteBody deletes an unreferenced message body and drops one reference
// from each of its parts, deleting those left with none.
func (t *txn) deleteBody(id BlobID) (int, int64, error) {
	var br blobRec
	ok, err := t.getRec(blobKey(id), &br)
	if err != nil || !ok {
		return 0, 0, err
	}
	if br.Refs != 0 {
		return 0, 0, fmt.Errorf("%w: body %s in the collection index has %d references", ErrCorrupt, id, br.Refs)
	}
	n, freed := 1, br.Size
	var man Manifest
	if _, err := t.getRec(dataKey(id), &man); err != nil {
		return 0, 0, err
	}
	for _, pid := range distinct(man.Refs()) {
		var pr blobRec
		ok, err := t.getRec(partKey(pid), &pr)
		if err != nil {
			return 0, 0, err
		}
		if !ok || pr.Refs < 1 {
			return 0, 0, fmt.Errorf("%w: part %s of body %s is missing or unreferenced", ErrCorrupt, pid, id)
		}
		pr.Refs--
		if pr.Refs > 0 {
			if err := t.put(partKey(pid), pr); err != nil {
				return 0, 0, err
			}
			continue
		}
		for _, k := range [][]byte{partKey(pid), partDataKey(pid)} {
			if err := t.del(k); err != nil {
				return 0, 0, err
			}
		}
		n++
		freed += pr.Size
	}
	for _, k := range [][]byte{zeroKey(br.ZeroAt, id), blobKey(id), dataKey(id), metaKey(id)} {
		if err := t.del(k); err != nil {
			return 0, 0, err
		}
	}
	return n, freed, nil
}
