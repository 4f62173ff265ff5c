package main

import (
	"os"
	"testing"

	"github.com/twinbox/twinbox/internal/harness"
)

// TestMain removes the twinbox binary the tests that start nodes built
// (once for the package: harness.Binary).
func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}
