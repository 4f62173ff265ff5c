package users

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"encoding"
	"encoding/binary"
	"errors"
	"hash"
	"os"
	"slices"
	"strings"
	"testing"
)

// hashA is a doveadm-made {BLF-CRYPT} hash of "correct horse battery staple".
const hashA = "$2y$05$Jegg/PFGOxuhlfqnmfzaP.cbQRxiblZUuNQuvCJDkYOywkFiRCYtC"

// yescryptHash is "yes crypt pw" hashed by Debian 12's crypt(3) (libxcrypt,
// the $y$ default of /etc/shadow), which Dovecot's {CRYPT} calls:
// doveadm pw -t verifies it.
const yescryptHash = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$R4NZVsLUH3Z9Ni5R0Xp43uEC4jh.zIueRiE.XKHmzA4"

// A shadow-style yescrypt hash under {CRYPT} logs in.
func TestYescrypt(t *testing.T) {
	v, err := parseField("{CRYPT}" + yescryptHash)
	if err != nil {
		t.Fatal(err)
	}
	if !v.verify([]byte("yes crypt pw")) || v.verify([]byte("yes crypt pw ")) {
		t.Error("yescrypt does not tell the right password from a wrong one")
	}
}

func TestParseLines(t *testing.T) {
	for _, tc := range []struct {
		name  string
		file  string
		users []string // served, disabled ones included
		// want is nil for a file whose every line is read, else the
		// sentinel and the text of its first problem; disabled are the
		// users it disables.
		want     error
		wantMsg  string
		disabled []string
	}{
		{name: "empty", file: ""},
		{name: "comments and blanks", file: "# a comment\n\n   \n\t# indented comment\n"},
		{name: "short line", file: "alice:{BLF-CRYPT}" + hashA, users: []string{"alice"}},
		{name: "dovecot line", file: "alice:{BLF-CRYPT}" + hashA + "::::::\n", users: []string{"alice"}},
		{name: "all fields", file: "alice:{BLF-CRYPT}" + hashA + ":1000:1000:Alice:/home/a:/bin/sh:userdb_quota_rule=*:storage=1G\n", users: []string{"alice"}},
		{name: "crlf", file: "# c\r\nalice:{BLF-CRYPT}" + hashA + "\r\nbob:{blf-crypt}" + hashA + "\r\n", users: []string{"alice", "bob"}},
		{name: "crypt scheme with bcrypt", file: "alice:{CRYPT}" + hashA + "\n", users: []string{"alice"}},
		{name: "no scheme is crypt", file: "alice:" + hashA + "\n", users: []string{"alice"}},
		{name: "2b and 2a", file: "a:{BLF-CRYPT}$2b" + hashA[3:] + "\nb:{BLF-CRYPT}$2a" + hashA[3:] + "\n", users: []string{"a", "b"}},
		{name: "domain user", file: "alice@example.org:{BLF-CRYPT}" + hashA + "\n", users: []string{"alice@example.org"}},
		{name: "sha512-crypt", file: "alice:{SHA512-CRYPT}$6$BIQnJv5woJxHQptF$ig1gzVFN2Ps2PYN2ieCw9FdJLUYQdoJPgn2mit4FMnoJLMTaw/N3HxOkIp6G.WLtso5MgyfUD817Vj9XcJe751\n", users: []string{"alice"}},
		{name: "plain", file: "# x\n\nbob:{PLAIN}secret\n", users: []string{"bob"}},
		{name: "yescrypt", file: "bob:{CRYPT}" + yescryptHash + "\n", users: []string{"bob"}},
		{name: "yescrypt too dear", file: "bob:{CRYPT}$y$jJT$F5Jx5fExrKuPp53xLKQ..1$R4NZVsLUH3Z9Ni5R0Xp43uEC4jh.zIueRiE.XKHmzA4\n", users: []string{"bob"}, disabled: []string{"bob"}, want: ErrMalformed, wantMsg: `yescrypt parameters "jJT" ask for more than 1024 MiB`},

		{name: "no colon", file: "# c\nalice\n", want: ErrMalformed, wantMsg: "p:2: no ':' after the user name"},
		{name: "empty user", file: ":{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: "p:1: store: invalid name"},
		{name: "space in user", file: "al ice:{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: "p:1: store: invalid name"},
		{name: "leading space", file: " alice:{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: "p:1:"},
		{name: "slash in user", file: "a/b:{BLF-CRYPT}" + hashA + "\n", want: ErrMalformed, wantMsg: `contains '/'`},
		{name: "empty password", file: "alice:\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: `p:1: user "alice" has an empty password field`},
		{name: "userdb only line", file: "alice::1000:1000::/home/alice\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "empty password field"},
		{name: "no scheme, not crypt", file: "alice:secret\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrScheme, wantMsg: `user "alice": {CRYPT}: hash is of a crypt(3) kind twinbox does not read`},
		{name: "unclosed scheme", file: "alice:{BLF-CRYPT" + hashA + "\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "no closing '}'"},
		{name: "unknown scheme", file: "# x\n\nbob:{SCRAM-SHA-256}4096,abc\n", users: []string{"bob"}, disabled: []string{"bob"}, want: ErrScheme, wantMsg: `p:3: user "bob": password scheme "{SCRAM-SHA-256}" is not one twinbox reads`},
		{name: "unknown encoding", file: "bob:{SHA256.B32}abc\n", users: []string{"bob"}, disabled: []string{"bob"}, want: ErrScheme, wantMsg: "unknown encoding"},
		{name: "des crypt", file: "alice:{CRYPT}VaG6xX07td/is\n", users: []string{"alice"}},
		{name: "extended des crypt", file: "alice:{CRYPT}_J9..abcdefghijklmnopq\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrScheme, wantMsg: "only the traditional 13-character form"},
		{name: "crypt scheme with md5", file: "alice:{CRYPT}$1$abc$def\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "hash is not $1$salt$ and 22 characters"},
		{name: "bad digest length", file: "alice:{SHA256}AAAA\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "decodes to 3 bytes, want 32"},
		{name: "bad hex", file: "alice:{SSHA512.HEX}zz\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "not hex"},
		{name: "short salted", file: "alice:{SSHA}AAAA\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "too short"},
		{name: "argon2 memory", file: "alice:{ARGON2ID}$argon2id$v=19$m=99999999,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "out of range"},
		{name: "short hash", file: "alice:{BLF-CRYPT}" + hashA[:50] + "\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "bcrypt hash is 50 characters"},
		{name: "2x variant", file: "alice:{BLF-CRYPT}$2x" + hashA[3:] + "\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "$2x$ is not supported"},
		{name: "bad cost", file: "alice:{BLF-CRYPT}$2y$+5" + hashA[6:] + "\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "cost is not two digits"},
		{name: "cost too high", file: "alice:{BLF-CRYPT}$2y$32" + hashA[6:] + "\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "cost"},
		{name: "bad character", file: "alice:{BLF-CRYPT}" + hashA[:20] + "!" + hashA[21:] + "\n", users: []string{"alice"}, disabled: []string{"alice"}, want: ErrMalformed, wantMsg: "'!' at offset 20"},
		{name: "duplicate", file: "alice:{BLF-CRYPT}" + hashA + "\n# c\nalice:{BLF-CRYPT}" + hashA + "\nbob:{PLAIN}b\n", users: []string{"alice", "bob"}, disabled: []string{"alice"},
			want: ErrMalformed, wantMsg: `p:1: user "alice" is on line 3 again; neither line is used`},
		{name: "one bad line among good", file: "alice:{BLF-CRYPT}" + hashA + "\nbob:{NOPE}x\ncarol:{PLAIN}c\n", users: []string{"alice", "bob", "carol"}, disabled: []string{"bob"},
			want: ErrScheme, wantMsg: `p:2: user "bob"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := parse("p", []byte(tc.file))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if string(tab.bytes()) != tc.file {
				t.Errorf("rendered file differs:\n%q\nwant\n%q", tab.bytes(), tc.file)
			}
			creds := tab.credentials()
			if len(creds) != len(tc.users) {
				t.Fatalf("users %v, want %v", creds, tc.users)
			}
			for _, u := range tc.users {
				c, ok := creds[u]
				if !ok {
					t.Errorf("user %q missing", u)
				}
				if off := slices.Contains(tc.disabled, u); off != (c.v == nil) || off != (c.err != nil) {
					t.Errorf("user %q: disabled %v, want %v", u, c.v == nil, off)
				}
			}
			if tc.want == nil {
				if len(tab.problems) != 0 {
					t.Fatalf("problems %v", tab.problems)
				}
				return
			}
			if len(tab.problems) == 0 {
				t.Fatal("no problem found")
			}
			err = tab.problems[0]
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

// CRAM-MD5's stored state is HMAC-MD5's: MD5 resumed from its two halves
// finishes the HMAC of any message (the doveadm-made fixture checks the
// layout against Dovecot's).
func TestCramContextIsHMACState(t *testing.T) {
	// resume returns MD5 as it was after one 64-byte block that left it
	// in state (A, B, C, D little-endian), in crypto/md5's encoding.
	resume := func(state []byte) hash.Hash {
		m := []byte("md5\x01")
		for i := range 4 {
			m = binary.BigEndian.AppendUint32(m, binary.LittleEndian.Uint32(state[4*i:]))
		}
		m = append(m, make([]byte, md5.BlockSize)...)
		m = binary.BigEndian.AppendUint64(m, md5.BlockSize)
		h := md5.New()
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(m); err != nil {
			t.Fatal(err)
		}
		return h
	}
	for _, pw := range []string{"", "x", strings.Repeat("k", 64), strings.Repeat("long key ", 10)} {
		c := cramContext([]byte(pw))
		if len(c) != cramLen {
			t.Fatalf("context is %d bytes", len(c))
		}
		inner := resume(c[16:])
		inner.Write([]byte("message"))
		outer := resume(c[:16])
		outer.Write(inner.Sum(nil))
		m := hmac.New(md5.New, []byte(pw))
		m.Write([]byte("message"))
		if !bytes.Equal(outer.Sum(nil), m.Sum(nil)) {
			t.Errorf("password %q: the context does not finish HMAC-MD5", pw)
		}
	}
}

// FuzzParse: parse never panics nor fails below MaxFileSize, what it reads
// renders back to the same bytes, and every user it serves either has a
// verifier or a problem naming its line.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/dovecot.passwd", "testdata/schemes.passwd"} {
		seed, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(seed)
	}
	f.Add([]byte(""))
	f.Add([]byte("alice:{BLF-CRYPT}" + hashA + "\r\n#x\nbob:{CRYPT}" + hashA))
	f.Add([]byte("alice:{SHA512-CRYPT}$6$x$y\n"))
	f.Add([]byte("a:{BLF-CRYPT}$2y$04$......................................................\n"))
	f.Add([]byte(":\n:{\n{}:\n\xff:{BLF-CRYPT}\n"))
	f.Add([]byte("a:{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\nb:{PBKDF2}$1$s$1$00\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := parse("fuzz", data)
		if err != nil {
			t.Fatal(err)
		}
		if out := tab.bytes(); string(out) != string(data) {
			t.Fatalf("render differs:\n%q\nwant\n%q", out, data)
		}
		for u, c := range tab.credentials() {
			if (c.v == nil) != (c.err != nil) {
				t.Fatalf("user %q: verifier %v, problem %v", u, c.v, c.err)
			}
		}
	})
}

// FuzzVerify: a password field that parses never makes verify panic, and
// no cheap verifier takes both a password and that password changed.
func FuzzVerify(f *testing.F) {
	for _, field := range []string{
		"{SSHA512.HEX}6e519048527db0544cf911d032adc197064f104c4c9c4d1b1b6101a9e6f42a0faae24af5e9c810edf1de70074b8d26ad456193ae940d4f6f0937b23e2ad815cf1ce761bb",
		"{CRAM-MD5}639a42ba52b0f56e237feb5ee28a71c53054a4fb40d691a61496625a996d6fa2",
		"{PBKDF2}$1$bD78EnhseaLvDlY6$5000$f85459beb9f1948da6172c32c6c8bb2e09bd6bb0",
		"{MD5-CRYPT}$1$2nT7uFLw$lQyxsOcPxQA9Bllowb0Z1/",
		"{SHA256-CRYPT}$5$fTSAjU3MAZymHRiV$6NKX6gmN.q1Mx2AOhqKn3yvijt7HLx3U9uKpQBxgqx5",
		"{PLAIN.B64}YmFzZTY0IHBsYWlu", "{MD5}5d40d9b8cc10a8658d660ec2e6bad9b1", "$1$eF4sxfH5$zQfWn/SLJj53EUYTFgNhw0",
	} {
		f.Add(field, "salted hex")
	}
	f.Fuzz(func(t *testing.T, field, password string) {
		v, err := parseField(field)
		if err != nil {
			return
		}
		w := v.work()
		if cheap := w == "digest" || w == "md5crypt" || w == "pbkdf2/1" || strings.HasSuffix(w, "/1000"); !cheap {
			return
		}
		if v.verify([]byte(password)) && v.verify([]byte(password+"\x01")) {
			t.Fatalf("%s takes %q and %q", field, password, password+"\x01")
		}
	})
}
