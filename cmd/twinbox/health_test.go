package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/protocols/users"
)

// TestHealthTellsTheTruth (issue 14 D3): a disk that refuses the probe,
// or writes that fail with none succeeding since, make the node unhealthy
// with the reason; it is healthy again by itself once the probe and a
// write succeed.
func TestHealthTellsTheTruth(t *testing.T) {
	data := t.TempDir()
	h := newHealth(data)
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	tick := func() { now = now.Add(probeEvery) }

	if err := h.check(0, 0); err == nil || !strings.Contains(err.Error(), "disk:") {
		t.Errorf("no DATA/tmp to write in: %v, want a disk error", err)
	}
	if err := os.Mkdir(filepath.Join(data, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := h.check(0, 0); err == nil {
		t.Error("probed again within a second: the last probe's answer is kept, want it still failing")
	}
	if err := h.check(1, 0); err != nil {
		t.Errorf("a write succeeded: the disk is probed again at once: %v", err)
	}
	os.Remove(filepath.Join(data, "tmp"))
	tick()
	if err := h.check(1, 0); err == nil {
		t.Error("DATA/tmp gone again: want a disk error after a second")
	}
	if err := os.Mkdir(filepath.Join(data, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	tick()
	if err := h.check(1, 0); err != nil {
		t.Errorf("disk writable again: %v", err)
	}
	tick()
	if err := h.check(1, 3); err == nil || !strings.Contains(err.Error(), "last 3 writes failed") {
		t.Errorf("3 writes failed, none succeeded: %v", err)
	}
	tick()
	if err := h.check(1, 5); err == nil || !strings.Contains(err.Error(), "last 5 writes failed") {
		t.Errorf("2 more failed: %v", err)
	}
	if err := h.check(1, 5); err == nil {
		t.Error("no write since the failures: still failing, want unhealthy")
	}
	if err := h.check(2, 5); err != nil {
		t.Errorf("a write succeeded: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(data, "tmp")); len(entries) != 0 {
		t.Errorf("the probe left %d files behind", len(entries))
	}
}

// TestDiskFull (issue 14 D3) fills a small tmpfs under a running node:
// the delivery that does not fit is refused with a temporary code and is
// not in the mailbox; /healthz says why; once space is back the node is
// healthy and takes mail again without a restart. It needs root (mount).
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	data := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", data).CombinedOutput(); err != nil {
		t.Skipf("mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", data).Run() })
	if err := users.Add(filepath.Join(data, "passwd"), "alice", "pw-of-alice", &users.EditOptions{Cost: 4}); err != nil {
		t.Fatal(err)
	}
	addrs, _, _ := startServe(t, "--data", data, "--local-domains", "localhost")
	healthz := func() (int, string) {
		resp, err := http.Get("http://" + addrs["metrics"] + "/healthz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	send := func(i int, size int) error {
		msg := fmt.Sprintf("From: a@example.org\r\nSubject: m%d\r\n\r\n%s\r\n", i, strings.Repeat(strings.Repeat("y", 78)+"\r\n", size/80))
		c, err := gosmtp.Dial(addrs["smtp"])
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Mail("a@example.org", nil); err != nil {
			return err
		}
		if err := c.Rcpt("alice@localhost", nil); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, msg); err != nil {
			return err
		}
		return w.Close()
	}
	if err := send(0, 100); err != nil {
		t.Fatalf("a delivery before the disk fills: %v", err)
	}
	subjects(t, addrs["imap"]) // the first login makes the special-use mailboxes
	// Fill the disk but for a few KiB.
	filler := filepath.Join(data, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for _, n := range []int{64 << 10, 4 << 10, 512} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	f.Close()

	err = send(1, 256<<10)
	var se *gosmtp.SMTPError
	if err == nil {
		t.Fatal("a delivery to a full disk was acknowledged")
	}
	if !asSMTP(err, &se) || se.Code/100 != 4 {
		t.Errorf("a delivery to a full disk: %v, want a temporary 4xx", err)
	}
	t.Logf("a delivery to a full disk: %v", err)
	code, body := healthz()
	t.Logf("/healthz on a full disk: %d %s", code, strings.TrimSpace(body))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no space left") && !strings.Contains(body, "failed") {
		t.Errorf("/healthz on a full disk: %d %q, want 503 with the reason", code, body)
	}

	// The refused delivery is never shown, not even while the disk is full.
	if got, err := trySubjects(addrs["imap"]); err == nil && slices.Contains(got, "m1") {
		t.Errorf("while the disk is full, alice's INBOX shows the refused m1: %q", got)
	} else {
		t.Logf("while the disk is full, alice's INBOX: %q, %v", got, err)
	}

	os.Remove(filler)
	err = poll.Until(context.Background(), 30*time.Second, "a delivery accepted once space is back", func() (bool, error) {
		return send(2, 100) == nil, nil
	})
	if err != nil {
		t.Error(err)
	}
	err = poll.Until(context.Background(), 30*time.Second, "/healthz 200 once space is back", func() (bool, error) {
		code, _ := healthz()
		return code == http.StatusOK, nil
	})
	if err != nil {
		code, body := healthz()
		t.Errorf("%v: %d %s", err, code, body)
	}
	// The delivery refused for want of space is not there; the others are.
	if got := strings.Join(subjects(t, addrs["imap"]), " "); got != "m0 m2" {
		t.Errorf("alice's INBOX after the disk was full: %q, want m0 m2", got)
	}
}

// subjects lists the subjects in alice's INBOX.
func subjects(t *testing.T, addr string) []string {
	t.Helper()
	s, err := trySubjects(addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func trySubjects(addr string) ([]string, error) {
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Login("alice", "pw-of-alice").Wait(); err != nil {
		return nil, err
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return nil, err
	}
	if sel.NumMessages == 0 {
		return nil, nil
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1, sel.NumMessages), &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range msgs {
		out = append(out, m.Envelope.Subject)
	}
	return out, nil
}

func asSMTP(err error, se **gosmtp.SMTPError) bool {
	e, ok := err.(*gosmtp.SMTPError)
	*se = e
	return ok
}
