package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/twinbox/twinbox/store"
)

// storeDir is where the Pebble store lives inside a node's data directory.
func storeDir(data string) string { return filepath.Join(data, "store") }

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", envDefault("TWINBOX_DATA", DefaultDataDir), "node data directory (env TWINBOX_DATA)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: twinbox verify [--data DIR] [--json]\n\nChecks a stopped node's store: re-hashes every blob, recounts references,\nchecks mailbox invariants, and prints a summary with the store digest.\nExits 1 naming each problem found.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: verify takes no arguments, got %q", errUsage, fs.Args())
	}
	dir := storeDir(*data)
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("verify: no store at %s: %w", dir, err)
	}
	s, err := store.Open(ctx, dir, &store.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("verify: %w (is the node still running? verify reads a stopped node's store)", err)
	}
	defer s.Close(ctx)
	r, err := s.Verify(ctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(verifyJSON(r)); err != nil {
			return err
		}
	} else {
		printReport(stdout, dir, r)
	}
	if !r.OK() {
		return exitError{code: 1}
	}
	return nil
}

func printReport(w io.Writer, dir string, r *store.Report) {
	fmt.Fprintf(w, "store      %s\n", dir)
	fmt.Fprintf(w, "applied    %d\n", r.Applied)
	fmt.Fprintf(w, "users      %d\n", r.Users)
	fmt.Fprintf(w, "mailboxes  %d\n", r.Mailboxes)
	fmt.Fprintf(w, "messages   %d\n", r.Messages)
	fmt.Fprintf(w, "bodies     %d (+%d shared parts), %d bytes stored once\n", r.Bodies, r.Parts, r.BlobBytes)
	fmt.Fprintf(w, "digest     %s\n", r.Digest.Store)
	if r.OK() {
		fmt.Fprintln(w, "result     OK")
		return
	}
	fmt.Fprintf(w, "result     %d problem(s)\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem    %s\n", p)
	}
}

type reportJSON struct {
	Applied   uint64   `json:"applied"`
	Users     int      `json:"users"`
	Mailboxes int      `json:"mailboxes"`
	Messages  int      `json:"messages"`
	Bodies    int      `json:"bodies"`
	Parts     int      `json:"parts"`
	BlobBytes int64    `json:"blob_bytes"`
	Digest    string   `json:"digest"`
	OK        bool     `json:"ok"`
	Problems  []string `json:"problems"`
}

func verifyJSON(r *store.Report) reportJSON {
	return reportJSON{
		Applied: r.Applied, Users: r.Users, Mailboxes: r.Mailboxes, Messages: r.Messages,
		Bodies: r.Bodies, Parts: r.Parts, BlobBytes: r.BlobBytes, Digest: r.Digest.Store.String(),
		OK: r.OK(), Problems: r.Problems,
	}
}
