package store_test

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/twinbox/twinbox/store"
)

// TestCrashKeepsAcknowledgedAndDropsPartial applies a stream of entries on
// Pebble's crash-testing file system and takes crash images at random
// moments, some mid-commit, keeping a random share of unsynced writes. Every
// image must open to exactly the state after some whole number of entries
// (a cut-off entry is invisible, never half there), and to no fewer entries
// than had been acknowledged when the image was taken.
func TestCrashKeepsAcknowledgedAndDropsPartial(t *testing.T) {
	ctx := context.Background()
	entries := scenario(rand.New(rand.NewPCG(3, 4)), 300)

	// The reference: the digest after each prefix of the entries.
	ref := newTestStore(t, nil)
	prefix := map[store.Sum]int{}
	d, _ := ref.Digest()
	prefix[d.Store] = 0
	for i, e := range entries {
		if _, err := ref.Apply(ctx, e); err != nil {
			t.Fatal(err)
		}
		d, err := ref.Digest()
		if err != nil {
			t.Fatal(err)
		}
		prefix[d.Store] = i + 1
	}

	fs := vfs.NewCrashableMem()
	s, err := store.Open(ctx, "db", &store.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	done := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(5, 6))
		for i := 0; i < len(entries); {
			n := min(1+rng.IntN(8), len(entries)-i)
			if _, err := s.Apply(ctx, entries[i:i+n]...); err != nil {
				done <- err
				return
			}
			i += n
			acked.Store(int64(i))
		}
		done <- nil
	}()

	type image struct {
		fs    *vfs.MemFS
		acked int
	}
	var images []image
	rng := rand.New(rand.NewPCG(7, 8))
	finished := false
	for !finished {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		before := int(acked.Load())
		images = append(images, image{
			fs:    fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng}),
			acked: before,
		})
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, img := range images {
		c, err := store.Open(ctx, "db", &store.Options{FS: img.fs})
		if err != nil {
			t.Fatalf("crash image (acked %d) does not open: %v", img.acked, err)
		}
		d, err := c.Digest()
		if err != nil {
			t.Fatal(err)
		}
		k, ok := prefix[d.Store]
		if !ok {
			t.Fatalf("crash image (acked %d) holds a state that no whole prefix of the entries gives", img.acked)
		}
		if k < img.acked {
			t.Fatalf("crash image lost acknowledged entries: has %d, %d were acknowledged", k, img.acked)
		}
		if r, err := c.Verify(ctx); err != nil || !r.OK() {
			t.Fatalf("crash image at %d entries: %v %v", k, err, r.Problems)
		}
		if got := c.AppliedSeq(); got != uint64(k) {
			t.Fatalf("applied seq %d, state of %d entries", got, k)
		}
		seen[k] = true
		_ = c.Close(ctx)
	}
	if len(images) < 5 || len(seen) < 3 {
		t.Fatalf("too few distinct crash points to mean anything: %d images, %d states", len(images), len(seen))
	}
	t.Logf("%d crash images, %d distinct states, all whole and acknowledged", len(images), len(seen))
}

// TestRestartResumes shows a store reopened on disk resumes at its applied
// sequence and skips entries it already has.
func TestRestartResumes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	entries := scenario(rand.New(rand.NewPCG(11, 12)), 120)
	s, err := store.Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, entries[:80]...); err != nil {
		t.Fatal(err)
	}
	_ = s.Close(ctx)
	s, err = store.Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if s.AppliedSeq() != 80 {
		t.Fatalf("applied after reopen = %d", s.AppliedSeq())
	}
	// The log is replayed from a little earlier, as after a crash.
	res, err := s.Apply(ctx, entries[60:]...)
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for _, r := range res {
		if r.Skipped {
			skipped++
		}
	}
	if skipped != 20 {
		t.Fatalf("skipped %d entries, want 20", skipped)
	}
	ref := newTestStore(t, nil)
	if _, err := ref.Apply(ctx, entries...); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Digest()
	b, _ := ref.Digest()
	if a.Store != b.Store {
		t.Fatal("restarted store differs from one that applied the entries in one go")
	}
}
