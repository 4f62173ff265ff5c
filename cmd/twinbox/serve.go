package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twinbox/twinbox/internal/node"
	"github.com/twinbox/twinbox/protocols/imap"
	"github.com/twinbox/twinbox/protocols/smtp"
	"github.com/twinbox/twinbox/protocols/users"
	"github.com/twinbox/twinbox/store"
)

const serveUsage = `usage: twinbox serve [-c FILE] [flags]

Runs a standalone node: IMAP, SMTP and LMTP over the store, and the admin
HTTP server (/healthz, /status, /metrics). With no config file it keeps its
data in ./twinbox-data and listens on loopback only:

  IMAP 127.0.0.1:1143 (STARTTLS)   IMAPS 127.0.0.1:1993
  SMTP 127.0.0.1:2525 (STARTTLS)   SMTPS 127.0.0.1:4465
  LMTP 127.0.0.1:2424              admin http://127.0.0.1:8410

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
	log := newLogger(stderr, c.LogLevel)
	for {
		err := serve(ctx, c, log, stdout)
		if !errors.Is(err, errRestart) || ctx.Err() != nil {
			return err
		}
		log.Warn("restarting the node", "why", err)
	}
}

// errRestart ends serve so that runServe starts the node again (a
// passive whose store must be rebuilt from the active).
var errRestart = errors.New("restart")

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// listener is one bound address of the node.
type listener struct {
	name  string
	ln    net.Listener
	serve func(net.Listener) error
}

func serve(ctx context.Context, c *config, log *slog.Logger, stdout io.Writer) error {
	started := time.Now()
	if err := os.MkdirAll(c.Data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	tlsConf, err := loadTLS(c, log)
	if err != nil {
		return err
	}
	pw, err := users.Open(c.Passwd, &users.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	guard, err := users.NewGuard(pw, nil)
	if err != nil {
		return err
	}
	dir := users.Directory{File: pw, Guard: guard}

	if _, err := os.Stat(resyncMarker(c.Data)); (c.Role == "passive" && !c.Failover) || err == nil {
		if err := resyncIfNeeded(ctx, c, log, stdout); err != nil {
			return fmt.Errorf("resync: %w", err)
		}
	}
	n, err := node.Open(ctx, storeDir(c.Data), &node.Options{
		Store:      &store.Options{CacheSize: c.StoreCache, MaxMessageSize: c.MaxMessageSize},
		CacheBytes: c.CacheSize,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	m := newMetrics()

	imapSrv, err := imap.New(&imap.Options{
		Reader: n, Writer: n, Users: dir,
		TLSConfig: tlsConf, InsecureAuth: c.InsecureAuth,
		ReadOnly: c.Role == "passive" || c.Failover, ReadOnlyHint: c.writeHint(),
		LocalDomains: c.LocalDomains,
		Observe:      m.observe("imap"),
		Logger:       log,
	})
	if err != nil {
		n.Close(ctx)
		return err
	}
	n.SetNotify(imapSrv.Notify)
	var pr *pair
	if c.Role != "standalone" {
		if pr, err = startPair(ctx, c, n, tlsConf, log); err != nil {
			n.Close(ctx)
			return fmt.Errorf("replication: %w", err)
		}
	}
	closeNode := func(ctx context.Context) error {
		if pr != nil {
			pr.stopFollowing()
		}
		err := n.Close(ctx)
		if pr != nil {
			pr.close()
		}
		return err
	}
	newSMTP := func(lmtp bool) (*smtp.Server, error) {
		proto := map[bool]string{false: "smtp", true: "lmtp"}[lmtp]
		maxConns, maxPerIP := c.SMTPMaxConns, c.SMTPMaxConnsPerIP
		if lmtp {
			maxConns, maxPerIP = c.LMTPMaxConns, c.LMTPMaxConnsPerIP
		}
		return smtp.New(&smtp.Options{
			Reader: n, Writer: n, Users: dir, LMTP: lmtp,
			Hostname: c.Hostname, LocalDomains: c.LocalDomains,
			MaxMessageBytes: c.MaxMessageSize, MaxRecipients: int(c.MaxRecipients),
			MaxLineLength: int(c.MaxLineLength),
			ReadTimeout:   c.SMTPTimeout, WriteTimeout: c.SMTPTimeout,
			TLSConfig: tlsConf,
			Delivered: m.delivered(proto), Observe: m.observe(proto),
			Logger: log,

			MaxConnections: int(maxConns), MaxConnectionsPerAddr: int(maxPerIP),
			TransactionTimeout: c.SMTPTxTimeout, DataTimeout: c.SMTPDataTimeout,
			DataMinRate: c.SMTPDataMinRate, MaxHeaderBytes: c.MaxHeaderSize,
			MaxHeaderFields: int(c.MaxHeaderFields), MaxBytesInFlight: c.MaxBytesInFlight,
		})
	}
	smtpSrv, err := newSMTP(false)
	if err != nil {
		closeNode(ctx)
		return err
	}
	lmtpSrv, err := newSMTP(true)
	if err != nil {
		closeNode(ctx)
		return err
	}
	if pr != nil {
		pr.attach(imapSrv, smtpSrv, lmtpSrv)
	}

	// Bind everything before serving anything, so a taken port is a clear
	// refusal to start rather than a half-running node.
	var lns []listener
	closeAll := func() {
		for _, l := range lns {
			l.ln.Close()
		}
	}
	bind := func(name, addr string, useTLS bool, serve func(net.Listener) error) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: listen on %s: %w", name, addr, err)
		}
		if useTLS {
			ln = tls.NewListener(ln, tlsConf)
		}
		lns = append(lns, listener{name, ln, serve})
		return nil
	}
	admin := &http.Server{ReadHeaderTimeout: 10 * time.Second}
	for _, b := range []struct {
		name  string
		addr  *string
		tls   bool
		serve func(net.Listener) error
	}{
		{"imap", &c.IMAPAddr, false, imapSrv.Serve},
		{"imaps", &c.IMAPSAddr, true, imapSrv.Serve},
		{"smtp", &c.SMTPAddr, false, smtpSrv.Serve},
		{"smtps", &c.SMTPSAddr, true, smtpSrv.Serve},
		{"lmtp", &c.LMTPAddr, false, lmtpSrv.Serve},
		{"admin", &c.AdminAddr, false, admin.Serve},
	} {
		if err := bind(b.name, *b.addr, b.tls, b.serve); err != nil {
			closeAll()
			closeNode(ctx)
			return err
		}
		if *b.addr != "" {
			// A node restarting in place (a resync) keeps the ports the
			// system chose for :0.
			*b.addr = lns[len(lns)-1].ln.Addr().String()
		}
	}
	if c.LMTPSock != "" {
		os.Remove(c.LMTPSock)
		ln, err := net.Listen("unix", c.LMTPSock)
		if err != nil {
			closeAll()
			closeNode(ctx)
			return fmt.Errorf("lmtp: listen on %s: %w", c.LMTPSock, err)
		}
		lns = append(lns, listener{"lmtp-socket", ln, lmtpSrv.Serve})
	}

	runCtx, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	if pr != nil {
		pr.afterPromote = func() { n.SyncUsers(runCtx, pw.Users()) }
	}
	var fo *failoverRun
	if c.Failover {
		if fo, err = startFailover(c, pr, log); err != nil {
			closeAll()
			closeNode(ctx)
			return fmt.Errorf("failover: %w", err)
		}
	}
	status := func() status {
		st := statusOf(c, n, m, lns, started)
		if pr != nil {
			st.Replication = pr.status(context.Background(), c.ReplicationMode)
			st.Listeners["nats"] = pr.srv.Addr().String()
			st.Role = pr.currentRole()
		}
		if fo != nil {
			st.Failover = fo.status()
		}
		st.Sessions = map[string]int{"imap": imapSrv.Sessions(), "smtp": smtpSrv.Sessions(), "lmtp": lmtpSrv.Sessions()}
		st.Users = len(pw.Users())
		st.LoginFailures = guard.Stats().Failures
		return st
	}
	registerNodeMetrics(m, n, imapSrv, smtpSrv, lmtpSrv, guard)
	if pr != nil {
		pr.registerMetrics(m)
	}
	if fo != nil {
		fo.registerMetrics(m)
	}
	admin.Handler = adminHandler(m, status, n.Store().Digest, func() error {
		if n.Closing() {
			return errors.New("shutting down")
		}
		return nil
	}, func(mux *http.ServeMux) {
		if fo != nil {
			fo.handle(mux)
		}
	})
	if c.PidFile != "" {
		if err := os.WriteFile(c.PidFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
			closeAll()
			if fo != nil {
				fo.close()
			}
			closeNode(ctx)
			return fmt.Errorf("pid_file: %w", err)
		}
		defer os.Remove(c.PidFile)
	}

	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		pw.Watch(runCtx, func(list []string) { n.SyncUsers(runCtx, list) })
	}()
	n.Collect(c.CollectEvery, c.CollectGrace)

	errc := make(chan error, len(lns))
	for _, l := range lns {
		go func() {
			if err := l.serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", l.name, err)
			}
		}()
	}
	for _, l := range lns {
		log.Info("listening", "service", l.name, "addr", l.ln.Addr().String())
	}
	fmt.Fprintf(stdout, "twinbox: serving; data in %s, users in %s\n", c.Data, c.Passwd)
	for _, l := range lns {
		fmt.Fprintf(stdout, "  %-11s %s\n", l.name, l.ln.Addr())
	}
	var restart chan error
	if pr != nil {
		fmt.Fprintf(stdout, "  %-11s %s (%s)\n", "nats", pr.srv.Addr(), pr.currentRole())
		restart = pr.restart
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", c.ShutdownTimeout)
	case runErr = <-errc:
		log.Error("a listener failed; shutting down", "err", runErr)
	case err := <-restart:
		runErr = fmt.Errorf("%w: %v", errRestart, err)
	}
	if fo != nil {
		if ctx.Err() != nil {
			// Stopped by the operator (SIGTERM): hand over if active, and
			// tell the peer, so that it does not fence a clean shutdown.
			lctx, cancel := context.WithTimeout(context.Background(), 2*c.PeerTimeout)
			fo.leave(lctx)
			cancel()
		}
		fo.close() // no role change during shutdown
	}

	// Graceful shutdown: stop accepting, 421 to idle SMTP/LMTP sessions,
	// let transactions in flight finish within the bound, BYE to IMAP
	// sessions, then close the store.
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range []interface{ Shutdown(context.Context) error }{smtpSrv, lmtpSrv, imapSrv} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(sctx); err != nil {
				log.Warn("shutdown", "err", err)
			}
		}()
	}
	wg.Wait()
	stopBackground()
	bg.Wait()
	admin.Shutdown(sctx)
	if err := closeNode(sctx); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	if c.LMTPSock != "" {
		os.Remove(c.LMTPSock)
	}
	log.Info("stopped cleanly")
	return runErr
}

func statusOf(c *config, n *node.Local, m *metrics, lns []listener, started time.Time) status {
	st := status{
		Node: c.NodeName, Role: c.Role, Started: started.UTC(),
		Uptime:     time.Since(started).Round(time.Second).String(),
		Applied:    n.Store().AppliedSeq(),
		Listeners:  map[string]string{},
		Deliveries: m.nDeliveries.Load(), Recipients: m.nRecipients.Load(),
		ReceivedBytes: m.nReceived.Load(), RecipientBytes: m.nRecipientBytes.Load(),
	}
	ns := n.Stats()
	st.Writes, st.WriteFailures, st.CommitBatch = ns.Writes, ns.WriteFailures, ns.Commit.AvgBatch()
	st.Unconfirmed = ns.Unconfirmed
	for _, l := range lns {
		st.Listeners[l.name] = l.ln.Addr().String()
	}
	if du, err := n.Store().DiskUsage(); err == nil {
		st.StoreBytes = du
	}
	rs := ns.Cache
	if gets := rs.Bodies.Hits + rs.Bodies.Misses + rs.Metas.Hits + rs.Metas.Misses; gets > 0 {
		st.CacheHitRate = float64(rs.Bodies.Hits+rs.Metas.Hits) / float64(gets)
	}
	return st
}

func registerNodeMetrics(m *metrics, n *node.Local, imapSrv *imap.Server, smtpSrv, lmtpSrv *smtp.Server, guard *users.Guard) {
	for proto, f := range map[string]func() int{"imap": imapSrv.Sessions, "smtp": smtpSrv.Sessions, "lmtp": lmtpSrv.Sessions} {
		m.gauge("twinbox_"+proto+"_sessions", "Open "+strings.ToUpper(proto)+" connections.", func() float64 { return float64(f()) })
	}
	m.gauge("twinbox_applied_seq", "Last log sequence applied to the store.", func() float64 { return float64(n.Store().AppliedSeq()) })
	m.gauge("twinbox_store_disk_bytes", "Bytes of the store's live files on disk.", func() float64 {
		du, _ := n.Store().DiskUsage()
		return float64(du)
	})
	m.counter("twinbox_cache_hits_total", "Read cache hits (bodies and metadata).", func() float64 {
		s := n.Stats().Cache
		return float64(s.Bodies.Hits + s.Metas.Hits)
	})
	m.counter("twinbox_cache_misses_total", "Read cache misses (bodies and metadata).", func() float64 {
		s := n.Stats().Cache
		return float64(s.Bodies.Misses + s.Metas.Misses)
	})
	m.counter("twinbox_commit_batches_total", "Group commit flushes (fsynced batches).", func() float64 { return float64(n.Stats().Commit.Batches) })
	m.counter("twinbox_commit_requests_total", "Writes committed through group commit.", func() float64 { return float64(n.Stats().Commit.Requests) })
	m.counter("twinbox_login_failures_total", "Failed logins (each was slowed).", func() float64 { return float64(guard.Stats().Failures) })
	m.counter("twinbox_login_successes_total", "Successful logins.", func() float64 { return float64(guard.Stats().Successes) })
}

const statusUsage = `usage: twinbox status [--admin HOST:PORT] [--json]

