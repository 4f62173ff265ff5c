package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/internal/harness"
	"github.com/twinbox/twinbox/internal/poll"
)

// syncBuffer is a bytes.Buffer the demo writes to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDemoUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"extra"}, "takes no arguments"},
		{[]string{"--restart-after", "-1s"}, "--restart-after -1s"},
		{[]string{"--password", ""}, "--password"},
		{[]string{"--nope"}, "flag provided but not defined"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"demo"}, tc.args...), &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("demo %q: err = %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
}

// demoNode is what the demo printed about a node.
type demoNode struct {
	pid               int
	imap, smtp, admin string
}

var (
	demoNodeLine = regexp.MustCompile(`(?m)^node (a|b)  pid (\d+)  (\w+)`)
	demoAddrLine = regexp.MustCompile(`(?m)^  (IMAP|SMTP|admin)  +([0-9.]+:\d+|/\S+)`)
)

// parseDemo reads the nodes' pids and addresses from the demo's banner,
// and which node was active.
func parseDemo(t *testing.T, out string) (map[string]*demoNode, string) {
	t.Helper()
	nodes := map[string]*demoNode{}
	active := ""
	locs := demoNodeLine.FindAllStringSubmatchIndex(out, -1)
	if len(locs) != 2 {
		t.Fatalf("want two node lines in the banner:\n%s", out)
	}
	for k, loc := range locs {
		name, role := out[loc[2]:loc[3]], out[loc[6]:loc[7]]
		pid, _ := strconv.Atoi(out[loc[4]:loc[5]])
		end := len(out)
		if k+1 < len(locs) {
			end = locs[k+1][0]
		}
		n := &demoNode{pid: pid}
		for _, m := range demoAddrLine.FindAllStringSubmatch(out[loc[1]:end], -1) {
			switch m[1] {
			case "IMAP":
				n.imap = m[2]
			case "SMTP":
				n.smtp = m[2]
			case "admin":
				n.admin = m[2]
			}
		}
		if n.imap == "" || n.smtp == "" || n.admin == "" || pid == 0 {
			t.Fatalf("node %s: pid %d, IMAP %q, SMTP %q, admin %q, from:\n%s", name, pid, n.imap, n.smtp, n.admin, out)
		}
		nodes[name] = n
		if role == "active" {
			active = name
		}
	}
	if active == "" {
		t.Fatalf("no node printed as active:\n%s", out)
	}
	return nodes, active
}

func failoverRoleAt(addr string) (string, error) {
	var st admin.Status
	if err := admin.NewClient(addr, "", 10*time.Second).GetJSON(context.Background(), "/status", &st); err != nil {
		return "", err
	}
	if st.Failover == nil {
		return "", errors.New("no failover in /status")
	}
	return st.Failover.Role, nil
}

// deliver sends one message over plain SMTP.
func deliver(addr, to, id string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
	msg := fmt.Sprintf("Message-ID: <%s>\r\nFrom: test@example.com\r\nTo: %s\r\nSubject: demo\r\n\r\nhello\r\n", id, to)
	return c.SendMail("test@example.com", []string{to}, strings.NewReader(msg))
}

// TestDemo runs `twinbox demo` as a person would: it reads the printed
// addresses, delivers to the active, sees the passive refuse, kills the
// active by its printed pid, and waits for the other node to take over,
// for the killed one to come back as the passive, and for Ctrl-C to stop
// both and remove the data.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two twinbox processes")
	}
	t.Setenv("TWINBOX_DEMO_BIN", harness.MustBinary(t))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errOut syncBuffer
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		errc <- run(ctx, []string{"demo", "--restart-after", "100ms", "--password", "pw-of-demo"}, &out, &errOut)
	}()
	t.Cleanup(func() {
		cancel() // whatever failed, the demo stops its nodes before the test ends
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			t.Errorf("the demo did not end within 90 s of its context")
		}
		if t.Failed() {
			t.Logf("demo output:\n%s\n%s", out.String(), errOut.String())
		}
	})
	poll.EventuallyNil(t, 90*time.Second, "the demo's banner", func() error {
		select {
		case err := <-errc:
			t.Fatalf("the demo ended before its banner: %v", err)
		default:
		}
		if !strings.Contains(out.String(), "Ctrl-C stops both nodes") {
			return errors.New("not yet printed")
		}
		return nil
	})
	banner := out.String()
	for _, want := range []string{"user     demo@localhost  password pw-of-demo", "swaks --server", "status --admin", "kill -9 "} {
		if !strings.Contains(banner, want) {
			t.Errorf("the banner lacks %q", want)
		}
	}
	dataDir := regexp.MustCompile(`data in (\S+) \(removed`).FindStringSubmatch(banner)
	if dataDir == nil {
		t.Fatalf("no data directory in the banner")
	}
	nodes, activeName := parseDemo(t, banner)
	otherName := map[string]string{"a": "b", "b": "a"}[activeName]
	active, other := nodes[activeName], nodes[otherName]

	if err := deliver(active.smtp, "demo@localhost", "before@test"); err != nil {
		t.Fatalf("deliver to the active: %v", err)
	}
	var se *smtp.SMTPError
	if err := deliver(other.smtp, "demo@localhost", "refused@test"); !errors.As(err, &se) || se.Code != 451 {
		t.Errorf("deliver to the passive: %v, want a 451", err)
	}

	if err := syscall.Kill(active.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll.EventuallyNil(t, 60*time.Second, "node "+otherName+" to be active and take mail", func() error {
		if role, err := failoverRoleAt(other.admin); err != nil || role != "active" {
			return errors.New("role " + role)
		}
		return deliver(other.smtp, "demo@localhost", "after@test")
	})
	found := map[string]int{}
	if err := harness.MessageIDs(ctx, other.imap, "demo", "pw-of-demo", found); err != nil {
		t.Fatal(err)
	}
	if found["before@test"] != 1 || found["after@test"] != 1 || found["refused@test"] != 0 {
		t.Errorf("on the new active: %v, want before@test and after@test once each", found)
	}

	// The killed node comes back, as the passive.
	var back int
	poll.EventuallyNil(t, 90*time.Second, "node "+activeName+" back as the passive", func() error {
		m := regexp.MustCompile(`node ` + activeName + ` is back, pid (\d+)`).FindStringSubmatch(out.String())
		if m == nil {
			return errors.New("not back yet")
		}
		back, _ = strconv.Atoi(m[1])
		if role, err := failoverRoleAt(active.admin); err != nil || role != "passive" {
			return errors.New("role " + role)
		}
		return nil
	})
	for _, want := range []string{"node " + activeName + " exited (pid " + strconv.Itoa(active.pid) + ", signal: killed)",
		"node " + otherName + " is now active at epoch"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo did not print %q", want)
		}
	}

	cancel() // Ctrl-C
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("demo: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the demo did not end within 90 s of its context")
	}
	for _, pid := range []int{other.pid, back} {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still there after the demo ended (%v)", pid, err)
		}
	}
	if _, err := os.Stat(dataDir[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (%v)", dataDir[1], err)
	}
}
