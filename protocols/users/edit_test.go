package users_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/twinbox/twinbox/protocols/users"
	"github.com/twinbox/twinbox/store"
)

// Edits change the one line concerned and leave every other byte alone.
func TestEditKeepsOtherLines(t *testing.T) {
	path := copyTestdata(t)
	before := readFile(t, path)
	lines := strings.SplitAfter(before, "\n")

	if err := users.SetPassword(path, "bob", "new bob", fast); err != nil {
		t.Fatal(err)
	}
	after := readFile(t, path)
	got := strings.SplitAfter(after, "\n")
	if len(got) != len(lines) {
		t.Fatalf("SetPassword changed the line count:\n%s", after)
	}
	for i := range lines {
		if strings.HasPrefix(lines[i], "bob:") {
			const rest = ":1001:1001:Bob B:/home/bob:/bin/false:userdb_quota_rule=*:storage=1G\n"
			if !strings.HasPrefix(got[i], "bob:{BLF-CRYPT}$2y$04$") || !strings.HasSuffix(got[i], rest) || got[i] == lines[i] {
				t.Errorf("bob's line is %q", got[i])
			}
			continue
		}
		if got[i] != lines[i] {
			t.Errorf("line %d changed: %q, was %q", i+1, got[i], lines[i])
		}
	}

	if err := users.Delete(path, "alice"); err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(after, lines[6], "", 1); readFile(t, path) != want {
		t.Errorf("after Delete:\n%s\nwant\n%s", readFile(t, path), want)
	}
	if err := users.Add(path, "alice", "back", fast); err != nil {
		t.Fatal(err)
	}
	now := readFile(t, path)
	if !strings.HasPrefix(now, strings.Replace(after, lines[6], "", 1)) || !strings.HasPrefix(now[strings.LastIndex(now[:len(now)-1], "\n")+1:], "alice:{BLF-CRYPT}$2y$04$") {
		t.Errorf("after Add:\n%s", now)
	}
	f := openFile(t, path)
	mustAuth(t, f, "alice", "back")
	mustAuth(t, f, "bob", "new bob")
	mustAuth(t, f, "carol@example.org", testdataPasswords["carol@example.org"])
}

func TestAddToFileWithoutFinalNewline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	h, _ := users.HashCost("a", 4)
	writeFile(t, path, "# no newline at the end\r\nalice:"+h)
	if err := users.Add(path, "bob", "b", fast); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, path)
	if !strings.HasPrefix(got, "# no newline at the end\r\nalice:"+h+"\nbob:{BLF-CRYPT}") || !strings.HasSuffix(got, "\n") {
		t.Fatalf("file is %q", got)
	}
	f := openFile(t, path)
	mustAuth(t, f, "alice", "a")
	mustAuth(t, f, "bob", "b")
}

func TestEditFileModeAndLeftovers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	if err := users.Add(path, "alice", "a", fast); err != nil {
		t.Fatal(err)
	}
	mode := func() os.FileMode {
		t.Helper()
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return info.Mode().Perm()
	}
	if m := mode(); m != 0o600 {
		t.Errorf("new file mode %v, want 0600", m)
	}
	// An existing file keeps its mode (a Dovecot that reads it by group).
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := users.Add(path, "bob", "b", fast); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o640 {
		t.Errorf("edited file mode %v, want 0640 kept", m)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"passwd", "passwd.lock"}; !slices.Equal(names, want) {
		t.Errorf("directory holds %v, want %v", names, want)
	}
}

func TestEditErrors(t *testing.T) {
	path := copyTestdata(t)
	for _, tc := range []struct {
		name string
		err  error
		want error
		msg  string
	}{
		{"add existing", users.Add(path, "alice", "x", fast), users.ErrExists, `users: user already exists: "alice" in ` + path},
		{"delete missing", users.Delete(path, "mallory"), users.ErrNotFound, `users: no such user: "mallory" in ` + path},
		{"passwd missing", users.SetPassword(path, "mallory", "x", fast), users.ErrNotFound, `"mallory"`},
		{"bad name", users.Add(path, "a:b", "x", fast), store.ErrInvalidName, `user "a:b": contains ':'`},
		{"empty name", users.Add(path, "", "x", fast), store.ErrInvalidName, "empty"},
		{"empty password", users.Add(path, "dave", "", fast), users.ErrPassword, "the password is empty"},
		{"long password", users.Add(path, "dave", strings.Repeat("x", 73), fast), users.ErrPassword, "73 bytes long; bcrypt uses at most 72"},
		{"NUL in password", users.SetPassword(path, "bob", "a\x00b", fast), users.ErrPassword, "NUL"},
		{"cost too low", users.Add(path, "dave", "x", &users.EditOptions{Cost: 3}), nil, "Cost 3 is outside"},
	} {
		if tc.err == nil || (tc.want != nil && !errors.Is(tc.err, tc.want)) || !strings.Contains(tc.err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want %v with %q", tc.name, tc.err, tc.want, tc.msg)
		}
	}
	if err := users.Add(path, "dave", strings.Repeat("x", 72), fast); err != nil {
		t.Errorf("a 72-byte password: %v", err)
	}

	// A broken file is not edited.
	broken := readFile(t, path) + "erin:{MD5}x\n"
	writeFile(t, path, broken)
	err := users.Add(path, "frank", "f", fast)
	var pe *users.ParseError
	if !errors.As(err, &pe) || pe.Line != 11 || !strings.Contains(err.Error(), "fix the file by hand first") {
		t.Errorf("Add to a broken file: %v", err)
	}
	if readFile(t, path) != broken {
		t.Error("a broken file was changed")
	}

	// The directory must exist.
	if err := users.Add(filepath.Join(t.TempDir(), "no", "passwd"), "a", "a", fast); err == nil {
		t.Error("Add in a missing directory succeeded")
	}
}

// Concurrent edits all land: the lock serializes them.
func TestConcurrentAdd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	const writers, each = 8, 4
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := users.Add(path, fmt.Sprintf("u%d-%d", w, i), "pw", fast); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	f := openFile(t, path)
	if n := len(f.Users()); n != writers*each {
		t.Fatalf("%d users after concurrent adds, want %d:\n%s", n, writers*each, readFile(t, path))
	}
	mustAuth(t, f, "u7-3", "pw")
}
