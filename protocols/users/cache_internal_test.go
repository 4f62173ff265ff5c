package users

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// plainFile writes a passwd-file of {PLAIN} users and opens it with opts.
func plainFile(t *testing.T, opts *Options, lines string) (*File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f, path
}

func (f *File) cached(user string) (cacheEntry, bool) {
	return f.cache.entries.GetIfPresent(user)
}

// The cache remembers verified logins only, never the password, and
// never answers for a password line the file no longer holds.
func TestAuthCache(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f, path := plainFile(t, &Options{CacheTTL: time.Hour, Now: clock}, "alice:{PLAIN}a\nbob:{PLAIN}b\n")

	if f.Authenticate("alice", "wrong") == nil {
		t.Fatal("wrong password accepted")
	}
	if _, ok := f.cached("alice"); ok {
		t.Fatal("a failed login was cached")
	}
	if err := f.Authenticate("alice", "a"); err != nil {
		t.Fatal(err)
	}
	e, ok := f.cached("alice")
	if !ok || e.field != "{PLAIN}a" {
		t.Fatalf("entry %+v, %v", e, ok)
	}
	if !f.cache.hit("alice", "{PLAIN}a", "a") || f.cache.hit("alice", "{PLAIN}a", "b") || f.cache.hit("alice", "{PLAIN}b", "a") || f.cache.hit("bob", "{PLAIN}a", "a") {
		t.Error("a hit for another password, line or user")
	}
	if f.Authenticate("alice", "wrong") == nil {
		t.Fatal("wrong password accepted with alice cached")
	}

	// A new password line: the old password fails at once, the entry is gone.
	if err := os.WriteFile(path, []byte("alice:{PLAIN}new\nbob:{PLAIN}b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.cached("alice"); ok {
		t.Error("the entry of a changed line survived the reload")
	}
	if f.Authenticate("alice", "a") == nil {
		t.Error("the old password works after the change")
	}
	if err := f.Authenticate("alice", "new"); err != nil {
		t.Fatal(err)
	}

	// Removed: gone.
	if err := f.Authenticate("bob", "b"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("alice:{PLAIN}new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.cached("bob"); ok || f.Authenticate("bob", "b") == nil {
		t.Error("a removed user is still served from the cache")
	}
	if _, ok := f.cached("alice"); !ok {
		t.Error("an unchanged line's entry was dropped")
	}

	// Expired after the TTL.
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	if _, ok := f.cached("alice"); ok {
		t.Error("an entry outlived its TTL")
	}
}

func TestAuthCacheBoundedAndOff(t *testing.T) {
	lines := ""
	for _, u := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		lines += u + ":{PLAIN}" + u + "\n"
	}
	f, _ := plainFile(t, &Options{CacheSize: 3}, lines)
	for _, u := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		if err := f.Authenticate(u, u); err != nil {
			t.Fatal(err)
		}
	}
	f.cache.entries.CleanUp()
	if n := f.cache.entries.EstimatedSize(); n > 3 {
		t.Errorf("%d entries, want at most 3", n)
	}
	off, _ := plainFile(t, &Options{CacheSize: -1}, lines)
	if off.cache != nil {
		t.Error("CacheSize -1 left a cache")
	}
	if err := off.Authenticate("a", "a"); err != nil {
		t.Fatal(err)
	}
}
