package loadgen

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

const testPassword = "secret"

// memIMAP is go-imap's in-memory reference server on a random loopback
// port, with users user1..userN, each with an empty INBOX.
type memIMAP struct {
	addr  string
	users []*imapmemserver.User
}

// startIMAP starts the server; debug, when set, sees every byte the server
// reads and writes.
func startIMAP(tb testing.TB, users int, debug *signalWriter) *memIMAP {
	tb.Helper()
	mem := imapmemserver.New()
	m := &memIMAP{}
	for i := range users {
		u := imapmemserver.NewUser(Users{Prefix: "user"}.Name(i), testPassword)
		if err := u.Create("INBOX", nil); err != nil {
			tb.Fatal(err)
		}
		mem.AddUser(u)
		m.users = append(m.users, u)
	}
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
		Logger:       newTBLogger(tb),
	}
	if debug != nil {
		opts.DebugWriter = debug
	}
	srv := imapserver.New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-done
	})
	m.addr = ln.Addr().String()
	return m
}

func (m *memIMAP) count(tb testing.TB, user int, mailbox string) int {
	tb.Helper()
	st, err := m.users[user].Status(mailbox, &imap.StatusOptions{NumMessages: true})
	if err != nil {
		tb.Fatalf("STATUS %s of user%d: %v", mailbox, user+1, err)
	}
	return int(*st.NumMessages)
}

// signalWriter closes seen the first time the server's traffic contains
// want.
type signalWriter struct {
	want string
	seen chan struct{}
	mu   sync.Mutex
	tail []byte
	once sync.Once
}

func (w *signalWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.tail = append(w.tail, b...)
	if bytes.Contains(w.tail, []byte(w.want)) {
		w.once.Do(func() { close(w.seen) })
	}
	if len(w.tail) > len(w.want) {
		w.tail = append(w.tail[:0], w.tail[len(w.tail)-len(w.want):]...)
	}
	w.mu.Unlock()
	return len(b), nil
}

func TestIMAPMixAgainstMemServer(t *testing.T) {
	srv := startIMAP(t, 3, nil)
	cfg := IMAPConfig{
		Conn:        Conn{Target: srv.addr},
		Limits:      Limits{Count: 300},
		Sessions:    4,
		Password:    testPassword,
		Users:       Users{Count: 3},
		MessageSize: 2000,
		Preload:     60,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := RunIMAP(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Preloaded != 180 || res.Logins != 3 || res.MailboxMessages != 60 {
		t.Errorf("preloaded %d as %d users, %d messages seen; want 180, 3, 60", res.Preloaded, res.Logins, res.MailboxMessages)
	}
	if res.Total.Count != 300 || res.Total.Failed != 0 || res.Interrupted {
		t.Errorf("total %+v, interrupted %v; want 300 ok, 0 failed", res.Total, res.Interrupted)
	}
	if len(res.Ops) != 4 {
		t.Fatalf("%d ops, want fetch, headers, search, append", len(res.Ops))
	}
	var appends int64
	for _, o := range res.Ops {
		if o.Count == 0 || o.Latency.Samples != int(o.Count) {
			t.Errorf("%s: %+v", o.Name, o)
		}
		if o.Name == OpAppend {
			appends = o.Count
		}
	}
	got := 0
	for u := range 3 {
		if n := srv.count(t, u, "INBOX"); n != 60 {
			t.Errorf("INBOX of user%d holds %d, want 60", u+1, n)
		}
		got += srv.count(t, u, DefaultAppendMailbox)
	}
	if int64(got) != appends {
		t.Errorf("server holds %d appended messages, client counted %d", got, appends)
	}

	// A second preload finds the mailboxes full enough.
	cfg.Limits = Limits{Count: 10}
	cfg.Mix = Mix{Search: 1}
	res, err = RunIMAP(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Preloaded != 0 || len(res.Ops) != 1 || res.Ops[0].Count != 10 {
		t.Errorf("second run: preloaded %d, ops %+v", res.Preloaded, res.Ops)
	}
}

func TestIMAPErrors(t *testing.T) {
	srv := startIMAP(t, 2, nil)
	ctx := context.Background()
	_, err := RunIMAP(ctx, IMAPConfig{Conn: Conn{Target: srv.addr}, Limits: Limits{Count: 1}, Password: testPassword, Users: Users{Count: 2}})
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty INBOX: err = %v", err)
	}
	_, err = RunIMAP(ctx, IMAPConfig{Conn: Conn{Target: srv.addr}, Limits: Limits{Count: 1}, Password: "wrong", Users: Users{Count: 2}})
	if err == nil || !strings.Contains(err.Error(), "login as user") {
		t.Errorf("wrong password: err = %v", err)
	}
	// An append-only run needs no mail in INBOX and creates its mailbox.
	res, err := RunIMAP(ctx, IMAPConfig{
		Conn: Conn{Target: srv.addr}, Limits: Limits{Count: 5}, Password: testPassword,
		User: "user1", Mix: Mix{Append: 1}, Sessions: 1,
	})
	if err != nil || res.Ops[0].Count != 5 {
		t.Fatalf("append-only run: %v %+v", err, res)
	}
	if n := srv.count(t, 0, DefaultAppendMailbox); n != 5 {
		t.Errorf("%s holds %d, want 5", DefaultAppendMailbox, n)
	}
	// The reference server creates "refused/" as "refused" but refuses to
	// APPEND to "refused/": every append fails, counted by response.
	res, err = RunIMAP(ctx, IMAPConfig{
		Conn: Conn{Target: srv.addr}, Limits: Limits{Count: 7}, Password: testPassword,
		User: "user2", Mix: Mix{Append: 1}, AppendMailbox: "refused/", Sessions: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o := res.Ops[0]; o.Count != 0 || o.Failed != 7 || o.Failures["NO [TRYCREATE]"] != 7 || res.Total.Failed != 7 {
		t.Errorf("refused appends: %+v, total %+v", o, res.Total)
	}
}

func TestIMAPEndsOnCancel(t *testing.T) {
	seen := &signalWriter{want: "FETCH", seen: make(chan struct{})}
	srv := startIMAP(t, 1, seen)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type out struct {
		res *IMAPResult
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := RunIMAP(ctx, IMAPConfig{
			Conn: Conn{Target: srv.addr}, Limits: Limits{Duration: time.Hour}, Password: testPassword,
			User: "user1", Preload: 5, Sessions: 2, MessageSize: 500,
		})
		done <- out{res, err}
	}()
	<-seen.seen // the measured phase runs
	cancel()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatal(o.err)
		}
		if !o.res.Interrupted {
			t.Error("result not marked interrupted")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunIMAP did not return within 10 s of cancel")
	}
}

func TestParseMix(t *testing.T) {
	m, err := ParseMix("fetch=5, search=1,append=0")
	if err != nil || m != (Mix{Fetch: 5, Search: 1}) {
		t.Errorf("ParseMix = %+v, %v", m, err)
	}
	if back, _ := ParseMix(m.String()); back != m {
		t.Errorf("round trip %q = %+v", m.String(), back)
	}
	for _, bad := range []string{"", "fetch", "fetch=-1", "fetch=x", "copy=1", "fetch=0"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}
