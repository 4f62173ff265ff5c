package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Healing after a failed fsync (issue 14 D3). A batch is visible once
// applied, before its fsync; when the fsync fails the store cannot tell
// whether it is on the disk, so the database is closed at once: reads
// and writes fail (ErrDiskFault, a temporary error) rather than show a
// change no one acknowledged. One goroutine opens it again once the disk
// has room for Pebble to replay its WAL; Pebble's recovery keeps exactly
// what reached the disk. No restart is needed.

// errSyncFailed marks the failed fsync of a batch.
var errSyncFailed = errors.New("store: fsync")

// healEvery is how often the store checks whether the disk has room to
// open the database again.
const healEvery = time.Second

// broke records an fsync that failed for entries from first on. Called
// with wmu held.
func (s *Store) broke(err error, first uint64) {
	if s.broken == nil || first-1 < s.safe {
		s.safe = first - 1
	}
	s.broken = err
}

// healNow closes the database after a failed fsync and starts opening it
// again.
func (s *Store) healNow() {
	s.closeMu.Lock()
	s.wmu.Lock()
	if s.db != nil && !s.closed {
		_ = s.db.Close() // it may repeat the fsync's error
		s.db = nil
		s.log.Error("store: database closed after a failed fsync; it is opened again once the disk takes writes", "err", s.broken)
	}
	s.wmu.Unlock()
	s.closeMu.Unlock()
	s.startHeal()
}

// healIfBroken returns nil when the store takes writes; otherwise the
// reason, after starting to heal it if it is time.
func (s *Store) healIfBroken() error {
	s.wmu.Lock()
	broken, closed := s.broken, s.db == nil
	s.wmu.Unlock()
	if broken == nil {
		return nil
	}
	if closed {
		s.startHeal()
		return fmt.Errorf("%w (%w)", ErrDiskFault, broken)
	}
	return broken
}

// startHeal starts the goroutine that opens the database again, unless
// it runs, the store is open or closed, it tried less than healEvery ago,
// or the disk lacks room for the WAL's replay.
func (s *Store) startHeal() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	now := time.Now()
	if s.healing || s.closed || s.db != nil || now.Sub(s.healedAt) < healEvery {
		return
	}
	s.healedAt = now
	if err := roomToReplay(s.dir); err != nil {
		s.log.Debug("store: not yet opened again", "err", err)
		return
	}
	s.healing = true
	s.healWG.Go(s.reopen)
}

// reopen opens the database again (Pebble's Open may wait for a flush
// until the disk has room; no lock is held meanwhile).
func (s *Store) reopen() {
	cache := pebble.NewCache(s.opts.CacheSize)
	defer cache.Unref()
	po := s.pebbleOptions(cache)
	db, err := pebble.Open(s.dir, po)
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.healing = false
	if err != nil {
		s.log.Warn("store: open the database again after a failed fsync", "err", err)
		return
	}
	if s.closed {
		_ = db.Close()
		return
	}
	v, closer, err := db.Get(keyApplied)
	var applied uint64
	switch {
	case err == nil:
		applied = u64(v)
		closer.Close()
	case !errors.Is(err, pebble.ErrNotFound):
		s.log.Warn("store: open the database again after a failed fsync", "err", err)
		_ = db.Close()
		return
	}
	s.db, s.popts = db, po
	if applied < s.safe {
		// Entries applied from a log without their own fsync were lost
		// with it: reads go on, writes wait for a restart that replays
		// them.
		s.broken = fmt.Errorf("store: opened again after a failed fsync, it lacks entries %d..%d it had applied: restart the node to replay them from the log", applied+1, s.safe)
		s.log.Error("store: entries lost with a failed fsync", "applied", applied, "had", s.safe)
		return
	}
	s.log.Info("store: writes resume: the database was opened again after a failed fsync",
		"applied", applied, "dropped", s.applied-applied, "was", s.broken)
	s.applied, s.broken, s.safe = applied, nil, 0
}

// roomToReplay reports whether the file system of dir has room to replay
// the WAL: twice its size and a MiB.
func roomToReplay(dir string) error {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var need uint64 = 1 << 20
	for _, l := range logs {
		if fi, err := os.Stat(l); err == nil {
			need += 2 * uint64(fi.Size())
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	if free := st.Bavail * uint64(st.Bsize); free < need {
		return fmt.Errorf("%d bytes free in %s, %d needed to replay the WAL", free, dir, need)
	}
	return nil
}

// waitHeal waits for a reopen in progress, within ctx.
func (s *Store) waitHeal(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.healWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store: close: opening the database again after a failed fsync: %w", ctx.Err())
	}
}
