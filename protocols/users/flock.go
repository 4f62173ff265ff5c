//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package users

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// lockFile takes an exclusive flock on the file at path, creating it, and
// returns its release. The lock holds against other processes and against
// other calls in this one.
func lockFile(path string) (unlock func(), err error) {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(fh.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		fh.Close()
		return nil, err
	}
	// Closing the file releases the lock.
	return func() { fh.Close() }, nil
}

// keepOwner gives tmp the owner and group of old when they differ from
// tmp's.
func keepOwner(tmp *os.File, old fs.FileInfo) error {
	want, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	info, err := tmp.Stat()
	if err != nil {
		return err
	}
	have, ok := info.Sys().(*syscall.Stat_t)
	if !ok || (have.Uid == want.Uid && have.Gid == want.Gid) {
		return nil
	}
	return tmp.Chown(int(want.Uid), int(want.Gid))
}
