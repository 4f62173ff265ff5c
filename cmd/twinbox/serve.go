package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/failover/fence"
	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/internal/tlscert"
	"github.com/twinbox/twinbox/migrate"
	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/protocols/imap"
	"github.com/twinbox/twinbox/protocols/smtp"
	"github.com/twinbox/twinbox/protocols/users"
)

const serveUsage = `usage: twinbox serve [-c FILE] [flags]

Runs a node: IMAP, SMTP and LMTP over the store, the admin API on a
unix socket (DATA/admin.sock, mode 0600: the twinbox CLI's way in) and
/metrics and /healthz on metrics_addr. With no config file it is a
standalone node that keeps its data in ./twinbox-data and listens on
loopback only:

  IMAP 127.0.0.1:1143 (STARTTLS)   IMAPS 127.0.0.1:1993
  SMTP 127.0.0.1:2525 (STARTTLS)   SMTPS 127.0.0.1:4465
  LMTP 127.0.0.1:2424              metrics http://127.0.0.1:8410
  admin ./twinbox-data/admin.sock

The admin API listens on TCP only with admin_addr and admin_token_file
(docs/security.md).

Users come from DATA/passwd (add them with 'twinbox user add NAME').
Every setting is also a TWINBOX_* variable and a key of the config file
(twinbox.example.toml). SIGTERM or SIGINT shuts down gracefully.

Flags:`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := loadConfig("serve", args, stderr, serveUsage)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	s := &server{c: c, log: newLogger(stderr, c.LogLevel), stdout: stdout}
	if err := s.open(ctx); err != nil {
		return errors.Join(err, s.close())
	}
	return s.run(ctx)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// server is a running node, built by a list of init steps; close undoes
// the steps that ran, in reverse.
type server struct {
	c       *config
	log     *slog.Logger
	stdout  io.Writer
	started time.Time

	tls    *tls.Config
	health *health
	pw     *users.File
	guard  *users.Guard
	node   *pair.Pair
	manual *fence.Manual
	m      *admin.Metrics
	imap   *imap.Server
	smtp   *smtp.Server
	lmtp   *smtp.Server
	lns    []listener
	// The admin API on the socket and on TCP (with the token), and
	// /metrics with /healthz: one server per handler.
	admin, adminTCP, metrics *http.Server

	undo []func(context.Context) error
}

// listener is one bound address of the node.
type listener struct {
	name  string
	ln    net.Listener
	serve func(net.Listener) error
}

// open runs the init steps in order; on an error, close undoes those that
// ran.
func (s *server) open(ctx context.Context) error {
	s.started = time.Now()
	for _, step := range []func(context.Context) error{
		s.initData, s.initTLS, s.initUsers, s.initNode, s.initFrontends, s.initListeners, s.initAdmin, s.initPidFile, s.initUserWatch,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// onClose pushes an undo step.
func (s *server) onClose(f func(context.Context) error) { s.undo = append(s.undo, f) }

// close undoes the init steps in reverse, within shutdown_timeout.
func (s *server) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.c.ShutdownTimeout)
	defer cancel()
	var errs []error
	for i := len(s.undo) - 1; i >= 0; i-- {
		errs = append(errs, s.undo[i](ctx))
	}
	s.undo = nil
	return errors.Join(errs...)
}

// initData makes the data directory, and every file the node will make
// private to its user (issue 14 D12): the umask is 077 from here on,
// whatever it was, since Pebble asks for 0666 and nats-server for 0640;
// files an older node left readable are made private too.
func (s *server) initData(context.Context) error {
	syscall.Umask(0o077)
	if err := pair.Layout(s.c.Data).Create(); err != nil {
		return err
	}
	s.health = newHealth(s.c.Data)
	return makePrivate(s.c.Data, s.log)
}

// makePrivate removes group and other permissions from every file and
// directory under dir, logging how many it changed.
func makePrivate(dir string, log *slog.Logger) error {
	changed := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() && !d.IsDir() {
			return nil // a socket is chmodded where it is made; never follow a link
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			if err := os.Chmod(path, perm&^0o077); err != nil {
				return err
			}
			changed++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("data directory: make it private: %w", err)
	}
	if changed > 0 {
		log.Warn("data directory: removed group and other permissions", "dir", dir, "files", changed)
	}
	return nil
}

