package integration

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestPairFilesPrivate (issue 14 D12): with the umask the tests run
// under, both nodes of a pair keep every file private once they stored
// mail: the data directory 0700, Pebble's files, the JetStream log and
// the admin socket 0600.
func TestPairFilesPrivate(t *testing.T) {
	p := startPair(t)
	if err := sendOne(p.active.smtp); err != nil {
		t.Fatal(err)
	}
	sameDigest(t, p.active, p.passive)
	for _, n := range []*node{p.active, p.passive} {
		kinds := map[string]int{}
		filepath.WalkDir(n.data, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Error(err)
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil // removed meanwhile (a compaction)
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: mode %v, want nothing for group and others", path, fi.Mode())
			}
			rel, _ := filepath.Rel(n.data, path)
			kinds[strings.Split(rel, string(filepath.Separator))[0]]++
			return nil
		})
		for _, want := range []string{"store", "nats", "admin.sock"} {
			if kinds[want] == 0 {
				t.Errorf("%s: no %s checked (found %v)", n.data, want, kinds)
			}
		}
	}
}
