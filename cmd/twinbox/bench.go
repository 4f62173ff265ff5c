package main

import (
	"context"
	"errors"
	"io"
)

// runBench is replaced by the load generator work in progress.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("bench: not built yet")
}
