package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Defaults for Options.
const (
	DefaultCacheSize      = 64 << 20
	DefaultMaxMessageSize = 50 << 20
)

// MaxPrefixSize bounds the per-recipient lines of a delivery (a Target's
// Prefix: the trace and envelope fields the receiving server writes),
// checked by Admit. They are the server's own and do not count against
// MaxMessageSize, so a client may send a message of exactly the size it was
// told; a few hundred bytes is usual.
const MaxPrefixSize = 64 << 10

// Options configure a Store. A nil *Options means defaults.
type Options struct {
	// CacheSize is the Pebble block cache in bytes.
	CacheSize int64
	// MaxMessageSize bounds a delivered body: the message as its sender
	// sent it, without the per-recipient prefix (bounded by MaxPrefixSize).
	// It is checked by Admit, before an operation enters the log, never
	// while applying: applying must not depend on a node's configuration.
	MaxMessageSize int64
	// ReadOnly opens the store without taking writes (verify, inspection).
	ReadOnly bool
	// SkipFileCheck opens the store without checking the checksums of its
	// table files first (CheckFiles); a damaged file is then found only
	// when it is read.
	SkipFileCheck bool
	// FS is the file system; nil means the operating system's. Tests pass
	// Pebble's crash-testing in-memory file system.
	FS vfs.FS
	// Logger receives the store's and Pebble's messages; nil discards them.
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every bad setting at once.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	var errs []error
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("store: CacheSize %d: must not be negative", o.CacheSize))
	}
	if o.MaxMessageSize < 0 {
		errs = append(errs, fmt.Errorf("store: MaxMessageSize %d: must not be negative", o.MaxMessageSize))
	}
	return errors.Join(errs...)
}

// Store is the message store of one node: a state machine fed with log
// entries through Apply, read concurrently by everyone else.
//
// Concurrency: Apply calls are serialised (entries are applied in log order);
// reads may run concurrently with each other and with Apply and see every
// entry applied before they started. Durability: Apply returns only after the
// batch holding its entries and the new applied sequence is fsynced
// (pebble.Sync).
type Store struct {
	opts Options
	dir  string
	log  *slog.Logger

	// closeMu guards db against use after Close: readers and Apply hold it
	// shared, Close exclusively.
	closeMu sync.RWMutex
	db      *pebble.DB
	popts   *pebble.Options
	closed  bool
	corrupt corruption

	// wmu serialises Apply; applied is the last applied sequence; broken
	// is set when an fsync failed and the store refuses writes.
	wmu     sync.Mutex
	applied uint64
	broken  error
	// safe is the last entry applied before the first batch whose fsync
	// failed; healedAt when heal last tried to open the database again.
	// healing: a goroutine of healWG opens the database again (heal.go).
	safe     uint64
	healedAt time.Time
	healing  bool
	healWG   sync.WaitGroup
}

// pebbleOptions are the store's Pebble options, with cache (Open, and
// heal when it opens the database again).
func (s *Store) pebbleOptions(cache *pebble.Cache) *pebble.Options {
	o := s.opts
	po := &pebble.Options{
		FS:                 o.FS,
		Cache:              cache,
		FormatMajorVersion: pebble.FormatNewest,
		ReadOnly:           o.ReadOnly,
		ErrorIfNotExists:   o.ReadOnly,
		Logger:             pebbleLogger{o.Logger},
		// Bodies are written once and read often; compactions should move
		// keys, not megabytes. Values from 1 KiB up (bodies, manifests,
		// parts) live in blob files that compactions only reference.
		MemTableSize: 32 << 20,
	}

	// Point lookups (mailbox records, "is this body stored yet?") mostly
	// miss in all but one level; bloom filters let them skip the rest.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	po.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           1 << 10,
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     time.Hour,
			TargetGarbageRatio:    0.2,
		}
	}
	// A damaged file is reported and its reads fail with ErrCorrupt;
	// Pebble's default is a panic (issue 14 D16).
	po.EventListener = &pebble.EventListener{DataCorruption: func(info pebble.DataCorruptionInfo) {
		s.corrupt.report(info, s.log.Error)
	}}
	po.EnsureDefaults()
	return po
}

