package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/internal/bench"
	"github.com/twinbox/twinbox/internal/loadgen"
)

// benchKinds are the loads `twinbox bench` knows, each with a one-line
// description.
var benchKinds = map[string]string{
	"smtp":        "deliver messages over SMTP (MAIL, RCPT, DATA), back to back",
	"lmtp":        "deliver messages over LMTP (one reply per recipient)",
	"imap":        "log in, SELECT, then a mix of FETCH, SEARCH and APPEND",
	"replication": "start a standalone node and a pair here; what sync replication costs",
	"failover":    "start a pair here, kill its active again and again; takeover time, messages lost",
}

func benchKindNames() string {
	names := make([]string, 0, len(benchKinds))
	for k := range benchKinds {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

const benchUsage = `usage: twinbox bench smtp|lmtp|imap --target HOST:PORT [flags]
       twinbox bench replication|failover [flags]

A load generator that works against any mail server (Twinbox, Dovecot,
Postfix). N sessions each keep one connection busy back to back until
--duration or --count; only replies the server acknowledged count.
Run 'twinbox bench KIND -h' for a kind's flags.

Kinds:`

func printBenchUsage(w io.Writer) {
	fmt.Fprintln(w, benchUsage)
	names := strings.Split(benchKindNames(), ", ")
	for _, k := range names {
		fmt.Fprintf(w, "  %-11s %s\n", k, benchKinds[k])
	}
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printBenchUsage(stderr)
		return fmt.Errorf("%w: bench needs a kind: %s", errUsage, benchKindNames())
	}
	kind := args[0]
	switch kind {
	case "-h", "-help", "--help", "help":
		printBenchUsage(stdout)
		return nil
	}
	if _, ok := benchKinds[kind]; !ok {
		printBenchUsage(stderr)
		return fmt.Errorf("%w: unknown bench kind %q (known: %s)", errUsage, kind, benchKindNames())
	}
	switch kind {
	case "replication":
		return runBenchReplication(ctx, args[1:], stdout, stderr)
	case "failover":
		return runBenchFailover(ctx, args[1:], stdout, stderr)
	}

	fs := flag.NewFlagSet("bench "+kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "server address HOST:PORT (required)")
	sessions := fs.Int("sessions", loadgen.DefaultSessions, "concurrent sessions, one connection each")
	duration := fs.Duration("duration", loadgen.DefaultDuration, "length of the measured phase (with --count alone: no time limit)")
	count := fs.Int64("count", 0, "stop after this many messages or IMAP commands (0: no limit)")
	size := fs.Int("size", loadgen.DefaultMessageSize, "message size in bytes, headers included")
	users := fs.Int("users", loadgen.DefaultUsers, "users PREFIX1..PREFIXN receive or read the mail")
	prefix := fs.String("user-prefix", loadgen.DefaultUserPrefix, "user name prefix")
	domain := fs.String("domain", loadgen.DefaultDomain, "mail domain of the users")
	useTLS := fs.Bool("tls", false, "implicit TLS (SMTPS, LMTPS, IMAPS)")
	startTLS := fs.Bool("starttls", false, "upgrade with STARTTLS (SMTP and IMAP)")
	insecure := fs.Bool("insecure", false, "skip TLS certificate verification (self-signed certificates)")
	timeout := fs.Duration("timeout", loadgen.DefaultTimeout, "connect timeout; for SMTP and LMTP also per command")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")

	var (
		rcpts                 *int
		from                  *string
		user, password, mix   *string
		mailbox, appendMbox   *string
		preload               *int
		kindSynopsis, kindDoc string
	)
	if kind == "imap" {
		user = fs.String("user", "", "log every session in as this user (default: sessions spread over the --users pattern)")
		password = fs.String("password", "", "password of every user (env TWINBOX_BENCH_PASSWORD)")
		mix = fs.String("mix", loadgen.DefaultMix, "weights of the operations: fetch (one message BODY.PEEK[]), headers (50 messages ENVELOPE FLAGS BODYSTRUCTURE), search (UID SEARCH), append")
		mailbox = fs.String("mailbox", loadgen.DefaultMailbox, "mailbox to SELECT, fetch from and search")
		appendMbox = fs.String("append-mailbox", loadgen.DefaultAppendMailbox, "mailbox APPEND writes to (created if missing)")
		preload = fs.Int("preload", 0, "first append messages to each user's --mailbox until it holds this many (not measured)")
		kindSynopsis = "--target HOST:PORT [--user NAME] --password PW [--mix fetch=4,headers=3,search=2,append=1] [--preload N]"
		kindDoc = "Logs in, SELECTs the mailbox and runs the mix; prints per operation count, ops/s and latency."
	} else {
		rcpts = fs.Int("rcpts", loadgen.DefaultRecipients, "recipients per message, distinct users drawn at random")
		from = fs.String("from", "", "envelope sender (default bench@DOMAIN)")
		kindSynopsis = "--target HOST:PORT [--sessions 16] [--size 10240] [--rcpts 1] [--duration 10s | --count N]"
		kindDoc = "Delivers messages back to back; a message counts as delivered when every recipient got a 250.\nPrints messages/s, recipients/s, bytes/s and latency from MAIL to the last reply."
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: twinbox bench %s %s\n\n%s\n\n", kind, kindSynopsis, kindDoc)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: bench %s takes no arguments, got %q", errUsage, kind, fs.Args())
	}
	if *target == "" {
		return fmt.Errorf("%w: bench %s needs --target HOST:PORT", errUsage, kind)
	}
	if *useTLS && *startTLS {
		return fmt.Errorf("%w: --tls and --starttls exclude each other", errUsage)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	conn := loadgen.Conn{Target: *target, Insecure: *insecure, Timeout: *timeout}
	switch {
	case *useTLS:
		conn.TLS = loadgen.TLSImplicit
	case *startTLS:
		conn.TLS = loadgen.TLSStartTLS
	}
	limits := loadgen.Limits{Duration: *duration, Count: *count}
	if *count > 0 && !set["duration"] {
		limits.Duration = 0
	}
	if limits.Duration <= 0 && limits.Count <= 0 {
		return fmt.Errorf("%w: --duration and --count are both 0: the run would never end", errUsage)
	}
	u := loadgen.Users{Count: *users, Prefix: *prefix, Domain: *domain}
	// Zero means "default" to loadgen; on the command line it is a mistake.
	for name, v := range map[string]int{"sessions": *sessions, "size": *size, "users": *users} {
		if v < 1 {
			return fmt.Errorf("%w: --%s %d: want at least 1", errUsage, name, v)
		}
	}

	var result interface {
		WriteText(io.Writer) error
	}
	interrupted := false
	if kind == "imap" {
		pw := *password
		if pw == "" {
			pw = os.Getenv("TWINBOX_BENCH_PASSWORD")
		}
		if pw == "" {
			return fmt.Errorf("%w: bench imap needs --password (or TWINBOX_BENCH_PASSWORD)", errUsage)
		}
		m, err := loadgen.ParseMix(*mix)
		if err != nil {
			return fmt.Errorf("%w: --mix: %v", errUsage, err)
		}
		cfg := loadgen.IMAPConfig{
			Conn: conn, Limits: limits, Sessions: *sessions, User: *user, Password: pw, Users: u,
			Mix: m, MessageSize: *size, Mailbox: *mailbox, AppendMailbox: *appendMbox, Preload: *preload,
		}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		res, err := loadgen.RunIMAP(ctx, cfg)
		if err != nil {
			return fmt.Errorf("bench imap: %w", err)
		}
		result, interrupted = res, res.Interrupted
	} else {
		if *rcpts < 1 {
			return fmt.Errorf("%w: --rcpts %d: want at least 1", errUsage, *rcpts)
		}
		cfg := loadgen.DeliveryConfig{
			Conn: conn, Limits: limits, LMTP: kind == "lmtp", Sessions: *sessions,
			MessageSize: *size, Recipients: *rcpts, Users: u, From: *from,
		}
		if cfg.From == "" {
			cfg.From = "bench@" + *domain
		}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		res, err := loadgen.RunDelivery(ctx, cfg)
		if err != nil {
			return fmt.Errorf("bench %s: %w", kind, err)
		}
		result, interrupted = res, res.Interrupted
	}

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(result); err != nil {
			return err
		}
	} else if err := result.WriteText(stdout); err != nil {
		return err
	}
	if interrupted {
		return fmt.Errorf("bench %s: interrupted; the numbers above are partial", kind)
	}
	return nil
}

