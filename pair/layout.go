package pair

import (
	"fmt"
	"os"
	"path/filepath"
)

// Layout names the files of a node's data directory. It is the one place
// that knows them: the store, the log, the set-aside diverged tails, the
// failover state, the certificate, the passwd-file and the node's own
// temporary files.
//
//	DIR/store/          the Pebble store
//	DIR/nats/           the embedded NATS server's JetStream files (the log)
//	DIR/diverged/       log tails set aside after a divergence (an archive)
//	DIR/failover.json   the failover epoch and standby (fsynced)
//	DIR/tls/            the self-signed certificate made on first start
//	DIR/passwd          the users, in Dovecot's passwd-file format
//	DIR/tmp/            checkpoints and resyncs in progress (same file system
//	                    as the store, so that a finished one is renamed in)
type Layout string

// Store is the Pebble store's directory.
func (l Layout) Store() string { return filepath.Join(string(l), "store") }

// Log is the embedded NATS server's directory, which holds the log.
func (l Layout) Log() string { return filepath.Join(string(l), "nats") }

// Diverged is where a diverged log tail is set aside.
func (l Layout) Diverged() string { return filepath.Join(string(l), "diverged") }

// FailoverState is the failover driver's state file.
func (l Layout) FailoverState() string { return filepath.Join(string(l), "failover.json") }

// TLS is the directory of the self-signed certificate.
func (l Layout) TLS() string { return filepath.Join(string(l), "tls") }

// Passwd is the default passwd-file.
func (l Layout) Passwd() string { return filepath.Join(string(l), "passwd") }

// Tmp is the node's own temporary directory: resync downloads and
// checkpoints live there, not in the system's (a container image may have
// none, and a rename into the store must not cross file systems).
func (l Layout) Tmp() string { return filepath.Join(string(l), "tmp") }

// Create makes the data directory and its temporary directory, private to
// the node's user (0700, whatever the umask).
func (l Layout) Create() error {
	for _, d := range []string{string(l), l.Tmp()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("pair: data directory: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("pair: data directory: %w", err)
		}
	}
	return nil
}
