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
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	// DefaultInterval is how often Watch looks at the file.
	DefaultInterval = time.Second
	// DefaultCacheSize is how many verified logins are remembered.
	DefaultCacheSize = 10_000
	// DefaultCacheTTL is how long a verified login is remembered, as
	// Dovecot's auth_cache_ttl.
	DefaultCacheTTL = time.Hour
)

// Options configure Open. A nil *Options means defaults.
type Options struct {
	// Logger receives reloads, unreadable lines and reload failures; nil
	// discards them.
	Logger *slog.Logger
	// Interval is Watch's polling period; 0 means DefaultInterval.
	Interval time.Duration
	// CacheSize bounds the verified logins remembered, so that a login
	// with the password that last worked does not pay the hash again; 0
	// means DefaultCacheSize, a negative size turns the cache off.
	CacheSize int
	// CacheTTL is how long a verified login is remembered; 0 means
	// DefaultCacheTTL.
	CacheTTL time.Duration
	// Now replaces the clock of the cache's TTL, for tests; nil means
	// time.Now.
	Now func() time.Time
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
	if o.CacheTTL < 0 {
		errs = append(errs, fmt.Errorf("users: Options.CacheTTL %v is negative", o.CacheTTL))
	}
	return errors.Join(errs...)
}

// File is the in-memory view of a passwd-file, re-read when it changes.
// It is safe for concurrent use.
type File struct {
	path     string
	log      *slog.Logger
	interval time.Duration
	cache    *authCache // nil when off

	// reloadMu serializes Reload; it guards looked, seen and seenErr.
	reloadMu sync.Mutex
	looked   bool        // a Reload has read the file or found none
	seen     fs.FileInfo // what the last Reload read; nil: no file
	seenErr  error       // why the file seen could not be used, or nil

	snap atomic.Pointer[snapshot]
}

// snapshot is what a File serves between two reloads; it is never
// changed once served.
type snapshot struct {
	creds    map[string]credential
	users    []string // sorted, disabled ones included
	problems []*ParseError
	// decoy is verified against for unknown and disabled users, so that
	// they cost as much time as most known ones: the verifier of a real
	// user whose hash costs what most users' cost. nil with no users.
	decoy verifier
}

// Open reads the passwd-file at path. A missing file means no users yet.
// A line that cannot be read disables its user only (see Problems); Open
// fails only for the file as a whole: unreadable, not a regular file,
// or larger than MaxFileSize.
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
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	f := &File{
		path:     path,
		log:      o.Logger.With("component", "users", "path", path),
		interval: o.Interval,
	}
	if o.CacheSize > 0 {
		f.cache = newAuthCache(o.CacheSize, o.CacheTTL, o.Now)
	}
	f.snap.Store(&snapshot{creds: map[string]credential{}})
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Lookup reports whether user is in the file, disabled or not: mail for
// a user whose password line cannot be read is still delivered.
func (f *File) Lookup(user string) bool {
	_, ok := f.snap.Load().creds[user]
	return ok
}

// Users returns the user names, sorted, disabled ones included. The
// slice is the caller's.
func (f *File) Users() []string {
	return slices.Clone(f.snap.Load().users)
}

// Problems returns the lines of the file served that cannot be read,
// in line order. Each disables the user it names (ParseError.User), or,
// when the user name itself cannot be read, is ignored.
func (f *File) Problems() []*ParseError {
	return slices.Clone(f.snap.Load().problems)
}

// Authenticate checks user's password. It returns an error that wraps
// ErrAuthFailed for an unknown user, a disabled one (also ErrDisabled)
// and a wrong password alike, after the same hash work as most users'
// logins cost. A password verified before against the same password line
// is answered from the cache, without the hash.
func (f *File) Authenticate(user, password string) error {
	s := f.snap.Load()
	c, ok := s.creds[user]
	if !ok || c.v == nil {
		if s.decoy != nil {
			s.decoy.verify([]byte(password))
		}
		if ok {
			return fmt.Errorf("%w: %w (%s:%d)", ErrAuthFailed, ErrDisabled, c.err.Path, c.err.Line)
		}
		return ErrAuthFailed
	}
	if f.cache != nil && f.cache.hit(user, c.field, password) {
		return nil
	}
	if !c.v.verify([]byte(password)) {
		return ErrAuthFailed
	}
	if f.cache != nil {
		f.cache.add(user, c.field, password)
	}
	return nil
}

// Reload re-reads the file if its size, modification time or inode changed
// since the last look. It reports whether the users or their password
// lines changed, and logs each line that cannot be read. When the file as
// a whole cannot be read, the previous content stays in service and Reload
// returns the error, again on each call until the file changes.
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
	return f.swap(t), nil
}

// swap serves t from now on and reports whether its credentials differ
// from those served.
func (f *File) swap(t *table) bool {
	creds := t.credentials()
	old := f.snap.Load()
	same := maps.EqualFunc(creds, old.creds, func(a, b credential) bool {
		return a.field == b.field && (a.v == nil) == (b.v == nil)
	})
	if same && slices.EqualFunc(t.problems, old.problems, sameProblem) {
		return false
	}
	for i, p := range t.problems {
		if i == maxLoggedProblems {
			f.log.Warn("more passwd-file lines cannot be read (twinbox user list names them all)", "more", len(t.problems)-i)
			break
		}
		if p.User == "" {
			f.log.Warn("passwd-file line cannot be read; it is ignored", "line", p.Line, "err", p)
		} else {
			f.log.Warn("passwd-file line cannot be read; that user cannot log in until it is fixed (twinbox user passwd)", "line", p.Line, "user", p.User, "err", p)
		}
	}
	if same {
		f.snap.Store(&snapshot{creds: old.creds, users: old.users, problems: t.problems, decoy: old.decoy})
		return false
	}
	if f.cache != nil {
		// Entries are keyed on the password line too; those of a line
		// no longer served would never match again: free them now.
		for u, c := range old.creds {
			if n, ok := creds[u]; !ok || n.field != c.field {
				f.cache.forget(u)
			}
		}
	}
	f.snap.Store(&snapshot{
		creds:    creds,
		users:    slices.Sorted(maps.Keys(creds)),
		problems: t.problems,
		decoy:    pickDecoy(creds),
	})
	return true
}

// maxLoggedProblems bounds the warnings one reload logs.
const maxLoggedProblems = 20

func sameProblem(a, b *ParseError) bool {
	return a.Line == b.Line && a.User == b.User && a.Error() == b.Error()
}

// pickDecoy returns the verifier of a user whose hash costs what most
// users' hashes cost (the first such user by name, for a stable choice),
// or nil with no readable user.
func pickDecoy(creds map[string]credential) verifier {
	count := map[string]int{}
	first := map[string]string{}
	for _, u := range slices.Sorted(maps.Keys(creds)) {
		c := creds[u]
		if c.v == nil {
			continue
		}
		w := c.v.work()
		if count[w] == 0 {
			first[w] = u
		}
		count[w]++
	}
	var best string
	for _, w := range slices.Sorted(maps.Keys(count)) {
		if count[w] > count[best] {
			best = w
		}
	}
	if best == "" {
		return nil
	}
	return creds[first[best]].v
}

// Watch calls onChange with the current users, then polls the file every
// interval and calls onChange again after each reload that changed the
// users or their passwords. A file that cannot be read as a whole is
// logged once, and the previous users stay in service. Watch returns when ctx is done; run
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
