package cache_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/twinbox/twinbox/cache"
	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/store"
)

func TestReaderServesStoredBytes(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	raw := []byte("From: a@example.org\r\nSubject: cached\r\n\r\nbody\r\n")
	res, err := s.ApplyNext(ctx, store.Now(), &store.CreateUser{User: "alice"},
		&store.Deliver{Body: *dedupe.Prepare(raw, nil), Targets: []store.Target{{User: "alice", Mailbox: "INBOX", Prefix: []byte("Delivered-To: alice\r\n")}}})
	if err != nil || res[1].Err != nil {
		t.Fatal(err, res[1].Err)
	}
	r, err := cache.NewReader(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Message("alice", "INBOX", 1)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		lit, err := r.Literal(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if want := append([]byte("Delivered-To: alice\r\n"), raw...); !bytes.Equal(lit, want) {
			t.Fatalf("literal = %q", lit)
		}
		meta, err := r.Meta(ctx, m.Body)
		if err != nil || meta.Envelope.Subject != "cached" {
			t.Fatalf("meta: %v %+v", err, meta)
		}
	}
	st := r.Stats()
	if st.Bodies.Hits != 2 || st.Bodies.Misses != 1 || st.Metas.Hits != 2 {
		t.Fatalf("stats = %+v", st)
	}
	if _, err := r.Body(ctx, store.HashBlob([]byte("absent"))); err == nil {
		t.Fatal("absent body served")
	}
}
