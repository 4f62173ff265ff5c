package replog

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twinbox/twinbox/store"
)

func bigOp(n int) store.Op {
	noise := make([]byte, n) // incompressible, so that it is chunked
	rand.NewChaCha8([32]byte{1}).Read(noise)
	raw := append([]byte("Subject: big\r\n\r\n"), noise...)
	b := store.Body{ID: store.HashBlob(raw), Size: int64(len(raw)),
		Manifest: store.Manifest{Segments: []store.Segment{{Inline: raw}}}}
	return &store.Deliver{Body: b, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}
}

func TestSplitAndAssemble(t *testing.T) {
	op := bigOp(3*ChunkSize + 100)
	entries := Split(7, 10, 1, op)
	if len(entries) != 4 || entries[3].Seq != 13 || entries[3].Op == nil || entries[0].Op != nil {
		t.Fatalf("split into %d entries", len(entries))
	}
	var asm assembler
	var got []Entry
	for _, e := range entries {
		d, err := DecodeEntry(e.Encode())
		if err != nil {
			t.Fatal(err)
		}
		w, ok, err := asm.add(d)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, w)
		}
	}
	if len(got) != 1 || got[0].Seq != 13 || !bytes.Equal(store.EncodeOp(got[0].Op), store.EncodeOp(op)) {
		t.Fatalf("assembled %d entries", len(got))
	}

	// Chunks whose last never came (a writer died) give way to the next
	// whole entry.
	asm = assembler{}
	for _, e := range entries[:2] {
		if _, ok, _ := asm.add(e); ok {
			t.Fatal("a chunk assembled alone")
		}
	}
	small := Entry{Epoch: 8, Seq: 12, Op: &store.CreateUser{User: "bob"}}
	w, ok, err := asm.add(small)
	if err != nil || !ok || w.Seq != 12 {
		t.Fatalf("whole entry after orphan chunks: %v %v", ok, err)
	}
	// A last chunk without its beginning is refused, not misread.
	asm = assembler{}
	if _, ok, err := asm.add(entries[3]); ok || err == nil {
		t.Errorf("last chunk alone: %v %v", ok, err)
	}
}

func TestCompressedEntriesRoundTrip(t *testing.T) {
	targets := make([]store.Target, 50)
	for i := range targets {
		targets[i] = store.Target{User: "user" + string(rune('a'+i%26)), Mailbox: "INBOX",
			Prefix: []byte("Return-Path: <a@example.org>\r\nDelivered-To: user@localhost\r\n")}
	}
	op := &store.Deliver{Body: store.Body{ID: store.HashBlob([]byte("x")), Size: 1, Stored: true}, Targets: targets}
	es := Split(1, 1, 1, op)
	if len(es) != 1 || es[0].kind&flagS2 == 0 {
		t.Fatalf("50 targets not compressed: %d entries, kind %x", len(es), es[0].kind)
	}
	b := es[0].Encode()
	if plain := len(store.EncodeOp(op)); len(b) >= plain {
		t.Errorf("compressed entry %d bytes, plain op %d", len(b), plain)
	}
	d, err := DecodeEntry(b)
	if err != nil || !bytes.Equal(store.EncodeOp(d.Op), store.EncodeOp(op)) {
		t.Fatalf("round trip: %v", err)
	}
	if !bytes.Equal(d.Encode(), b) {
		t.Error("a decoded entry does not re-encode to the bytes received")
	}
}

func TestRecords(t *testing.T) {
	var entries []Entry
	for i := uint64(1); i <= 5; i++ {
		entries = append(entries, Entry{Epoch: 1, Seq: i, Op: &store.CreateUser{User: "u"}})
	}
	got, err := decodeRecord(encodeRecord(entries))
	if err != nil || len(got) != 5 || got[4].Seq != 5 {
		t.Fatalf("record round trip: %d entries, %v", len(got), err)
	}
	gap := append([]Entry{}, entries[0], entries[2])
	if _, err := decodeRecord(encodeRecord(gap)); err == nil {
		t.Error("a record with a gap decoded")
	}
	big := Split(1, 10, 1, bigOp(2*ChunkSize+10))
	for _, r := range packRecords(append(entries, big...)) {
		if n := len(encodeRecord(r)); n > maxRecord+ChunkSize/8 {
			t.Errorf("a record of %d bytes", n)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {1, 0, 0, 0, 0}, {1, 0, 0, 0, 9, 0, 0, 0, 1}, {2, 0, 0, 0, 1}} {
		if _, err := decodeRecord(bad); err == nil {
			t.Errorf("decoded %x", bad)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord([]Entry{{Epoch: 1, Seq: 1, Op: &store.CreateUser{User: "a"}}, {Epoch: 1, Seq: 2, Op: &store.CreateUser{User: "b"}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeRecord(b); err == nil && len(r) == 0 {
			t.Fatal("an empty record decoded")
		}
	})
}

// TestApplierBoundsWhatWaits: the follower's applier takes batches while
// their bytes fit its budget, holds the follower back when they do not,
// lets one batch larger than the budget through alone, applies in order,
// and stops on the first error, which send then returns.
func TestApplierBoundsWhatWaits(t *testing.T) {
	ctx := t.Context()
	gate := make(chan struct{})
	var mu sync.Mutex
	var applied []uint64
	fail := errors.New("store broke")
	ap := startApplier(ctx, func(_ context.Context, whole []Entry) error {
		<-gate
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, whole[0].Seq)
		if whole[0].Seq == 99 {
			return fail
		}
		return nil
	})
	batch := func(seq uint64) []Entry { return []Entry{{Seq: seq}} }

	// Two half-budget batches fit; the apply of the first is held.
	for seq := uint64(1); seq <= 2; seq++ {
		if err := ap.send(ctx, batch(seq), applyBudget/2); err != nil {
			t.Fatal(err)
		}
	}
	sent := make(chan error, 1)
	go func() { sent <- ap.send(ctx, batch(3), applyBudget/2) }()
	select {
	case err := <-sent:
		t.Fatalf("a third half-budget batch was taken while two wait (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	gate <- struct{}{} // batch 1 applies: room for batch 3
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	gate <- struct{}{}
	gate <- struct{}{}
	// Nothing waits now: a batch of twice the budget goes alone.
	go func() { sent <- ap.send(ctx, batch(4), 2*applyBudget) }()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	gate <- struct{}{}
	// A failing apply stops the applier; the next send says why.
	if err := ap.send(ctx, batch(99), 1); err != nil {
		t.Fatal(err)
	}
	gate <- struct{}{}
	if err := ap.stop(); !errors.Is(err, fail) {
		t.Fatalf("stop: %v, want the apply's error", err)
	}
	if err := ap.send(ctx, batch(100), 1); !errors.Is(err, fail) {
		t.Fatalf("send after the failure: %v, want the apply's error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(applied, []uint64{1, 2, 3, 4, 99}) {
		t.Fatalf("applied %v", applied)
	}
}