func (s *server) initTLS(context.Context) (err error) {
	s.tls, err = tlscert.Load(s.c.TLSCert, s.c.TLSKey, pair.Layout(s.c.Data).TLS(), s.c.Hostname, s.log)
	return err
}

func (s *server) initUsers(context.Context) (err error) {
	if s.pw, err = users.Open(s.c.Passwd, &users.Options{Logger: s.log}); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	s.guard, err = users.NewGuard(s.pw, nil)
	return err
}

func (s *server) initNode(ctx context.Context) error {
	pc, manual, err := s.c.pairConfig(s.tls, s.log, s.stdout, s.pw.Users)
	if err != nil {
		return err
	}
	s.manual = manual
	s.m = admin.NewMetrics()
	pc.ObserveReplication = s.m.ObserveReplication
	if pc.Failover != nil && pc.Failover.Fencer != nil {
		pc.Failover.Fencer = observedFencer{pc.Failover.Fencer, s.m}
	}
	if s.node, err = pair.Open(ctx, pc); err != nil {
		return err
	}
	s.onClose(func(ctx context.Context) error {
		if err := s.node.Close(ctx); err != nil {
			return fmt.Errorf("close the node: %w", err)
		}
		return nil
	})
	return nil
}

// initFrontends makes the IMAP, SMTP and LMTP servers and attaches them
// to the node, which tells them its role from then on.
func (s *server) initFrontends(context.Context) (err error) {
	c := s.c
	dir := users.Directory{File: s.pw, Guard: s.guard}
	s.imap, err = imap.New(&imap.Options{
		Reader: s.node, Writer: s.node, Users: dir,
		TLSConfig: s.tls, InsecureAuth: c.InsecureAuth, LocalDomains: c.LocalDomains,
		Observe: s.m.Observe("imap"), Logger: s.log,
	})
	if err != nil {
		return err
	}
	mta := func(lmtp bool) (*smtp.Server, error) {
		proto := map[bool]string{false: "smtp", true: "lmtp"}[lmtp]
		maxConns, maxPerIP := c.SMTPMaxConns, c.SMTPMaxConnsPerIP
		if lmtp {
			maxConns, maxPerIP = c.LMTPMaxConns, c.LMTPMaxConnsPerIP
		}
		return smtp.New(&smtp.Options{
			Reader: s.node, Writer: s.node, Users: dir, LMTP: lmtp,
			Hostname: c.Hostname, LocalDomains: c.LocalDomains,
			MaxMessageBytes: c.MaxMessageSize, MaxRecipients: int(c.MaxRecipients),
			MaxLineLength: int(c.MaxLineLength),
			ReadTimeout:   c.SMTPTimeout, WriteTimeout: c.SMTPTimeout,
			TLSConfig: s.tls,
			Delivered: s.m.Delivered(proto), Observe: s.m.Observe(proto),
			Logger: s.log,

			MaxConnections: int(maxConns), MaxConnectionsPerAddr: int(maxPerIP),
			TransactionTimeout: c.SMTPTxTimeout, DataTimeout: c.SMTPDataTimeout,
			DataMinRate: c.SMTPDataMinRate, MaxHeaderBytes: c.MaxHeaderSize,
			MaxHeaderFields: int(c.MaxHeaderFields), MaxBytesInFlight: c.MaxBytesInFlight,
		})
	}
	if s.smtp, err = mta(false); err != nil {
		return err
	}
	if s.lmtp, err = mta(true); err != nil {
		return err
	}
	s.node.Attach(s.imap, s.smtp, s.lmtp)
	// Graceful shutdown: 421 to idle SMTP/LMTP sessions, transactions in
	// flight finish within the bound, BYE to IMAP sessions.
	s.onClose(func(ctx context.Context) error {
		var wg sync.WaitGroup
		for _, f := range []interface{ Shutdown(context.Context) error }{s.smtp, s.lmtp, s.imap} {
			wg.Go(func() {
				if err := f.Shutdown(ctx); err != nil {
					s.log.Warn("shutdown", "err", err)
				}
			})
		}
		wg.Wait()
		return nil
	})
	return nil
}

