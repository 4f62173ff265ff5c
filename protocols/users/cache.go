package users

import (
	"crypto/sha256"
	"crypto/subtle"
	"time"

	"github.com/maypok86/otter/v2"
)

// authCache remembers verified logins, as Dovecot's auth_cache does, so
// that a user's next login with the same password costs a keyed hash
// instead of bcrypt or Argon2. An entry is keyed on the user and holds the
// password line it was verified against and an HMAC, under a key that
// lives only in this process's memory, of the user, that line and the
// password: never the password. A login hits only when the line served
// now is the line the entry was verified against, so a changed password
// or a removed user takes effect as soon as the file is re-read, and
// swap drops the entries of lines that changed. It is safe for concurrent
// use.
type authCache struct {
	key     []byte
	entries *otter.Cache[string, cacheEntry]
}

type cacheEntry struct {
	field string
	sum   [sha256.Size]byte
}

func newAuthCache(size int, ttl time.Duration, now func() time.Time) *authCache {
	return &authCache{
		key: hmacKey(),
		entries: otter.Must(&otter.Options[string, cacheEntry]{
			MaximumSize:      size,
			ExpiryCalculator: otter.ExpiryWriting[string, cacheEntry](ttl),
			Clock:            cacheClock{now},
		}),
	}
}

// hit reports whether password was verified for user against field.
func (c *authCache) hit(user, field, password string) bool {
	e, ok := c.entries.GetIfPresent(user)
	if !ok || e.field != field {
		return false
	}
	sum := keyedSum(c.key, user, field, password)
	return subtle.ConstantTimeCompare(sum[:], e.sum[:]) == 1
}

// add remembers that password was verified for user against field.
func (c *authCache) add(user, field, password string) {
	c.entries.Set(user, cacheEntry{field: field, sum: keyedSum(c.key, user, field, password)})
}

// forget drops user's entry.
func (c *authCache) forget(user string) { c.entries.Invalidate(user) }

// cacheClock is the cache's clock. It gives no ticks: expired entries are
// found when read, and no goroutine is left running for the cache.
type cacheClock struct{ now func() time.Time }

func (c cacheClock) NowNano() int64                      { return c.now().UnixNano() }
func (c cacheClock) Tick(time.Duration) <-chan time.Time { return nil }
