package imap_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

var modseqRE = regexp.MustCompile(`MODSEQ \(?(\d+)\)?`)

// modseqOf is the first MODSEQ in lines.
func modseqOf(t *testing.T, lines []string) uint64 {
	t.Helper()
	for _, l := range lines {
		if m := modseqRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			return n
		}
	}
	t.Fatalf("no MODSEQ in %q", lines)
	return 0
}

// TestCondStore (RFC 7162): HIGHESTMODSEQ on SELECT and STATUS, FETCH
// MODSEQ and CHANGEDSINCE, STORE UNCHANGEDSINCE with [MODIFIED], SEARCH
// MODSEQ, and MODSEQ in another session's unsolicited FETCH.
func TestCondStore(t *testing.T) {
	e := prototest.Start(t, nil)
	for _, s := range []string{"c1", "c2", "c3"} {
		send(t, e, msg(s, "x"), "alice@localhost")
	}
	a := loginRaw(t, e, "alice")
	if u := a.ok("CAPABILITY"); !strings.Contains(u[0], " CONDSTORE") {
		t.Fatalf("CONDSTORE not advertised: %q", u)
	}
	if u := a.ok("ENABLE CONDSTORE"); !has(u, "* ENABLED CONDSTORE") {
		t.Errorf("ENABLE CONDSTORE: %q", u)
	}
	u := a.ok("SELECT INBOX")
	if !hasPrefix(u, "* OK [HIGHESTMODSEQ ") {
		t.Fatalf("SELECT with CONDSTORE on: %q", u)
	}
	base := modseqOf(t, a.ok("FETCH 3 (MODSEQ)"))
	u = a.ok("STORE 2 +FLAGS.SILENT (\\Seen)")
	if !hasPrefix(u, "* 2 FETCH (UID 2 MODSEQ (") {
		t.Errorf("silent STORE with CONDSTORE: %q", u)
	}
	after := modseqOf(t, u)
	if after <= base {
		t.Errorf("modseq after STORE %d, before %d", after, base)
	}
	u = a.ok("FETCH 1:* (FLAGS) (CHANGEDSINCE " + strconv.FormatUint(base, 10) + ")")
	if len(u) != 1 || !strings.HasPrefix(u[0], "* 2 FETCH (FLAGS (") || !strings.Contains(u[0], "MODSEQ (") {
		t.Errorf("FETCH CHANGEDSINCE: %q", u)
	}
	if u := a.ok("SEARCH MODSEQ " + strconv.FormatUint(after, 10)); !has(u, "* SEARCH 2 (MODSEQ "+strconv.FormatUint(after, 10)+")") {
		t.Errorf("SEARCH MODSEQ: %q", u)
	}
	if u := a.ok(`SEARCH MODSEQ "/flags/\\seen" all 1`); !hasPrefix(u, "* SEARCH 1 2 3 (MODSEQ ") {
		t.Errorf("SEARCH MODSEQ with an entry: %q", u)
	}
	// UNCHANGEDSINCE below message 2's modseq: 2 is refused, 1 changes.
	_, tagged := a.do("STORE 1:2 (UNCHANGEDSINCE " + strconv.FormatUint(base, 10) + ") +FLAGS (\\Flagged)")
	if !strings.Contains(tagged, "OK [MODIFIED 2]") {
		t.Errorf("STORE UNCHANGEDSINCE: %q", tagged)
	}
	_, tagged = a.do("UID STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)")
	if !strings.Contains(tagged, "OK [MODIFIED 1]") {
		t.Errorf("UID STORE UNCHANGEDSINCE 0: %q", tagged)
	}
	if u := a.ok("STATUS INBOX (HIGHESTMODSEQ)"); !hasPrefix(u, "* STATUS INBOX (HIGHESTMODSEQ ") {
		t.Errorf("STATUS HIGHESTMODSEQ: %q", u)
	}

	// Another session with CONDSTORE on sees MODSEQ in unsolicited FETCH.
	b := loginRaw(t, e, "alice")
	if u := b.ok("SELECT INBOX (CONDSTORE)"); !hasPrefix(u, "* OK [HIGHESTMODSEQ ") {
		t.Errorf("SELECT (CONDSTORE): %q", u)
	}
	a.ok("STORE 3 +FLAGS.SILENT (Label)")
	if u := b.ok("NOOP"); !hasPrefix(u, "* 3 FETCH (UID 3 FLAGS (") || !strings.Contains(strings.Join(u, "\n"), "MODSEQ (") {
		t.Errorf("unsolicited FETCH with CONDSTORE: %q", u)
	}
	if _, tagged := b.do("FETCH 1 (FLAGS) (CHANGEDSINCE 0)"); !strings.Contains(tagged, " BAD ") {
		t.Errorf("CHANGEDSINCE 0: %q", tagged)
	}
}
