package users_test

// Benchmarks of logins and hashes (docs/benchmarks.md, "Logins"):
//
//	go test ./protocols/users -run '^$' -bench 'Check' -benchtime 2s
//	go test ./protocols/users -run '^$' -bench 'Hash|Verify' -benchtime 10x

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/protocols/users"
)

// BenchmarkCheck measures the login rate through the guard with the right
// password, the verified-login cache off (every login pays the hash, as
// before the cache) and on.
func BenchmarkCheck(b *testing.B) {
	for _, scheme := range []struct {
		name string
		opts *users.EditOptions
	}{
		{"BLF-CRYPT-10", &users.EditOptions{Scheme: "BLF-CRYPT", Cost: 10}},
		{"SHA512-CRYPT-5000", &users.EditOptions{Scheme: "SHA512-CRYPT"}},
		{"ARGON2ID-t3-64MiB", &users.EditOptions{Scheme: "ARGON2ID"}},
	} {
		path := filepath.Join(b.TempDir(), "passwd")
		for _, u := range []string{"alice", "bob"} {
			if err := users.Add(path, u, u+" password", scheme.opts); err != nil {
				b.Fatal(err)
			}
		}
		for _, cache := range []struct {
			name string
			size int
		}{{"cache-off", -1}, {"cache-on", 0}} {
			b.Run(scheme.name+"/"+cache.name, func(b *testing.B) {
				f, err := users.Open(path, &users.Options{CacheSize: cache.size})
				if err != nil {
					b.Fatal(err)
				}
				g, err := users.NewGuard(f, nil)
				if err != nil {
					b.Fatal(err)
				}
				dir := users.Directory{File: f, Guard: g}
				ctx := context.Background()
				// Each user's first login pays the hash, cache or not; the
				// loop measures the logins after it.
				for _, u := range []string{"alice", "bob"} {
					if err := dir.Check(ctx, u, u+" password", "192.0.2.1:4000"); err != nil {
						b.Fatal(err)
					}
				}
				for i := 0; b.Loop(); i++ {
					u := "alice"
					if i%2 == 1 {
						u = "bob"
					}
					if err := dir.Check(ctx, u, u+" password", "192.0.2.1:4000"); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
			})
		}
	}
}

// BenchmarkHash measures what a new password costs in each scheme Hash
// writes, at its default cost: the time, and the memory (B/op), that each
// login against it costs too.
func BenchmarkHash(b *testing.B) {
	for _, s := range users.Schemes() {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := users.Hash("a fair password", &users.EditOptions{Scheme: s}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerify measures one login, without cache, against each line of
// testdata/schemes.passwd (doveadm's default costs).
func BenchmarkVerify(b *testing.B) {
	data, err := os.ReadFile("testdata/schemes.passwd")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "passwd")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := users.Open(path, &users.Options{CacheSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		u, _, _ := strings.Cut(line, ":")
		pw, ok := schemePasswords[u]
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		b.Run(u, func(b *testing.B) {
			for b.Loop() {
				f.Authenticate(u, pw)
			}
		})
	}
}
