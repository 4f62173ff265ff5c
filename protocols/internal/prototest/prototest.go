// Package prototest starts a real node for protocol tests: a standalone
// pair.Pair (a Pebble store in a temporary directory behind group commit), a passwd-file
// with users, and the IMAP, SMTP and LMTP servers on loopback ports the
// kernel picks.
package prototest

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/protocols/imap"
	"github.com/twinbox/twinbox/protocols/smtp"
	"github.com/twinbox/twinbox/protocols/users"
)

// Password is every test user's password.
const Password = "pw-secret"

// Env is a running node.
type Env struct {
	Node               *pair.Pair
	IMAP               *imap.Server
	SMTP, LMTP         *smtp.Server
	IMAPAddr, SMTPAddr string
	LMTPAddr           string
	Guard              *users.Guard
	Passwd             string // the passwd-file
	// Slept is the total login delay the guard asked for (not slept).
	Slept atomic.Int64
}

// Options change the node a test gets.
type Options struct {
	Users          []string // default alice, bob, carol
	MaxMessageSize int64
	MaxLineLength  int
	// IMAPHost is the address IMAP listens on (default 127.0.0.1).
	IMAPHost string
	// HashCost is the users' bcrypt cost (default 4, the cheapest).
	HashCost int
	// NoLoginCache turns the verified-login cache off (every login pays
	// the hash).
	NoLoginCache bool
}

// Start runs a node until the test ends.
func Start(tb testing.TB, o *Options) *Env {
	tb.Helper()
	if o == nil {
		o = &Options{}
	}
	names := o.Users
	if names == nil {
		names = []string{"alice", "bob", "carol"}
	}
	dir := tb.TempDir()
	log := slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	passwd := filepath.Join(dir, "passwd")
	cost := o.HashCost
	if cost == 0 {
		cost = 4
	}
	for _, u := range names {
		if err := users.Add(passwd, u, Password, &users.EditOptions{Cost: cost}); err != nil {
			tb.Fatal(err)
		}
	}
	var uo *users.Options
	if o.NoLoginCache {
		uo = &users.Options{CacheSize: -1}
	}
	pw, err := users.Open(passwd, uo)
	if err != nil {
		tb.Fatal(err)
	}
	e := &Env{Passwd: passwd}
	e.Guard, err = users.NewGuard(pw, &users.GuardOptions{
		Sleep: func(ctx context.Context, d time.Duration) error { e.Slept.Add(int64(d)); return nil },
	})
	if err != nil {
		tb.Fatal(err)
	}
	dirUsers := users.Directory{File: pw, Guard: e.Guard}
	ctx := context.Background()
	e.Node, err = pair.Open(ctx, pair.Config{Dir: filepath.Join(dir, "node"), MaxMessageSize: o.MaxMessageSize, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	e.Node.SyncUsers(ctx, names)
	e.IMAP, err = imap.New(&imap.Options{Reader: e.Node, Writer: e.Node, Users: dirUsers,
		LocalDomains: []string{"localhost"}, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	newSMTP := func(lmtp bool) *smtp.Server {
		s, err := smtp.New(&smtp.Options{Reader: e.Node, Writer: e.Node, Users: dirUsers, LMTP: lmtp,
			Hostname: "mx.test", LocalDomains: []string{"localhost", "example.test"},
			MaxMessageBytes: o.MaxMessageSize, MaxLineLength: o.MaxLineLength, Logger: log})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	e.SMTP, e.LMTP = newSMTP(false), newSMTP(true)
	e.Node.Attach(e.IMAP, e.SMTP, e.LMTP)
	var wg sync.WaitGroup
	serve := func(f func(net.Listener) error, host string) string {
		if host == "" {
			host = "127.0.0.1"
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ln); err != nil {
				tb.Errorf("serve: %v", err)
			}
		}()
		return ln.Addr().String()
	}
	e.IMAPAddr = serve(e.IMAP.Serve, o.IMAPHost)
	e.SMTPAddr = serve(e.SMTP.Serve, "")
	e.LMTPAddr = serve(e.LMTP.Serve, "")
	tb.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.SMTP.Shutdown(sctx)
		e.LMTP.Shutdown(sctx)
		e.IMAP.Shutdown(sctx)
		wg.Wait()
		if err := e.Node.Close(sctx); err != nil {
			tb.Error(err)
		}
	})
	return e
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(p))
	return len(p), nil
}
