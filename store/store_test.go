package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/twinbox/twinbox/store"
)

func TestDeliverAndReadBack(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice", UIDValidity: 100})
	raw := message(1, 3000)
	prefix := []byte("Delivered-To: alice@example.com\r\nReturn-Path: <s1@example.org>\r\n")
	res := apply(t, s, &store.Deliver{
		Body:         body(raw),
		Targets:      []store.Target{{User: "alice", Mailbox: "INBOX", Prefix: prefix, Flags: []string{`\seen`, "$Label1"}}},
		InternalDate: testNow,
	})
	if got := res[0].Placed; len(got) != 1 || got[0].UID != 1 || got[0].UIDValidity != 100 {
		t.Fatalf("placed = %+v, want UID 1 UIDVALIDITY 100", got)
	}
	m, err := s.Message("alice", "inbox", 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"$Label1", `\Seen`}; !slices.Equal(m.Flags, want) {
		t.Errorf("flags = %v, want %v", m.Flags, want)
	}
	lit, err := s.Literal(m)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]byte(nil), prefix...), raw...); !bytes.Equal(lit, want) {
		t.Fatalf("literal differs from what was delivered")
	}
	mb, err := s.Mailbox("alice", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if mb.Messages != 1 || mb.Unseen != 0 || mb.UIDNext != 2 || mb.Size != int64(len(lit)) || mb.HighestModSeq != m.ModSeq {
		t.Errorf("mailbox = %+v, message modseq %d", mb, m.ModSeq)
	}
	meta, err := s.Meta(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Envelope.Subject != "message 1" {
		t.Errorf("subject = %q", meta.Envelope.Subject)
	}
	mustVerify(t, s)
}

func TestFiftyRecipientsOneBody(t *testing.T) {
	s := newTestStore(t, nil)
	var targets []store.Target
	for i := range 50 {
		u := fmt.Sprintf("user%02d", i)
		apply(t, s, &store.CreateUser{User: u})
		targets = append(targets, store.Target{User: u, Mailbox: "INBOX", Prefix: []byte("Delivered-To: " + u + "@example.com\r\n")})
	}
	raw := message(7, 10<<10)
	apply(t, s, &store.Deliver{Body: body(raw), Targets: targets, InternalDate: testNow})
	r := mustVerify(t, s)
	if r.Bodies != 1 || r.Messages != 50 {
		t.Fatalf("bodies = %d, messages = %d; want 1 and 50", r.Bodies, r.Messages)
	}
	if r.BlobBytes != int64(len(raw)) {
		t.Errorf("blob bytes = %d, want %d (the body once)", r.BlobBytes, len(raw))
	}
	// Delivered again later: still one body.
	apply(t, s, &store.Deliver{Body: body(raw), Targets: targets[:3], InternalDate: testNow})
	if r := mustVerify(t, s); r.Bodies != 1 || r.Messages != 53 {
		t.Fatalf("after redelivery: bodies = %d, messages = %d", r.Bodies, r.Messages)
	}
}

func TestApplyTwiceChangesNothing(t *testing.T) {
	s := newTestStore(t, nil)
	entries := scenario(rand.New(rand.NewPCG(1, 2)), 200)
	if _, err := s.Apply(context.Background(), entries...); err != nil {
		t.Fatal(err)
	}
	d1, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Apply(context.Background(), entries...)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.Skipped {
			t.Fatalf("entry %d applied twice", r.Seq)
		}
	}
	d2, _ := s.Digest()
	if d1.Store != d2.Store {
		t.Fatal("digest changed by applying the same entries again")
	}
	mustVerify(t, s)
}

