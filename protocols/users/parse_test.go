package users

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// hashA is a doveadm-made {BLF-CRYPT} hash of "correct horse battery staple".
const hashA = "$2y$05$Jegg/PFGOxuhlfqnmfzaP.cbQRxiblZUuNQuvCJDkYOywkFiRCYtC"

func TestParseLines(t *testing.T) {
	for _, tc := range []struct {
		name  string
		file  string
		users []string
		// want is "" for a good file, else the sentinel and the text the
		// error must hold.
		want    error
		wantMsg string
	}{
		{name: "empty", file: ""},
		{name: "comments and blanks", file: "# a comment\n\n   \n\t# indented comment\n"},
		{name: "short line", file: "alice:{BLF-CRYPT}" + hashA, users: []string{"alice"}},
		{name: "dovecot line", file: "alice:{BLF-CRYPT}" + hashA + "::::::\n", users: []string{"alice"}},
		{name: "all fields", file: "alice:{BLF-CRYPT}" + hashA + ":1000:1000:Alice:/home/a:/bin/sh:userdb_quota_rule=*:storage=1G\n", users: []string{"alice"}},
		{name: "crlf", file: "# c\r\nalice:{BLF-CRYPT}" + hashA + "\r\nbob:{blf-crypt}" + hashA + "\r\n", users: []string{"alice", "bob"}},
		{name: "crypt scheme with bcrypt", file: "alice:{CRYPT}" + hashA + "\n", users: []string{"alice"}},
		{name: "2b and 2a", file: "a:{BLF-CRYPT}$2b" + hashA[3:] + "\nb:{BLF-CRYPT}$2a" + hashA[3:] + "\n", users: []string{"a", "b"}},
		{name: "domain user", file: "alice@example.org:{BLF-CRYPT}" + hashA + "\n", users: []string{"alice@example.org"}},

		{name: "no colon", file: "# c\nalice\n", want: ErrMalformed, wantMsg: "p:2: no ':' after the user name"},
		{name: "empty user", file: ":{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: "p:1: store: invalid name"},
		{name: "space in user", file: "al ice:{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: "p:1: store: invalid name"},
		{name: "leading space", file: " alice:{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: "p:1:"},
		{name: "slash in user", file: "a/b:{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: `contains '/'`},
		{name: "empty password", file: "alice:\n", want: ErrMalformed, wantMsg: `p:1: user "alice" has an empty password field`},
		{name: "userdb only line", file: "alice::1000:1000::/home/alice\n", want: ErrMalformed, wantMsg: "empty password field"},
		{name: "no scheme", file: "alice:" + hashA + "\n", want: ErrScheme, wantMsg: "no {SCHEME} prefix"},
		{name: "unclosed scheme", file: "alice:{BLF-CRYPT" + hashA + "\n", want: ErrMalformed, wantMsg: "no closing '}'"},
		{name: "sha512-crypt", file: "alice:{SHA512-CRYPT}$6$BIQnJv5woJxHQptF$ig1gzVFN2Ps2PYN2ieCw9FdJLUYQdoJPgn2mit4FMnoJLMTaw/N3HxOkIp6G.WLtso5MgyfUD817Vj9XcJe751\n",
			want: ErrScheme, wantMsg: `p:1: user "alice": password scheme "{SHA512-CRYPT}" is not supported`},
		{name: "plain", file: "# x\n\nbob:{PLAIN}secret\n", want: ErrScheme, wantMsg: `p:3: user "bob": password scheme "{PLAIN}"`},
		{name: "crypt scheme with md5", file: "alice:{CRYPT}$1$abc$def\n", want: ErrScheme, wantMsg: "{CRYPT} with a hash that is not bcrypt"},
		{name: "short hash", file: "alice:{BLF-CRYPT}" + hashA[:50] + "\n", want: ErrMalformed, wantMsg: "bcrypt hash is 50 characters"},
		{name: "2x variant", file: "alice:{BLF-CRYPT}$2x" + hashA[3:] + "\n", want: ErrMalformed, wantMsg: "$2x$ is not supported"},
		{name: "bad cost", file: "alice:{BLF-CRYPT}$2y$+5" + hashA[6:] + "\n", want: ErrMalformed, wantMsg: "cost is not two digits"},
		{name: "cost too high", file: "alice:{BLF-CRYPT}$2y$32" + hashA[6:] + "\n", want: ErrMalformed, wantMsg: "cost"},
		{name: "bad character", file: "alice:{BLF-CRYPT}" + hashA[:20] + "!" + hashA[21:] + "\n", want: ErrMalformed, wantMsg: "'!' at offset 20"},
		{name: "duplicate", file: "alice:{BLF-CRYPT}" + hashA + "\n# c\nalice:{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: `p:3: user "alice" is already on line 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := parse("p", []byte(tc.file))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				got := tab.hashes()
				if len(got) != len(tc.users) {
					t.Fatalf("users %v, want %v", got, tc.users)
				}
				for _, u := range tc.users {
					if _, ok := got[u]; !ok {
						t.Errorf("user %q missing", u)
					}
				}
				if string(tab.bytes()) != tc.file {
					t.Errorf("rendered file differs:\n%q\nwant\n%q", tab.bytes(), tc.file)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Path != "p" {
				t.Errorf("error %v is not a *ParseError naming the file", err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) || !strings.HasPrefix(err.Error(), "users: ") {
				t.Errorf("error %q lacks %q", err, tc.wantMsg)
			}
			if strings.Contains(err.Error(), hashA[7:]) {
				t.Errorf("error %q shows the hash", err)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	_, err := parse("p", make([]byte, MaxFileSize+1))
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("error %v", err)
	}
}

func TestParseMaxCost(t *testing.T) {
	tab, err := parse("p", []byte("a:{BLF-CRYPT}"+hashA+"\nb:{BLF-CRYPT}$2y$07"+hashA[6:]+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tab.maxCost != 7 {
		t.Errorf("maxCost %d, want 7", tab.maxCost)
	}
}

// FuzzParse: parse never panics, and what it accepts renders back to the
// same bytes and parses again to the same users.
func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile("testdata/dovecot.passwd")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(""))
	f.Add([]byte("alice:{BLF-CRYPT}" + hashA + "\r\n#x\nbob:{CRYPT}" + hashA))
	f.Add([]byte("alice:{SHA512-CRYPT}$6$x$y\n"))
	f.Add([]byte("a:{BLF-CRYPT}$2y$04$......................................................\n"))
	f.Add([]byte(":\n:{\n{}:\n\xff:{BLF-CRYPT}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := parse("fuzz", data)
		if err != nil {
			return
		}
		if out := tab.bytes(); string(out) != string(data) {
			t.Fatalf("render differs:\n%q\nwant\n%q", out, data)
		}
		for u, h := range tab.hashes() {
			if _, err := bcrypt.Cost(h); err != nil {
				t.Fatalf("user %q: accepted hash %q: %v", u, h, err)
			}
		}
	})
}
