package store

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// corruptible builds a small store with one split body (a part blob) and
// one inline body, linked from two mailboxes, and returns it with its IDs.
func corruptible(t *testing.T) (s *Store, split, inline, part BlobID) {
	t.Helper()
	s, err := Open(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	partData := bytes.Repeat([]byte("attachment-bytes "), 300)
	head, tail := []byte("Subject: split\r\n\r\n"), []byte("\r\nend\r\n")
	raw := append(append(append([]byte(nil), head...), partData...), tail...)
	part = HashBlob(partData)
	sb := Body{ID: HashBlob(raw), Size: int64(len(raw)), Meta: ParseMeta(raw),
		Manifest: Manifest{Segments: []Segment{{Inline: head}, {Ref: part, Len: int64(len(partData))}, {Inline: tail}}},
		Parts:    []PartBlob{{ID: part, Data: partData}}}
	plain := []byte("Subject: inline\r\n\r\nhello\r\n")
	ib := Body{ID: HashBlob(plain), Size: int64(len(plain)), Meta: ParseMeta(plain),
		Manifest: Manifest{Segments: []Segment{{Inline: plain}}}}
	targets := []Target{{User: "alice", Mailbox: "INBOX"}, {User: "alice", Mailbox: "Work"}}
	res, err := s.ApplyNext(context.Background(), 1,
		&CreateUser{User: "alice"}, &CreateMailbox{User: "alice", Name: "Work"},
		&Deliver{Body: sb, Targets: targets}, &Deliver{Body: ib, Targets: targets[:1]})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if r, err := s.Verify(context.Background()); err != nil || !r.OK() {
		t.Fatalf("fresh store: %v %v", err, r.Problems)
	}
	return s, sb.ID, ib.ID, part
}

func rawSet(t *testing.T, s *Store, k, v []byte) {
	t.Helper()
	if err := s.db.Set(k, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func rawGet(t *testing.T, s *Store, k []byte) []byte {
	t.Helper()
	v, err := s.get(k)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyFindsDamage(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, s *Store, split, inline, part BlobID)
		want   string
	}{
		{"flipped byte in a part blob", func(t *testing.T, s *Store, _, _, part BlobID) {
			v := rawGet(t, s, partDataKey(part))
			v[len(v)/2] ^= 0x01
			rawSet(t, s, partDataKey(part), v)
		}, "part blob " + "%part" + ": content does not match its hash"},
		{"flipped byte in an inline body", func(t *testing.T, s *Store, _, inline, _ BlobID) {
			var man Manifest
			if err := unmarshal(rawGet(t, s, dataKey(inline)), &man); err != nil {
				t.Fatal(err)
			}
			man.Segments[0].Inline[20] ^= 0x20
			rawSet(t, s, dataKey(inline), marshal(man))
		}, "body " + "%inline" + ": content does not match its hash"},
		{"reference count off by one", func(t *testing.T, s *Store, split, _, _ BlobID) {
			var br blobRec
			if err := unmarshal(rawGet(t, s, blobKey(split)), &br); err != nil {
				t.Fatal(err)
			}
			br.Refs++
			rawSet(t, s, blobKey(split), marshal(br))
		}, "body " + "%split" + ": reference count 3, but 2 messages link to it"},
		{"missing part blob", func(t *testing.T, s *Store, _, _, part BlobID) {
			if err := s.db.Delete(partDataKey(part), pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}, "part blob " + "%part" + ": store: blob not found: part"},
		{"missing body", func(t *testing.T, s *Store, _, inline, _ BlobID) {
			for _, k := range [][]byte{blobKey(inline), dataKey(inline), metaKey(inline)} {
				if err := s.db.Delete(k, pebble.Sync); err != nil {
					t.Fatal(err)
				}
			}
		}, "links to missing body " + "%inline"},
		{"UID above UIDNEXT", func(t *testing.T, s *Store, _, _, _ BlobID) {
			var m mailboxRec
			if err := unmarshal(rawGet(t, s, mboxKey("alice", "INBOX")), &m); err != nil {
				t.Fatal(err)
			}
			m.UIDNext = 2
			rawSet(t, s, mboxKey("alice", "INBOX"), marshal(m))
		}, `mailbox "INBOX" of user "alice": UID 2 is not below UIDNEXT 2`},
		{"modseq above HIGHESTMODSEQ", func(t *testing.T, s *Store, _, _, _ BlobID) {
			var m mailboxRec
			if err := unmarshal(rawGet(t, s, mboxKey("alice", "Work")), &m); err != nil {
				t.Fatal(err)
			}
			m.HighestModSeq = 1
			rawSet(t, s, mboxKey("alice", "Work"), marshal(m))
		}, `mailbox "Work" of user "alice": UID 1 has modseq 2 above HIGHESTMODSEQ 1`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, split, inline, part := corruptible(t)
			c.damage(t, s, split, inline, part)
			r, err := s.Verify(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := strings.NewReplacer("%part", part.String(), "%inline", inline.String(), "%split", split.String()).Replace(c.want)
			found := false
			for _, p := range r.Problems {
				if strings.Contains(p, want) {
					found = true
				}
			}
			if !found {
				t.Fatalf("verify did not report %q; it said:\n%s", want, strings.Join(r.Problems, "\n"))
			}
		})
	}
}
