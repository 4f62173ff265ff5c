package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twinbox/twinbox/store"
)

// tentativeOps is a mix of every kind of change, applied tentatively after
// a firm prefix.
func tentativeOps() []store.Op {
	shared := splitBody([]byte("From: a@example.org\r\nSubject: x\r\n\r\nhead\r\n"), make([]byte, 4096), []byte("\r\ntail\r\n"))
	return []store.Op{
		&store.CreateMailbox{User: "alice", Name: "Work", UIDValidity: 9},
		&store.Deliver{Body: body(message(10, 2000)), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}, {User: "bob", Mailbox: "INBOX"}}, InternalDate: testNow},
		&store.Deliver{Body: shared, Targets: []store.Target{{User: "alice", Mailbox: "Work"}}, InternalDate: testNow},
		&store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{1, 2}, Action: store.FlagsAdd, Flags: []string{`\Deleted`, "Tag"}},
		&store.Copy{User: "alice", From: "INBOX", To: "Work", UIDs: []uint32{1}},
		&store.Expunge{User: "alice", Mailbox: "INBOX", All: true},
		&store.RenameMailbox{User: "alice", From: "Work", To: "Play"},
		&store.DeleteMailbox{User: "bob", Name: "Old"},
		&store.Collect{Before: testNow + 1, Limit: 100},
		&store.CreateUser{User: "carol", UIDValidity: 3},
	}
}

func firmPrefix(t *testing.T, s *store.Store) {
	t.Helper()
	apply(t, s,
		&store.CreateUser{User: "alice", UIDValidity: 1},
		&store.CreateUser{User: "bob", UIDValidity: 1},
		&store.CreateMailbox{User: "bob", Name: "Old", UIDValidity: 5},
		&store.Deliver{Body: body(message(1, 1500)), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}, InternalDate: testNow},
		&store.Deliver{Body: body(message(2, 1500)), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}, {User: "bob", Mailbox: "Old"}}, InternalDate: testNow},
	)
}

func digest(t *testing.T, s *store.Store) store.Digest {
	t.Helper()
	d, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRollbackRestoresTheFirmState: entries applied tentatively (every
// kind of operation) are undone exactly: the store's digest after a
// rollback is the digest it had before them, and it verifies; applying
// the same entries again gives the same state as the first time.
func TestRollbackRestoresTheFirmState(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, nil)
	firmPrefix(t, s)
	before := digest(t, s)
	firm := s.AppliedSeq()
	entries := make([]store.Entry, 0)
	acked := make([]bool, 0)
	for i, op := range tentativeOps() {
		entries = append(entries, store.Entry{Seq: firm + uint64(i) + 1, Time: testNow, Op: op})
		acked = append(acked, i%2 == 0)
	}
	res, err := s.ApplyTentative(ctx, entries, acked)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("tentative op %d (%s): %v", i, entries[i].Op.Kind(), r.Err)
		}
	}
	after := digest(t, s)
	if after.Store == before.Store {
		t.Fatal("the tentative entries changed nothing")
	}
	tent, err := s.TentativeEntries()
	if err != nil {
		t.Fatal(err)
	}
	if len(tent) != len(entries) || !tent[0].Acked || tent[1].Acked {
		t.Fatalf("tentative entries %+v, want %d with their acknowledgements", tent, len(entries))
	}
	// Back to the middle first, then to the firm position.
	if err := s.Rollback(ctx, firm+3); err != nil {
		t.Fatal(err)
	}
	if s.AppliedSeq() != firm+3 {
		t.Fatalf("applied %d after a rollback to %d", s.AppliedSeq(), firm+3)
	}
	if err := s.Rollback(ctx, firm); err != nil {
		t.Fatal(err)
	}
	if got := digest(t, s); got.Store != before.Store || got.Applied != before.Applied {
		t.Fatalf("after the rollback the store is %s at %d, before the tentative entries it was %s at %d", got.Store, got.Applied, before.Store, before.Applied)
	}
	mustVerify(t, s)
	if tent, _ := s.TentativeEntries(); len(tent) != 0 {
		t.Errorf("%d undo records left after the rollback", len(tent))
	}
	// The same entries again, firmly this time: the same state as the
	// tentative run reached.
	if _, err := s.ApplyLogged(ctx, entries...); err != nil {
		t.Fatal(err)
	}
	if got := digest(t, s); got.Store != after.Store {
		t.Fatalf("re-applied after the rollback: %s, the first time: %s", got.Store, after.Store)
	}
}

