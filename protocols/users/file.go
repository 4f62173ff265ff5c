package users

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// DefaultInterval is how often Watch looks at the file.
const DefaultInterval = time.Second

// Options configure Open. A nil *Options means defaults.
type Options struct {
	// Logger receives reloads and reload failures; nil discards them.
	Logger *slog.Logger
	// Interval is Watch's polling period; 0 means DefaultInterval.
	Interval time.Duration
}

// Validate reports every bad field at once.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	var errs []error
	if o.Interval < 0 {
		errs = append(errs, fmt.Errorf("users: Options.Interval %v is negative", o.Interval))
	}
	return errors.Join(errs...)
}

// File is the in-memory view of a passwd-file, re-read when it changes.
// It is safe for concurrent use.
type File struct {
	path     string
	log      *slog.Logger
	interval time.Duration

	// reloadMu serializes Reload; it guards looked, seen and seenErr.
	reloadMu sync.Mutex
	looked   bool        // a Reload has read the file or found none
	seen     fs.FileInfo // what the last Reload read; nil: no file
	seenErr  error       // why the file seen could not be used, or nil

	mu     sync.RWMutex
	hashes map[string][]byte // user → bcrypt hash
	users  []string          // sorted
	// dummy is compared against for unknown users, so that they cost as
	// much time as known ones; nil while there are no users.
	dummy     []byte
	dummyCost int
}

// Open reads the passwd-file at path. A missing file means no users yet;
// a file that does not parse is an error.
func Open(path string, opts *Options) (*File, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	f := &File{
		path:     path,
		log:      o.Logger.With("component", "users", "path", path),
		interval: o.Interval,
		hashes:   map[string][]byte{},
	}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Lookup reports whether user is in the file.
func (f *File) Lookup(user string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.hashes[user]
	return ok
}

// Users returns the user names, sorted. The slice is the caller's.
func (f *File) Users() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.users)
}

// Authenticate checks user's password. It returns ErrAuthFailed for an
// unknown user and for a wrong password alike, after the same amount of
// bcrypt work.
func (f *File) Authenticate(user, password string) error {
	f.mu.RLock()
	hash, ok := f.hashes[user]
	dummy := f.dummy
	f.mu.RUnlock()
	if !ok {
		if dummy != nil {
			_ = bcrypt.CompareHashAndPassword(dummy, []byte(password))
		}
		return ErrAuthFailed
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return ErrAuthFailed
	}
	return nil
}

// Reload re-reads the file if its size, modification time or inode changed
// since the last look. It reports whether the users or their passwords
// changed. When the file does not parse, the previous content stays in
// service and Reload returns the error, again on each call until the file
// changes.
func (f *File) Reload() (changed bool, err error) {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	info, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		info = nil
	case err != nil:
		return false, fmt.Errorf("users: %w", err)
	}
	if f.looked && sameFile(f.seen, info) {
		return false, f.seenErr
	}
	var data []byte
	if info != nil {
		data, info, err = readFile(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			info = nil
		} else if err != nil {
			return false, err
		}
	}
	t, err := parse(f.path, data)
	f.looked, f.seen, f.seenErr = true, info, err
	if err != nil {
		return false, err
	}
	return f.swap(t)
}

// maxDummyCost bounds the cost of the dummy hash: a file with an absurd
// cost must not stall a reload for hours.
const maxDummyCost = 16

// swap serves t from now on and reports whether it differs from what was
// served.
func (f *File) swap(t *table) (bool, error) {
	hashes := t.hashes()
	f.mu.RLock()
	same := maps.EqualFunc(hashes, f.hashes, slices.Equal)
	dummy, dummyCost := f.dummy, f.dummyCost
	f.mu.RUnlock()
	if same {
		return false, nil
	}
	// The dummy costs what the dearest real hash costs. Its password is
	// never asked for.
	cost := min(t.maxCost, maxDummyCost)
	if cost == 0 {
		dummy, dummyCost = nil, 0
	} else if cost != dummyCost {
		h, err := bcrypt.GenerateFromPassword([]byte("twinbox: not a password"), cost)
		if err != nil {
			return false, fmt.Errorf("users: dummy bcrypt hash at cost %d: %w", cost, err)
		}
		dummy, dummyCost = h, cost
	}
	users := slices.Sorted(maps.Keys(hashes))
	f.mu.Lock()
	f.hashes, f.users, f.dummy, f.dummyCost = hashes, users, dummy, dummyCost
	f.mu.Unlock()
	return true, nil
}

// Watch calls onChange with the current users, then polls the file every
// interval and calls onChange again after each reload that changed the
// users or their passwords. A file that stops parsing is logged once, and
// the previous users stay in service. Watch returns when ctx is done; run
// it in a goroutine that the caller owns. onChange may be nil.
func (f *File) Watch(ctx context.Context, onChange func(users []string)) {
	if onChange == nil {
		onChange = func([]string) {}
	}
	onChange(f.Users())
	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	var failing string // the error last logged
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		changed, err := f.Reload()
		if err != nil {
			if err.Error() != failing {
				failing = err.Error()
				f.log.Error("passwd-file not reloaded; the previous users stay in service", "err", err)
			}
			continue
		}
		if failing != "" {
			failing = ""
			f.log.Info("passwd-file readable again")
		}
		if changed {
			users := f.Users()
			f.log.Info("passwd-file reloaded", "users", len(users))
			onChange(users)
		}
	}
}

// readFile reads a passwd-file and returns the FileInfo of what it read.
func readFile(path string) ([]byte, fs.FileInfo, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("users: %w", err)
	}
	defer fh.Close()
	info, err := fh.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("users: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("users: %s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(fh, MaxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("users: read %s: %w", path, err)
	}
	if after, err := fh.Stat(); err != nil || !sameFile(info, after) {
		// Written to while read: what was read may be half of it.
		return nil, nil, fmt.Errorf("users: %s changed while it was read", path)
	}
	return data, info, nil
}

// sameFile reports whether a and b describe the same file (inode) at the
// same size and modification time; nil describes no file.
func sameFile(a, b fs.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