func TestSameEntriesSameDigest(t *testing.T) {
	entries := scenario(rand.New(rand.NewPCG(7, 9)), 600)
	a := newTestStore(t, nil)
	b := newTestStore(t, nil)
	// a takes them in large batches, b one at a time: batching must not
	// change the outcome.
	for i := 0; i < len(entries); i += 64 {
		if _, err := a.Apply(context.Background(), entries[i:min(i+64, len(entries))]...); err != nil {
			t.Fatal(err)
		}
	}
	refused := 0
	for _, e := range entries {
		res, err := b.Apply(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Err != nil {
			refused++
		}
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da.Store != db.Store || !slices.Equal(da.Mailboxes, db.Mailboxes) {
		t.Fatalf("digests differ:\n%v\n%v", da, db)
	}
	if da.Applied != uint64(len(entries)) {
		t.Errorf("applied = %d, want %d", da.Applied, len(entries))
	}
	ra, rb := mustVerify(t, a), mustVerify(t, b)
	if ra.Messages < 20 || refused == 0 || refused > len(entries)/2 {
		t.Fatalf("scenario too weak: %d messages, %d of %d entries refused", ra.Messages, refused, len(entries))
	}
	if ra.Messages != rb.Messages {
		t.Fatal("message counts differ")
	}
	t.Logf("%d entries, %d refused, %d messages in %d mailboxes, digest %s", len(entries), refused, ra.Messages, ra.Mailboxes, da.Store)
}

func TestRefusedEntryLeavesNothing(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"})
	before, _ := s.Digest()
	raw := message(1, 500)
	// The first target is fine, the second mailbox does not exist: the
	// whole delivery is refused, alice's INBOX untouched.
	bad := &store.Deliver{Body: body(raw), InternalDate: testNow, Targets: []store.Target{
		{User: "alice", Mailbox: "INBOX"}, {User: "bob", Mailbox: "Nope"},
	}}
	good := &store.CreateMailbox{User: "bob", Name: "Work"}
	res, err := s.ApplyNext(context.Background(), testNow, bad, good)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, store.ErrNoMailbox) || res[1].Err != nil {
		t.Fatalf("results = %v / %v", res[0].Err, res[1].Err)
	}
	if mb, _ := s.Mailbox("alice", "INBOX"); mb.Messages != 0 || mb.UIDNext != 1 {
		t.Fatalf("refused delivery left %+v", mb)
	}
	if ok, _ := s.HasBody(store.HashBlob(raw)); ok {
		t.Fatal("refused delivery left its body")
	}
	after := mustVerify(t, s)
	if after.Digest.Store == before.Store || after.Mailboxes != 3 {
		t.Fatalf("good entry of the same batch was not applied")
	}
}

func TestCopyAndMoveLink(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"}, &store.CreateMailbox{User: "alice", Name: "Archive", SpecialUse: []string{`\Archive`}})
	for i := range 3 {
		apply(t, s, &store.Deliver{Body: body(message(i, 2000)), InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
	}
	res := apply(t, s, &store.Copy{User: "alice", From: "INBOX", To: "Archive", UIDs: []uint32{1, 3, 9}})
	if !slices.Equal(res[0].SrcUIDs, []uint32{1, 3}) || !slices.Equal(res[0].DstUIDs, []uint32{1, 2}) {
		t.Fatalf("copy: %v -> %v", res[0].SrcUIDs, res[0].DstUIDs)
	}
	r := mustVerify(t, s)
	if r.Bodies != 3 || r.Messages != 5 {
		t.Fatalf("after copy: %d bodies, %d messages", r.Bodies, r.Messages)
	}
	res = apply(t, s, &store.Move{User: "alice", From: "INBOX", To: "Archive", UIDs: []uint32{2}})
	if !slices.Equal(res[0].Expunged, []uint32{2}) || !slices.Equal(res[0].DstUIDs, []uint32{3}) {
		t.Fatalf("move: %+v", res[0])
	}
	uids, _ := s.UIDs("alice", "INBOX")
	if !slices.Equal(uids, store.UIDList{1, 3}) {
		t.Fatalf("INBOX UIDs = %v", uids)
	}
	if r := mustVerify(t, s); r.Bodies != 3 || r.Messages != 5 {
		t.Fatalf("after move: %d bodies, %d messages", r.Bodies, r.Messages)
	}
}

func TestFlagsAndModSeq(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	for i := range 3 {
		apply(t, s, &store.Deliver{Body: body(message(i, 200)), InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
	}
	mb, _ := s.Mailbox("alice", "INBOX")
	res := apply(t, s, &store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{1, 2}, Action: store.FlagsAdd, Flags: []string{`\Seen`}})
	if !slices.Equal(res[0].Changed, []uint32{1, 2}) || res[0].ModSeq != mb.HighestModSeq+1 {
		t.Fatalf("store: %+v (highest was %d)", res[0], mb.HighestModSeq)
	}
	// Unchanged flags do not bump the modseq.
	res = apply(t, s, &store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{1}, Action: store.FlagsAdd, Flags: []string{`\SEEN`}})
	if len(res[0].Changed) != 0 {
		t.Fatalf("re-adding \\Seen changed %v", res[0].Changed)
	}
	// CONDSTORE: deliveries got modseqs 2..4, the first STORE gave UIDs 1 and 2 modseq 5.
	res = apply(t, s, &store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{1, 3}, Action: store.FlagsSet, Flags: []string{"Junk"}, UnchangedSince: 4})
	if !slices.Equal(res[0].Modified, []uint32{1}) || !slices.Equal(res[0].Changed, []uint32{3}) {
		t.Fatalf("unchangedsince: %+v", res[0])
	}
	mb, _ = s.Mailbox("alice", "INBOX")
	if mb.Unseen != 1 {
		t.Fatalf("unseen = %d, want 1", mb.Unseen)
	}
	mustVerify(t, s)
}

func TestExpungeAndCollect(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	attachment := bytes.Repeat([]byte("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n"), 2000)
	one := splitBody([]byte("Subject: one\r\n\r\nhead\r\n"), attachment, []byte("\r\ntail one\r\n"))
	two := splitBody([]byte("Subject: two\r\n\r\nforwarded\r\n"), attachment, []byte("\r\ntail two\r\n"))
	apply(t, s,
		&store.Deliver{Body: one, InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "INBOX", Flags: []string{`\Deleted`}}}},
		&store.Deliver{Body: two, InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}},
	)
	r := mustVerify(t, s)
	if r.Parts != 1 || r.BlobBytes > int64(len(attachment))+200 {
		t.Fatalf("the shared attachment is stored %d times (%d bytes)", r.Parts, r.BlobBytes)
	}
	res := apply(t, s, &store.Expunge{User: "alice", Mailbox: "INBOX", All: true})
	if !slices.Equal(res[0].Expunged, []uint32{1}) {
		t.Fatalf("expunged %v", res[0].Expunged)
	}
	// Within the grace period nothing is collected.
	res = apply(t, s, &store.Collect{Before: testNow - 1})
	if res[0].Collected != 0 {
		t.Fatalf("collected %d blobs inside the grace period", res[0].Collected)
	}
	if ok, _ := s.HasBody(one.ID); !ok {
		t.Fatal("body gone before collection")
	}
	res = apply(t, s, &store.Collect{Before: testNow})
	if res[0].Collected != 1 {
		t.Fatalf("collected %d blobs, want the one body (its part is still used)", res[0].Collected)
	}
	mustVerify(t, s)
	m, _ := s.Message("alice", "INBOX", 2)
	lit, err := s.Literal(m)
	if err != nil || !bytes.Contains(lit, attachment) {
		t.Fatalf("surviving message lost its attachment: %v", err)
	}
	apply(t, s, &store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{2}, Action: store.FlagsAdd, Flags: []string{`\Deleted`}},
		&store.Expunge{User: "alice", Mailbox: "INBOX", UIDs: []uint32{2}}, &store.Collect{Before: testNow})
	if r := mustVerify(t, s); r.Bodies != 0 || r.Parts != 0 {
		t.Fatalf("after collecting all: %d bodies, %d parts", r.Bodies, r.Parts)
	}
}

