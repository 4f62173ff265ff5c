package users_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/twinbox/twinbox/protocols/users"
)

// fast keeps the tests' hashes cheap.
var fast = &users.EditOptions{Cost: bcrypt.MinCost}

// testdataPasswords are the passwords of testdata/dovecot.passwd, whose
// hashes doveadm made.
var testdataPasswords = map[string]string{
	"alice":             "correct horse battery staple",
	"bob":               "sesame",
	"carol@example.org": "pässwörd with spaces",
}

// tLog routes a logger to t.Log.
type tLog struct{ t testing.TB }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLog{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// copyTestdata copies testdata/dovecot.passwd into a new directory and
// returns the copy's path.
func copyTestdata(tb testing.TB) string {
	tb.Helper()
	data, err := os.ReadFile("testdata/dovecot.passwd")
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "passwd")
	writeFile(tb, path, string(data))
	return path
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// replaceFile replaces the file at path whole, as an editor that renames
// does, so that a watcher never sees it half-written.
func replaceFile(tb testing.TB, path, content string) {
	tb.Helper()
	tmp := path + ".new"
	writeFile(tb, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(data)
}

func openFile(tb testing.TB, path string) *users.File {
	tb.Helper()
	f, err := users.Open(path, &users.Options{Logger: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// mustAuth fails the test unless user's password is accepted.
func mustAuth(tb testing.TB, f *users.File, user, password string) {
	tb.Helper()
	if err := f.Authenticate(user, password); err != nil {
		tb.Fatalf("Authenticate(%q): %v", user, err)
	}
}

// mustFail fails the test unless the login is refused with ErrAuthFailed.
func mustFail(tb testing.TB, f *users.File, user, password string) {
	tb.Helper()
	if err := f.Authenticate(user, password); !errors.Is(err, users.ErrAuthFailed) {
		tb.Fatalf("Authenticate(%q, %q) = %v, want ErrAuthFailed", user, password, err)
	}
}

func TestDovecotFile(t *testing.T) {
	f := openFile(t, copyTestdata(t))
	if got, want := f.Users(), []string{"alice", "bob", "carol@example.org"}; !slices.Equal(got, want) {
		t.Fatalf("Users() = %v, want %v", got, want)
	}
	for u, pw := range testdataPasswords {
		if !f.Lookup(u) {
			t.Errorf("Lookup(%q) = false", u)
		}
		mustAuth(t, f, u, pw)
		mustFail(t, f, u, pw+"x")
		mustFail(t, f, u, "")
	}
	mustFail(t, f, "mallory", "sesame")
	mustFail(t, f, "", "")
	mustFail(t, f, "ALICE", testdataPasswords["alice"])
	if f.Lookup("mallory") {
		t.Error("Lookup(mallory) = true")
	}
	if users.ErrAuthFailed.Error() != "users: authentication failed" {
		t.Errorf("ErrAuthFailed reads %q", users.ErrAuthFailed)
	}
}

// A line as `doveadm pw -s BLF-CRYPT` would make it, from Go's bcrypt.
func TestHashIsDovecotStyle(t *testing.T) {
	h, err := users.HashCost("s3cret pass", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "{BLF-CRYPT}$2y$04$") || len(h) != len("{BLF-CRYPT}")+60 {
		t.Fatalf("Hash = %q, want {BLF-CRYPT}$2y$04$ and 53 characters", h)
	}
	path := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, path, "alice:"+h+"::::::\n")
	f := openFile(t, path)
	mustAuth(t, f, "alice", "s3cret pass")
	mustFail(t, f, "alice", "s3cret pas")

	// Dovecot itself accepts the hash, where it is installed.
	doveadm, err := exec.LookPath("doveadm")
	if err != nil {
		t.Log("doveadm not installed: Dovecot's check of the hash skipped")
		return
	}
	out, err := exec.Command(doveadm, "pw", "-t", h, "-p", "s3cret pass").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "verified") {
		t.Fatalf("doveadm pw -t: %v: %s", err, out)
	}
}

func TestHashDefaultCost(t *testing.T) {
	h, err := users.Hash("x")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("{BLF-CRYPT}$2y$%02d$", users.DefaultCost); !strings.HasPrefix(h, want) {
		t.Errorf("Hash = %q, want prefix %q", h, want)
	}
}

func TestOpenMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	f := openFile(t, path)
	if u := f.Users(); len(u) != 0 {
		t.Fatalf("Users() = %v, want none", u)
	}
	mustFail(t, f, "alice", "x")
	if changed, err := f.Reload(); changed || err != nil {
		t.Fatalf("Reload of a still missing file = %v, %v", changed, err)
	}
	if err := users.Add(path, "alice", "pw", fast); err != nil {
		t.Fatal(err)
	}
	if changed, err := f.Reload(); !changed || err != nil {
		t.Fatalf("Reload after Add = %v, %v", changed, err)
	}
	mustAuth(t, f, "alice", "pw")
}

func TestOpenBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, path, "# users\nalice:{SHA512-CRYPT}$6$x$y\n")
	_, err := users.Open(path, nil)
	var pe *users.ParseError
	if !errors.As(err, &pe) || pe.Line != 2 || !errors.Is(err, users.ErrScheme) {
		t.Fatalf("Open = %v, want a ParseError at line 2", err)
	}
	want := path + `:2: user "alice": password scheme "{SHA512-CRYPT}" is not supported`
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
	if _, err := users.Open(path, &users.Options{Interval: -1}); err == nil || !strings.Contains(err.Error(), "Interval") {
		t.Errorf("Open with a negative interval = %v", err)
	}
	if _, err := users.Open(t.TempDir(), nil); err == nil {
		t.Error("Open of a directory succeeded")
	}
}

