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
	h, _ := users.Hash("a", fast)
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
		{"too long for any scheme", users.Add(path, "dave", strings.Repeat("x", 1025), &users.EditOptions{Scheme: "SHA512-CRYPT"}), users.ErrPassword, "1025 bytes long"},
		{"weak scheme", users.Add(path, "dave", "x", &users.EditOptions{Scheme: "SSHA512"}), users.ErrScheme, `"SSHA512" is not one twinbox writes`},
		{"NUL in password", users.SetPassword(path, "bob", "a\x00b", fast), users.ErrPassword, "NUL"},
		{"cost too low", users.Add(path, "dave", "x", &users.EditOptions{Cost: 3}), nil, "Cost 3 is outside BLF-CRYPT's 4 to 31"},
	} {
		if tc.err == nil || (tc.want != nil && !errors.Is(tc.err, tc.want)) || !strings.Contains(tc.err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want %v with %q", tc.name, tc.err, tc.want, tc.msg)
		}
	}
	if err := users.Add(path, "dave", strings.Repeat("x", 72), fast); err != nil {
		t.Errorf("a 72-byte password: %v", err)
	}

	// A file with a line that cannot be read is edited; the line stays
	// as it is.
	bad := readFile(t, path) + "erin:{MD5}x\n"
	writeFile(t, path, bad)
	if err := users.Add(path, "frank", "f", fast); err != nil {
		t.Errorf("Add to a file with a bad line: %v", err)
	}
	if got := readFile(t, path); !strings.HasPrefix(got, bad) {
		t.Errorf("the bad line was changed:\n%s", got)
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

// twinbox user passwd repairs a line that cannot be read, and a user
// named twice; del removes every line of a user.
func TestSetPasswordRepairs(t *testing.T) {
	path := copyTestdata(t)
	good := readFile(t, path)
	writeFile(t, path, good+"dave:{DES-CRYPT}_J9..abcdefghijklmnopq:1002:1002::/home/dave\nerin:{PLAIN}one\n# c\nerin:{PLAIN}two\n")
	f := openFile(t, path)
	if n := len(f.Problems()); n != 3 {
		t.Fatalf("%d problems, want 3: %v", n, f.Problems())
	}
	mustFail(t, f, "erin", "one")
	mustFail(t, f, "erin", "two")

	if err := users.SetPassword(path, "dave", "new dave", fast); err != nil {
		t.Fatal(err)
	}
	if err := users.SetPassword(path, "erin", "new erin", &users.EditOptions{Scheme: "SHA512-CRYPT", Cost: 1000}); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, path)
	lines := strings.Split(strings.TrimPrefix(got, good), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "dave:{BLF-CRYPT}$2y$04$") || !strings.HasSuffix(lines[0], ":1002:1002::/home/dave") ||
		!strings.HasPrefix(lines[1], "erin:{SHA512-CRYPT}$6$rounds=1000$") || lines[2] != "# c" || lines[3] != "" {
		t.Fatalf("after passwd:\n%s", got)
	}
	if _, err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if p := f.Problems(); len(p) != 0 {
		t.Errorf("Problems() after the repair = %v", p)
	}
	mustAuth(t, f, "dave", "new dave")
	mustAuth(t, f, "erin", "new erin")

	writeFile(t, path, good+"erin:{PLAIN}one\nerin:{PLAIN}two\n")
	if err := users.Delete(path, "erin"); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != good {
		t.Errorf("after del of a user named twice:\n%s", got)
	}
}
