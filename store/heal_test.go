package store_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/twinbox/twinbox/store"
)

// TestHealAfterFailedFsync (issue 14 D3): while the WAL's writes fail
// (a full disk), a commit fails and leaves nothing visible: reads and
// writes answer ErrDiskFault; once writes succeed again the store opens
// its database again by itself, without the failed entry, and takes
// writes.
func TestHealAfterFailedFsync(t *testing.T) {
	ctx := context.Background()
	var failing atomic.Bool
	fs := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failing.Load() && (op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileWrite ||
			op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpCreate) {
			return syscall.ENOSPC
		}
		return nil
	}))
	s := newTestStore(t, &store.Options{FS: fs})
	apply(t, s, &store.CreateUser{User: "alice"})
	deliver := func(i int) error {
		_, err := s.ApplyNext(ctx, testNow, &store.Deliver{Body: body(message(i, 300)), InternalDate: testNow,
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
		return err
	}
	if err := deliver(1); err != nil {
		t.Fatal(err)
	}
	before := s.AppliedSeq()

	failing.Store(true)
	if err := deliver(2); err == nil {
		t.Fatal("a delivery whose fsync failed was acknowledged")
	}
	if _, err := s.UIDs("alice", "INBOX"); !errors.Is(err, store.ErrDiskFault) {
		t.Errorf("a read after the failed fsync: %v, want ErrDiskFault (nothing unacknowledged shown)", err)
	}
	if err := deliver(3); !errors.Is(err, store.ErrDiskFault) {
		t.Errorf("a write while the disk fails: %v, want ErrDiskFault", err)
	}

	failing.Store(false)
	// Poll, within a bound, until the store takes writes again.
	deadline := time.Now().Add(30 * time.Second)
	for err := deliver(4); err != nil; err = deliver(4) {
		if time.Now().After(deadline) {
			t.Fatalf("no write taken within 30 s of the disk's recovery: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	uids, err := s.UIDs("alice", "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) != 2 {
		t.Errorf("INBOX after healing: %d messages, want 2 (1 and 4; 2 failed, 3 was refused)", len(uids))
	}
	if got := s.AppliedSeq(); got != before+1 {
		t.Errorf("applied %d after healing, want %d", got, before+1)
	}
	if r := mustVerify(t, s); !r.OK() {
		t.Errorf("verify after healing: %s", strings.Join(r.Problems, "; "))
	}
}
