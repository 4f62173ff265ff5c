package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/twinbox/twinbox/internal/dovecottest"
	"github.com/twinbox/twinbox/internal/harness"
)

// mbsyncDovecotRC is an mbsync configuration whose far side is first a
// Dovecot (Tunnel: a PREAUTH session) and then a Twinbox node, with the
// same near Maildir and sync state, as a user whose server moved has it.
const mbsyncDovecotRC = `IMAPAccount old
Host {{.OldHost}}
Port {{.OldPort}}
User alice
Pass {{.OldPass}}
SSLType None
AuthMechs LOGIN

IMAPAccount new
Host {{.Host}}
Port {{.Port}}
User {{.User}}
Pass {{.Pass}}
SSLType STARTTLS
CertificateFile {{.CertFile}}
AuthMechs LOGIN

IMAPStore far
Account {{.Account}}

MaildirStore near
Path {{.Maildir}}/
Inbox {{.Maildir}}/INBOX
SubFolders Verbatim

Channel mail
Far :far:
Near :near:
Patterns *
Sync All
Create Both
Expunge Both
SyncState *
`

// TestImportDovecotMbsync is issue 15's migration, as an operator runs it:
// a Dovecot 2.3 holds alice's mail (delivered by dovecot-lda; flags,
// keywords, a folder and an expunge made over IMAP); her mbsync has
// synced it. `twinbox import maildir` brings the Maildir into the active
// of a pair; the passive gets it all (same digest); and mbsync, pointed
// at the active, finds nothing to download or change.
func TestImportDovecotMbsync(t *testing.T) {
	mbsync := need(t, "mbsync")
	d := dovecottest.Start(t)
	for i, s := range []string{"one", "two", "three", "four", "five"} {
		d.Deliver("alice", message("dovecot "+s, strings.Repeat("line of text\r\n", 10*(i+1))))
	}
	d.IMAP("alice", "a CREATE Projects", "b SELECT INBOX",
		`c UID STORE 1 +FLAGS (\Seen)`, `d UID STORE 2 +FLAGS (\Seen \Flagged $Work)`,
		`e UID STORE 3 +FLAGS (\Deleted)`, "f UID COPY 2,4 Projects")
	d.IMAP("alice", "a SELECT INBOX", "b UID EXPUNGE 3")

	home := t.TempDir()
	maildir := filepath.Join(home, "Mail")
	os.Mkdir(maildir, 0o700)
	p := newFOPair(t, nil)
	p.startBoth(t)
	active := p.waitActive(t, -1)
	n := p.nodes[active]
	sync := func(account string) (string, map[string]bool) {
		t.Helper()
		var cfg bytes.Buffer
		host, port, _ := strings.Cut(n.imap, ":")
		oldHost, oldPort, _ := strings.Cut(d.Addr, ":")
		template.Must(template.New("rc").Parse(mbsyncDovecotRC)).Execute(&cfg, map[string]string{
			"OldHost": oldHost, "OldPort": oldPort, "OldPass": dovecottest.Password, "Host": host, "Port": port, "User": "alice", "Pass": n.users["alice"],
			"CertFile": n.CertFile(), "Maildir": maildir, "Account": account,
		})
		rc := writeFile(t, "mbsyncrc-"+account, cfg.Bytes())
		r := run(t, clientTimeout, []string{"HOME=" + home}, nil, mbsync, "-V", "-c", rc, "mail")
		if r.code != 0 {
			t.Fatalf("mbsync against %s: exit %d\n%s%s", account, r.code, r.stdout, r.stderr)
		}
		files := map[string]bool{}
		filepath.Walk(maildir, func(path string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && (filepath.Base(filepath.Dir(path)) == "cur" || filepath.Base(filepath.Dir(path)) == "new") {
				rel, _ := filepath.Rel(maildir, path)
				files[rel] = true
			}
			return nil
		})
		return string(r.stdout) + string(r.stderr), files
	}
	_, before := sync("old")
	if len(before) != 6 {
		t.Fatalf("mbsync got %d messages from Dovecot, want 6: %v", len(before), before)
	}

	start := time.Now()
	r := run(t, clientTimeout, nil, nil, p.bin, "import", "maildir", "--user", "alice", "--admin", n.adm, d.Maildir("alice"))
	if r.code != 0 {
		t.Fatalf("twinbox import: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("twinbox import (%s):\n%s", time.Since(start).Round(time.Millisecond), r.stdout)
	if !strings.Contains(string(r.stdout), "6 imported with their UIDs") {
		t.Fatalf("import summary:\n%s", r.stdout)
	}
	// The passive holds what the active does.
	passive := p.nodes[1-active]
	n.waitFor(t, 30*time.Second, "the passive's digest to equal the active's", func() bool {
		a, err1 := n.Digest(t.Context())
		b, err2 := passive.Digest(t.Context())
		return err1 == nil && err2 == nil && a.Applied == b.Applied && a.Store == b.Store
	})

	out, after := sync("new")
	t.Logf("mbsync against Twinbox:\n%s", out)
	if !slices.Equal(keys(before), keys(after)) {
		t.Fatalf("the local Maildir changed after switching to Twinbox:\nbefore %v\nafter  %v", keys(before), keys(after))
	}
	// A second import stores nothing more.
	r = run(t, clientTimeout, nil, nil, p.bin, "import", "maildir", "--user", "alice", "--admin", n.adm, d.Maildir("alice"))
	if r.code != 0 || !strings.Contains(string(r.stdout), "0 imported with their UIDs, 0 appended with new UIDs, 6 already there") {
		t.Fatalf("second import: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func keys(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

// TestImportPairThroughput measures `twinbox import` into the active of a
// pair with sync replication (each batch confirmed by the passive) and
// prints msg/s and MB/s; set TWINBOX_BENCH=1 to run it.
func TestImportPairThroughput(t *testing.T) {
	if os.Getenv("TWINBOX_BENCH") == "" {
		t.Skip("a measurement: TWINBOX_BENCH=1 runs it")
	}
	const n = 5000
	src := filepath.Join(t.TempDir(), "Maildir")
	for _, sub := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(src, sub), 0o755)
	}
	var list strings.Builder
	list.WriteString("3 V1700000000 N1\n")
	var size int64
	for i := 1; i <= n; i++ {
		m := message(fmt.Sprintf("bench %d", i), strings.Repeat("a line of the body of a message\r\n", 300))
		size += int64(len(m))
		name := fmt.Sprintf("1700000000.M%dP1.host,S=%d", i, len(m))
		os.WriteFile(filepath.Join(src, "cur", name+":2,S"), m, 0o644)
		fmt.Fprintf(&list, "%d :%s\n", i, name)
	}
	os.WriteFile(filepath.Join(src, "dovecot-uidlist"), []byte(list.String()), 0o644)
	p := newFOPair(t, nil)
	p.startBoth(t)
	n0 := p.nodes[p.waitActive(t, -1)]
	start := time.Now()
	r := run(t, 5*time.Minute, nil, nil, p.bin, "import", "maildir", "--user", "alice", "--admin", n0.adm, src)
	took := time.Since(start)
	if r.code != 0 {
		t.Fatalf("import: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	fmt.Printf("twinbox import into a pair (sync replication): %d messages of %d KB in %s: %.0f msg/s, %.1f MB/s\n%s",
		n, size/n/1000, took.Round(time.Millisecond), float64(n)/took.Seconds(), float64(size)/1e6/took.Seconds(), r.stdout)
}

// TestImportIMAP: `twinbox import imap` from a running Dovecot (password
// on the standard input) keeps UIDVALIDITY and UIDs, and the node serves
// them.
func TestImportIMAP(t *testing.T) {
	d := dovecottest.Start(t)
	for _, s := range []string{"one", "two", "three"} {
		d.Deliver("carol", message("imap "+s, "body "+s))
	}
	d.IMAP("carol", "a SELECT INBOX", `b UID STORE 2 +FLAGS (\Deleted)`, "c EXPUNGE")
	st := d.Status("carol")["INBOX"]
	bin := buildTwinbox(t)
	n := startNode(t, bin)
	n.addUser(t, "carol", "carol-pw")
	r := run(t, clientTimeout, nil, []byte(dovecottest.Password+"\n"), bin, "import", "imap", "--user", "carol", "--tls", "none", "--admin", n.adm, d.Addr)
	if r.code != 0 || !strings.Contains(string(r.stdout), "2 imported with their UIDs") {
		t.Fatalf("twinbox import imap: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	c, err := harness.IMAPDial(t.Context(), n.imap, "carol", "carol-pw", clientTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.UIDValidity != st[0] || uint32(sel.UIDNext) < st[1] || sel.NumMessages != 2 {
		t.Fatalf("INBOX on Twinbox: UIDVALIDITY %d UIDNEXT %d, %d messages; Dovecot's %d %d, 2", sel.UIDValidity, sel.UIDNext, sel.NumMessages, st[0], st[1])
	}
}
