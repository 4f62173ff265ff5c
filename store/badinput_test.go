package store_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/store"
)

func TestInvalidMailboxNames(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	for _, name := range []string{
		"", "a\x00b", "tab\there", "del\x7f", "../etc", "a/../b", "a/./b", "a//b", "/abs", "trailing/",
		strings.Repeat("x", store.MaxMailboxName+1), "bad\xff\xfeutf8", "wild*", "wild%", " lead", "c1\u0085",
	} {
		res, err := s.ApplyNext(context.Background(), testNow, &store.CreateMailbox{User: "alice", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, store.ErrInvalidName) {
			t.Errorf("CreateMailbox(%q): err = %v, want ErrInvalidName", name, res[0].Err)
		}
		if _, err := s.Mailbox("alice", name); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("Mailbox(%q): err = %v", name, err)
		}
	}
	if boxes, _ := s.Mailboxes("alice"); len(boxes) != 1 {
		t.Fatalf("refused names left mailboxes: %v", boxes)
	}
	// INBOX is case-insensitive, also as a parent.
	apply(t, s, &store.CreateMailbox{User: "alice", Name: "INBOX/Sub"})
	if _, err := s.Mailbox("alice", "inbox/Sub"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"", "a b", "a:b", "a/b", "nul\x00", strings.Repeat("u", 300)} {
		res, _ := s.ApplyNext(context.Background(), testNow, &store.CreateUser{User: u})
		if !errors.Is(res[0].Err, store.ErrInvalidName) {
			t.Errorf("CreateUser(%q): err = %v", u, res[0].Err)
		}
	}
	for _, f := range []string{`\Recent`, `\Bogus`, "a b", "par(en", "", strings.Repeat("k", 200)} {
		res, _ := s.ApplyNext(context.Background(), testNow, &store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{1}, Action: store.FlagsAdd, Flags: []string{f}})
		if !errors.Is(res[0].Err, store.ErrInvalidFlag) {
			t.Errorf("flag %q: err = %v", f, res[0].Err)
		}
	}
}

func TestMissingUsersAndMailboxes(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	raw := message(1, 100)
	cases := []struct {
		op   store.Op
		want error
	}{
		{&store.Deliver{Body: body(raw), Targets: []store.Target{{User: "nobody", Mailbox: "INBOX"}}}, store.ErrNoUser},
		{&store.Deliver{Body: body(raw), Targets: []store.Target{{User: "alice", Mailbox: "Missing"}}}, store.ErrNoMailbox},
		{&store.CreateMailbox{User: "nobody", Name: "X"}, store.ErrNoUser},
		{&store.CreateMailbox{User: "alice", Name: "INBOX"}, store.ErrMailboxExists},
		{&store.CreateUser{User: "alice"}, store.ErrUserExists},
		{&store.DeleteMailbox{User: "alice", Name: "INBOX"}, store.ErrInboxNotDeleted},
		{&store.DeleteMailbox{User: "alice", Name: "Gone"}, store.ErrNoMailbox},
		{&store.RenameMailbox{User: "alice", From: "Gone", To: "X"}, store.ErrNoMailbox},
		{&store.Copy{User: "alice", From: "INBOX", To: "Gone", UIDs: []uint32{1}}, store.ErrNoMailbox},
		{&store.Copy{User: "alice", From: "INBOX", To: "INBOX", UIDs: []uint32{3, 2}}, store.ErrInvalidOp},
		{&store.StoreFlags{User: "alice", Mailbox: "Gone", UIDs: []uint32{1}, Action: store.FlagsAdd}, store.ErrNoMailbox},
		{&store.StoreFlags{User: "alice", Mailbox: "INBOX", Action: 9}, store.ErrInvalidOp},
		{&store.Expunge{User: "nobody", Mailbox: "INBOX"}, store.ErrNoUser},
		{&store.Deliver{Body: body(raw)}, store.ErrInvalidOp},
		{nil, store.ErrInvalidOp},
	}
	before, _ := s.Digest()
	for _, c := range cases {
		res, err := s.ApplyNext(context.Background(), testNow, c.op)
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, c.want) {
			t.Errorf("%T: err = %v, want %v", c.op, res[0].Err, c.want)
		}
	}
	after, _ := s.Digest()
	if !equalMailboxes(before, after) {
		t.Fatal("refused operations changed mailboxes")
	}
	if _, err := s.Mailboxes("nobody"); !errors.Is(err, store.ErrNoUser) {
		t.Errorf("Mailboxes(nobody): %v", err)
	}
	if _, err := s.Message("alice", "INBOX", 42); !errors.Is(err, store.ErrNoMessage) {
		t.Errorf("Message 42: %v", err)
	}
}

func equalMailboxes(a, b store.Digest) bool {
	if len(a.Mailboxes) != len(b.Mailboxes) {
		return false
	}
	for i := range a.Mailboxes {
		if a.Mailboxes[i] != b.Mailboxes[i] {
			return false
		}
	}
	return true
}