// Open opens or creates the store in dir.
func Open(ctx context.Context, dir string, opts *Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	s := &Store{opts: o, dir: dir, log: o.Logger.With("component", "store")}
	cache := pebble.NewCache(o.CacheSize)
	defer cache.Unref()
	po := s.pebbleOptions(cache)
	s.popts = po
	db, err := pebble.Open(dir, po)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("store: open %s: in use by another process (is another twinbox running on this data directory?): %w", dir, err)
	}
	if err != nil {
		if pebble.IsCorruptionError(err) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s.db = db
	if err := s.init(); err != nil {
		_ = db.Close()
		if d := s.Damaged(); d != nil {
			err = d
		} else if pebble.IsCorruptionError(err) {
			err = fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if !o.SkipFileCheck {
		start := time.Now()
		err := s.CheckFiles(ctx)
		if err == nil {
			err = s.Damaged()
		}
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("store: open %s: %w", dir, err)
		}
		s.log.Debug("table files checked", "took", time.Since(start))
	}
	return s, nil
}

func (s *Store) init() error {
	v, err := s.get(keyFormat)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if s.opts.ReadOnly {
			return fmt.Errorf("%w: no Twinbox format marker (not a Twinbox store?)", ErrCorrupt)
		}
		if !s.isEmpty() {
			return fmt.Errorf("%w: database has data but no Twinbox format marker", ErrCorrupt)
		}
		if err := s.db.Set(keyFormat, formatVersion, pebble.Sync); err != nil {
			return err
		}
	case err != nil:
		return err
	case !bytes.Equal(v, formatVersion):
		return fmt.Errorf("%w: store format %x, this build reads %x", ErrUnknownVersion, v, formatVersion)
	}
	a, err := s.get(keyApplied)
	if err != nil && !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	s.applied = u64(a)
	if _, err := s.get(keyFirm); errors.Is(err, pebble.ErrNotFound) && !s.opts.ReadOnly {
		// A store from before undo records: everything in it is firm.
		if err := s.db.Set(keyFirm, putU64(s.applied), pebble.Sync); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) isEmpty() bool {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return false
	}
	defer it.Close()
	return !it.First()
}

// get returns a copy of the value of k.
func (s *Store) get(k []byte) ([]byte, error) {
	if s.db == nil {
		return nil, ErrDiskFault
	}
	v, closer, err := s.db.Get(k)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// Close closes the store. Later calls fail with ErrClosed.
func (s *Store) Close(ctx context.Context) error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.wmu.Lock()
	s.closed = true
	db := s.db
	s.wmu.Unlock()
	var err error
	if db != nil {
		err = db.Close()
	}
	s.closeMu.Unlock()
	// A reopen in progress (heal.go) closes what it opens: closed is set.
	return errors.Join(err, s.waitHeal(ctx))
}

// Dir is the directory the store lives in.
func (s *Store) Dir() string { return s.dir }

// AppliedSeq is the sequence of the last applied entry.
func (s *Store) AppliedSeq() uint64 {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.applied
}

// reader acquires the store for a read; the returned func releases it.
func (s *Store) reader() (*pebble.DB, func(), error) {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, nil, ErrClosed
	}
	if s.db == nil { // closed after a failed fsync (heal.go)
		s.closeMu.RUnlock()
		s.startHeal()
		return nil, nil, ErrDiskFault
	}
	return s.db, s.closeMu.RUnlock, nil
}

// Checkpoint writes a consistent copy of the store to dir (which must not
// exist), for resync and backups.
func (s *Store) Checkpoint(dir string) error {
	db, done, err := s.reader()
	if err != nil {
		return err
	}
	defer done()
	if err := db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("store: checkpoint to %s: %w", dir, err)
	}
	return nil
}

// Flush writes the memtable to disk (benchmarks measure on-disk size).
func (s *Store) Flush() error {
	db, done, err := s.reader()
	if err != nil {
		return err
	}
	defer done()
	return db.Flush()
}

// DiskUsage is the size of the store's live files in bytes.
func (s *Store) DiskUsage() (uint64, error) {
	db, done, err := s.reader()
	if err != nil {
		return 0, err
	}
	defer done()
	return db.Metrics().DiskSpaceUsage(), nil
}

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...)) // Pebble's contract: Fatalf does not return
}
