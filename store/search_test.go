package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/cache"
	"github.com/twinbox/twinbox/internal/testmail"
	"github.com/twinbox/twinbox/store"
)

func TestSearch(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	day := func(d int) int64 { return time.Date(2026, 11, d, 15, 0, 0, 0, time.UTC).UnixNano() }
	msgs := []struct {
		raw   string
		flags []string
		date  int64
	}{
		{"From: Ana =?utf-8?q?Mar=C3=ADa?= <ana@example.net>\r\nTo: alice@example.com\r\nSubject: Lunch\r\nDate: Mon, 02 Nov 2026 09:00:00 +0000\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nMeet at the caf=C3=A9 on the corner.\r\n", []string{`\Seen`}, day(2)},
		{"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: Quarterly report\r\nDate: Tue, 10 Nov 2026 09:00:00 +0000\r\nX-Priority: 1\r\n\r\n" +
			"Numbers attached. " + string(make([]byte, 0)) + "Revenue grew.\r\n", []string{`\Flagged`}, day(10)},
		{"From: news@lists.example\r\nTo: alice@example.com\r\nSubject: Weekly digest\r\nDate: Fri, 20 Nov 2026 09:00:00 +0000\r\n\r\n" +
			"Nothing about cafes here, just a long digest.\r\n" + string(make([]byte, 2000)), nil, day(20)},
	}
	for _, m := range msgs {
		apply(t, s, &store.Deliver{Body: body([]byte(m.raw)), InternalDate: m.date,
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX", Flags: m.flags, Prefix: []byte("Delivered-To: alice@example.com\r\n")}}})
	}
	on := func(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }
	cases := []struct {
		name string
		c    store.Criteria
		want []uint32
	}{
		{"all", store.Criteria{}, []uint32{1, 2, 3}},
		{"seen", store.Criteria{Flag: []string{`\seen`}}, []uint32{1}},
		{"unseen", store.Criteria{NotFlag: []string{`\Seen`}}, []uint32{2, 3}},
		{"since", store.Criteria{Since: on(10)}, []uint32{2, 3}},
		{"before", store.Criteria{Before: on(10)}, []uint32{1}},
		{"on", store.Criteria{Since: on(10), Before: on(11)}, []uint32{2}},
		{"sentsince", store.Criteria{SentSince: on(15)}, []uint32{3}},
		{"larger", store.Criteria{Larger: 1000}, []uint32{3}},
		{"smaller", store.Criteria{Smaller: 1000}, []uint32{1, 2}},
		{"subject", store.Criteria{Header: []store.HeaderMatch{{Name: "subject", Value: "REPORT"}}}, []uint32{2}},
		{"encoded from", store.Criteria{Header: []store.HeaderMatch{{Name: "From", Value: "maría"}}}, []uint32{1}},
		{"has header", store.Criteria{Header: []store.HeaderMatch{{Name: "X-Priority"}}}, []uint32{2}},
		{"prefix header", store.Criteria{Header: []store.HeaderMatch{{Name: "Delivered-To", Value: "alice@"}}}, []uint32{1, 2, 3}},
		{"decoded body", store.Criteria{Body: []string{"CAFÉ"}}, []uint32{1}},
		{"body not raw", store.Criteria{Body: []string{"=C3=A9"}}, nil},
		{"text header or body", store.Criteria{Text: []string{"digest"}}, []uint32{3}},
		{"uid", store.Criteria{UID: [][]store.UIDRange{{{Lo: 2, Hi: 3}}, {{Lo: 1, Hi: 2}}}}, []uint32{2}},
		{"not", store.Criteria{Not: []store.Criteria{{Flag: []string{`\Flagged`}}}}, []uint32{1, 3}},
		{"or", store.Criteria{Or: [][2]store.Criteria{{{Flag: []string{`\Seen`}}, {Larger: 1000}}}}, []uint32{1, 3}},
		{"modseq", store.Criteria{MinModSeq: 4}, []uint32{3}},
	}
	for _, c := range cases {
		got, err := s.Search("alice", "INBOX", &c.c)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// BenchmarkSearch: one search over a 500-message mailbox of corpus mail,
// as `twinbox bench imap` issues them (SUBJECT, FROM, UNSEEN).
func BenchmarkSearch(b *testing.B) {
	s := newTestStore(b, nil)
	apply(b, s, &store.CreateUser{User: "alice"})
	corpus := testmail.Corpus(b)
	names := make([]string, 0, len(corpus))
	for n := range corpus {
		names = append(names, n)
	}
	slices.Sort(names)
	for i := 0; i < 500; i++ {
		raw := corpus[names[i%len(names)]]
		raw = append([]byte("X-Seq: "+string(rune('a'+i%26))+"\r\n"), raw...) // distinct bodies
		raw = append(raw, make([]byte, i)...)
		apply(b, s, &store.Deliver{Body: body(raw), InternalDate: time.Now().UnixNano(),
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX",
				Prefix: []byte("Return-Path: <a@example.org>\r\nDelivered-To: alice@localhost\r\n")}}})
	}
	reads, err := cache.NewReader(s, nil)
	if err != nil {
		b.Fatal(err)
	}
	cached := &store.Loaders{Meta: func(id store.BlobID) (*store.Meta, error) { return reads.Meta(context.Background(), id) }}
	for _, c := range []struct {
		name string
		c    store.Criteria
	}{
		{"subject", store.Criteria{Header: []store.HeaderMatch{{Name: "Subject", Value: "meeting"}}}},
		{"from", store.Criteria{Header: []store.HeaderMatch{{Name: "From", Value: "example"}}}},
		{"unseen", store.Criteria{NotFlag: []string{store.FlagSeen}}},
	} {
		for _, l := range []struct {
			name string
			l    *store.Loaders
		}{{"store", nil}, {"cached", cached}} {
			b.Run(c.name+"/"+l.name, func(b *testing.B) {
				for b.Loop() {
					if _, err := s.SearchWith("alice", "INBOX", &c.c, l.l); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestSearchHeaderBeyondMetaLimits: SEARCH HEADER finds any field of a
// message, also beyond the fields its metadata describes (issue 14, D15):
// the 10 001st field, and fields after a header larger than the metadata
// keeps.
func TestSearchHeaderBeyondMetaLimits(t *testing.T) {
	s := newTestStore(t, nil)
	apply(t, s, &store.CreateUser{User: "alice"})
	var many strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&many, "X-Field-%d: value %d\r\n", i, i)
	}
	many.WriteString("X-Last: the 10001st field\r\n\r\nbody\r\n")
	var big strings.Builder
	big.WriteString("Subject: big")
	for big.Len() < 3<<20 {
		big.WriteString("\r\n\t" + strings.Repeat("y", 76))
	}
	big.WriteString("\r\nX-Last: after three megabytes\r\nX-Tail: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody\r\n")
	small := "Subject: small\r\nX-Other: x\r\n\r\nbody\r\n"
	for _, raw := range []string{many.String(), big.String(), small} {
		apply(t, s, &store.Deliver{Body: body([]byte(raw)), InternalDate: testNow,
			Targets: []store.Target{{User: "alice", Mailbox: "INBOX", Prefix: []byte("Delivered-To: alice@example.com\r\n")}}})
	}
	for i, raw := range []string{many.String(), big.String()} {
		if m := store.ParseMeta([]byte(raw)); store.FieldsComplete(&m) {
			t.Fatalf("message %d: its metadata claims to list every field; the test needs one it does not", i+1)
		}
	}
	cases := []struct {
		name string
		c    store.Criteria
		want []uint32
	}{
		{"10001st field", store.Criteria{Header: []store.HeaderMatch{{Name: "X-Last", Value: "10001st"}}}, []uint32{1}},
		{"any X-Last", store.Criteria{Header: []store.HeaderMatch{{Name: "x-last"}}}, []uint32{1, 2}},
		{"after a big header", store.Criteria{Header: []store.HeaderMatch{{Name: "X-Last", Value: "three MEGABYTES"}}}, []uint32{2}},
		{"encoded, after a big header", store.Criteria{Header: []store.HeaderMatch{{Name: "X-Tail", Value: "café"}}}, []uint32{2}},
		{"text in a late field", store.Criteria{Text: []string{"the 10001st"}}, []uint32{1}},
		{"prefix still searched", store.Criteria{Header: []store.HeaderMatch{{Name: "Delivered-To", Value: "alice"}}}, []uint32{1, 2, 3}},
		{"absent field", store.Criteria{Header: []store.HeaderMatch{{Name: "X-None"}}}, nil},
		{"first fields", store.Criteria{Header: []store.HeaderMatch{{Name: "Subject", Value: "big"}}}, []uint32{2}},
	}
	for _, c := range cases {
		got, err := s.Search("alice", "INBOX", &c.c)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}
