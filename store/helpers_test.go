package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twinbox/twinbox/store"
)

// newTestStore opens a store in a temporary directory, closed at cleanup.
func newTestStore(tb testing.TB, opts *store.Options) *store.Store {
	tb.Helper()
	s, err := store.Open(context.Background(), tb.TempDir(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// body prepares raw as one inline segment (package dedupe does the real
// splitting; the store must accept any correct manifest).
func body(raw []byte) store.Body {
	return store.Body{
		ID:       store.HashBlob(raw),
		Size:     int64(len(raw)),
		Manifest: store.Manifest{Segments: []store.Segment{{Inline: raw}}},
		Meta:     store.ParseMeta(raw),
	}
}

// splitBody prepares head + part + tail with part stored as a part blob.
func splitBody(head, part, tail []byte) store.Body {
	raw := append(append(append([]byte(nil), head...), part...), tail...)
	pid := store.HashBlob(part)
	return store.Body{
		ID:   store.HashBlob(raw),
		Size: int64(len(raw)),
		Manifest: store.Manifest{Segments: []store.Segment{
			{Inline: head}, {Ref: pid, Len: int64(len(part))}, {Inline: tail},
		}},
		Parts: []store.PartBlob{{ID: pid, Data: part}},
		Meta:  store.ParseMeta(raw),
	}
}

func message(i int, size int) []byte {
	hdr := fmt.Sprintf("From: Sender %d <s%d@example.org>\r\nTo: rcpt@example.com\r\nSubject: message %d\r\nDate: Mon, 2 Nov 2026 10:00:%02d +0100\r\nMessage-ID: <m%d@example.org>\r\n\r\n", i, i, i, i%60, i)
	b := []byte(hdr)
	for len(b) < size {
		b = append(b, fmt.Sprintf("line %d of message %d, filler text for the body.\r\n", len(b), i)...)
	}
	return b
}

// apply applies ops at the next sequences and fails the test on any error.
func apply(tb testing.TB, s *store.Store, ops ...store.Op) []store.Result {
	tb.Helper()
	res, err := s.ApplyNext(context.Background(), testNow, ops...)
	if err != nil {
		tb.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			tb.Fatalf("op %d (%s): %v", i, ops[i].Kind(), r.Err)
		}
	}
	return res
}

// testNow is a fixed entry time so that tests are deterministic.
var testNow = time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC).UnixNano()

func mustVerify(tb testing.TB, s *store.Store) *store.Report {
	tb.Helper()
	r, err := s.Verify(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	if !r.OK() {
		tb.Fatalf("verify found problems:\n%v", r.Problems)
	}
	return r
}
