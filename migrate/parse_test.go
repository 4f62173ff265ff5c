package migrate

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDecodeMUTF7(t *testing.T) {
	for in, want := range map[string]string{
		"Entw&APw-rfe":     "Entwürfe",
		"INBOX":            "INBOX",
		"A&-B":             "A&B",
		"&ZeVnLIqe-":       "日本語",
		"Gel&APY-scht/Alt": "Gelöscht/Alt",
		"broken&AP":        "broken&AP",
		"&Jjo-!":           "☺!",
	} {
		if got := decodeMUTF7(in); got != want {
			t.Errorf("decodeMUTF7(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzReadMbox: any file reads without a panic, and every message it
// lists reads back.
func FuzzReadMbox(f *testing.F) {
	f.Add([]byte("From a Tue Nov 24 10:00:00 2026\nX-UID: 3\nX-IMAPbase: 1 9\nStatus: RO\n\nbody\n>From x\n\nFrom b\n\n"))
	f.Add([]byte("no from line\n"))
	f.Add([]byte("From \nFrom \n\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "mbox")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		folder, err := ReadMbox(p, "x")
		if err != nil {
			return
		}
		for i := range folder.Messages {
			m := &folder.Messages[i]
			if m.Offset < 0 || m.Length < 0 || m.Offset+m.Length > int64(len(data)) {
				t.Fatalf("message %d at %d+%d, file of %d", i, m.Offset, m.Length, len(data))
			}
			if _, err := m.Read(); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
	})
}

// FuzzUIDList: any dovecot-uidlist parses or fails cleanly.
func FuzzUIDList(f *testing.F) {
	f.Add([]byte("3 V1796283656 N1 Gb7b28a11081d116be97c000083ecc375\n1 :1796283656.M2P3.vm,S=83,W=89\n2 W12 :x\n"))
	f.Add([]byte("1 12 13\n5 name\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "dovecot-uidlist")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := readUIDList(p)
		if err != nil {
			return
		}
		for name, uid := range l.uids {
			if uid == 0 {
				t.Fatalf("file %q got UID 0", name)
			}
		}
	})
}

func FuzzStripAndUnquote(f *testing.F) {
	f.Add([]byte("Status: RO\nX-Keywords: a\n b\nSubject: x\n\n>From y\n>>From z\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = crlf(unquoteMbox(stripMboxHeaders(data)))
	})
}
