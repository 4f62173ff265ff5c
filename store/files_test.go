package store_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/store"
)

// TestFlippedByteInATableFile (issue 14 D16): one bit flipped in any
// block of a table file makes Open refuse the store with ErrCorrupt
// naming the file — never a panic — and Open with SkipFileCheck, then
// Verify, reports it too.
func TestFlippedByteInATableFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range scenario(rand.New(rand.NewPCG(1, 2)), 200) {
		if _, err := s.Apply(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckFiles(ctx); err != nil {
		t.Fatalf("CheckFiles of a sound store: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table file after a flush")
	}
	clean := map[string][]byte{}
	for _, p := range tables {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		clean[p] = b
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for round := range 20 {
		path := tables[rng.IntN(len(tables))]
		b := append([]byte(nil), clean[path]...)
		// Anywhere but the footer's last 64 bytes (its magic and
		// version: those make a different, also clear, error).
		off := rng.IntN(len(b) - 64)
		b[off] ^= 1 << rng.IntN(8)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("round %d, %s byte %d: panic %v", round, filepath.Base(path), off, p)
				}
			}()
			// Read-only as verify opens it, read-write as a node does.
			s, err := store.Open(ctx, dir, &store.Options{ReadOnly: round%2 == 0})
			if err == nil {
				s.Close(ctx)
				t.Errorf("round %d: %s with byte %d flipped: opened", round, filepath.Base(path), off)
			} else if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(path)) {
				t.Errorf("round %d: %s byte %d: %v, want ErrCorrupt naming the file", round, filepath.Base(path), off, err)
			}
		}()
		if err := os.WriteFile(path, clean[path], 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkCheckFiles measures what Open's check of the table files
// costs: MB/s over the table files' bytes.
func BenchmarkCheckFiles(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	s, err := store.Open(ctx, dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	for _, e := range scenario(rand.New(rand.NewPCG(1, 2)), 3000) {
		if _, err := s.Apply(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	var size int64
	for _, p := range tables {
		fi, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		size += fi.Size()
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if err := s.CheckFiles(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(tables)), "tables")
}

// TestTruncatedTableFile: a table file cut short (a disk that lost its
// tail) is refused at open naming the file, never a panic.
func TestTruncatedTableFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.Open(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range scenario(rand.New(rand.NewPCG(1, 2)), 100) {
		if _, err := s.Apply(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Close(ctx)
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table file")
	}
	fi, err := os.Stat(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(tables[0], fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{true, false} {
		s, err := store.Open(ctx, dir, &store.Options{ReadOnly: ro})
		if err == nil {
			s.Close(ctx)
			t.Errorf("read-only %v: a truncated %s opened", ro, filepath.Base(tables[0]))
			continue
		}
		if !strings.Contains(err.Error(), filepath.Base(tables[0])) {
			t.Errorf("read-only %v: %v, want the file named", ro, err)
		}
		t.Logf("read-only %v: %v", ro, err)
	}
}
