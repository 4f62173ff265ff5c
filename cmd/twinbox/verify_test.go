package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twinbox/twinbox/dedupe"
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
	files, _ := filepath.Glob("../../store/testdata/corpus/*.eml")
	if len(files) < 5 {
		t.Fatalf("corpus: %d files", len(files))
	}
	ops := []store.Op{&store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"}}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
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

	// Flip one byte of the largest part blob, as a failing disk would.
	db, err := pebble.Open(storeDir(data), &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	it, _ := db.NewIter(&pebble.IterOptions{LowerBound: []byte("q"), UpperBound: []byte("r")})
	var key, val []byte
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Value()) > len(val) {
			key, val = bytes.Clone(it.Key()), bytes.Clone(it.Value())
		}
	}
	it.Close()
	val[len(val)/2] ^= 0x04
	if err := db.Set(key, val, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()

	out.Reset()
	err = run(context.Background(), []string{"verify", "--data", data}, &out, &errOut)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("verify of a damaged store: err = %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "problem    ") || !strings.Contains(out.String(), "does not match its hash") {
		t.Fatalf("damage not named:\n%s", out.String())
	}
}

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

// quietPebble keeps Pebble's recovery messages out of the test output.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)         {}
func (quietPebble) Errorf(string, ...any)        {}
func (quietPebble) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
