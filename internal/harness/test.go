package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// TB is the part of testing.TB the helpers below use (the harness does
// not import package testing: the demo and the benches link it too).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	Failed() bool
	TempDir() string
}

var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// Binary returns a twinbox binary built from this module's cmd/twinbox,
// once per process: a test binary cannot serve, so the nodes it starts run
// a real twinbox. RemoveBinary removes it (call it from TestMain).
func Binary() (string, error) {
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "twinbox-bin-")
		if built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "twinbox")
		cmd := exec.Command("go", "build", "-o", built.bin, "github.com/twinbox/twinbox/cmd/twinbox")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./cmd/twinbox: %v\n%s", err, out)
		}
	})
	return built.bin, built.err
}

// RemoveBinary removes the binary Binary built, if any.
func RemoveBinary() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

// MustBinary is Binary for a test.
func MustBinary(tb TB) string {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return bin
}

// StartNode starts n for a test: on cleanup it is stopped with SIGTERM
// (the test fails unless it exits 0 in time, or was killed by the test),
// and its log goes to the test's when the test failed.
func StartNode(tb TB, n *Node) *Node {
	tb.Helper()
	tb.Cleanup(func() {
		if n.Running() || n.Alive() != nil {
			if err := n.Stop(); err != nil {
				tb.Errorf("%v", err)
			}
		}
		if tb.Failed() {
			tb.Logf("the %s node's log:\n%s", n.Name, n.Log())
		}
	})
	if err := n.Start(context.Background()); err != nil {
		tb.Fatalf("%v", err)
	}
	return n
}
