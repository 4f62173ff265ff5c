package users

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-crypt/crypt/algorithm/shacrypt"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/twinbox/twinbox/store"
)

// DefaultScheme is the scheme of the hashes Hash writes unless told
// otherwise: bcrypt, which every Dovecot reads, costs a few KiB of memory
// a login whatever the load, and is slow where it matters (docs/
// benchmarks.md, "Password schemes", for the measurements against
// SHA512-CRYPT and ARGON2ID).
const DefaultScheme = "BLF-CRYPT"

// DefaultCost is the bcrypt cost of the {BLF-CRYPT} hashes Hash writes.
const DefaultCost = 10

// Default costs of the other schemes Hash writes, as doveadm writes them.
const (
	DefaultSHACryptRounds = 5000 // glibc's, written without rounds=
	DefaultArgon2Time     = 3    // passes over 64 MiB, one lane
)

// MaxPassword is the longest password bcrypt uses, in bytes; Dovecot's
// bcrypt ignores what follows, and so does a login here.
const MaxPassword = 72

// maxAnyPassword bounds a password in any scheme.
const maxAnyPassword = 1024

// argon2Memory is the memory, in KiB, of the Argon2id hashes Hash writes:
// libsodium's interactive limit, as doveadm's.
const argon2Memory = 64 << 10

// writable are the schemes Hash writes, with the range of their cost.
var writable = map[string]struct{ minCost, maxCost, defCost int }{
	"BLF-CRYPT":    {bcrypt.MinCost, bcrypt.MaxCost, DefaultCost},
	"SHA512-CRYPT": {shacrypt.IterationsMin, shacrypt.IterationsMax, DefaultSHACryptRounds},
	"SHA256-CRYPT": {shacrypt.IterationsMin, shacrypt.IterationsMax, DefaultSHACryptRounds},
	"ARGON2ID":     {1, 100, DefaultArgon2Time},
}

// Schemes returns the schemes Hash writes, sorted.
func Schemes() []string { return slices.Sorted(maps.Keys(writable)) }

// EditOptions configure Hash, Add and SetPassword. A nil *EditOptions
// means defaults.
type EditOptions struct {
	// Scheme of new hashes, as Dovecot names it: BLF-CRYPT,
	// SHA512-CRYPT, SHA256-CRYPT or ARGON2ID; "" means DefaultScheme.
	Scheme string
	// Cost of new hashes: bcrypt's cost for BLF-CRYPT, the rounds of
	// SHA512-CRYPT and SHA256-CRYPT, the passes (t) of ARGON2ID. 0 means
	// the scheme's default.
	Cost int
}

// Validate reports every bad field at once.
func (o *EditOptions) Validate() error {
	if o == nil {
		return nil
	}
	w, ok := writable[o.scheme()]
	if !ok {
		return fmt.Errorf("%w: EditOptions.Scheme %q is not one twinbox writes (want one of %s)", ErrScheme, o.Scheme, strings.Join(Schemes(), ", "))
	}
	if o.Cost != 0 && (o.Cost < w.minCost || o.Cost > w.maxCost) {
		return fmt.Errorf("users: EditOptions.Cost %d is outside %s's %d to %d", o.Cost, o.scheme(), w.minCost, w.maxCost)
	}
	return nil
}

func (o *EditOptions) scheme() string {
	if o == nil || o.Scheme == "" {
		return DefaultScheme
	}
	return strings.ToUpper(o.Scheme)
}

func (o *EditOptions) cost() int {
	if o == nil || o.Cost == 0 {
		return writable[o.scheme()].defCost
	}
	return o.Cost
}

// Hash returns password's passwd-file field in the scheme and at the cost
// opts say, as `doveadm pw -s SCHEME` writes it: {BLF-CRYPT}$2y$10$...,
// {SHA512-CRYPT}$6$..., {ARGON2ID}$argon2id$v=19$....
func Hash(password string, opts *EditOptions) (string, error) {
	if err := CheckPassword(password); err != nil {
		return "", err
	}
	if err := opts.Validate(); err != nil {
		return "", err
	}
	scheme, cost := opts.scheme(), opts.cost()
	var h string
	switch scheme {
	case "BLF-CRYPT":
		if len(password) > MaxPassword {
			return "", fmt.Errorf("%w: the password is %d bytes long; bcrypt uses at most %d", ErrPassword, len(password), MaxPassword)
		}
		b, err := bcrypt.GenerateFromPassword([]byte(password), cost)
		if err != nil {
			return "", fmt.Errorf("users: hash: %w", err)
		}
		// Go writes $2a$; Dovecot writes $2y$. They are the same
		// algorithm up to 72 bytes of password, which is all bcrypt reads.
		h = "$2y$" + strings.TrimPrefix(string(b), "$2a$")
	case "SHA512-CRYPT", "SHA256-CRYPT":
		variant := shacrypt.VariantSHA512
		if scheme == "SHA256-CRYPT" {
			variant = shacrypt.VariantSHA256
		}
		hasher, err := shacrypt.New(shacrypt.WithVariant(variant), shacrypt.WithIterations(cost))
		if err != nil {
			return "", fmt.Errorf("users: hash: %w", err)
		}
		d, err := hasher.Hash(password)
		if err != nil {
			return "", fmt.Errorf("users: hash: %w", err)
		}
		h = d.Encode()
	case "ARGON2ID":
		salt := make([]byte, 16)
		rand.Read(salt)
		key := argon2.IDKey([]byte(password), salt, uint32(cost), argon2Memory, 1, 32)
		h = fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=1$%s$%s", argon2Memory, cost,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
	}
	return "{" + scheme + "}" + h, nil
}

