package store_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/twinbox/twinbox/store"
)

// TestImportKeepsUIDs imports messages at a source's UIDs under its
// UIDVALIDITY, into a new user's INBOX and a new mailbox, and runs the
// import again as a resumed import would: nothing is stored twice.
func TestImportKeepsUIDs(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "ann"})
	const v = 1700000000
	imp := func(box string, uids ...uint32) *store.Import {
		op := &store.Import{User: "ann", Mailbox: box, UIDValidity: v}
		for _, u := range uids {
			op.Messages = append(op.Messages, store.ImportedMessage{UID: u, Body: body(message(int(u), 300)), Flags: []string{`\Seen`, "$Work"}, InternalDate: testNow})
		}
		return op
	}
	res := apply(t, s,
		&store.ImportMailbox{User: "ann", Name: "INBOX", UIDValidity: v},
		&store.ImportMailbox{User: "ann", Name: "Archive/2025", UIDValidity: v + 7, SpecialUse: []string{`\Archive`}},
		imp("INBOX", 3, 5, 9),
	)
	if res[1].UIDValidity != v+7 || !slices.Equal(res[2].Imported, []uint32{3, 5, 9}) {
		t.Fatalf("results: %+v", res)
	}
	mb, err := s.Mailbox("ann", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if mb.UIDValidity != v || mb.UIDNext != 10 || mb.Messages != 3 || mb.Unseen != 0 {
		t.Fatalf("INBOX after import: %+v", mb)
	}
	// Again, with one more message and UID 5 expunged meanwhile.
	apply(t, s, &store.StoreFlags{User: "ann", Mailbox: "INBOX", UIDs: []uint32{5}, Action: store.FlagsAdd, Flags: []string{`\Deleted`}},
		&store.Expunge{User: "ann", Mailbox: "INBOX", All: true})
	res = apply(t, s, &store.ImportMailbox{User: "ann", Name: "INBOX", UIDValidity: v}, imp("INBOX", 3, 5, 9, 12))
	if r := res[1]; !slices.Equal(r.Imported, []uint32{12}) || !slices.Equal(r.Present, []uint32{3, 9}) || !slices.Equal(r.Gone, []uint32{5}) {
		t.Fatalf("second import: imported %v present %v gone %v", r.Imported, r.Present, r.Gone)
	}
	msgs, err := s.Messages("ann", "INBOX", nil)
	if err != nil {
		t.Fatal(err)
	}
	var uids []uint32
	for _, m := range msgs {
		uids = append(uids, m.UID)
		if !slices.Equal(m.Flags, []string{"$Work", `\Seen`}) && !slices.Equal(m.Flags, []string{`\Seen`, "$Work"}) {
			t.Fatalf("UID %d flags %v", m.UID, m.Flags)
		}
	}
	if !slices.Equal(uids, []uint32{3, 9, 12}) {
		t.Fatalf("INBOX UIDs %v", uids)
	}
	// A new mailbox after the import gets a UIDVALIDITY above the imported ones.
	apply(t, s, &store.CreateMailbox{User: "ann", Name: "Later"})
	if mb, _ := s.Mailbox("ann", "Later"); mb.UIDValidity <= v+7 {
		t.Fatalf("UIDVALIDITY of a later mailbox %d, imported %d", mb.UIDValidity, v+7)
	}
	mustVerify(t, s)
}

// TestImportRefusesNumberedMailbox: a mailbox that gave UIDs keeps its
// numbering; an import under another UIDVALIDITY is refused whole.
func TestImportRefusesNumberedMailbox(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "bob"},
		&store.Deliver{Body: body(message(1, 200)), Targets: []store.Target{{User: "bob", Mailbox: "INBOX"}}, InternalDate: testNow})
	mb, _ := s.Mailbox("bob", "INBOX")
	res, err := s.ApplyNext(t.Context(), testNow,
		&store.ImportMailbox{User: "bob", Name: "INBOX", UIDValidity: mb.UIDValidity + 100},
		&store.Import{User: "bob", Mailbox: "INBOX", UIDValidity: mb.UIDValidity + 100,
			Messages: []store.ImportedMessage{{UID: 7, Body: body(message(2, 200))}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !errors.Is(r.Err, store.ErrUIDValidity) {
			t.Fatalf("op %d: err %v, want ErrUIDValidity", i, r.Err)
		}
	}
	if after, _ := s.Mailbox("bob", "INBOX"); after.UIDValidity != mb.UIDValidity || after.UIDNext != mb.UIDNext || after.Messages != mb.Messages {
		t.Fatalf("INBOX changed: %+v, was %+v", after, mb)
	}
}

// TestImportOpRoundTrip: the new kinds encode and decode, and bad fields are refused.
func TestImportOpRoundTrip(t *testing.T) {
	ops := []store.Op{
		&store.ImportMailbox{User: "ann", Name: "INBOX", UIDValidity: 5},
		&store.Import{User: "ann", Mailbox: "INBOX", UIDValidity: 5, Messages: []store.ImportedMessage{{UID: 2, Body: body(message(1, 100))}}},
	}
	for _, op := range ops {
		got, err := store.DecodeOp(store.EncodeOp(op))
		if err != nil || got.Kind() != op.Kind() {
			t.Fatalf("%s: %v %v", op.Kind(), got, err)
		}
	}
	bad := []store.Op{
		&store.ImportMailbox{User: "ann", Name: "INBOX"},
		&store.Import{User: "ann", Mailbox: "INBOX", UIDValidity: 5},
		&store.Import{User: "ann", Mailbox: "INBOX", UIDValidity: 5, Messages: []store.ImportedMessage{{UID: 2, Body: body(message(1, 100))}, {UID: 2, Body: body(message(2, 100))}}},
	}
	for _, op := range bad {
		if _, err := store.DecodeOp(store.EncodeOp(op)); !errors.Is(err, store.ErrInvalidOp) {
			t.Fatalf("%+v: err %v, want ErrInvalidOp", op, err)
		}
	}
}