// initListeners binds every address before serving anything, so that a
// taken port is a clear refusal to start rather than a half-running node.
func (s *server) initListeners(context.Context) error {
	c := s.c
	s.onClose(func(context.Context) error {
		for _, l := range s.lns {
			l.ln.Close()
		}
		if c.LMTPSock != "" {
			os.Remove(c.LMTPSock)
		}
		return nil
	})
	s.admin = &http.Server{ReadHeaderTimeout: 10 * time.Second}
	s.adminTCP = &http.Server{ReadHeaderTimeout: 10 * time.Second}
	s.metrics = &http.Server{ReadHeaderTimeout: 10 * time.Second}
	for _, b := range []struct {
		name, addr string
		tls        bool
		serve      func(net.Listener) error
	}{
		{"imap", c.IMAPAddr, false, s.imap.Serve},
		{"imaps", c.IMAPSAddr, true, s.imap.Serve},
		{"smtp", c.SMTPAddr, false, s.smtp.Serve},
		{"smtps", c.SMTPSAddr, true, s.smtp.Serve},
		{"lmtp", c.LMTPAddr, false, s.lmtp.Serve},
		{"admin", c.AdminAddr, false, s.adminTCP.Serve},
		{"metrics", c.MetricsAddr, false, s.metrics.Serve},
	} {
		if b.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", b.addr)
		if err != nil {
			return fmt.Errorf("%s: listen on %s: %w", b.name, b.addr, err)
		}
		if b.tls {
			ln = tls.NewListener(ln, s.tls)
		}
		s.lns = append(s.lns, listener{b.name, ln, b.serve})
	}
	if c.LMTPSock != "" {
		os.Remove(c.LMTPSock)
		ln, err := net.Listen("unix", c.LMTPSock)
		if err != nil {
			return fmt.Errorf("lmtp: listen on %s: %w", c.LMTPSock, err)
		}
		s.lns = append(s.lns, listener{"lmtp-socket", ln, s.lmtp.Serve})
	}
	ln, err := listenPrivate(c.AdminSocket)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	s.lns = append(s.lns, listener{"admin-socket", ln, s.admin.Serve})
	return nil
}

// listenPrivate listens on a unix socket only its owner may connect to
// (mode 0600). A socket left by a node that died is removed first: the
// store's lock, taken before, says no other node runs on this data.
func listenPrivate(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func (s *server) initAdmin(context.Context) error {
	s.m.Sessions(map[string]func() int{"imap": s.imap.Sessions, "smtp": s.smtp.Sessions, "lmtp": s.lmtp.Sessions})
	s.m.Counter("twinbox_login_failures_total", "Failed logins (each was slowed).", func() float64 { return float64(s.guard.Stats().Failures) })
	s.m.Counter("twinbox_login_successes_total", "Successful logins.", func() float64 { return float64(s.guard.Stats().Successes) })
	s.m.Counter("twinbox_login_throttled_total", "Logins refused unchecked after too many failures.", func() float64 { return float64(s.guard.Stats().Throttled) })
	s.m.Counter("twinbox_login_abandoned_total", "Logins not checked because the client left while it waited.", func() float64 { return float64(s.guard.Stats().Abandoned) })
	s.m.RegisterPair(s.node)
	o := admin.Options{Metrics: s.m, Status: s.status, Digest: s.node.Digest, Healthy: s.healthy, Pprof: s.c.AdminPprof,
		Import: migrate.Handler(importWriter{s.node}, &migrate.HandlerOptions{
			MaxMessageSize: s.c.MaxMessageSize, Logger: s.log.With("component", "import"), Mailbox: s.node.Mailbox,
		})}
	if s.c.Failover {
		o.Command = s.node.Command
		if s.manual != nil {
			o.ConfirmFence = s.manual.Confirm
		}
	}
	if s.c.External {
		o.Command = externalRole{p: s.node, lg: s.log.With("component", "external")}.command
	}
	api := admin.Handler(o)
	s.admin.Handler = admin.Local(api)
	s.metrics.Handler = admin.MetricsHandler(o)
	if s.c.AdminAddr != "" {
		token, err := admin.ReadToken(s.c.AdminTokenFile)
		if err != nil {
			return err
		}
		s.adminTCP.Handler = admin.RequireToken(token, api)
	}
	s.onClose(func(ctx context.Context) error {
		for _, h := range []*http.Server{s.admin, s.adminTCP, s.metrics} {
			h.Shutdown(ctx)
		}
		return nil
	})
	return nil
}

// healthy is /healthz: nil, or why the node is not. It tells the truth
// about the write path (health).
func (s *server) healthy() error {
	if s.node.Closing() {
		return errors.New("shutting down")
	}
	st := s.node.Status(context.Background())
	return s.health.check(st.Writes, st.WriteFailures)
}

func (s *server) status() admin.Status {
	st := admin.Status{Started: s.started.UTC(), Uptime: time.Since(s.started).Round(time.Second).String(),
		Listeners: map[string]string{}}
	ps := s.node.Status(context.Background())
	admin.FromPair(&st, ps, time.Now())
	st.Health = "ok"
	if err := s.health.check(ps.Writes, ps.WriteFailures); err != nil {
		st.Health = err.Error()
	}
	s.m.FillDeliveries(&st)
	for _, l := range s.lns {
		st.Listeners[l.name] = l.ln.Addr().String()
	}
	if s.c.Role != "standalone" {
		st.Listeners["nats"] = s.node.NATSAddr()
	}
	st.Sessions = map[string]int{"imap": s.imap.Sessions(), "smtp": s.smtp.Sessions(), "lmtp": s.lmtp.Sessions()}
	st.Users = len(s.pw.Users())
	st.LoginFailures = s.guard.Stats().Failures
	return st
}

func (s *server) initPidFile(context.Context) error {
	if s.c.PidFile == "" {
		return nil
	}
	if err := os.WriteFile(s.c.PidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return fmt.Errorf("pid_file: %w", err)
	}
	s.onClose(func(context.Context) error { return os.Remove(s.c.PidFile) })
	return nil
}

// initUserWatch creates the users of the passwd-file in the store
// whenever it changes.
func (s *server) initUserWatch(context.Context) error {
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.pw.Watch(ctx, func(list []string) { s.node.SyncUsers(ctx, list) }) })
	s.onClose(func(context.Context) error {
		stop()
		wg.Wait()
		return nil
	})
	return nil
}

