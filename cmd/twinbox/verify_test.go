package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/internal/testmail"
	"github.com/twinbox/twinbox/store"
)

// seedStore delivers the test corpus into a store under data/store and
// returns its digest.
func seedStore(t *testing.T, data string) store.Digest {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, storeDir(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	ops := []store.Op{&store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"}}
	for _, raw := range testmail.Corpus(t) {
		ops = append(ops, &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: store.Now(),
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}, {User: "bob", Mailbox: "INBOX"}}})
	}
	res, err := s.ApplyNext(ctx, store.Now(), ops...)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	d, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestVerifyCommand(t *testing.T) {
	data := t.TempDir()
	d := seedStore(t, data)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"verify", "--data", data}, &out, &errOut); err != nil {
		t.Fatalf("verify of a healthy store: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"result     OK", "digest     " + d.Store.String(), "users      2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

}

// The damaged-store case runs the built binary: integration/verify_test.go.

func TestVerifyCommandErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"verify", "--data", filepath.Join(t.TempDir(), "none")}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no store at") {
		t.Fatalf("missing store: %v", err)
	}
	if err := run(context.Background(), []string{"verify", "extra"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Fatalf("extra argument: %v", err)
	}
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Fatalf("unknown command: %v", err)
	}
	// A running node holds the store's lock: verify says so.
	data := t.TempDir()
	seedStore(t, data)
	s, err := store.Open(context.Background(), storeDir(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	err = run(context.Background(), []string{"verify", "--data", data}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("locked store: %v", err)
	}
}
