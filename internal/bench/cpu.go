package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twinbox/twinbox/internal/harness"
	"github.com/twinbox/twinbox/internal/loadgen"
)

// userHZ is the unit of the times in /proc/PID/stat: Linux reports them
// in USER_HZ, 100 per second on every architecture it exports them for.
const userHZ = 100

// procCPU returns the processor time (user + system) process pid has
// used, from /proc/PID/stat; fields 14 and 15 follow the command name,
// which is in parentheses and may itself hold spaces.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks uint64
	for _, s := range f[11:13] { // utime, stime
		n, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// selfCPU is this process's processor time: the load generator's.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter measures the processor time of some nodes and of this process
// over a timed run.
type cpuMeter struct {
	nodes  []*harness.Node
	before []time.Duration
	self   time.Duration
}

func startCPU(nodes ...*harness.Node) *cpuMeter {
	m := &cpuMeter{nodes: nodes, self: selfCPU()}
	for _, n := range nodes {
		t, _ := nodeCPU(n)
		m.before = append(m.before, t)
	}
	return m
}

type cpuUsed struct {
	nodes []float64 // µs per delivered message, per node
	self  float64
	busy  float64 // share of all cores, nodes and this process together
}

// used divides what each process used since startCPU by the run's
// delivered messages. A node whose time cannot be read counts 0.
func (m *cpuMeter) used(r *loadgen.DeliveryResult) cpuUsed {
	var u cpuUsed
	per := func(d time.Duration) float64 {
		if r.Delivered == 0 {
			return 0
		}
		return float64(d.Microseconds()) / float64(r.Delivered)
	}
	total := selfCPU() - m.self
	u.self = per(total)
	for i, n := range m.nodes {
		t, err := nodeCPU(n)
		if err != nil {
			u.nodes = append(u.nodes, 0)
			continue
		}
		total += t - m.before[i]
		u.nodes = append(u.nodes, per(t-m.before[i]))
	}
	if r.Elapsed > 0 {
		u.busy = total.Seconds() / r.Elapsed.Seconds() / float64(runtime.NumCPU())
	}
	return u
}

// nodeCPU is the node process's processor time so far.
func nodeCPU(n *harness.Node) (time.Duration, error) {
	pid := n.PID()
	if pid == 0 {
		return 0, fmt.Errorf("the %s node is not running", n.Name)
	}
	return procCPU(pid)
}

// cpuList parses a taskset(1) CPU list ("0", "0-3", "0,2-3") and checks
// that every CPU in it exists here.
func cpuList(s string) (unix.CPUSet, error) {
	var set unix.CPUSet
	n := runtime.NumCPU()
	if s == "" {
		return set, fmt.Errorf("an empty CPU list")
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a {
			return set, fmt.Errorf("CPU list %q: %q is not a CPU or a range of them", s, part)
		}
		if b >= n {
			return set, fmt.Errorf("CPU list %q: this machine has CPUs 0 to %d", s, n-1)
		}
		for c := a; c <= b; c++ {
			set.Set(c)
		}
	}
	return set, nil
}

// pinSelf keeps every thread of this process, and so every thread it
// starts later (a new thread inherits its creator's mask), on the CPUs
// of list.
func pinSelf(list string) error {
	set, err := cpuList(list)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return fmt.Errorf("taskset (util-linux) runs the pinned nodes: %w", err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pin thread %d to CPU %s: %w", tid, list, err)
		}
	}
	return nil
}

// peakRSS is the node process's peak resident memory in MiB (VmHWM in
// /proc/PID/status), or 0 when it cannot be read.
func peakRSS(n *harness.Node) float64 {
	pid := n.PID()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return kb / 1024
				}
			}
		}
	}
	return 0
}
