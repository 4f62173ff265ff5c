package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/internal/bench"
)

func TestBenchReplicationUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rcpts", "0,51"}, "--rcpts 0: want 1 to 50"},
		{[]string{"--rcpts", "x"}, `"x" is not a number`},
		{[]string{"--sessions", "0", "--catchup", "0"}, "--catchup 0"},
		{[]string{"--duration", "0"}, "--duration 0s"},
		{[]string{"extra"}, "takes no arguments"},
		{[]string{"--target", "127.0.0.1:1"}, "flag provided but not defined"},
		{[]string{"--pin", "0/1"}, "want NODE/PASSIVE/LOAD"},
		{[]string{"--pin", "0/x/0"}, `"x" is not a CPU`},
		{[]string{"--pin", "0/3-1/0"}, `"3-1" is not a CPU`},
		{[]string{"--pin", "0/0/4096"}, "this machine has CPUs 0 to"},
		{[]string{"--pin", "0//0"}, "an empty CPU list"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"bench", "replication"}, tc.args...), &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench replication %q: err = %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestBenchReplicationRefusesOtherBinary: under go test the executable is
// the test binary, which must never be started as a node (it would run the
// tests, and this one, again).
func TestBenchReplicationRefusesOtherBinary(t *testing.T) {
	t.Setenv("TWINBOX_BENCH_BIN", "")
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"bench", "replication", "--duration", "1s"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is not a twinbox binary") {
		t.Fatalf("err = %v, want a refusal of the test binary\n%s", err, errOut.String())
	}
}

// TestBenchReplication runs the whole bench with tiny settings against a
// twinbox built for the test (the test binary cannot serve), and checks
// that every phase measured something and that nothing is left behind. It
// asserts no timing.
func TestBenchReplication(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five twinbox processes")
	}
	bin := filepath.Join(t.TempDir(), "twinbox")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Setenv("TWINBOX_BENCH_BIN", bin)

	// Pinned: the nodes through taskset on CPU 0, the load (this test
	// process) on every CPU, which leaves the other tests where they were.
	pin := fmt.Sprintf("0/0/0-%d", runtime.NumCPU()-1)
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"bench", "replication", "--json", "--pin", pin,
		"--duration", "1s", "--sessions", "2", "--rcpts", "1,50", "--link-count", "20", "--catchup", "50"}, &out, &errOut)
	t.Logf("progress:\n%s", errOut.String())
	if err != nil {
		t.Fatalf("bench replication: %v\n%s", err, out.String())
	}
	var rep bench.ReplicationReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !rep.Completed || rep.Sessions != 2 || len(rep.Delivery) != 2 || rep.Link == nil || rep.Catchup == nil ||
		rep.Pin == nil || rep.Pin.Node != "0" || rep.Pin.Load != pin[4:] {
		t.Fatalf("report incomplete:\n%s", out.String())
	}
	for _, d := range rep.Delivery {
		if d.Standalone.Delivered == 0 || d.Replicated.Delivered == 0 || d.Standalone.Failed != 0 || d.Replicated.Failed != 0 {
			t.Errorf("%d recipient(s): delivered %d standalone, %d replicated (failed %d, %d), want some and no failures",
				d.Recipients, d.Standalone.Delivered, d.Replicated.Delivered, d.Standalone.Failed, d.Replicated.Failed)
		}
		if d.Ratio <= 0 || d.LinkBytesPerMessage <= 0 || d.Lag.Samples == 0 {
			t.Errorf("%d recipient(s): ratio %v, link bytes per message %v, %d lag samples", d.Recipients, d.Ratio, d.LinkBytesPerMessage, d.Lag.Samples)
		}
		// Every node did some work, and every part of a commit took time.
		if c := d.CPU; c.Standalone <= 0 || c.Active <= 0 || c.Passive <= 0 || c.StandaloneBusy <= 0 || c.ReplicatedBusy <= 0 {
			t.Errorf("%d recipient(s): CPU %+v", d.Recipients, c)
		}
		if m := d.PeakRSS; m.Standalone <= 0 || m.Active <= 0 || m.Passive <= 0 {
			t.Errorf("%d recipient(s): peak RSS %+v", d.Recipients, m)
		}
		if w := d.Wait; w.AppendMs <= 0 || w.PeerWaitMs <= 0 || w.PassiveTakeMs <= 0 || w.EntriesPerGroup < 1 || w.EntriesPerTake < 1 {
			t.Errorf("%d recipient(s): wait %+v", d.Recipients, w)
		}
	}
	if l := rep.Link; l.Delivered != 20 || l.Failed != 0 || l.Entries < 20 || l.Bytes == 0 || l.PerMessage <= 0 || l.MessageZstd <= 0 {
		t.Errorf("link phase: %+v", *l)
	}
	if c := rep.Catchup; c.Delivered != 50 || c.Failed != 0 || c.Entries < 50 || !c.DigestsEqual || c.LinkBytes == 0 || c.EntriesPerSec <= 0 ||
		c.DiskSyncMBPerSec <= 0 || c.LoopbackTLSMBPerSec <= 0 {
		t.Errorf("catch-up phase: %+v", *c)
	}

	// The text form of the same report reads.
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"deliveries/s", "bytes per message", "entries/s", "pinned: standalone and active on CPU 0",
		"CPU µs per message", "wait for the passive", "peak resident memory", "the limits here"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}

	// The nodes' directories are gone.
	m := regexp.MustCompile(`nodes in (\S+),`).FindStringSubmatch(errOut.String())
	if m == nil {
		t.Fatalf("no data directory named in the progress lines")
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (%v)", m[1], err)
	}
}