func TestRenameKeepsUIDs(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"}, &store.CreateMailbox{User: "alice", Name: "Projects/2026/Q4"})
	apply(t, s, &store.Deliver{Body: body(message(1, 100)), InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "Projects/2026"}}})
	before, _ := s.Mailbox("alice", "Projects/2026")
	apply(t, s, &store.RenameMailbox{User: "alice", From: "Projects", To: "Old/Projects"})
	after, err := s.Mailbox("alice", "Old/Projects/2026")
	if err != nil {
		t.Fatal(err)
	}
	if after.UIDValidity != before.UIDValidity || after.UIDNext != before.UIDNext || after.Messages != 1 {
		t.Fatalf("rename changed the mailbox: %+v -> %+v", before, after)
	}
	if _, err := s.Mailbox("alice", "Old/Projects/2026/Q4"); err != nil {
		t.Fatal("child not renamed:", err)
	}
	if _, err := s.Mailbox("alice", "Projects"); !errors.Is(err, store.ErrNoMailbox) {
		t.Fatalf("old name still there: %v", err)
	}
	// Renaming INBOX moves its messages and leaves an empty INBOX.
	apply(t, s, &store.Deliver{Body: body(message(2, 100)), InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
	in, _ := s.Mailbox("alice", "INBOX")
	apply(t, s, &store.RenameMailbox{User: "alice", From: "INBOX", To: "Saved"})
	saved, _ := s.Mailbox("alice", "Saved")
	in2, _ := s.Mailbox("alice", "INBOX")
	if saved.Messages != 1 || saved.UIDValidity != in.UIDValidity || in2.Messages != 0 || in2.UIDValidity == in.UIDValidity {
		t.Fatalf("INBOX rename: saved %+v, new inbox %+v", saved, in2)
	}
	// Deleting a user and a mailbox drops their links.
	apply(t, s, &store.DeleteMailbox{User: "alice", Name: "Saved"}, &store.CreateMailbox{User: "alice", Name: "Saved"})
	again, _ := s.Mailbox("alice", "Saved")
	if again.UIDValidity <= saved.UIDValidity {
		t.Fatalf("recreated mailbox reuses UIDVALIDITY %d", again.UIDValidity)
	}
	apply(t, s, &store.DeleteUser{User: "alice"})
	if users, _ := s.Users(); len(users) != 0 {
		t.Fatalf("users = %v", users)
	}
	mustVerify(t, s)
}

func TestUIDListAndMessagesSubset(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	var entries []store.Op
	for i := range 300 {
		entries = append(entries, &store.Deliver{Body: body(message(i, 100)), InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
	}
	apply(t, s, entries...)
	var odd []uint32
	for u := uint32(1); u <= 300; u += 2 {
		odd = append(odd, u)
	}
	apply(t, s, &store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: odd, Action: store.FlagsAdd, Flags: []string{`\Deleted`}},
		&store.Expunge{User: "alice", Mailbox: "INBOX", All: true})
	uids, err := s.UIDs("alice", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) != 150 || uids[0] != 2 || uids.SeqNum(300) != 150 || uids.UID(2) != 4 || uids.SeqNum(3) != 0 {
		t.Fatalf("uid list wrong: len %d first %d", len(uids), uids[0])
	}
	for _, c := range []struct{ ask, want []uint32 }{
		{[]uint32{1, 2, 3, 100, 298, 299, 1000}, []uint32{2, 100, 298}},
		// A miss seeks forward onto a UID that is itself wanted.
		{[]uint32{2, 5, 6}, []uint32{2, 6}},
		{[]uint32{7, 8, 9, 10}, []uint32{8, 10}},
		{[]uint32{299}, nil},
		{[]uint32{}, nil},
	} {
		msgs, err := s.Messages("alice", "INBOX", c.ask)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint32
		for _, m := range msgs {
			got = append(got, m.UID)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("Messages(%v) = %v, want %v", c.ask, got, c.want)
		}
	}
	// An empty UID list touches nothing (it must not read as "all").
	before, _ := s.Digest()
	apply(t, s,
		&store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{}, Action: store.FlagsSet, Flags: []string{`\Deleted`}},
		&store.Copy{User: "alice", From: "INBOX", To: "INBOX"},
		&store.Move{User: "alice", From: "INBOX", To: "INBOX", UIDs: []uint32{}},
		&store.Expunge{User: "alice", Mailbox: "INBOX"})
	after, _ := s.Digest()
	if !equalMailboxes(before, after) {
		t.Fatal("operations on empty UID lists changed the mailbox")
	}
}

// scenario makes a random but reproducible stream of entries exercising
// every operation, including ones that will be refused.
func scenario(rng *rand.Rand, n int) []store.Entry {
	users := []string{"alice", "bob", "carol"}
	boxes := []string{"INBOX", "Work", "Work/Deep", "Lists", "Trash"}
	bodies := make([]store.Body, 12)
	for i := range bodies {
		if i%3 == 0 {
			bodies[i] = splitBody([]byte(fmt.Sprintf("Subject: %d\r\n\r\n", i)), bytes.Repeat([]byte{'A' + byte(i%2)}, 5000), []byte("end\r\n"))
		} else {
			bodies[i] = body(message(i, 200+rng.IntN(5000)))
		}
	}
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	uids := func() []uint32 {
		var u []uint32
		for x := uint32(1); x < 40; x++ {
			if rng.IntN(3) == 0 {
				u = append(u, x)
			}
		}
		return u
	}
	var out []store.Entry
	for i := range n {
		var op store.Op
		u := pick(users)
		switch k := rng.IntN(20); {
		case i < 3:
			op = &store.CreateUser{User: users[i], UIDValidity: 1000}
		case k == 0 || k == 19:
			op = &store.CreateMailbox{User: u, Name: pick(boxes[1:]), UIDValidity: uint32(rng.IntN(2000))}
		case k == 1:
			op = &store.DeleteMailbox{User: u, Name: pick(boxes)}
		case k == 2:
			op = &store.RenameMailbox{User: u, From: pick(boxes), To: pick(boxes[1:]) + "2"}
		case k == 3:
			op = &store.Subscribe{User: u, Name: pick(boxes), Subscribed: rng.IntN(2) == 0}
		case k <= 9:
			var ts []store.Target
			for range 1 + rng.IntN(3) {
				box := "INBOX"
				if rng.IntN(3) == 0 {
					box = pick(boxes)
				}
				ts = append(ts, store.Target{User: pick(users), Mailbox: box, Flags: []string{pick([]string{`\Seen`, `\Seen`, `\Deleted`, "$Work"})}})
			}
			op = &store.Deliver{Body: bodies[rng.IntN(len(bodies))], Targets: ts, InternalDate: testNow + int64(i)}
		case k == 10:
			op = &store.Copy{User: u, From: pick(boxes), To: pick(boxes), UIDs: uids()}
		case k == 11:
			op = &store.Move{User: u, From: pick(boxes), To: pick(boxes), UIDs: uids()}
		case k <= 14:
			op = &store.StoreFlags{User: u, Mailbox: pick(boxes), UIDs: uids(), Action: store.FlagAction(1 + rng.IntN(3)), Flags: []string{pick([]string{`\Seen`, `\Deleted`, "$Work", `\Flagged`})}}
		case k <= 16:
			op = &store.Expunge{User: u, Mailbox: pick(boxes), All: true}
		case k == 17:
			op = &store.Collect{Before: testNow + int64(i) - 50}
		case k == 18 && rng.IntN(10) == 0:
			op = &store.DeleteUser{User: u}
		default:
			op = &store.CreateUser{User: u}
		}
		out = append(out, store.Entry{Seq: uint64(i + 1), Time: testNow + int64(i), Op: op})
	}
	return out
}

// A part whose bytes are exactly another message (an .eml attached as text)
// has that message's hash; the two must still be stored and counted apart,
// in either order of arrival.
func TestPartWithTheBytesOfAMessage(t *testing.T) {
	for _, partFirst := range []bool{false, true} {
		s := newTestStore(t, nil)
		apply(t, s, &store.CreateUser{User: "alice"})
		inner := message(1, 20<<10)
		whole := body(inner)
		outer := splitBody([]byte("Subject: fwd\r\n\r\n"), inner, []byte("\r\n"))
		if whole.ID != outer.Parts[0].ID {
			t.Fatal("test needs the part and the message to have one hash")
		}
		ops := []store.Op{
			&store.Deliver{Body: whole, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}},
			&store.Deliver{Body: outer, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}},
		}
		if partFirst {
			ops[0], ops[1] = ops[1], ops[0]
		}
		apply(t, s, ops...)
		for uid := uint32(1); uid <= 2; uid++ {
			m, err := s.Message("alice", "INBOX", uid)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Literal(m); err != nil {
				t.Fatalf("part first %v, UID %d: %v", partFirst, uid, err)
			}
		}
		mustVerify(t, s)
	}
}