// run serves until ctx ends (SIGTERM, SIGINT) or a listener fails, then
// shuts down: a node with failover hands over and tells its peer first.
func (s *server) run(ctx context.Context) error {
	errc := make(chan error, len(s.lns))
	for _, l := range s.lns {
		go func() {
			if err := l.serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", l.name, err)
			}
		}()
	}
	fmt.Fprintf(s.stdout, "twinbox: serving; data in %s, users in %s\n", s.c.Data, s.c.Passwd)
	for _, l := range s.lns {
		s.log.Info("listening", "service", l.name, "addr", l.ln.Addr().String())
		fmt.Fprintf(s.stdout, "  %-11s %s\n", l.name, l.ln.Addr())
	}
	if s.c.Role != "standalone" {
		fmt.Fprintf(s.stdout, "  %-11s %s (%s)\n", "nats", s.node.NATSAddr(), s.node.State().Role)
	}
	fmt.Fprintln(s.stdout, "twinbox: ready; SIGTERM or Ctrl-C stops it")
	var runErr error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "timeout", s.c.ShutdownTimeout)
		// Stopped by the operator: hand over if active, and tell the
		// peer, so that it does not fence a clean shutdown.
		lctx, cancel := context.WithTimeout(context.Background(), 2*s.c.PeerTimeout)
		s.node.Leave(lctx)
		cancel()
	case runErr = <-errc:
		s.log.Error("a listener failed; shutting down", "err", runErr)
	}
	s.node.StopFailover() // no role change during the shutdown
	if err := s.close(); err != nil {
		return errors.Join(runErr, err)
	}
	s.log.Info("stopped cleanly")
	return runErr
}

// observedFencer records each fencing run in the node's metrics.
type observedFencer struct {
	f failover.Fencer
	m *admin.Metrics
}

func (o observedFencer) Fence(ctx context.Context) error {
	start := time.Now()
	err := o.f.Fence(ctx)
	o.m.Fenced(err, time.Since(start))
	return err
}

// Restore powers the peer on again when the fencer can.
func (o observedFencer) Restore(ctx context.Context) error {
	if r, ok := o.f.(failover.Restorer); ok {
		return r.Restore(ctx)
	}
	return nil
}
