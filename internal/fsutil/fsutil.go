// Package fsutil holds the one way Twinbox replaces a small file durably.
package fsutil

import (
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces name with data so that a crash leaves the old
// file or the new one, never a mix or nothing: it writes a temporary file
// beside it with perm, fsyncs it, renames it over name and fsyncs the
// directory.
func WriteFileAtomic(name string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
