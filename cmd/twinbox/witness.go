package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/failover/witness"
)

const witnessUsage = `usage: twinbox witness [flags]

Run a witness: the pair's third vote, on a third machine (like
corosync-qnetd). Set witness = "HOST:PORT" on both nodes; a node then
promotes, or goes on as the active after losing its peer, only with the
witness's vote, so that a fence device that lies cannot make two actives.
The witness keeps who holds the active role in DATA/witness.json.
docs/architecture.md ("Witness") has the rules.

Flags:`

// runWitness runs a witness until ctx ends.
func runWitness(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("witness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", envDefault("TWINBOX_WITNESS_LISTEN", "0.0.0.0:8424"), "UDP address to answer on (env TWINBOX_WITNESS_LISTEN)")
	data := fs.String("data", envDefault("TWINBOX_WITNESS_DATA", "./twinbox-witness"), "directory for the witness's state (env TWINBOX_WITNESS_DATA)")
	keyFile := fs.String("heartbeat-key-file", os.Getenv("TWINBOX_HEARTBEAT_KEY_FILE"), "file holding the pair's heartbeat key (env TWINBOX_HEARTBEAT_KEY_FILE; or the key itself in TWINBOX_HEARTBEAT_KEY)")
	deadtime := fs.Duration("deadtime", failover.DefaultDeadtime, "the nodes' deadtime: how long the active must be silent before the other node may take over")
	fs.Usage = func() { fmt.Fprintln(stderr, witnessUsage); fs.PrintDefaults() }
	if help, err := parseFlags(fs, args, "witness"); help || err != nil {
		return err
	}
	key := []byte(os.Getenv("TWINBOX_HEARTBEAT_KEY"))
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("heartbeat-key-file: %w", err)
		}
		key = []byte(strings.TrimSpace(string(b)))
	}
	if len(key) == 0 {
		return fmt.Errorf("%w: the pair's heartbeat key is needed: --heartbeat-key-file or TWINBOX_HEARTBEAT_KEY", errUsage)
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	s, err := witness.Listen(witness.ServerOptions{Listen: *listen, Key: key, StateFile: filepath.Join(*data, "witness.json"),
		Deadtime: *deadtime, Logger: log})
	if err != nil {
		return err
	}
	st := s.State()
	fmt.Fprintf(stdout, "twinbox witness: listening on %s (udp); holder %q at epoch %d; state in %s\n", s.Addr(), st.Holder, st.Epoch, *data)
	<-ctx.Done()
	if err := s.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
