// Package dovecottest runs a real Dovecot 2.3 for tests (Debian's
// dovecot-core, dovecot-imapd and dovecot-lmtpd): a private instance in a
// temporary directory, with no network listener, that delivers with
// dovecot-lda and speaks IMAP through `doveadm exec imap` (PREAUTH on
// stdin/stdout, which mbsync's Tunnel uses too). What it writes is the
// Maildir a Dovecot server would have.
package dovecottest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Programs Dovecot brings.
const (
	Doveadm = "doveadm"
	LDA     = "/usr/lib/dovecot/dovecot-lda"
	IMAP    = "/usr/lib/dovecot/imap"
)

// Dovecot is a running instance.
type Dovecot struct {
	Conf string // its dovecot.conf
	Mail string // users' homes: Mail/USER/Maildir
	// Addr is its IMAP listener (host:port; no TLS, any user logs in
	// with the password Password).
	Addr string

	owner, group string
	tb           testing.TB
}

// need finds a program: missing, it skips the test, or fails it under CI.
func need(tb testing.TB, prog string) string {
	tb.Helper()
	p, err := exec.LookPath(prog)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s is missing, and CI is set: .ci/run installs dovecot-core, dovecot-imapd and dovecot-lmtpd (%v)", prog, err)
	}
	tb.Skipf("%s is missing (install dovecot-core, dovecot-imapd and dovecot-lmtpd to run this test)", prog)
	return ""
}

// Start starts a private Dovecot, stopped at the test's end. Mail is kept
// as Maildir++ owned by an unprivileged user (nobody when the test runs as
// root: Dovecot refuses mail access as root).
func Start(tb testing.TB) *Dovecot {
	tb.Helper()
	need(tb, Doveadm)
	need(tb, "dovecot")
	need(tb, LDA)
	need(tb, IMAP)
	// Not t.TempDir: the mail's owner must be able to reach it, and
	// Dovecot's sockets must stay within the 108 bytes of a unix
	// socket's name.
	dir, err := os.MkdirTemp("", "dvt")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	d := &Dovecot{Conf: filepath.Join(dir, "dovecot.conf"), Mail: filepath.Join(dir, "mail"), tb: tb}
	owner, group := "nobody", "nogroup"
	if os.Getuid() != 0 {
		u, err := user.Current()
		if err != nil {
			tb.Fatal(err)
		}
		g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
		if err != nil {
			tb.Fatal(err)
		}
		owner, group = u.Username, g.Name
	} else if _, err := user.LookupGroup(group); err != nil {
		group = "nobody"
	}
	for _, p := range []string{d.Mail, filepath.Join(dir, "state")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			tb.Fatal(err)
		}
		if os.Getuid() == 0 {
			u, _ := user.Lookup(owner)
			g, _ := user.LookupGroup(group)
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(g.Gid)
			os.Chown(p, uid, gid)
		}
	}
	// A port for IMAP (a client's login, as on a real server): the kernel
	// picks one, free when Dovecot binds it unless a race takes it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	d.Addr = l.Addr().String()
	d.owner, d.group = owner, group
	conf := fmt.Sprintf(`base_dir = %[1]s
state_dir = %[2]s/state
log_path = %[2]s/dovecot.log
ssl = no
listen = 127.0.0.1
mail_location = maildir:%[3]s/%%u/Maildir
default_internal_user = %[4]s
default_login_user = %[4]s
default_internal_group = %[5]s
first_valid_uid = 0
first_valid_gid = 0
userdb {
  driver = static
  args = uid=%[4]s gid=%[5]s home=%[3]s/%%u
}
passdb {
  driver = static
  args = password=%[7]s
}
protocols = imap lmtp
disable_plaintext_auth = no
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[6]d
  }
  inet_listener imaps {
    port = 0
  }
}
service anvil {
  chroot =
}
namespace inbox {
  inbox = yes
  separator = /
}
`, run, dir, d.Mail, owner, group, port, Password)
	if err := os.WriteFile(d.Conf, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	// No pipes: the daemon keeps its descriptors, and a reader of them
	// would wait for it to end.
	if err := exec.Command("dovecot", "-c", d.Conf).Run(); err != nil {
		tb.Fatalf("dovecot: %v\n%s", err, d.Log())
	}
	tb.Cleanup(func() {
		if out, err := exec.Command(Doveadm, "-c", d.Conf, "stop").CombinedOutput(); err != nil {
			tb.Logf("doveadm stop: %v\n%s", err, out)
		}
	})
	return d
}

// Dir is a directory the mail user can read and write, for a source
// Dovecot imports from (removed with the instance).
func (d *Dovecot) Dir(name string) string {
	d.tb.Helper()
	p := filepath.Join(filepath.Dir(d.Conf), name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		d.tb.Fatal(err)
	}
	return p
}

