package users_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/protocols/users"
)

// schemePasswords are the passwords of testdata/schemes.passwd, one user
// per scheme, whose lines doveadm made.
var schemePasswords = map[string]string{
	"blf-crypt":           "bcrypt's own",
	"sha512-crypt":        "the most common",
	"sha512-crypt-rounds": "rounds are written",
	"sha256-crypt":        "sha two five six",
	"md5-crypt":           "old but common",
	"crypt":               "crypt(3) by doveadm",
	"des-crypt":           "eight ch",
	"ssha512":             "salted sha 512",
	"ssha512-hex":         "salted hex",
	"ssha256":             "salted 256",
	"ssha":                "salted one",
	"smd5":                "salted md5",
	"sha512":              "plain digest 512",
	"sha256":              "digest 256",
	"sha256-hex":          "digest 256 hex",
	"sha":                 "digest one",
	"ldap-md5":            "ldap md5",
	"plain-md5":           "plain md5 hex",
	"md5":                 "md5 is md5-crypt",
	"plain":               "plain text, pässwörd",
	"plain-b64":           "base64 plain",
	"clear":               "clear as day",
	"cram-md5":            "challenge response",
	"cram-md5-b64":        "challenge in base64",
	"cram-md5-long":       "a password longer than the sixty-four bytes of an HMAC-MD5 block, hashed first",
	"argon2i":             "argon two i",
	"argon2id":            "argon two id",
	"pbkdf2":              "pbkdf2 sha1",
	"crypt-sha512":        "crypt holds sha512",
	"no-scheme":           "no scheme at all",
}

// unreadable are the users of testdata/schemes.passwd that twinbox
// cannot log in: none (DES crypt is read since it was written here).
var unreadable []string

// Every user of a file doveadm made logs in through the guard, with its
// password and no other.
func TestEverySchemeLogsIn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	data, err := os.ReadFile("testdata/schemes.passwd")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(data))
	f := openFile(t, path)
	g, _ := newGuardFor(t, f, users.GuardOptions{})
	dir := users.Directory{File: f, Guard: g}

	if got := len(f.Users()); got != len(schemePasswords) {
		t.Fatalf("%d users, want %d: %v", got, len(schemePasswords), f.Users())
	}
	ctx := context.Background()
	for u, pw := range schemePasswords {
		if !dir.Lookup(u) {
			t.Errorf("Lookup(%q) = false", u)
		}
		err := dir.Check(ctx, u, pw, "192.0.2.1")
		if slices.Contains(unreadable, u) {
			if !errors.Is(err, users.ErrAuthFailed) {
				t.Errorf("%s: Check = %v, want ErrAuthFailed", u, err)
			}
			if err := f.Authenticate(u, pw); !errors.Is(err, users.ErrDisabled) {
				t.Errorf("%s: Authenticate = %v, want ErrDisabled", u, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Check with the right password: %v", u, err)
		}
		wrongs := []string{pw + "x", strings.ToUpper(pw)}
		if u == "des-crypt" {
			wrongs = wrongs[1:] // DES crypt reads 8 characters: "eight chx" is "eight ch"
		}
		for _, wrong := range wrongs {
			if f.Authenticate(u, wrong) == nil {
				t.Errorf("%s: password %q accepted", u, wrong)
			}
		}
	}
	if probs := f.Problems(); len(probs) != 0 {
		t.Fatalf("Problems() = %v, want none", probs)
	}
}

// newGuardFor is newTestGuard over a given file.
func newGuardFor(t *testing.T, f *users.File, opts users.GuardOptions) (*users.Guard, *fakeTime) {
	t.Helper()
	ft := newFakeTime()
	opts.Now, opts.Sleep, opts.Logger = ft.Now, ft.Sleep, testLogger(t)
	g, err := users.NewGuard(f, &opts)
	if err != nil {
		t.Fatal(err)
	}
	return g, ft
}

// need returns the path of an outside program, or skips the test when it
// is missing, failing instead under CI=1 (as integration's need does).
func need(t *testing.T, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI is set: .ci/run installs it (%v)", prog, err)
	}
	t.Skipf("%s is not installed (install Debian's dovecot-core to run this test; under CI=1 this fails)", prog)
	return ""
}

// Fresh hashes from the installed Dovecot, in every scheme and encoding,
// log in; and every scheme twinbox writes, Dovecot verifies.
func TestDoveadmHashes(t *testing.T) {
	doveadm := need(t, "doveadm")
	const pw = "Fresh, pässwörd 42!" // no ":", which ends a passwd-file field
	schemes := []string{
		"BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "CRYPT", "MD5",
		"SSHA512", "SSHA256", "SSHA", "SMD5", "SHA512", "SHA256", "SHA", "SHA1", "LDAP-MD5", "PLAIN-MD5",
		"PLAIN", "CLEAR", "CLEARTEXT", "CRAM-MD5", "HMAC-MD5", "ARGON2I", "ARGON2ID", "PBKDF2",
		"SSHA512.HEX", "SSHA256.B64", "SHA512.HEX", "SHA256.HEX", "SHA.HEX", "PLAIN.B64", "PLAIN.HEX",
		"CRAM-MD5.B64", "PLAIN-MD5.B64", "LDAP-MD5.HEX",
	}
	var file strings.Builder
	for i, s := range schemes {
		out, err := exec.Command(doveadm, "pw", "-s", s, "-p", pw).Output()
		if err != nil {
			t.Fatalf("doveadm pw -s %s: %v", s, err)
		}
		field := strings.TrimSpace(string(out))
		fmt.Fprintf(&file, "u%d:%s\n", i, field)
	}
	path := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, path, file.String())
	f := openFile(t, path)
	if p := f.Problems(); len(p) != 0 {
		t.Fatalf("doveadm's lines not read: %v", p)
	}
	for i, s := range schemes {
		u := fmt.Sprintf("u%d", i)
		if err := f.Authenticate(u, pw); err != nil {
			t.Errorf("%s: right password refused: %v", s, err)
		}
		if err := f.Authenticate(u, pw+" "); err == nil {
			t.Errorf("%s: wrong password accepted", s)
		}
	}

	for _, s := range users.Schemes() {
		h, err := users.Hash(pw, &users.EditOptions{Scheme: s})
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(doveadm, "pw", "-t", h, "-p", pw).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "verified") {
			t.Errorf("doveadm pw -t %s: %v: %s", h, err, out)
		}
		if out, err := exec.Command(doveadm, "pw", "-t", h, "-p", "not it").CombinedOutput(); err == nil {
			t.Errorf("doveadm verified a wrong password against %s: %s", h, out)
		}
	}
}
