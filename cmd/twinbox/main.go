// Command twinbox runs and operates a Twinbox mail store node.
//
// Usage:
//
//	twinbox serve [-c FILE] [flags]
//	twinbox user add|del|passwd|list NAME
//	twinbox status [--admin HOST:PORT] [--json]
//	twinbox verify [--data DIR] [--json]
//	twinbox verify --admin HOST:PORT --peer HOST:PORT
//	twinbox replay --data DIR [--until SEQ|TIME]
//	twinbox bench smtp|lmtp|imap|replication|failover [flags]
//	twinbox demo [--data DIR]
//	twinbox switchover|promote [--force]|demote|fence confirm [--admin HOST:PORT]
//	twinbox fence-agent process|docker < OPTIONS
//	twinbox import maildir|mbox --user NAME PATH...
//	twinbox import imap --user NAME HOST:PORT < PASSWORD
//
// Every flag also reads a TWINBOX_* environment variable (--data:
// TWINBOX_DATA). Each subcommand lives in a file of its own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// DefaultDataDir is where a node keeps its state when nothing says otherwise.
const DefaultDataDir = "./twinbox-data"

// errUsage marks an error in the command line (exit status 2).
var errUsage = errors.New("usage")

// exitError carries an exit status for a command that ran but found a
// failure worth a distinct status (verify's problems).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "twinbox:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "twinbox:", err)
		os.Exit(1)
	}
}

const usage = `twinbox: a two-node mail store with logical replication

Commands:
  serve     run a node: IMAP, SMTP, LMTP and the admin HTTP server
  user      add, delete, re-password or list users (the passwd-file)
  status    print a running node's status
  bench     load generator: smtp, lmtp or imap against any server; replication
            and failover on a pair it starts here
  demo      an active/passive pair with failover on loopback, in one command
  verify    check a stopped node's store (hashes, references, invariants), or with
            --peer compare two running nodes' digests at the same log position
  replay    rebuild a store from a stopped node's log, up to a sequence or time; export a mailbox
  switchover, promote [--force], demote, fence confirm
            operator role changes of a pair running with failover or external = true
  witness   the pair's optional third vote, on a third machine (against split brain)
  import    bring a Dovecot Maildir, mbox files or an IMAP server's mail into a running node, UIDs kept
  fence-agent process|docker
            a built-in fence device speaking the fence-agents stdin protocol

Run 'twinbox COMMAND -h' for a command's flags.`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "user":
		return runUser(ctx, args[1:], os.Stdin, stdout, stderr)
	case "status":
		return runStatus(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "replay":
		return runReplay(ctx, args[1:], stdout, stderr)
	case "switchover", "promote", "demote", "fence":
		return runRole(ctx, args[0], args[1:], stdout, stderr)
	case "witness":
		return runWitness(ctx, args[1:], stdout, stderr)
	case "fence-agent":
		return runFenceAgent(args[1:], os.Stdin, stdout, stderr)
	case "import":
		return runImport(ctx, args[1:], os.Stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

// parseFlags parses a subcommand's flags; the subcommand takes no
// arguments. help is set when -h was asked: the usage is out, nothing
// more to do.
//
// A bad flag is one line naming it and where the flags are listed, not
// the whole usage (the flag package prints that after its error, which
// then scrolls away): only -h prints the usage.
func parseFlags(fs *flag.FlagSet, args []string, name string) (help bool, err error) {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err = fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if usage != nil {
				usage()
			} else {
				fs.PrintDefaults()
			}
			return true, nil
		}
		return false, fmt.Errorf("%w: %v; 'twinbox %s -h' lists the flags", errUsage, err, name)
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("%w: %s takes no arguments, got %q", errUsage, name, fs.Args())
	}
	return false, nil
}

// envDefault returns the value of the environment variable, or def.
func envDefault(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