// writeReport prints a bench's report for a person, or as one JSON object.
func writeReport(w io.Writer, rep interface{ WriteText(io.Writer) error }, asJSON bool) error {
	if !asJSON {
		return rep.WriteText(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func runBenchReplication(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench replication", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sessions := fs.Int("sessions", loadgen.DefaultSessions, "concurrent LMTP sessions, one connection each")
	size := fs.Int("size", loadgen.DefaultMessageSize, "message size in bytes, headers included")
	duration := fs.Duration("duration", 20*time.Second, "length of each timed delivery run")
	rcpts := fs.String("rcpts", "1,50", "recipient counts of the timed runs, comma-separated (each 1 to 50)")
	linkCount := fs.Int("link-count", 500, "messages of 50 recipients sent to measure the link bytes per message")
	catchup := fs.Int("catchup", 2000, "messages delivered while the passive is down, for the catch-up phase")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	keep := fs.Bool("keep", false, "keep the temporary data directories and the nodes' logs")
	pin := fs.String("pin", "", "NODE/PASSIVE/LOAD: CPU lists for the standalone and active, the passive, and the load generator (see above)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, bench.ReplicationUsage)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args, "bench replication"); help || err != nil {
		return err
	}
	rc, err := bench.ParseRcpts(*rcpts)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	pn, err := bench.ParsePin(*pin)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg := bench.ReplicationConfig{
		Sessions: *sessions, Size: *size, Duration: *duration, Rcpts: rc,
		LinkCount: *linkCount, Catchup: *catchup, Keep: *keep, Pin: pn, Log: stderr,
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if cfg.Bin, err = twinboxBin(ctx, "TWINBOX_BENCH_BIN"); err != nil {
		return fmt.Errorf("bench replication: %w", err)
	}

	rep, err := bench.Replication(ctx, cfg)
	if rep == nil {
		return err
	}
	if werr := writeReport(stdout, rep, *asJSON); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

func runBenchFailover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := bench.FailoverConfig{Log: stderr}
	fs.IntVar(&cfg.Rounds, "rounds", 20, "how many times the active is killed")
	fs.IntVar(&cfg.Sessions, "sessions", 4, "concurrent SMTP sessions, each delivering to a user of its own")
	fs.IntVar(&cfg.Size, "size", 2048, "message size in bytes, headers included")
	fs.DurationVar(&cfg.Keepalive, "keepalive", failover.DefaultKeepalive, "the nodes' heartbeat interval")
	fs.DurationVar(&cfg.Warntime, "warntime", failover.DefaultWarntime, "the nodes' warntime")
	fs.DurationVar(&cfg.Deadtime, "deadtime", failover.DefaultDeadtime, "the nodes' deadtime: the peer is dead when silent this long")
	fs.DurationVar(&cfg.Initdead, "initdead", failover.DefaultInitdead, "the nodes' deadtime at boot")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary data directories and the nodes' logs")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, bench.FailoverUsage)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args, "bench failover"); help || err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var err error
	if cfg.Bin, err = twinboxBin(ctx, "TWINBOX_BENCH_BIN"); err != nil {
		return fmt.Errorf("bench failover: %w", err)
	}
	rep, err := bench.Failover(ctx, cfg)
	if rep == nil {
		return err
	}
	if werr := writeReport(stdout, rep, *asJSON); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

// twinboxBin returns the twinbox binary to start nodes from: the one the
// environment variable names (a test points it at a twinbox it built, as
// the test binary itself cannot serve), else this executable.
func twinboxBin(ctx context.Context, env string) (string, error) {
	bin := os.Getenv(env)
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return "", fmt.Errorf("the twinbox binary: %w", err)
		}
	}
	if err := bench.CheckBinary(ctx, bin); err != nil {
		return "", err
	}
	return bin, nil
}
