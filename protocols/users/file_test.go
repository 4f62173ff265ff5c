package users_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/twinbox/twinbox/internal/poll"
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

// Lines as `doveadm pw -s SCHEME` would make them, in each scheme Hash
// writes (TestDoveadmHashes has Dovecot check them).
func TestHashIsDovecotStyle(t *testing.T) {
	for _, tc := range []struct {
		opts   *users.EditOptions
		prefix string
		length int
	}{
		{&users.EditOptions{Cost: bcrypt.MinCost}, "{BLF-CRYPT}$2y$04$", len("{BLF-CRYPT}") + 60},
		{nil, fmt.Sprintf("{BLF-CRYPT}$2y$%02d$", users.DefaultCost), len("{BLF-CRYPT}") + 60},
		{&users.EditOptions{Scheme: "sha512-crypt"}, "{SHA512-CRYPT}$6$", len("{SHA512-CRYPT}$6$") + 16 + 1 + 86},
		{&users.EditOptions{Scheme: "SHA512-CRYPT", Cost: 1000}, "{SHA512-CRYPT}$6$rounds=1000$", len("{SHA512-CRYPT}$6$rounds=1000$") + 16 + 1 + 86},
		{&users.EditOptions{Scheme: "SHA256-CRYPT"}, "{SHA256-CRYPT}$5$", len("{SHA256-CRYPT}$5$") + 16 + 1 + 43},
		{&users.EditOptions{Scheme: "ARGON2ID", Cost: 1}, "{ARGON2ID}$argon2id$v=19$m=65536,t=1,p=1$", len("{ARGON2ID}$argon2id$v=19$m=65536,t=1,p=1$") + 22 + 1 + 43},
	} {
		h, err := users.Hash("s3cret pass", tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, tc.prefix) || len(h) != tc.length {
			t.Errorf("Hash(%+v) = %q, want %q and %d characters", tc.opts, h, tc.prefix, tc.length)
			continue
		}
		path := filepath.Join(t.TempDir(), "passwd")
		writeFile(t, path, "alice:"+h+"::::::\n")
		f := openFile(t, path)
		mustAuth(t, f, "alice", "s3cret pass")
		mustFail(t, f, "alice", "s3cret pas")
	}
	for _, bad := range []*users.EditOptions{{Scheme: "SHA512"}, {Scheme: "PLAIN"}, {Scheme: "CRAM-MD5"}, {Scheme: "SHA512-CRYPT", Cost: 999}, {Cost: 40}} {
		if _, err := users.Hash("x", bad); err == nil {
			t.Errorf("Hash with %+v succeeded", bad)
		}
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

// A line twinbox cannot read disables its user, with a warning naming
// the file and the line; it never stops the file from being served.
func TestOpenWithBadLines(t *testing.T) {
	path := copyTestdata(t)
	good := readFile(t, path)
	writeFile(t, path, good+"dave:{SHA512-CRYPT}$6$x$y\nerin\nfrank:{NOPE}x:1000\n")
	var logs strings.Builder
	f, err := users.Open(path, &users.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open of a file with bad lines: %v", err)
	}
	for u, pw := range testdataPasswords {
		mustAuth(t, f, u, pw)
	}
	if got, want := f.Users(), []string{"alice", "bob", "carol@example.org", "dave", "frank"}; !slices.Equal(got, want) {
		t.Errorf("Users() = %v, want %v (disabled ones are still users: their mail is delivered)", got, want)
	}
	if err := f.Authenticate("dave", "anything"); !errors.Is(err, users.ErrDisabled) || !errors.Is(err, users.ErrAuthFailed) {
		t.Errorf("Authenticate(dave) = %v, want ErrDisabled", err)
	}
	probs := f.Problems()
	if len(probs) != 3 {
		t.Fatalf("Problems() = %v", probs)
	}
	for i, want := range []struct {
		line int
		user string
		kind error
		msg  string
	}{
		{10, "dave", users.ErrMalformed, path + `:10: user "dave": {SHA512-CRYPT}: hash is not $6$salt$ and 86 characters`},
		{11, "", users.ErrMalformed, path + ":11: no ':' after the user name"},
		{12, "frank", users.ErrScheme, path + `:12: user "frank": password scheme "{NOPE}" is not one twinbox reads`},
	} {
		p := probs[i]
		if p.Line != want.line || p.User != want.user || !errors.Is(p, want.kind) || !strings.Contains(p.Error(), want.msg) {
			t.Errorf("problem %d = %+v (%v), want line %d, user %q, %q", i, p, p, want.line, want.user, want.msg)
		}
	}
	out := logs.String()
	for _, want := range []string{"level=WARN", "path=" + path, "line=10", "user=dave", "line=11", "line=12"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
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
	h, _ := users.Hash("erin", fast)
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

// A bad line appearing disables its user at the next reload; the fix
// brings it back.
func TestReloadBadLineDisablesOneUser(t *testing.T) {
	path := copyTestdata(t)
	good := readFile(t, path)
	f := openFile(t, path)

	h, _ := users.Hash("dave", fast)
	writeFile(t, path, good+"dave:"+h+"\n")
	if changed, err := f.Reload(); !changed || err != nil {
		t.Fatalf("Reload = %v, %v", changed, err)
	}
	mustAuth(t, f, "dave", "dave")

	writeFile(t, path, good+"dave:{PLAIN-TRUNC}dave\n")
	changed, err := f.Reload()
	if !changed || err != nil {
		t.Fatalf("Reload with a bad line = %v, %v", changed, err)
	}
	if p := f.Problems(); len(p) != 1 || p[0].Line != 10 || p[0].User != "dave" {
		t.Fatalf("Problems() = %v", p)
	}
	for u, pw := range testdataPasswords {
		mustAuth(t, f, u, pw)
	}
	if !f.Lookup("dave") {
		t.Error("a disabled user is no longer known")
	}
	mustFail(t, f, "dave", "dave") // the cache does not outlive the line

	writeFile(t, path, good+"dave:"+h+"\n")
	if changed, err := f.Reload(); !changed || err != nil {
		t.Fatalf("Reload of the fixed file = %v, %v", changed, err)
	}
	if p := f.Problems(); len(p) != 0 {
		t.Errorf("Problems() after the fix = %v", p)
	}
	mustAuth(t, f, "dave", "dave")
}

// A file that cannot be read as a whole keeps the previous users in
// service.
func TestReloadUnreadableFileKeepsUsers(t *testing.T) {
	path := copyTestdata(t)
	good := readFile(t, path)
	f := openFile(t, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the same error until the file changes
		if changed, err := f.Reload(); changed || err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("Reload of a directory = %v, %v", changed, err)
		}
	}
	for u, pw := range testdataPasswords {
		mustAuth(t, f, u, pw)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, good)
	if _, err := f.Reload(); err != nil {
		t.Fatalf("Reload of the file back: %v", err)
	}
	mustAuth(t, f, "alice", testdataPasswords["alice"])
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

	poll.Eventually(t, 10*time.Second, "the first call", func() bool { n, _ := last(); return n >= 1 })
	if n, u := last(); n != 1 || len(u) != 3 {
		t.Fatalf("first call %d: %v", n, u)
	}

	if err := users.Add(path, "dave", "d", fast); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "the call after Add", func() bool { _, u := last(); return slices.Contains(u, "dave") })
	n, _ := last()

	// A bad line for dave: a call, dave still listed but disabled, the
	// others served. Then dave's removal brings a call.
	replaceFile(t, path, good+"dave:{NOPE}d\n")
	poll.Eventually(t, 10*time.Second, "the bad line to be read", func() bool { return len(f.Problems()) == 1 })
	poll.Eventually(t, 10*time.Second, "the call after the bad line", func() bool { m, _ := last(); return m > n })
	if _, u := last(); !slices.Contains(u, "dave") {
		t.Errorf("a disabled user left the list: %v", u)
	}
	mustFail(t, f, "dave", "d")
	mustAuth(t, f, "alice", testdataPasswords["alice"])
	replaceFile(t, path, good)
	poll.Eventually(t, 10*time.Second, "the call after the fix", func() bool { _, u := last(); return len(u) == 3 && !slices.Contains(u, "dave") })

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

// A file of many bad lines logs a bounded number of warnings, and serves
// its good users.
func TestManyBadLinesLogBounded(t *testing.T) {
	path := copyTestdata(t)
	var b strings.Builder
	b.WriteString(readFile(t, path))
	for i := range 500 {
		fmt.Fprintf(&b, "bad%d:{NOPE}x\n", i)
	}
	writeFile(t, path, b.String())
	var logs strings.Builder
	f, err := users.Open(path, &users.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "\n"); n != 21 || !strings.Contains(logs.String(), "more=480") {
		t.Errorf("%d log lines:\n%s", n, logs.String())
	}
	if n := len(f.Problems()); n != 500 {
		t.Errorf("%d problems, want 500", n)
	}
	mustAuth(t, f, "bob", "sesame")
}
