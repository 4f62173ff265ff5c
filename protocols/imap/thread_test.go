package imap_test

import (
	"testing"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

// TestThread (RFC 5256): REFERENCES links replies by References and
// In-Reply-To, keeps a dummy root for siblings whose parent is missing,
// and gathers threads by base subject; ORDEREDSUBJECT groups by subject.
func TestThread(t *testing.T) {
	e := prototest.Start(t, nil)
	for _, h := range []string{
		"Message-ID: <a@x>\r\nSubject: plan\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000",
		"Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\nSubject: Re: plan\r\nDate: Tue, 24 Nov 2026 11:00:00 +0000",
		"Message-ID: <c@x>\r\nReferences: <gone@x>\r\nSubject: other\r\nDate: Tue, 24 Nov 2026 12:00:00 +0000",
		"Message-ID: <d@x>\r\nReferences: <gone@x>\r\nSubject: Re: other\r\nDate: Tue, 24 Nov 2026 13:00:00 +0000",
		"Message-ID: <e@x>\r\nSubject: Re: plan\r\nDate: Tue, 24 Nov 2026 14:00:00 +0000",
		"Message-ID: <f@x>\r\nReferences: <a@x> <b@x>\r\nSubject: Re: plan\r\nDate: Tue, 24 Nov 2026 15:00:00 +0000",
	} {
		send(t, e, []byte(h+"\r\nFrom: a@x\r\n\r\nx\r\n"), "alice@localhost")
	}
	s := loginRaw(t, e, "alice")
	s.ok("SELECT INBOX")
	// 1 <- 2 <- 6; 5 joins 1's thread by subject (a reply to a
	// non-reply); 3 and 4 are siblings under the missing <gone@x>.
	if u := s.ok("THREAD REFERENCES UTF-8 ALL"); !has(u, "* THREAD (1 (2 6)(5))((3)(4))") {
		t.Errorf("THREAD REFERENCES: %q", u)
	}
	if u := s.ok("UID THREAD REFERENCES UTF-8 NOT 2"); !has(u, "* THREAD (1 (5)(6))((3)(4))") {
		t.Errorf("UID THREAD REFERENCES NOT 2: %q", u)
	}
	if u := s.ok("THREAD ORDEREDSUBJECT UTF-8 ALL"); !has(u, "* THREAD (1 (2)(5)(6))(3 4)") {
		t.Errorf("THREAD ORDEREDSUBJECT: %q", u)
	}
	if _, tagged := s.do("THREAD FROBNICATE UTF-8 ALL"); !containsBad(tagged) {
		t.Errorf("unknown algorithm: %q", tagged)
	}
}