// Own gives path (recursively) to the mail user, as Dovecot needs to
// read a source it imports from.
func (d *Dovecot) Own(path string) {
	d.tb.Helper()
	if os.Getuid() != 0 {
		return
	}
	if out, err := exec.Command("chown", "-R", d.owner+":"+d.group, path).CombinedOutput(); err != nil {
		d.tb.Fatalf("chown: %v\n%s", err, out)
	}
}

// Import runs doveadm import: Dovecot copies every message of the Maildir
// src into user's mailboxes (its own copy, for comparison with twinbox
// import).
func (d *Dovecot) Import(user, src string) {
	d.tb.Helper()
	out, err := exec.Command(Doveadm, "-c", d.Conf, "import", "-u", user, "maildir:"+src, "", "all").CombinedOutput()
	if err != nil {
		d.tb.Fatalf("doveadm import: %v\n%s\n%s", err, out, d.Log())
	}
}

// Log is Dovecot's log.
func (d *Dovecot) Log() string {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(d.Conf), "dovecot.log"))
	return string(b)
}

// Maildir is a user's Maildir.
func (d *Dovecot) Maildir(user string) string { return filepath.Join(d.Mail, user, "Maildir") }

// Deliver delivers msg to user's INBOX with dovecot-lda (the delivery
// agent LMTP uses inside Dovecot).
func (d *Dovecot) Deliver(user string, msg []byte) {
	d.tb.Helper()
	cmd := exec.Command(LDA, "-c", d.Conf, "-d", user, "-f", "sender@example.org")
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		d.tb.Fatalf("dovecot-lda: %v\n%s\n%s", err, out, d.Log())
	}
}

// IMAP runs IMAP commands (one a line, tags included) as user and
// returns the session; a NO or BAD reply fails the test.
func (d *Dovecot) IMAP(user string, commands ...string) string {
	d.tb.Helper()
	cmd := exec.Command(Doveadm, "-c", d.Conf, "exec", "imap", "-u", user)
	cmd.Stdin = strings.NewReader(strings.Join(append(commands, "zz LOGOUT"), "\r\n") + "\r\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		d.tb.Fatalf("imap: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && f[0] != "*" && (f[1] == "NO" || f[1] == "BAD") {
			d.tb.Fatalf("imap: %s\nsession:\n%s", l, out)
		}
	}
	return string(out)
}

// Password is every user's password.
const Password = "pw"

// Tunnel is the shell command of a PREAUTH IMAP session as user, for
// mbsync's Tunnel. It sets PATH: doveadm finds itself through it, and a
// test's client may run with a bare environment. The session's input and
// output are pipes: Dovecot's imap refuses a socket ("must not be started
// from inetd"), and mbsync's tunnel is one.
func (d *Dovecot) Tunnel(user string) string {
	return fmt.Sprintf("cat | PATH=/usr/sbin:/usr/bin:/sbin:/bin %s -c %s exec imap -u %s | cat", Doveadm, d.Conf, user)
}

// Message is one message as Dovecot lists it.
type Message struct {
	Mailbox string
	UID     uint32
	Flags   []string // without \Recent
}

// Fetch lists every message of user with doveadm fetch.
func (d *Dovecot) Fetch(user string) []Message {
	d.tb.Helper()
	out, err := exec.Command(Doveadm, "-c", d.Conf, "-f", "tab", "fetch", "-u", user, "mailbox uid flags", "all").Output()
	if err != nil {
		d.tb.Fatalf("doveadm fetch: %v", err)
	}
	var msgs []Message
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n")[1:] {
		f := strings.Split(l, "\t")
		if len(f) < 2 {
			continue
		}
		f = append(f, "")
		uid, _ := strconv.ParseUint(f[1], 10, 32)
		m := Message{Mailbox: f[0], UID: uint32(uid)}
		for _, fl := range strings.Fields(f[2]) {
			if fl != `\Recent` {
				m.Flags = append(m.Flags, fl)
			}
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// Status is a mailbox's UIDVALIDITY and UIDNEXT as Dovecot reports them.
func (d *Dovecot) Status(user string) map[string][2]uint32 {
	d.tb.Helper()
	out, err := exec.Command(Doveadm, "-c", d.Conf, "-f", "tab", "mailbox", "status", "-u", user, "uidvalidity uidnext", "*").Output()
	if err != nil {
		d.tb.Fatalf("doveadm mailbox status: %v", err)
	}
	st := map[string][2]uint32{}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	hdr := strings.Split(lines[0], "\t")
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		var v [2]uint32
		for i, h := range hdr {
			n, _ := strconv.ParseUint(f[i], 10, 32)
			switch h {
			case "uidvalidity":
				v[0] = uint32(n)
			case "uidnext":
				v[1] = uint32(n)
			}
		}
		st[f[0]] = v
	}
	return st
}
