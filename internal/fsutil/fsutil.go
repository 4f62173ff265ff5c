// Package fsutil holds the one way Twinbox replaces a small file durably.
package fsutil

import (
	"crypto/rand"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces name with data so that a crash leaves the old
// file or the new one, never a mix or nothing: it writes a temporary file
// beside it with perm (less the process's umask, as os.WriteFile), fsyncs
// it, renames it over name and fsyncs the directory.
func WriteFileAtomic(name string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(name)
	tmp := filepath.Join(dir, "."+filepath.Base(name)+"."+rand.Text()+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
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
