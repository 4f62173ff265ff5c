package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/internal/bench"
	"github.com/twinbox/twinbox/internal/harness"
)

func TestBenchFailoverUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rounds", "0"}, "--rounds 0"},
		{[]string{"--sessions", "0", "--size", "10"}, "--size 10"},
		{[]string{"--deadtime", "100ms"}, "deadtime: 100ms must be at least twice keepalive"},
		{[]string{"extra"}, "takes no arguments"},
		{[]string{"--target", "127.0.0.1:1"}, "flag provided but not defined"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"bench", "failover"}, tc.args...), &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench failover %q: err = %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestBenchFailover runs two rounds (each node killed once) and checks
// that both were measured, that every message was looked for and none
// lost, and that nothing is left behind. It asserts no timing.
func TestBenchFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts twinbox processes and kills them")
	}
	t.Setenv("TWINBOX_BENCH_BIN", harness.MustBinary(t))
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"bench", "failover", "--json", "--rounds", "2", "--sessions", "2"}, &out, &errOut)
	t.Logf("progress:\n%s", errOut.String())
	if err != nil {
		t.Fatalf("bench failover: %v\n%s", err, out.String())
	}
	var rep bench.FailoverReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !rep.Completed || !rep.Checked || len(rep.Rounds) != 2 || !rep.Timing.Defaults {
		t.Fatalf("report incomplete:\n%s", out.String())
	}
	killed := map[string]bool{}
	for _, rd := range rep.Rounds {
		killed[rd.Killed] = true
		if rd.IMAPSec <= 0 || rd.SMTPSec <= 0 || rd.RejoinSec <= 0 || rd.Epoch < 2 || rd.Killed == rd.NewActive {
			t.Errorf("round %+v", *rd)
		}
	}
	if !killed["a"] || !killed["b"] {
		t.Errorf("killed %v, want each node once", killed)
	}
	if rep.Acked == 0 || rep.Lost != 0 || rep.Twice != 0 || rep.Found < rep.Acked || !rep.DigestsEqual {
		t.Errorf("messages: %d acked, %d found, %d lost, %d twice, digests equal %v",
			rep.Acked, rep.Found, rep.Lost, rep.Twice, rep.DigestsEqual)
	}

	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"the first IMAP login + SELECT INBOX", "the first SMTP 250", "lost: 0", "(the defaults)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	m := regexp.MustCompile(`nodes in (\S+),`).FindStringSubmatch(errOut.String())
	if m == nil {
		t.Fatalf("no data directory named in the progress lines")
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (%v)", m[1], err)
	}
}
