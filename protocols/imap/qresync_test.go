package imap_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

// TestQResync (RFC 7162): a client that reconnects with its UIDVALIDITY
// and mod-sequence after another session expunged and flagged gets
// VANISHED (EARLIER) and the changed flags, not a full resync; while
// selected it gets VANISHED instead of EXPUNGE.
func TestQResync(t *testing.T) {
	e := prototest.Start(t, nil)
	for i := range 6 {
		send(t, e, msg(fmt.Sprintf("q%d", i), "x"), "alice@localhost")
	}
	a := loginRaw(t, e, "alice")
	if u := a.ok("ENABLE QRESYNC"); !has(u, "* ENABLED QRESYNC") {
		t.Fatalf("ENABLE QRESYNC: %q", u)
	}
	u := a.ok("SELECT INBOX")
	var uidValidity string
	for _, l := range u {
		if v, ok := strings.CutPrefix(l, "* OK [UIDVALIDITY "); ok {
			uidValidity = strings.TrimSuffix(strings.Fields(v)[0], "]")
		}
	}
	modseq := ""
	for _, l := range u {
		if v, ok := strings.CutPrefix(l, "* OK [HIGHESTMODSEQ "); ok {
			modseq = strings.TrimSuffix(strings.Fields(v)[0], "]")
		}
	}
	if uidValidity == "" || modseq == "" {
		t.Fatalf("SELECT with QRESYNC on: %q", u)
	}
	a.ok("LOGOUT")

	// Meanwhile another session expunges 2 and 5 and flags 3.
	b := loginRaw(t, e, "alice")
	b.ok("SELECT INBOX")
	b.ok("STORE 2,5 +FLAGS.SILENT (\\Deleted)")
	b.ok("EXPUNGE")
	b.ok("UID STORE 3 +FLAGS.SILENT (\\Flagged)")

	a = loginRaw(t, e, "alice")
	a.ok("ENABLE QRESYNC")
	u = a.ok("SELECT INBOX (QRESYNC (" + uidValidity + " " + modseq + " 1:6))")
	if !has(u, "* VANISHED (EARLIER) 2,5") {
		t.Errorf("no VANISHED (EARLIER) 2,5 on reconnect: %q", u)
	}
	if !hasPrefix(u, "* 2 FETCH (UID 3 FLAGS (") || !strings.Contains(strings.Join(u, "\n"), `\Flagged`) {
		t.Errorf("no FETCH of the flagged message on reconnect: %q", u)
	}
	for _, l := range u {
		if strings.Contains(l, "FETCH (UID 1 ") || strings.Contains(l, "FETCH (UID 4 ") {
			t.Errorf("an unchanged message was sent: %q", l)
		}
	}
	// A wrong UIDVALIDITY gets no resync data.
	u = a.ok("SELECT INBOX (QRESYNC (1 " + modseq + "))")
	if hasPrefix(u, "* VANISHED") {
		t.Errorf("VANISHED with a wrong UIDVALIDITY: %q", u)
	}
	// While selected: VANISHED, not EXPUNGE.
	b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
	b.ok("EXPUNGE")
	if u := a.ok("NOOP"); !has(u, "* VANISHED 1") || hasPrefix(u, "* 1 EXPUNGE") {
		t.Errorf("expunge told with QRESYNC: %q", u)
	}
	u = a.ok("UID FETCH 1:6 (FLAGS) (CHANGEDSINCE " + modseq + " VANISHED)")
	if !has(u, "* VANISHED (EARLIER) 1:2,5") {
		t.Errorf("UID FETCH VANISHED: %q", u)
	}
	if _, tagged := a.do("FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)"); !containsBad(tagged) {
		t.Errorf("FETCH (not UID) with VANISHED: %q", tagged)
	}
	// The server remembers expunges: a client whose mod-sequence is
	// recent hears of the expunges since, not of older gaps.
	u = a.ok("SELECT INBOX")
	var now string
	for _, l := range u {
		if v, ok := strings.CutPrefix(l, "* OK [HIGHESTMODSEQ "); ok {
			now = strings.TrimSuffix(strings.Fields(v)[0], "]")
		}
	}
	b.ok("UID STORE 4 +FLAGS.SILENT (\\Deleted)")
	b.ok("EXPUNGE")
	u = a.ok("SELECT INBOX (QRESYNC (" + uidValidity + " " + now + " 1:6))")
	if !has(u, "* VANISHED (EARLIER) 4") {
		t.Errorf("VANISHED (EARLIER) since a recent mod-sequence: %q", u)
	}
	c := loginRaw(t, e, "alice")
	if _, tagged := c.do("SELECT INBOX (QRESYNC (" + uidValidity + " 1))"); !containsBad(tagged) {
		t.Errorf("QRESYNC select without ENABLE: %q", tagged)
	}
}