// Concurrent writers each get their own sequences: nothing is skipped or
// lost, whichever writer's batch goes first.
func TestConcurrentApplyNext(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	const writers, each = 16, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				op := &store.Deliver{Body: body(message(w*1000+i, 300)), InternalDate: testNow,
					Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}
				res, err := s.ApplyNext(context.Background(), testNow, op)
				if err != nil {
					t.Error(err)
					return
				}
				if res[0].Skipped || res[0].Err != nil || len(res[0].Placed) != 1 {
					t.Errorf("writer %d delivery %d: %+v", w, i, res[0])
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := s.AppliedSeq(); got != 1+writers*each {
		t.Fatalf("applied seq %d, want %d", got, 1+writers*each)
	}
	if r := mustVerify(t, s); r.Messages != writers*each {
		t.Fatalf("%d messages stored, %d delivered", r.Messages, writers*each)
	}
}

// TestDeliverByReference: a body the store holds can be delivered by its
// address alone (how the replication log sends a body once); an unknown
// one is refused and nothing is applied.
func TestDeliverByReference(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	raw := message(1, 3000)
	b := body(raw)
	apply(t, s, &store.Deliver{Body: b, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
	ref := &store.Deliver{Body: b.Reference(), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}
	if err := s.Admit(ref); err != nil {
		t.Fatal(err)
	}
	res := apply(t, s, ref)
	if res[0].Err != nil {
		t.Fatalf("delivery by reference: %v", res[0].Err)
	}
	msgs, _ := s.Messages("alice", "INBOX", nil)
	if len(msgs) != 2 || msgs[0].Body != msgs[1].Body {
		t.Fatalf("messages: %+v", msgs)
	}
	if lit, err := s.Literal(msgs[1]); err != nil || !bytes.Equal(lit, raw) {
		t.Fatalf("literal by reference: %v", err)
	}
	unknown := body(message(2, 3000))
	before := s.AppliedSeq()
	res, err := s.ApplyNext(context.Background(), store.Now(), &store.Deliver{Body: unknown.Reference(), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
	if err != nil || !errors.Is(res[0].Err, store.ErrMissingBlob) {
		t.Fatalf("reference to an unknown body: %v %v", res, err)
	}
	if n, _ := s.Mailbox("alice", "INBOX"); n.Messages != 2 || s.AppliedSeq() != before+1 {
		t.Errorf("refused delivery changed the mailbox: %+v", n)
	}
	bad := b.Reference()
	bad.Parts = []store.PartBlob{{ID: b.ID}}
	if err := s.Admit(&store.Deliver{Body: bad, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}); err == nil {
		t.Error("a reference carrying content was admitted")
	}
}

// TestApplyLogged: entries applied without the store's fsync are applied
// like any others, and applying them again (a log replayed after a crash)
// changes nothing.
func TestApplyLogged(t *testing.T) {
	s := newTestStore(t, nil)
	ctx := context.Background()
	entries := []store.Entry{
		{Seq: 1, Op: &store.CreateUser{User: "alice"}},
		{Seq: 2, Op: &store.Deliver{Body: body(message(1, 500)), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}},
	}
	res, err := s.ApplyLogged(ctx, entries...)
	if err != nil || res[1].Err != nil || s.AppliedSeq() != 2 {
		t.Fatalf("ApplyLogged: %v %v, applied %d", res, err, s.AppliedSeq())
	}
	before, _ := s.Digest()
	res, err = s.ApplyLogged(ctx, entries...)
	if err != nil || !res[0].Skipped || !res[1].Skipped {
		t.Fatalf("replayed entries: %+v %v", res, err)
	}
	if after, _ := s.Digest(); after.Store != before.Store {
		t.Error("replaying applied entries changed the store")
	}
}

// TestUIDsAfter: the UIDs above a point, with the mailbox's info from the
// same snapshot, so a caller that knew the UIDs up to that point can tell
// from the count whether any of them went away.
func TestUIDsAfter(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	for i := range 5 {
		apply(t, s, &store.Deliver{Body: body(message(i, 500)), InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
	}
	apply(t, s, &store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{2}, Action: store.FlagsAdd, Flags: []string{`\Deleted`}},
		&store.Expunge{User: "alice", Mailbox: "INBOX", All: true})
	for _, c := range []struct {
		after uint32
		want  store.UIDList
	}{{0, store.UIDList{1, 3, 4, 5}}, {3, store.UIDList{4, 5}}, {5, nil}, {math.MaxUint32, nil}} {
		info, uids, err := s.UIDsAfter("alice", "inbox", c.after)
		if err != nil || info.Messages != 4 || info.UIDNext != 6 || !slices.Equal(uids, c.want) {
			t.Errorf("UIDsAfter(%d) = %+v %v %v, want 4 messages, UIDNEXT 6, %v", c.after, info, uids, err, c.want)
		}
	}
	if _, _, err := s.UIDsAfter("alice", "Nope", 0); !errors.Is(err, store.ErrNoMailbox) {
		t.Errorf("UIDsAfter of a missing mailbox: %v", err)
	}
	if _, _, err := s.UIDsAfter("nobody", "INBOX", 0); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("UIDsAfter of a missing user: %v", err)
	}
}