func TestReloadAfterEdits(t *testing.T) {
	path := copyTestdata(t)
	f := openFile(t, path)
	reload := func(wantChanged bool) {
		t.Helper()
		changed, err := f.Reload()
		if err != nil || changed != wantChanged {
			t.Fatalf("Reload = %v, %v; want %v, nil", changed, err, wantChanged)
		}
	}
	reload(false)

	if err := users.Add(path, "dave", "dave's", fast); err != nil {
		t.Fatal(err)
	}
	reload(true)
	mustAuth(t, f, "dave", "dave's")
	reload(false)

	if err := users.SetPassword(path, "bob", "new bob", fast); err != nil {
		t.Fatal(err)
	}
	reload(true)
	mustAuth(t, f, "bob", "new bob")
	mustFail(t, f, "bob", "sesame")

	if err := users.Delete(path, "alice"); err != nil {
		t.Fatal(err)
	}
	reload(true)
	mustFail(t, f, "alice", testdataPasswords["alice"])
	if got, want := f.Users(), []string{"bob", "carol@example.org", "dave"}; !slices.Equal(got, want) {
		t.Fatalf("Users() = %v, want %v", got, want)
	}

	// An edit in place by another program: same inode, other size.
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := users.HashCost("erin", bcrypt.MinCost)
	if _, err := fmt.Fprintf(fh, "erin:%s\n", h); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	reload(true)
	mustAuth(t, f, "erin", "erin")

	// Touched but the same content: looked at, nothing changed.
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	reload(false)

	// Removed: no users.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	reload(true)
	if u := f.Users(); len(u) != 0 {
		t.Fatalf("Users() after removal = %v", u)
	}
	reload(false)
}

func TestReloadBrokenFileKeepsUsers(t *testing.T) {
	path := copyTestdata(t)
	good := readFile(t, path)
	f := openFile(t, path)

	writeFile(t, path, good+"dave:{PLAIN}dave\n")
	for range 2 { // the same error until the file changes
		changed, err := f.Reload()
		var pe *users.ParseError
		if changed || !errors.As(err, &pe) || pe.Line != 10 {
			t.Fatalf("Reload of a broken file = %v, %v; want a ParseError at line 10", changed, err)
		}
	}
	for u, pw := range testdataPasswords {
		mustAuth(t, f, u, pw)
	}
	if f.Lookup("dave") {
		t.Error("a user of the broken file is served")
	}

	h, _ := users.HashCost("dave", bcrypt.MinCost)
	writeFile(t, path, good+"dave:"+h+"\n")
	if changed, err := f.Reload(); !changed || err != nil {
		t.Fatalf("Reload of the fixed file = %v, %v", changed, err)
	}
	mustAuth(t, f, "dave", "dave")
}

// waitFor polls cond until it holds, for at most 10 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWatch(t *testing.T) {
	path := copyTestdata(t)
	good := readFile(t, path)
	f, err := users.Open(path, &users.Options{Logger: testLogger(t), Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		calls [][]string
	)
	last := func() (int, []string) {
		mu.Lock()
		defer mu.Unlock()
		if len(calls) == 0 {
			return 0, nil
		}
		return len(calls), calls[len(calls)-1]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Watch(ctx, func(u []string) {
			mu.Lock()
			calls = append(calls, u)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })

	waitFor(t, "the first call", func() bool { n, _ := last(); return n >= 1 })
	if n, u := last(); n != 1 || len(u) != 3 {
		t.Fatalf("first call %d: %v", n, u)
	}

	if err := users.Add(path, "dave", "d", fast); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the call after Add", func() bool { _, u := last(); return slices.Contains(u, "dave") })
	n, _ := last()

	// A broken file: no call, the users stay. Then a fix brings a call.
	replaceFile(t, path, good+"erin\n")
	waitFor(t, "the broken file to be read", func() bool {
		_, err := f.Reload()
		return err != nil
	})
	mustAuth(t, f, "dave", "d")
	if m, _ := last(); m != n {
		t.Fatalf("%d calls after a broken file, want %d", m, n)
	}
	replaceFile(t, path, good)
	waitFor(t, "the call after the fix", func() bool { _, u := last(); return len(u) == 3 && !slices.Contains(u, "dave") })

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

// Logins go on while the file is edited and reloaded (run with -race).
func TestConcurrentAuthenticateAndReload(t *testing.T) {
	path := copyTestdata(t)
	f := openFile(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := f.Authenticate("carol@example.org", testdataPasswords["carol@example.org"]); err != nil {
					t.Error(err)
					return
				}
				f.Lookup("dave")
				f.Users()
			}
		})
	}
	for i := range 5 {
		u := fmt.Sprintf("user%d", i)
		if err := users.Add(path, u, "pw", fast); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if n := len(f.Users()); n != 8 {
		t.Errorf("%d users, want 8", n)
	}
}
