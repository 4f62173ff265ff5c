package imap_test

import (
	"testing"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

// TestSort (RFC 5256, 5957, 5267): SORT by base subject, by reverse
// arrival, by display name, and as ESORT.
func TestSort(t *testing.T) {
	e := prototest.Start(t, nil)
	for _, h := range []string{
		"From: Zed <a@x>\r\nSubject: [list] Re: Fwd: banana (fwd)",
		"From: b@x\r\nSubject: apple",
		"From: \"Anna\" <c@x>\r\nSubject: Re: cherry",
	} {
		send(t, e, []byte(h+"\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nx\r\n"), "alice@localhost")
	}
	s := loginRaw(t, e, "alice")
	s.ok("SELECT INBOX")
	for cmd, want := range map[string]string{
		"SORT (SUBJECT) UTF-8 ALL":                        "* SORT 2 1 3",
		"SORT (REVERSE ARRIVAL) US-ASCII ALL":             "* SORT 3 2 1",
		"SORT (DISPLAYFROM) UTF-8 ALL":                    "* SORT 3 2 1",
		"SORT (FROM) UTF-8 NOT SUBJECT apple":             "* SORT 1 3",
		"UID SORT (REVERSE SUBJECT) UTF-8 1:*":            "* SORT 3 1 2",
		"SORT RETURN (MIN MAX COUNT) (SUBJECT) UTF-8 ALL": `* ESEARCH (TAG "` + "t" + `") MIN 2 MAX 3 COUNT 3`,
	} {
		u := s.ok(cmd)
		if len(u) != 1 || (u[0] != want && !(want[2] == 'E' && len(u[0]) > 20 && u[0][len(u[0])-19:] == want[len(want)-19:])) {
			t.Errorf("%s: %q, want %q", cmd, u, want)
		}
	}
	if _, tagged := s.do("SORT (SUBJECT) KOI8-R ALL"); tagged[len(tagged)-len("Unknown charset"):] != "Unknown charset" {
		t.Errorf("SORT with an unknown charset: %q", tagged)
	}
	if _, tagged := s.do("SORT (REVERSE) UTF-8 ALL"); !containsBad(tagged) {
		t.Errorf("SORT (REVERSE): %q", tagged)
	}
}

func containsBad(tagged string) bool {
	for i := 0; i+5 <= len(tagged); i++ {
		if tagged[i:i+5] == " BAD " {
			return true
		}
	}
	return false
}

// TestSearchReturn (RFC 4731): SEARCH RETURN answers ESEARCH with the
// options asked; an empty list means ALL; an unknown option is BAD.
func TestSearchReturn(t *testing.T) {
	e := prototest.Start(t, nil)
	for _, subject := range []string{"one", "two", "three"} { // distinct: a same message again is a retry
		send(t, e, []byte("Subject: "+subject+"\r\n\r\nx\r\n"), "alice@localhost")
	}
	s := loginRaw(t, e, "alice")
	s.ok("SELECT INBOX")
	for cmd, want := range map[string]string{
		"SEARCH RETURN (MIN MAX COUNT) ALL": " MIN 1 MAX 3 COUNT 3",
		"SEARCH RETURN () ALL":              " ALL 1:3",
	} {
		u := s.ok(cmd)
		if len(u) != 1 || len(u[0]) < len(want) || u[0][len(u[0])-len(want):] != want || u[0][:10] != "* ESEARCH " {
			t.Errorf("%s: %q, want an ESEARCH ending %q", cmd, u, want)
		}
	}
	if _, tagged := s.do("SEARCH RETURN (FIRST) ALL"); !containsBad(tagged) {
		t.Errorf("SEARCH RETURN (FIRST): %q, want BAD", tagged)
	}
}
