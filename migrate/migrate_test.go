package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/dovecottest"
	"github.com/twinbox/twinbox/migrate"
	"github.com/twinbox/twinbox/store"
)

// storeWriter is a standalone node's write path: the store's own log.
type storeWriter struct{ s *store.Store }

func (w storeWriter) Write(ctx context.Context, op store.Op) (store.Result, error) {
	res, err := w.s.ApplyNext(ctx, time.Now().UnixNano(), op)
	if err != nil {
		return store.Result{}, err
	}
	return res[0], nil
}

// newTarget is a store behind the import endpoints.
func newTarget(tb testing.TB) (*store.Store, string) {
	tb.Helper()
	s, err := store.Open(context.Background(), tb.TempDir(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close(context.Background()) })
	srv := httptest.NewServer(migrate.Handler(storeWriter{s}, &migrate.HandlerOptions{Mailbox: s.Mailbox}))
	tb.Cleanup(srv.Close)
	return s, srv.URL
}

// flakyWriter counts the Import operations it writes and fails the one
// numbered failAt (1-based; 0: none), as a node going away would.
type flakyWriter struct {
	storeWriter
	mu      sync.Mutex
	imports int
	failAt  int
}

func (w *flakyWriter) Write(ctx context.Context, op store.Op) (store.Result, error) {
	if _, ok := op.(*store.Import); ok {
		w.mu.Lock()
		w.imports++
		n := w.imports
		w.mu.Unlock()
		if n == w.failAt {
			return store.Result{}, errors.New("the node went away")
		}
	}
	return w.storeWriter.Write(ctx, op)
}