// TestRollbackStopsAtTheFirmPosition: confirmed and firmly applied entries
// cannot be undone; the refusal changes nothing.
func TestRollbackStopsAtTheFirmPosition(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, nil)
	firmPrefix(t, s)
	firm := s.AppliedSeq()
	if err := s.Rollback(ctx, firm-1); !errors.Is(err, store.ErrNotTentative) {
		t.Fatalf("rollback below firmly applied entries: %v, want ErrNotTentative", err)
	}
	ops := tentativeOps()
	var entries []store.Entry
	for i, op := range ops[:4] {
		entries = append(entries, store.Entry{Seq: firm + uint64(i) + 1, Time: testNow, Op: op})
	}
	if _, err := s.ApplyTentative(ctx, entries, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Confirm(ctx, firm+2); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.Firm(); f != firm+2 {
		t.Fatalf("firm at %d after confirming %d", f, firm+2)
	}
	at := digest(t, s)
	if err := s.Rollback(ctx, firm+1); !errors.Is(err, store.ErrNotTentative) {
		t.Fatalf("rollback below a confirmed entry: %v, want ErrNotTentative", err)
	}
	if got := digest(t, s); got.Store != at.Store || got.Applied != at.Applied {
		t.Fatal("a refused rollback changed the store")
	}
	if err := s.Rollback(ctx, firm+2); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, s)
}

