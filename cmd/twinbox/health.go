package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// health is what /healthz and /status say of the node's write path
// (issue 14 D3): a node whose disk refuses writes (full, read-only, an
// I/O error) or whose last writes all failed is unhealthy, with the
// reason, and healthy again by itself once a probe and a write succeed.
type health struct {
	dir   string        // where the probe writes: DATA/tmp
	every time.Duration // a probe at most this often
	now   func() time.Time

	mu      sync.Mutex
	probed  time.Time
	disk    error // the last probe's
	writes  uint64
	fails   uint64
	failing error // writes failed since the last that succeeded
}

// probeEvery bounds the probe's rate: /healthz may be polled often.
const probeEvery = time.Second

func newHealth(data string) *health {
	return &health{dir: filepath.Join(data, "tmp"), every: probeEvery, now: time.Now}
}

// check returns why the node's write path is failing, or nil. writes and
// failures are the node's counters of acknowledged and failed writes.
func (h *health) check(writes, failures uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	reprobe := false
	switch {
	case writes > h.writes:
		h.failing = nil         // a write succeeded since the last look
		reprobe = h.disk != nil // and the disk may have room again
	case failures > h.fails:
		n := failures - h.fails
		if h.failing != nil {
			var prev *writeFailures
			if errors.As(h.failing, &prev) {
				n += prev.n
			}
		}
		h.failing = &writeFailures{n: n, since: h.now()}
	}
	h.writes, h.fails = writes, failures
	if now := h.now(); reprobe || now.Sub(h.probed) >= h.every {
		h.disk, h.probed = probe(h.dir), now
	}
	return errors.Join(h.disk, h.failing)
}

// writeFailures: the last writes failed, none succeeded since.
type writeFailures struct {
	n     uint64
	since time.Time
}

func (e *writeFailures) Error() string {
	return fmt.Sprintf("write path failing: the last %d writes failed (since %s), none succeeded since; see the log", e.n, e.since.UTC().Format(time.RFC3339))
}

// probeSize is what the probe writes: one page.
const probeSize = 4096

// probe writes a page to a file in dir, fsyncs it and removes it.
func probe(dir string) error {
	f, err := os.CreateTemp(dir, ".healthz-*")
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.Write(make([]byte, probeSize))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("disk: write and fsync %d bytes in %s: %w", probeSize, dir, err)
	}
	return nil
}
