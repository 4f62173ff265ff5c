package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/protocols/users"
)

// userCmd runs `twinbox user ARGS` with stdin as standard input and a cheap
// bcrypt cost, and returns its output.
func userCmd(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = runUser(context.Background(), append([]string{"--cost", "4"}, args...), strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestUserCommand(t *testing.T) {
	t.Setenv("TWINBOX_PASSWD", "")
	data := filepath.Join(t.TempDir(), "data") // add creates it
	path := filepath.Join(data, "passwd")

	out, _, err := userCmd(t, "alice's password\n", "add", "--data", data, "alice")
	if err != nil {
		t.Fatalf("user add: %v", err)
	}
	if want := "added alice to " + path + "\n"; out != want {
		t.Errorf("user add printed %q, want %q", out, want)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := info.Mode().Perm(); m != 0o600 {
		t.Errorf("passwd-file mode %v, want 0600", m)
	}
	content, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(content), "alice:{BLF-CRYPT}$2y$04$") {
		t.Errorf("passwd-file holds %q", content)
	}

	// Flags before the verb; a password without a final newline; CRLF.
	if _, _, err := userCmd(t, "bob pw", "--data", data, "add", "bob"); err != nil {
		t.Fatalf("user add bob: %v", err)
	}
	if _, _, err := userCmd(t, "carol pw\r\nignored second line\n", "--passwd", path, "add", "carol@example.org"); err != nil {
		t.Fatalf("user add carol: %v", err)
	}

	// list goes through run, as main calls it.
	var list, errOut bytes.Buffer
	if err := run(context.Background(), []string{"user", "list", "--data", data}, &list, &errOut); err != nil {
		t.Fatalf("user list: %v: %s", err, errOut.String())
	}
	if want := "alice\nbob\ncarol@example.org\n"; list.String() != want {
		t.Errorf("user list printed %q, want %q", list.String(), want)
	}

	f, err := users.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for u, pw := range map[string]string{"alice": "alice's password", "bob": "bob pw", "carol@example.org": "carol pw"} {
		if err := f.Authenticate(u, pw); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}

	if _, _, err := userCmd(t, "new bob\n", "passwd", "bob", "--data", data); err != nil {
		t.Fatalf("user passwd: %v", err)
	}
	if _, err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := f.Authenticate("bob", "new bob"); err != nil {
		t.Errorf("bob's new password: %v", err)
	}

	if out, _, err := userCmd(t, "", "del", "alice", "--data", data); err != nil || !strings.HasPrefix(out, "deleted alice from "+path) {
		t.Fatalf("user del: %v, %q", err, out)
	}
	list.Reset()
	if err := run(context.Background(), []string{"user", "--passwd", path, "list"}, &list, &errOut); err != nil {
		t.Fatal(err)
	}
	if want := "bob\ncarol@example.org\n"; list.String() != want {
		t.Errorf("user list after del printed %q, want %q", list.String(), want)
	}

	// Another scheme, by flag and by environment.
	if _, _, err := userCmd(t, "dave pw\n", "add", "dave", "--data", data, "--scheme", "SHA512-CRYPT", "--cost", "1000"); err != nil {
		t.Fatalf("user add --scheme: %v", err)
	}
	t.Setenv("TWINBOX_PASSWORD_SCHEME", "argon2id")
	if _, _, err := userCmd(t, "erin pw\n", "add", "erin", "--data", data, "--cost", "1"); err != nil {
		t.Fatalf("user add with TWINBOX_PASSWORD_SCHEME: %v", err)
	}
	content, _ = os.ReadFile(path)
	if !strings.Contains(string(content), "\ndave:{SHA512-CRYPT}$6$rounds=1000$") || !strings.Contains(string(content), "\nerin:{ARGON2ID}$argon2id$v=19$m=65536,t=1,p=1$") {
		t.Errorf("passwd-file holds %q", content)
	}
	if _, err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	for u, pw := range map[string]string{"dave": "dave pw", "erin": "erin pw"} {
		if err := f.Authenticate(u, pw); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if _, _, err := userCmd(t, "", "del", "dave", "--data", data); err != nil {
		t.Fatal(err)
	}
	if _, _, err := userCmd(t, "", "del", "erin", "--data", data); err != nil {
		t.Fatal(err)
	}

	// The environment names the file.
	t.Setenv("TWINBOX_PASSWD", path)
	if out, _, err := userCmd(t, "", "list"); err != nil || out != "bob\ncarol@example.org\n" {
		t.Errorf("user list with TWINBOX_PASSWD: %v, %q", err, out)
	}
}

func TestUserCommandErrors(t *testing.T) {
	t.Setenv("TWINBOX_PASSWD", "")
	data := t.TempDir()
	path := filepath.Join(data, "passwd")
	if _, _, err := userCmd(t, "pw\n", "add", "--data", data, "alice"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		usage bool   // a usage error (exit status 2)
		is    error  // the error matches, if not nil
		msg   string // the error holds
	}{
		{"no verb", "", nil, true, nil, "user needs a verb"},
		{"unknown verb", "", []string{"rename", "alice"}, true, nil, `unknown user verb "rename"`},
		{"no name", "pw\n", []string{"add"}, true, nil, "user add takes one NAME, got 0"},
		{"two names", "pw\n", []string{"add", "a", "b"}, true, nil, "takes one NAME, got 2"},
		{"list with a name", "", []string{"list", "x"}, true, nil, "user list takes no name"},
		{"bad name", "pw\n", []string{"add", "a:b"}, true, nil, `user "a:b": contains ':'`},
		{"name with a space", "pw\n", []string{"add", "a b"}, true, nil, `contains ' '`},
		{"bad flag", "", []string{"list", "--nope"}, true, nil, "flag provided but not defined: -nope"},
		{"bad cost", "pw\n", []string{"add", "bob", "--cost", "99"}, true, nil, "Cost 99 is outside"},
		{"bad scheme", "pw\n", []string{"add", "bob", "--scheme", "PLAIN"}, true, users.ErrScheme, `"PLAIN" is not one twinbox writes`},
		{"cost below the scheme's", "pw\n", []string{"add", "bob", "--scheme", "sha512-crypt"}, true, nil, "Cost 4 is outside SHA512-CRYPT's 1000 to"},
		{"empty password", "\n", []string{"add", "bob"}, false, users.ErrPassword, "the password is empty"},
		{"no stdin", "", []string{"add", "bob"}, false, nil, "no password on standard input"},
		{"long password", strings.Repeat("p", 73) + "\n", []string{"add", "bob"}, false, users.ErrPassword, "73 bytes long; bcrypt uses at most 72"},
		{"huge line", strings.Repeat("p", 5000), []string{"add", "bob"}, false, nil, "longer than 1024 bytes"},
		{"add existing", "pw\n", []string{"add", "alice"}, false, users.ErrExists, `user add: users: user already exists: "alice" in ` + path},
		{"del missing", "", []string{"del", "bob"}, false, users.ErrNotFound, `user del: users: no such user: "bob" in ` + path},
		{"passwd missing", "pw\n", []string{"passwd", "bob"}, false, users.ErrNotFound, `"bob"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := userCmd(t, tc.stdin, append([]string{"--data", data}, tc.args...)...)
			switch {
			case err == nil:
				t.Fatal("no error")
			case errors.Is(err, errUsage) != tc.usage:
				t.Errorf("error %v: usage error %v, want %v", err, !tc.usage, tc.usage)
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Errorf("error %v is not %v", err, tc.is)
			case !strings.Contains(err.Error(), tc.msg):
				t.Errorf("error %q lacks %q", err, tc.msg)
			}
		})
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("a refused command changed the file:\n%s", after)
	}

	// A line the node cannot read: list names it and its user, who stays
	// listed; passwd repairs it.
	bad := string(before) + "bob:{SHA512-CRYPT}$6$salt$hash\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := userCmd(t, "", "--data", data, "list")
	if want := path + `:2: user "bob": {SHA512-CRYPT}: hash is not $6$salt$ and 86 characters`; err != nil || out != "alice\nbob\n" ||
		!strings.Contains(errOut, want) || !strings.Contains(errOut, "twinbox user passwd bob") {
		t.Errorf("list with a bad line: %v, %q, %q; want %q", err, out, errOut, want)
	}
	if _, _, err := userCmd(t, "bob's new\n", "--data", data, "passwd", "bob"); err != nil {
		t.Fatalf("passwd of a bad line: %v", err)
	}
	if _, errOut, err := userCmd(t, "", "--data", data, "list"); err != nil || errOut != "" {
		t.Errorf("list after the repair: %v, %q", err, errOut)
	}

	// A missing file: list says so; del and passwd name it.
	empty := t.TempDir()
	if out, errOut, err := userCmd(t, "", "list", "--data", empty); err != nil || out != "" || !strings.Contains(errOut, "no passwd-file at") {
		t.Errorf("list without a file: %v, %q, %q", err, out, errOut)
	}
	if _, _, err := userCmd(t, "", "del", "alice", "--data", empty); !errors.Is(err, users.ErrNotFound) {
		t.Errorf("del without a file: %v", err)
	}

	// -h prints the usage and succeeds.
	_, errOut, err = userCmd(t, "", "-h")
	if err != nil || !strings.Contains(errOut, "usage: twinbox user [flags] add NAME") {
		t.Errorf("user -h: %v, %q", err, errOut)
	}
}
