package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/twinbox/twinbox/internal/demo"
	"github.com/twinbox/twinbox/protocols/users"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "keep the pair's data in this directory (default: a temporary one, removed at the end)")
	user := fs.String("user", demo.DefaultUser, "the demo user, added to both nodes")
	password := fs.String("password", demo.DefaultPassword, "the demo user's password")
	restartAfter := fs.Duration("restart-after", 5*time.Second, "start a node that exited again this long after the other is seen active, as the passive (0: never)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, demo.Usage)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args, "demo"); help || err != nil {
		return err
	}
	if *restartAfter < 0 {
		return fmt.Errorf("%w: --restart-after %v: want 0 or more", errUsage, *restartAfter)
	}
	if err := users.CheckPassword(*password); err != nil {
		return fmt.Errorf("%w: --password: %v", errUsage, err)
	}
	bin, err := twinboxBin(ctx, "TWINBOX_DEMO_BIN")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	return demo.Run(ctx, demo.Config{Bin: bin, Data: *data, User: *user, Password: *password,
		RestartAfter: *restartAfter, Out: stdout})
}
