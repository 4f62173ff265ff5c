// Package integration runs the twinbox binary as separate OS processes, the
// way an operator does.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/internal/testmail"
	"github.com/twinbox/twinbox/store"
)

// runTwinbox runs the binary and returns its stdout, stderr and exit code.
func runTwinbox(t *testing.T, bin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &ee):
		return out.String(), errOut.String(), ee.ExitCode()
	}
	t.Fatal(err)
	return "", "", -1
}

// TestVerifyAsAnOperator seeds a node's data directory with the corpus
// delivered to three users, stops it, and runs `twinbox verify` on it, before
// and after a disk error flips a byte of a stored attachment.
func TestVerifyAsAnOperator(t *testing.T) {
	bin := buildTwinbox(t)
	data := t.TempDir()
	ctx := context.Background()
	s, err := store.Open(ctx, filepath.Join(data, "store"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ops := []store.Op{&store.CreateUser{User: "ann"}, &store.CreateUser{User: "ben"}, &store.CreateUser{User: "cy"}}
	corpus := testmail.Corpus(t)
	for _, raw := range corpus {
		ops = append(ops, &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: store.Now(), Targets: []store.Target{
			{User: "ann", Mailbox: "INBOX"}, {User: "ben", Mailbox: "INBOX"}, {User: "cy", Mailbox: "INBOX"}}})
	}
	if _, err := s.ApplyNext(ctx, store.Now(), ops...); err != nil {
		t.Fatal(err)
	}
	want, _ := s.Digest()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runTwinbox(t, bin, []string{"TWINBOX_DATA=" + data}, "verify")
	if code != 0 || !strings.Contains(out, "result     OK") || !strings.Contains(out, want.Store.String()) {
		t.Fatalf("healthy store: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("twinbox verify:\n%s", out)

	out, _, code = runTwinbox(t, bin, nil, "verify", "--data", data, "--json")
	var rep struct {
		OK       bool   `json:"ok"`
		Messages int    `json:"messages"`
		Bodies   int    `json:"bodies"`
		Digest   string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, out)
	}
	if !rep.OK || rep.Messages != 3*len(corpus) || rep.Bodies != len(corpus) || rep.Digest != want.Store.String() {
		t.Fatalf("--json report %+v; want %d messages over %d bodies", rep, 3*len(corpus), len(corpus))
	}

	// A disk error: one byte of the largest stored attachment flips.
	db, err := pebble.Open(filepath.Join(data, "store"), &pebble.Options{Logger: quietPebble{}})
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
	if key == nil {
		t.Fatal("the corpus produced no part blob")
	}
	val[len(val)/3] ^= 0x10
	if err := db.Set(key, val, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	out, _, code = runTwinbox(t, bin, nil, "verify", "--data", data)
	if code != 1 || !strings.Contains(out, "does not match its hash") {
		t.Fatalf("damaged store: exit %d\n%s", code, out)
	}
	t.Logf("after the flip:\n%s", out)

	_, errOut, code = runTwinbox(t, bin, nil, "verify", "--data", filepath.Join(data, "nope"))
	if code != 1 || !strings.Contains(errOut, "no store at") {
		t.Fatalf("missing store: exit %d: %s", code, errOut)
	}
	_, errOut, code = runTwinbox(t, bin, nil, "verify", "--bogus")
	if code != 2 || !strings.Contains(errOut, "bogus") {
		t.Fatalf("bad flag: exit %d: %s", code, errOut)
	}
}

// quietPebble keeps Pebble's recovery messages out of the test output.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)         {}
func (quietPebble) Errorf(string, ...any)        {}
func (quietPebble) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }
