package fence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Process fences a peer that is a local process (the loopback demo and
// integration tests) named by the PID in a pid file: Off sends it SIGKILL,
// Status reports Off once it no longer exists or is a zombie (on Linux, from
// /proc/PID/stat), On otherwise.
//
// The pid file is read at each call. A missing or malformed pid file is an
// error, never Off: without it there is no telling which process is the
// peer. PIDs 0 and 1, negative ones and this process's own are refused.
//
// Caveat: PIDs are reused. If the peer died and the system gave its PID to
// another process while the pid file stayed, Off kills that process and
// Status reports it On. This device is for tests and demos on one machine,
// not for fencing anything that matters.
//
// A Process is safe for concurrent use.
type Process struct {
	pidFile string
}

var _ Device = (*Process)(nil)

// NewProcess returns the fence device for the process whose PID is in
// pidFile. The file need not exist yet.
func NewProcess(pidFile string) (*Process, error) {
	if pidFile == "" {
		return nil, errors.New("fence process: no pid file given")
	}
	return &Process{pidFile: pidFile}, nil
}

// NewProcessFromOptions builds a Process from fence-agent options: port=
// (or plug=, its newer name) is the pid file. Other options are ignored.
func NewProcessFromOptions(opts map[string]string) (Device, error) {
	p := portOption(opts)
	if p == "" {
		return nil, errors.New("fence process: no port= option: which pid file names the peer?")
	}
	return NewProcess(p)
}

func (p *Process) String() string { return "fence process " + p.pidFile }

// Off sends SIGKILL to the process. One that no longer exists is already
// off.
func (p *Process) Off(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return p.error(err)
	}
	pid, err := p.pid()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return p.error(fmt.Errorf("kill pid %d: %w", pid, err))
	}
	return nil
}

// Status reports Off when the process no longer exists or is a zombie
// (dead, not yet reaped by its parent), On otherwise.
func (p *Process) Status(ctx context.Context) (Power, error) {
	if err := ctx.Err(); err != nil {
		return Unknown, p.error(err)
	}
	pid, err := p.pid()
	if err != nil {
		return Unknown, err
	}
	// EPERM: it exists, it is someone else's.
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return Off, nil
	} else if err != nil && !errors.Is(err, syscall.EPERM) {
		return Unknown, p.error(fmt.Errorf("signal 0 to pid %d: %w", pid, err))
	}
	if zombie(pid) {
		return Off, nil
	}
	return On, nil
}

// pid reads the pid file.
func (p *Process) pid() (int, error) {
	f, err := os.Open(p.pidFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, p.error(errors.New("no pid file: cannot tell which process is the peer"))
		}
		return 0, p.error(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, p.error(err)
	}
	s := strings.TrimSpace(string(b))
	pid, err := strconv.Atoi(s)
	switch {
	case err != nil:
		return 0, p.error(fmt.Errorf("pid file holds %q, not a PID", trimOutput(s, 40)))
	case pid <= 1:
		return 0, p.error(fmt.Errorf("pid file holds %d, which is not a peer's PID", pid))
	case pid == os.Getpid():
		return 0, p.error(fmt.Errorf("pid file holds %d, this process's own PID", pid))
	}
	return pid, nil
}

func (p *Process) error(err error) error {
	return fmt.Errorf("fence process (pid file %s): %w", p.pidFile, err)
}

// zombie reports whether the process is a zombie, as /proc/PID/stat tells
// on Linux. A process that vanished meanwhile counts as one (it is dead).
// Elsewhere it reports false.
func zombie(pid int) bool {
	if runtime.GOOS != "linux" {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	state, ok := statState(string(b))
	return ok && (state == 'Z' || state == 'X')
}

// statState returns the state field of a /proc/PID/stat line: the first
// field after the command name, which is in parentheses and may itself hold
// spaces and parentheses.
func statState(stat string) (byte, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+1] != ' ' {
		return 0, false
	}
	return stat[i+2], true
}
