package users

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/twinbox/twinbox/store"
)

// DefaultCost is the bcrypt cost of the hashes Hash writes, as doveadm's.
const DefaultCost = 10

// MaxPassword is the longest password bcrypt uses, in bytes.
const MaxPassword = 72

// EditOptions configure Add and SetPassword. A nil *EditOptions means
// defaults.
type EditOptions struct {
	// Cost is the bcrypt cost of new hashes; 0 means DefaultCost.
	Cost int
}

// Validate reports every bad field at once.
func (o *EditOptions) Validate() error {
	if o == nil || o.Cost == 0 {
		return nil
	}
	if o.Cost < bcrypt.MinCost || o.Cost > bcrypt.MaxCost {
		return fmt.Errorf("users: EditOptions.Cost %d is outside bcrypt's %d to %d", o.Cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	return nil
}

func (o *EditOptions) cost() int {
	if o == nil || o.Cost == 0 {
		return DefaultCost
	}
	return o.Cost
}

// Hash returns password's passwd-file field at DefaultCost:
// {BLF-CRYPT}$2y$10$..., as `doveadm pw -s BLF-CRYPT` writes it.
func Hash(password string) (string, error) { return HashCost(password, DefaultCost) }

// HashCost is Hash at the given bcrypt cost.
func HashCost(password string, cost int) (string, error) {
	if err := CheckPassword(password); err != nil {
		return "", err
	}
	if err := (&EditOptions{Cost: cost}).Validate(); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", fmt.Errorf("users: hash: %w", err)
	}
	// Go writes $2a$; Dovecot writes $2y$. They are the same algorithm up
	// to 72 bytes of password, which is all bcrypt reads.
	return "{" + schemeBcrypt + "}$2y$" + strings.TrimPrefix(string(h), "$2a$"), nil
}

// CheckPassword refuses a password that cannot be set: empty, longer than
// bcrypt's MaxPassword bytes, or holding a NUL byte (C implementations of
// bcrypt, Dovecot's among them, stop there).
func CheckPassword(password string) error {
	switch {
	case password == "":
		return fmt.Errorf("%w: the password is empty", ErrPassword)
	case len(password) > MaxPassword:
		return fmt.Errorf("%w: the password is %d bytes long; bcrypt uses at most %d", ErrPassword, len(password), MaxPassword)
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
	field, err := hashWith(password, opts)
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

// Delete removes user's line from the passwd-file at path. It fails with
// ErrNotFound if the user is not there.
func Delete(path, user string) error {
	return edit(path, func(t *table) error {
		i, ok := t.index[user]
		if !ok {
			return fmt.Errorf("%w: %q in %s", ErrNotFound, user, path)
		}
		t.records = append(t.records[:i], t.records[i+1:]...)
		return nil
	})
}

// SetPassword replaces user's password in the passwd-file at path, keeping
// the rest of the line. It fails with ErrNotFound if the user is not there.
func SetPassword(path, user, password string, opts *EditOptions) error {
	field, err := hashWith(password, opts)
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
		return nil
	})
}

func hashWith(password string, opts *EditOptions) (string, error) {
	if err := opts.Validate(); err != nil {
		return "", err
	}
	return HashCost(password, opts.cost())
}

// edit changes the passwd-file at path under its lock and replaces it
// atomically. A missing file is an empty one.
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
		return fmt.Errorf("%w (fix the file by hand first)", err)
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