func TestBodyThatDoesNotMatchItsAddress(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	b := splitBody([]byte("Subject: x\r\n\r\n"), bytes.Repeat([]byte("z"), 1000), []byte("\r\n"))
	b.Parts[0].Data = bytes.Repeat([]byte("y"), 1000) // not the bytes its ID names
	wrongID := body(message(1, 100))
	wrongID.ID = store.HashBlob([]byte("something else"))
	short := body(message(2, 100))
	short.Size++
	for name, bb := range map[string]store.Body{"part": b, "body": wrongID, "size": short} {
		res, _ := s.ApplyNext(context.Background(), testNow, &store.Deliver{Body: bb, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
		if res[0].Err == nil {
			t.Errorf("%s: a body that does not match was stored", name)
		}
	}
	if r := mustVerify(t, s); r.Bodies != 0 || r.Parts != 0 {
		t.Fatalf("refused bodies left blobs: %+v", r)
	}
}

func TestAdmitSizeLimit(t *testing.T) {
	s := newTestStore(t, &store.Options{MaxMessageSize: 1000})
	ok := &store.Deliver{Body: body(message(1, 900)), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}
	if err := s.Admit(ok); err != nil {
		t.Fatal(err)
	}
	big := &store.Deliver{Body: body(message(1, 1001)), Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}
	if err := s.Admit(big); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Admit(1001 bytes): %v", err)
	}
	// The server's own per-recipient lines do not count against the
	// limit: a message of exactly the limit is admitted with them.
	exact := message(2, 1000)[:1000]
	trace := []byte("Return-Path: <a@example.org>\r\nDelivered-To: alice@localhost\r\nReceived: from client.test ([127.0.0.1])\r\n\tby mx.test (Twinbox) with ESMTP; Mon, 2 Nov 2026 10:00:00 +0100\r\n")
	withTrace := &store.Deliver{Body: body(exact), Targets: []store.Target{{User: "alice", Mailbox: "INBOX", Prefix: trace}}}
	if err := s.Admit(withTrace); err != nil {
		t.Fatalf("Admit(exactly the limit, with a %d-byte prefix): %v", len(trace), err)
	}
	longPrefix := &store.Deliver{Body: body(message(1, 900)), Targets: []store.Target{{User: "alice", Mailbox: "INBOX",
		Prefix: []byte("X-Long: " + strings.Repeat("x", store.MaxPrefixSize) + "\r\n")}}}
	if err := s.Admit(longPrefix); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Admit(a prefix above MaxPrefixSize): %v", err)
	}
	if err := (&store.Options{CacheSize: -1, MaxMessageSize: -5}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "CacheSize -1") || !strings.Contains(err.Error(), "MaxMessageSize -5") {
		t.Fatalf("Validate should name both bad fields: %v", err)
	}
}

func TestDecodeOp(t *testing.T) {
	ops := []store.Op{
		&store.CreateUser{User: "alice", UIDValidity: 7},
		&store.Deliver{Body: splitBody([]byte("Subject: x\r\n\r\n"), []byte("part"), []byte("\r\n")), InternalDate: testNow,
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX", Prefix: []byte("Delivered-To: a\r\n"), Flags: []string{`\Seen`}}}},
		&store.Move{User: "alice", From: "INBOX", To: "Trash", UIDs: []uint32{1, 5}},
		&store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: []uint32{1}, Action: store.FlagsRemove, Flags: []string{"$x"}, UnchangedSince: 9},
		&store.Collect{Before: testNow, Limit: 10},
	}
	for _, op := range ops {
		enc := store.EncodeOp(op)
		dec, err := store.DecodeOp(enc)
		if err != nil {
			t.Fatalf("%s: %v", op.Kind(), err)
		}
		if again := store.EncodeOp(dec); !bytes.Equal(again, enc) {
			t.Errorf("%s: encoding not stable", op.Kind())
		}
	}
	enc := store.EncodeOp(ops[0])
	enc[0] = 2
	if _, err := store.DecodeOp(enc); !errors.Is(err, store.ErrUnknownVersion) {
		t.Errorf("version 2: %v", err)
	}
	for _, bad := range [][]byte{nil, {1}, {1, 99, 0xa0}, {1, 1, 0xff, 0xff}, {1, 1, 0xa1, 0x01, 0x62, 'a', ':'}} {
		if _, err := store.DecodeOp(bad); err == nil {
			t.Errorf("DecodeOp(%x) accepted garbage", bad)
		}
	}
}

func FuzzDecodeOp(f *testing.F) {
	f.Add(store.EncodeOp(&store.CreateUser{User: "alice"}))
	f.Add(store.EncodeOp(&store.Copy{User: "a", From: "INBOX", To: "X", UIDs: []uint32{1, 2}}))
	f.Add(store.EncodeOp(&store.Deliver{Body: body(message(1, 300)), Targets: []store.Target{{User: "a", Mailbox: "INBOX"}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := store.DecodeOp(b)
		if err != nil {
			return
		}
		again, err := store.DecodeOp(store.EncodeOp(op))
		if err != nil {
			t.Fatalf("re-decoding a decoded op: %v", err)
		}
		if !bytes.Equal(store.EncodeOp(again), store.EncodeOp(op)) {
			t.Fatal("encoding not stable")
		}
	})
}

func TestOpenRefusals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A second open of the same directory (another process) is refused.
	if _, err := store.Open(ctx, dir, nil); err == nil || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("second open: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mailboxes("x"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, err := s.ApplyNext(ctx, testNow, &store.CreateUser{User: "x"}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
	// A Pebble format from a newer release: the marker names a version
	// this build does not know.
	markers, _ := filepath.Glob(filepath.Join(dir, "marker.format-version.*"))
	if len(markers) != 1 {
		t.Fatalf("format markers: %v", markers)
	}
	if err := os.Rename(markers[0], filepath.Join(dir, "marker.format-version.000099.999")); err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(ctx, dir, nil)
	if err == nil || !strings.Contains(err.Error(), "format") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("newer format: %v", err)
	}
	t.Logf("newer format refused: %v", err)
	// A directory that is not a store at all.
	junk := t.TempDir()
	if err := os.WriteFile(filepath.Join(junk, "CURRENT"), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(ctx, junk, nil); err == nil {
		t.Fatal("opened a directory with a garbage CURRENT file")
	}
	if _, err := store.Open(ctx, t.TempDir()+"/missing", &store.Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only open of a missing store succeeded")
	}
}