// TestTentativeRecordsAreNotReplicatedState: a node that applied entries
// tentatively and one that applied them firmly have the same digest.
func TestTentativeRecordsAreNotReplicatedState(t *testing.T) {
	ctx := context.Background()
	a, b := newTestStore(t, nil), newTestStore(t, nil)
	firmPrefix(t, a)
	firmPrefix(t, b)
	firm := a.AppliedSeq()
	var entries []store.Entry
	for i, op := range tentativeOps() {
		entries = append(entries, store.Entry{Seq: firm + uint64(i) + 1, Time: testNow, Op: op})
	}
	if _, err := a.ApplyTentative(ctx, entries, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ApplyLogged(ctx, entries...); err != nil {
		t.Fatal(err)
	}
	if da, db := digest(t, a), digest(t, b); da.Store != db.Store {
		t.Fatalf("tentative %s, firm %s", da.Store, db.Store)
	}
}

// TestSkipUIDs: a mailbox's next UID moves ahead and new messages land
// above the gap; skipping beyond the UID space renumbers the mailbox
// under a new UIDVALIDITY instead of reusing any UID.
func TestSkipUIDs(t *testing.T) {
	s := newTestStore(t, nil)
	firmPrefix(t, s)
	before, err := s.Mailbox("alice", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, &store.SkipUIDs{User: "alice", Mailbox: "INBOX", Next: 1 << 20})
	res := apply(t, s, &store.Deliver{Body: body(message(3, 1200)), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}, InternalDate: testNow})
	if p := res[0].Placed[0]; p.UID != 1<<20 || p.UIDValidity != before.UIDValidity {
		t.Fatalf("after a skip the delivery got %+v, want UID %d under UIDVALIDITY %d", p, 1<<20, before.UIDValidity)
	}
	// Backwards is a no-op.
	apply(t, s, &store.SkipUIDs{User: "alice", Mailbox: "INBOX", Next: 5})
	if mb, _ := s.Mailbox("alice", "INBOX"); mb.UIDNext != 1<<20+1 {
		t.Fatalf("UIDNEXT %d after a skip backwards", mb.UIDNext)
	}
	// Beyond the UID space: renumbered, under a higher UIDVALIDITY.
	res = apply(t, s, &store.SkipUIDs{User: "alice", Mailbox: "INBOX", Next: 1 << 33})
	mb, err := s.Mailbox("alice", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	uids, err := s.UIDs("alice", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if mb.UIDValidity <= before.UIDValidity || res[0].UIDValidity != mb.UIDValidity || mb.UIDNext != 4 || len(uids) != 3 || uids[0] != 1 || uids[2] != 3 {
		t.Fatalf("after a skip beyond the UID space: UIDVALIDITY %d (was %d), UIDNEXT %d, UIDs %v", mb.UIDValidity, before.UIDValidity, mb.UIDNext, uids)
	}
	mustVerify(t, s)
}

// TestMergedAppliesOnce: a merged operation applies once under its ID,
// however often it comes.
func TestMergedAppliesOnce(t *testing.T) {
	s := newTestStore(t, nil)
	firmPrefix(t, s)
	d := &store.Deliver{Body: body(message(7, 1200)), Targets: []store.Target{{User: "bob", Mailbox: "INBOX"}}, InternalDate: testNow}
	m := &store.Merged{ID: "a/3/17", Op: store.EncodeOp(d)}
	first := apply(t, s, m)
	again := apply(t, s, m)
	if first[0].Duplicate || len(first[0].Placed) != 1 || !again[0].Duplicate || len(again[0].Placed) != 0 {
		t.Fatalf("first %+v, again %+v: want one delivery, then a duplicate", first[0], again[0])
	}
	if mb, _ := s.Mailbox("bob", "INBOX"); mb.Messages != 1 {
		t.Fatalf("bob's INBOX holds %d messages, want 1", mb.Messages)
	}
	nested := &store.Merged{ID: "x", Op: store.EncodeOp(m)}
	if _, err := store.DecodeOp(store.EncodeOp(nested)); err == nil {
		t.Error("a merged operation inside another was accepted")
	}
	mustVerify(t, s)
}

// TestViewAtTheFirmPosition: a view at an earlier position shows the
// store as it was there, while the store itself stays as it is.
func TestViewAtTheFirmPosition(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, nil)
	firmPrefix(t, s)
	firm := s.AppliedSeq()
	beforeBoxes, _ := s.Mailboxes("alice")
	beforeMsgs, _ := s.Messages("alice", "INBOX", nil)
	var entries []store.Entry
	for i, op := range tentativeOps() {
		entries = append(entries, store.Entry{Seq: firm + uint64(i) + 1, Time: testNow, Op: op})
	}
	if _, err := s.ApplyTentative(ctx, entries, nil); err != nil {
		t.Fatal(err)
	}
	now := digest(t, s)
	v, err := s.ViewAt(firm)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	boxes, err := v.Mailboxes("alice")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := v.Messages("alice", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if len(boxes) != len(beforeBoxes) || len(msgs) != len(beforeMsgs) || msgs[0].UID != beforeMsgs[0].UID {
		t.Fatalf("view at %d: %d mailboxes, %d messages; before the tentative entries: %d, %d", firm, len(boxes), len(msgs), len(beforeBoxes), len(beforeMsgs))
	}
	if users, _ := v.Users(); len(users) != 2 {
		t.Errorf("view at %d has users %v, want alice and bob (carol came later)", firm, users)
	}
	if b, err := v.Body(msgs[0].Body); err != nil || len(b) == 0 {
		t.Errorf("body in the view: %d bytes, %v", len(b), err)
	}
	if got := digest(t, s); got.Store != now.Store {
		t.Fatal("a view changed the store")
	}
	if _, err := s.ViewAt(firm - 1); !errors.Is(err, store.ErrNotTentative) {
		t.Errorf("a view below the firm position: %v", err)
	}
}

// TestRetriedDeliveryStoredOnce: a delivery with the retry key of one
// applied within RetryWindow is that sender's retry: nothing is stored
// again and the result is the first one's; after the window it is a new
// delivery, and Collect forgets the old keys.
func TestRetriedDeliveryStoredOnce(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, nil)
	firmPrefix(t, s)
	d := func() *store.Deliver {
		return &store.Deliver{Body: body(message(42, 1500)), Targets: []store.Target{{User: "bob", Mailbox: "INBOX"}},
			InternalDate: testNow, Retry: []byte("retry-key-of-this-delivery")}
	}
	at := func(t0 int64, op store.Op) store.Result {
		res, err := s.ApplyNext(ctx, t0, op)
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res[0].Err)
		}
		return res[0]
	}
	first := at(testNow, d())
	again := at(testNow+int64(time.Minute), d())
	if first.Duplicate || !again.Duplicate || again.Placed[0] != first.Placed[0] {
		t.Fatalf("first %+v, retry %+v: want the retry recognised with the first placement", first, again)
	}
	if mb, _ := s.Mailbox("bob", "INBOX"); mb.Messages != 1 {
		t.Fatalf("%d messages after a retry, want 1", mb.Messages)
	}
	later := at(testNow+int64(store.RetryWindow)+1, d())
	if later.Duplicate {
		t.Fatal("a delivery after the window was taken for a retry")
	}
	at(testNow+3*int64(store.RetryWindow), &store.Collect{Before: testNow})
	mustVerify(t, s)
}