// TestImportResumes: an import cut short runs again to the end without a
// duplicate, sending only what the node lacks; a third run sends nothing.
func TestImportResumes(t *testing.T) {
	dir := t.TempDir()
	writeMaildir(t, dir, 10)
	folders, err := migrate.ReadMaildir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(t.Context(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	w := &flakyWriter{storeWriter: storeWriter{s}, failAt: 3}
	srv := httptest.NewServer(migrate.Handler(w, &migrate.HandlerOptions{Mailbox: s.Mailbox}))
	defer srv.Close()
	o := migrate.Options{URL: srv.URL, User: "ann", BatchMessages: 2}
	if _, err := migrate.Run(t.Context(), folders, o); err == nil {
		t.Fatal("the cut-short import did not fail")
	}
	if mb, _ := s.Mailbox("ann", "INBOX"); mb.Messages != 4 {
		t.Fatalf("after the cut: %d messages, want 4", mb.Messages)
	}
	w.imports, w.failAt = 0, 0
	sum, err := migrate.Run(t.Context(), folders, o)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 6 || sum.Present != 4 || w.imports != 3 {
		t.Fatalf("resumed: imported %d, present %d, %d batches sent; want 6, 4, 3", sum.Imported, sum.Present, w.imports)
	}
	w.imports = 0
	if sum, err = migrate.Run(t.Context(), folders, o); err != nil || sum.Present != 10 || w.imports != 0 {
		t.Fatalf("third run: %+v, %d batches sent, %v", sum, w.imports, err)
	}
	if mb, _ := s.Mailbox("ann", "INBOX"); mb.Messages != 10 {
		t.Fatalf("%d messages, want 10", mb.Messages)
	}
}

func message(i int, size int) []byte {
	b := fmt.Appendf(nil, "From: Sender <s@example.org>\nTo: ann@example.org\nSubject: message %d\nMessage-ID: <m%d@example.org>\n\n", i, i)
	for len(b) < size {
		b = fmt.Appendf(b, "line %d of message %d, filler text for the body.\n", len(b), i)
	}
	return b
}

// dovecotMail fills a real Dovecot 2.3 user's mailbox: dovecot-lda
// deliveries; flags, keywords, a folder, a copy and an expunge over IMAP.
// It returns the instance and what doveadm reports.
func dovecotMail(t *testing.T) (*dovecottest.Dovecot, []dovecottest.Message, map[string][2]uint32) {
	d := dovecottest.Start(t)
	for i := 1; i <= 6; i++ {
		d.Deliver("ann", message(i, 200*i))
	}
	d.IMAP("ann",
		"a CREATE Work/2026", "a2 CREATE Entw&APw-rfe", "b SELECT INBOX",
		`c UID STORE 2 +FLAGS (\Seen $Work Urgent)`,
		`d UID STORE 3,6 +FLAGS (\Deleted)`,
		`f UID STORE 4 +FLAGS (\Flagged \Answered $Work)`,
		"g UID COPY 1,4 Work/2026", "g2 UID COPY 2 Entw&APw-rfe", "h SUBSCRIBE Work/2026")
	d.IMAP("ann", "a SELECT INBOX", "b UID EXPUNGE 3")
	want := d.Fetch("ann")
	if !slices.ContainsFunc(want, func(m dovecottest.Message) bool { return m.Mailbox == "Entwürfe" }) {
		t.Fatalf("doveadm lists no message in Entwürfe: %v", want)
	}
	if slices.ContainsFunc(want, func(m dovecottest.Message) bool { return m.Mailbox == "INBOX" && m.UID == 3 }) {
		t.Fatalf("Dovecot did not expunge INBOX UID 3: %v", want)
	}
	return d, want, d.Status("ann")
}

// importLikeDovecot imports folders twice into a new store and checks
// that every message has the UID, flags and UIDVALIDITY Dovecot reports,
// and that the second run stores nothing more.
func importLikeDovecot(t *testing.T, folders []migrate.Folder, want []dovecottest.Message, status map[string][2]uint32) {
	t.Helper()
	s, url := newTarget(t)
	sum, err := migrate.Run(t.Context(), folders, migrate.Options{URL: url, User: "ann", BatchMessages: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:\n%s", sum)
	if sum.Imported != len(want) || sum.Appended != 0 || len(sum.Kept) != len(folders) {
		t.Fatalf("imported %d, appended %d, kept %v; Dovecot holds %d messages", sum.Imported, sum.Appended, sum.Kept, len(want))
	}
	for name, st := range status {
		mb, err := s.Mailbox("ann", name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if mb.UIDValidity != st[0] || mb.UIDNext < st[1] {
			t.Errorf("%s: UIDVALIDITY %d UIDNEXT %d; Dovecot's %d %d", name, mb.UIDValidity, mb.UIDNext, st[0], st[1])
		}
	}
	for _, w := range want {
		msgs, err := s.Messages("ann", w.Mailbox, []uint32{w.UID})
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s UID %d: %v %v", w.Mailbox, w.UID, msgs, err)
		}
		got := slices.Clone(msgs[0].Flags)
		wf := slices.Clone(w.Flags)
		slices.Sort(got)
		slices.Sort(wf)
		if !slices.Equal(got, wf) {
			t.Errorf("%s UID %d: flags %v, Dovecot's %v", w.Mailbox, w.UID, got, wf)
		}
	}
	if mb, _ := s.Mailbox("ann", "Work/2026"); !mb.Subscribed {
		t.Errorf("Work/2026 is not subscribed")
	}
	// Bodies are Dovecot's with CRLF line ends.
	msgs, _ := s.Messages("ann", "INBOX", []uint32{1})
	raw, err := s.Body(msgs[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "Subject: message 1\r\n") || strings.Contains(strings.ReplaceAll(string(raw), "\r\n", ""), "\n") {
		t.Errorf("INBOX UID 1 is not message 1 with CRLF line ends:\n%q", raw)
	}
	again, err := migrate.Run(t.Context(), folders, migrate.Options{URL: url, User: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Imported != 0 || again.Present != len(want) {
		t.Fatalf("second run: %+v", again)
	}
}

// TestDovecotMaildir imports the Maildir a real Dovecot 2.3 wrote.
func TestDovecotMaildir(t *testing.T) {
	d, want, status := dovecotMail(t)
	folders, err := migrate.ReadMaildir(d.Maildir("ann"))
	if err != nil {
		t.Fatal(err)
	}
	importLikeDovecot(t, folders, want, status)
}

// TestDovecotIMAP imports the same mail from the running Dovecot over
// IMAP (the source untouched: no \Seen set by the import).
func TestDovecotIMAP(t *testing.T) {
	d, want, status := dovecotMail(t)
	folders, src, err := migrate.ReadIMAP(d.Addr, "ann", dovecottest.Password, &migrate.IMAPOptions{TLS: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	importLikeDovecot(t, folders, want, status)
	if after := d.Fetch("ann"); !slices.EqualFunc(after, want, func(a, b dovecottest.Message) bool {
		return a.Mailbox == b.Mailbox && a.UID == b.UID && slices.Equal(a.Flags, b.Flags)
	}) {
		t.Errorf("the import changed the source:\nbefore %v\nafter  %v", want, after)
	}
}

// TestMbox imports an mbox as Dovecot writes it (X-IMAPbase, X-UID,
// Status, X-Keywords: UIDs kept, headers gone) and a plain one (appended,
// each message once however often it runs).
func TestMbox(t *testing.T) {
	dir := t.TempDir()
	dovecot := "From a@example.org Tue Nov 24 10:00:00 2026\n" +
		"X-IMAPbase: 1600000000 0000000009 $Work\nX-UID: 3\nStatus: RO\nX-Keywords: $Work\n" +
		"Subject: one\n\nfirst\n>From the start\n\n" +
		"From b@example.org Tue Nov 24 11:00:00 2026\nX-UID: 7\nX-Status: AF\nSubject: two\n\nsecond\n"
	plain := "From a@example.org Tue Nov 24 10:00:00 2026\nSubject: p1\n\nbody\n\n" +
		"From a@example.org Tue Nov 24 10:00:01 2026\nSubject: p2\n\nbody\n\n" +
		"From a@example.org Tue Nov 24 10:00:01 2026\nSubject: p2\n\nbody\n"
	os.WriteFile(filepath.Join(dir, "dovecot"), []byte(dovecot), 0o644)
	os.WriteFile(filepath.Join(dir, "plain"), []byte(plain), 0o644)
	s, url := newTarget(t)
	var folders []migrate.Folder
	for _, n := range []string{"dovecot", "plain"} {
		f, err := migrate.ReadMbox(filepath.Join(dir, n), n)
		if err != nil {
			t.Fatal(err)
		}
		folders = append(folders, f)
	}
	for run := range 2 {
		sum, err := migrate.Run(t.Context(), folders, migrate.Options{URL: url, User: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		if run == 0 && (sum.Imported != 2 || sum.Appended != 3) || run == 1 && sum.Present != 5 {
			t.Fatalf("run %d: %+v", run, sum)
		}
	}
	mb, _ := s.Mailbox("bob", "dovecot")
	if mb.UIDValidity != 1600000000 || mb.UIDNext != 9 {
		t.Fatalf("dovecot mbox: %+v", mb)
	}
	msgs, _ := s.Messages("bob", "dovecot", nil)
	if len(msgs) != 2 || msgs[0].UID != 3 || msgs[1].UID != 7 {
		t.Fatalf("dovecot mbox messages: %+v", msgs)
	}
	if !slices.Equal(msgs[0].Flags, []string{"$Work", `\Seen`}) && !slices.Equal(msgs[0].Flags, []string{`\Seen`, "$Work"}) {
		t.Errorf("UID 3 flags %v", msgs[0].Flags)
	}
	raw, _ := s.Body(msgs[0].Body)
	if want := "Subject: one\r\n\r\nfirst\r\nFrom the start\r\n"; string(raw) != want {
		t.Errorf("UID 3 body %q, want %q", raw, want)
	}
	if p, _ := s.Mailbox("bob", "plain"); p.Messages != 3 {
		t.Errorf("plain mbox: %d messages, want 3", p.Messages)
	}
}

// writeMaildir writes a Maildir of n messages of 10 KB with a
// dovecot-uidlist, as Dovecot would hold them; it returns their bytes.
func writeMaildir(tb testing.TB, dir string, n int) int64 {
	tb.Helper()
	for _, sub := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(dir, sub), 0o755)
	}
	var list strings.Builder
	list.WriteString("3 V1700000000 N1\n")
	var bytes int64
	for i := 1; i <= n; i++ {
		m := message(i, 10240)
		name := fmt.Sprintf("1700000000.M%dP1.host,S=%d", i, len(m))
		bytes += int64(len(m))
		os.WriteFile(filepath.Join(dir, "cur", name+":2,S"), m, 0o644)
		fmt.Fprintf(&list, "%d :%s\n", i, name)
	}
	os.WriteFile(filepath.Join(dir, "dovecot-uidlist"), []byte(list.String()), 0o644)
	return bytes
}

// BenchmarkDoveadmImport is the comparison for BenchmarkImport: Dovecot
// 2.3's own copy of the same Maildir (doveadm import) into a user's
// Maildir, on the same machine.
func BenchmarkDoveadmImport(b *testing.B) {
	const n = 2000
	d := dovecottest.Start(b)
	src := d.Dir("src")
	bytes := writeMaildir(b, src, n)
	d.Own(src)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		d.Import(fmt.Sprintf("user%d", i), src)
	}
	secs := time.Since(start).Seconds() / float64(b.N)
	b.ReportMetric(float64(n)/secs, "msg/s")
	b.ReportMetric(float64(bytes)/1e6/secs, "MB/s")
	fmt.Printf("doveadm import maildir (Dovecot 2.3): %d messages of 10 KB, %.0f msg/s, %.1f MB/s\n", n, float64(n)/secs, float64(bytes)/1e6/secs)
}

// BenchmarkImport imports a Maildir of 10 KB messages with UIDs kept
// through the import endpoints into a standalone store (each batch one
// fsynced operation), and reports messages/s and MB/s.
func BenchmarkImport(b *testing.B) {
	const n = 2000
	dir := b.TempDir()
	bytes := writeMaildir(b, dir, n)
	folders, err := migrate.ReadMaildir(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, url := newTarget(b)
		b.StartTimer()
		sum, err := migrate.Run(context.Background(), folders, migrate.Options{URL: url, User: "ann"})
		if err != nil || sum.Imported != n {
			b.Fatalf("%+v %v", sum, err)
		}
		elapsed += sum.Elapsed
	}
	secs := elapsed.Seconds() / float64(b.N)
	b.ReportMetric(float64(n)/secs, "msg/s")
	b.ReportMetric(float64(bytes)/1e6/secs, "MB/s")
	fmt.Printf("import maildir (standalone store): %d messages of 10 KB, %.0f msg/s, %.1f MB/s\n", n, float64(n)/secs, float64(bytes)/1e6/secs)
}