Prints a running node's status from its admin HTTP server.

Flags:`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", envDefault("TWINBOX_ADMIN_ADDR", "127.0.0.1:8410"), "the node's admin address (env TWINBOX_ADMIN_ADDR)")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	fs.Usage = func() { fmt.Fprintln(stderr, statusUsage); fs.PrintDefaults() }
	if help, err := parseFlags(fs, args, "status"); help || err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, "GET", "http://"+*addr+"/status", nil)
	if err != nil {
		return fmt.Errorf("%w: --admin %q: %v", errUsage, *addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("status: no node answers at %s: %w", *addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s answered %s", *addr, resp.Status)
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: %s did not answer with a node status: %w", *addr, err)
	}
	printStatus(stdout, &st)
	return nil
}

func printStatus(w io.Writer, st *status) {
	fmt.Fprintf(w, "node        %s (%s), up %s\n", st.Node, st.Role, st.Uptime)
	fmt.Fprintf(w, "applied     sequence %d (%d writes, %d failed, %d not confirmed by the peer)\n", st.Applied, st.Writes, st.WriteFailures, st.Unconfirmed)
	if r := st.Replication; r != nil {
		fmt.Fprintf(w, "log         epoch %d, entries %d..%d\n", r.Epoch, r.LogFirst, r.LogLast)
		if st.Role == "active" {
			fmt.Fprintf(w, "passive     at %d (lag %d entries, last heard %s), %s replication\n", r.PeerPosition, r.Lag, orNever(r.PeerSeen), r.Mode)
		} else {
			fmt.Fprintf(w, "following   durable up to %d\n", r.PeerPosition)
		}
		if r.Appends > 0 {
			fmt.Fprintf(w, "log writes  %d appends, %.2f ms each on average (write and fsync)\n", r.Appends, 1e3*r.AppendSeconds/float64(r.Appends))
		}
		if r.PeerWaits > 0 {
			fmt.Fprintf(w, "confirms    %d waits for the passive, %.2f ms each on average after the local append\n", r.PeerWaits, 1e3*r.PeerWaitSeconds/float64(r.PeerWaits))
		}
		if r.Takes > 0 {
			fmt.Fprintf(w, "batches     %d made durable here, %.2f ms each on average from arrival\n", r.Takes, 1e3*r.TakeSeconds/float64(r.Takes))
		}
		if r.Error != "" {
			fmt.Fprintf(w, "problem     %s\n", r.Error)
		}
	}
	if st.Failover != nil {
		printFailover(w, st.Failover)
	}
	fmt.Fprintf(w, "sessions    imap %d, smtp %d, lmtp %d\n", st.Sessions["imap"], st.Sessions["smtp"], st.Sessions["lmtp"])
	fmt.Fprintf(w, "users       %d (failed logins since start: %d)\n", st.Users, st.LoginFailures)
	fmt.Fprintf(w, "delivered   %d messages to %d mailboxes since start\n", st.Deliveries, st.Recipients)
	fmt.Fprintf(w, "bytes       %d received, %d as one copy per mailbox; store on disk %d\n",
		st.ReceivedBytes, st.RecipientBytes, st.StoreBytes)
	fmt.Fprintf(w, "cache       %.1f%% hits; group commit %.1f writes per fsync\n", 100*st.CacheHitRate, st.CommitBatch)
	names := make([]string, 0, len(st.Listeners))
	for k := range st.Listeners {
		names = append(names, k)
	}
	sortStrings(names)
	for _, k := range names {
		fmt.Fprintf(w, "listen      %-11s %s\n", k, st.Listeners[k])
	}
}

func orNever(s string) string {
	if s == "" {
		return "never"
	}
	return s
}
