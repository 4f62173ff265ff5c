// Package testmail gives tests the repository's sample messages
// (store/testdata/corpus: real messages taken from the workspace corpus).
// Only tests import it.
package testmail

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Dir is the directory holding the sample messages, one .eml file each.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "store", "testdata", "corpus")
}

// Corpus returns the sample messages by file name. It fails the test when
// there are none, so a test over the corpus can never pass vacuously.
func Corpus(tb testing.TB) map[string][]byte {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(Dir(), "*.eml"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no sample messages in %s: %v", Dir(), err)
	}
	out := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}
