package main

import (
	"context"
	"errors"
	"io"
)

// runUser is replaced by the users work in progress.
func runUser(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("user: not built yet")
}