// CheckPassword refuses a password that cannot be set in any scheme:
// empty, longer than 1024 bytes, or holding a NUL byte (C implementations,
// Dovecot's among them, stop there). Hash refuses more than MaxPassword
// bytes for BLF-CRYPT.
func CheckPassword(password string) error {
	switch {
	case password == "":
		return fmt.Errorf("%w: the password is empty", ErrPassword)
	case len(password) > maxAnyPassword:
		return fmt.Errorf("%w: the password is %d bytes long; at most %d are taken", ErrPassword, len(password), maxAnyPassword)
	case strings.IndexByte(password, 0) >= 0:
		return fmt.Errorf("%w: the password holds a NUL byte", ErrPassword)
	}
	return nil
}

// Add adds user with password to the passwd-file at path, creating the file
// (mode 0600) if it does not exist; its directory must exist. It fails with
// ErrExists if the user is there already.
func Add(path, user, password string, opts *EditOptions) error {
	if err := store.ValidUser(user); err != nil {
		return err
	}
	field, err := Hash(password, opts)
	if err != nil {
		return err
	}
	return edit(path, func(t *table) error {
		if _, ok := t.index[user]; ok {
			return fmt.Errorf("%w: %q in %s", ErrExists, user, path)
		}
		if n := len(t.records); n > 0 && t.records[n-1].eol == "" {
			t.records[n-1].eol = "\n"
		}
		t.records = append(t.records, record{text: user + ":" + field, eol: "\n"})
		return nil
	})
}

// Delete removes user's lines from the passwd-file at path (a user named
// twice has two). It fails with ErrNotFound if the user is not there.
func Delete(path, user string) error {
	return edit(path, func(t *table) error {
		if _, ok := t.index[user]; !ok {
			return fmt.Errorf("%w: %q in %s", ErrNotFound, user, path)
		}
		t.records = slices.DeleteFunc(t.records, func(r record) bool { return r.user == user })
		return nil
	})
}

// SetPassword replaces user's password in the passwd-file at path, keeping
// the rest of the line. It repairs a line whose password could not be
// read; of a user named on several lines it keeps the first and removes
// the others. It fails with ErrNotFound if the user is not there.
func SetPassword(path, user, password string, opts *EditOptions) error {
	field, err := Hash(password, opts)
	if err != nil {
		return err
	}
	return edit(path, func(t *table) error {
		i, ok := t.index[user]
		if !ok {
			return fmt.Errorf("%w: %q in %s", ErrNotFound, user, path)
		}
		r := &t.records[i]
		r.text = r.text[:r.pwStart] + field + r.text[r.pwEnd:]
		kept := t.records[:i+1]
		for _, r := range t.records[i+1:] {
			if r.user != user {
				kept = append(kept, r)
			}
		}
		t.records = kept
		return nil
	})
}

// edit changes the passwd-file at path under its lock and replaces it
// atomically. A missing file is an empty one. Lines that cannot be read
// are kept as they are.
func edit(path string, change func(*table) error) error {
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return fmt.Errorf("users: lock %s: %w", path, err)
	}
	defer unlock()
	var (
		data []byte
		info fs.FileInfo
	)
	switch data, info, err = readFile(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	}
	t, err := parse(path, data)
	if err != nil {
		return err
	}
	if err := change(t); err != nil {
		return err
	}
	return writeAtomic(path, t.bytes(), info)
}

// writeAtomic replaces the file at path with data: a temporary file in the
// same directory, fsynced, renamed over path, then the directory fsynced.
// The new file takes old's mode and owner, or mode 0600 if old is nil.
func writeAtomic(path string, data []byte, old fs.FileInfo) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	mode := fs.FileMode(0o600)
	if old != nil {
		mode = old.Mode().Perm()
		if err := keepOwner(tmp, old); err != nil {
			return fmt.Errorf("users: keep the owner of %s: %w", path, err)
		}
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("users: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("users: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("users: fsync %s: %w", dir, err)
	}
	return nil
}
