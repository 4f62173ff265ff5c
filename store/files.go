package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
)

// corruption records the files Pebble found damaged while the store ran
// (a read or a compaction that met a bad checksum), instead of Pebble's
// default, a panic from the logger's Fatalf (issue 14 D16).
type corruption struct {
	mu    sync.Mutex
	first error
	files map[string]bool
}

// report is Pebble's DataCorruption event listener. It must not block:
// Pebble calls it on read paths.
func (c *corruption) report(info pebble.DataCorruptionInfo, log func(string, ...any)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]bool{}
	}
	if c.files[info.Path] {
		return
	}
	c.files[info.Path] = true
	err := fmt.Errorf("%w: file %s: %v", ErrCorrupt, info.Path, info.Details)
	if c.first == nil {
		c.first = err
	}
	log("store file corrupted; the store refuses what it cannot read (run twinbox verify; a passive resyncs from the active)", "file", info.Path, "err", info.Details)
}

// err is the first corruption found, or nil.
func (c *corruption) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

// Damaged returns the first on-disk corruption Pebble met since the store
// was opened, naming the file, or nil. Reads of the damaged part fail
// with ErrCorrupt; the rest of the store is served.
func (s *Store) Damaged() error { return s.corrupt.err() }

// CheckFiles verifies the checksum of every block of every table file of
// the store (keys, records, metadata and small bodies; large bodies are
// in blob files and Verify re-hashes them). It returns ErrCorrupt naming
// the first damaged file, or nil.
func (s *Store) CheckFiles(ctx context.Context) error {
	db, done, err := s.reader()
	if err != nil {
		return err
	}
	defer done()
	levels, err := db.SSTables()
	if err != nil {
		return fmt.Errorf("store: list table files: %w", err)
	}
	ropts := s.popts.MakeReaderOptions()
	checked := map[uint64]bool{}
	for _, level := range levels {
		for _, t := range level {
			if err := ctx.Err(); err != nil {
				return err
			}
			num := uint64(t.BackingSSTNum)
			if checked[num] || t.BackingType != pebble.BackingTypeLocal {
				continue
			}
			checked[num] = true
			path := filepath.Join(s.dir, fmt.Sprintf("%06d.sst", num))
			if err := checkTable(ctx, s.popts, ropts, path); err != nil {
				return fmt.Errorf("%w: file %s: %v", ErrCorrupt, path, err)
			}
		}
	}
	return nil
}

// checkTable validates one table file's block checksums.
func checkTable(ctx context.Context, po *pebble.Options, ro sstable.ReaderOptions, path string) (err error) {
	f, err := po.FS.Open(path)
	if err != nil {
		return err
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		f.Close()
		return err
	}
	r, err := sstable.NewReader(ctx, readable, ro)
	if err != nil {
		readable.Close()
		return err
	}
	defer func() { err = errors.Join(err, r.Close()) }()
	return r.ValidateBlockChecksums()
}
