package fence_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/failover/fence"
)

// recordScript writes a fence agent that saves its stdin, then prints the
// line given to stderr and exits with code; it returns the agent and the
// file its stdin goes to.
func recordScript(t *testing.T, code int) (string, string) {
	dir := t.TempDir()
	saved := filepath.Join(dir, "stdin")
	return writeScript(t, dir, "fence_record", fmt.Sprintf("cat >%s\nexit %d\n", quote(saved), code)), saved
}

func TestAgentSendsActionThenSortedOptions(t *testing.T) {
	script, saved := recordScript(t, 0)
	a := newAgent(t, script, map[string]string{
		"username": "admin",
		"port":     "node-b",
		"ip":       "10.0.0.2",
		"password": "s3cret with = and spaces",
		"lanplus":  "1",
	}, time.Minute)
	options := "ip=10.0.0.2\nlanplus=1\npassword=s3cret with = and spaces\nport=node-b\nusername=admin\n"

	ctx := testContext(t)
	for _, c := range []struct {
		action string
		run    func(context.Context) error
	}{
		{"off", a.Off},
		{"on", a.On},
		{"reboot", a.Reboot},
		{"monitor", a.Monitor},
		{"status", func(ctx context.Context) error {
			p, err := a.Status(ctx)
			if err == nil && p != fence.On {
				return fmt.Errorf("exit 0 gave %v, want on", p)
			}
			return err
		}},
	} {
		if err := c.run(ctx); err != nil {
			t.Fatalf("%s: %v", c.action, err)
		}
		got, err := os.ReadFile(saved)
		if err != nil {
			t.Fatal(err)
		}
		if want := "action=" + c.action + "\n" + options; string(got) != want {
			t.Errorf("%s: the agent read\n%s\nwant\n%s", c.action, got, want)
		}
	}
}

func TestAgentStatusExitCodes(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	for _, c := range []struct {
		code int
		want fence.Power
	}{{0, fence.On}, {2, fence.Off}, {1, fence.Unknown}, {3, fence.Unknown}} {
		script := writeScript(t, dir, fmt.Sprintf("fence_exit%d", c.code),
			fmt.Sprintf("cat >/dev/null\necho 'Status: who knows' >&2\nexit %d\n", c.code))
		p, err := newAgent(t, script, nil, time.Minute).Status(ctx)
		if p != c.want {
			t.Errorf("status exit %d: %v, want %v", c.code, p, c.want)
		}
		if c.want != fence.Unknown {
			if err != nil {
				t.Errorf("status exit %d: %v", c.code, err)
			}
			continue
		}
		ae := agentError(t, err)
		if ae.ExitCode != c.code || ae.Action != "status" || ae.Agent != script {
			t.Errorf("status exit %d: error %+v", c.code, ae)
		}
		for _, want := range []string{script, "status", fmt.Sprint(c.code), "neither on (0) nor off (2)", "Status: who knows"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("status exit %d: error %q does not say %q", c.code, err, want)
			}
		}
	}
}

func TestAgentFailureSaysWhy(t *testing.T) {
	script := writeScript(t, t.TempDir(), "fence_fail", `cat >/dev/null
echo 'Connecting to 10.0.0.2...'
echo 'Failed: Unable to connect/login to fencing device' >&2
exit 1
`)
	a := newAgent(t, script, map[string]string{"password": "hunter2", "port": "node-b"}, time.Minute)
	err := a.Off(testContext(t))
	ae := agentError(t, err)
	if ae.Agent != script || ae.Action != "off" || ae.ExitCode != 1 ||
		ae.Stderr != "Failed: Unable to connect/login to fencing device" || ae.Err != nil {
		t.Errorf("error fields %+v", ae)
	}
	want := "fence agent " + script + ": off: exit code 1: Failed: Unable to connect/login to fencing device"
	if err.Error() != want {
		t.Errorf("error\n%s\nwant\n%s", err, want)
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(a.String(), "hunter2") {
		t.Error("an option value shows in the error or the agent's name")
	}
	if errors.Is(err, fence.ErrTimeout) {
		t.Error("a plain failure matches ErrTimeout")
	}
}

func TestAgentStderrIsTrimmed(t *testing.T) {
	script := writeScript(t, t.TempDir(), "fence_chatty", `cat >/dev/null
i=0
while [ $i -lt 500 ]; do echo "debug line $i: ..............................................." >&2; i=$((i+1)); done
echo 'Failed: the last word' >&2
exit 1
`)
	err := newAgent(t, script, nil, time.Minute).Off(testContext(t))
	ae := agentError(t, err)
	if len(ae.Stderr) > 400 || !strings.HasSuffix(ae.Stderr, "Failed: the last word") || !strings.HasPrefix(ae.Stderr, "...") {
		t.Errorf("stderr kept as %d bytes: %q", len(ae.Stderr), ae.Stderr)
	}
	if strings.Contains(ae.Stderr, "\n") {
		t.Errorf("stderr %q holds a newline", ae.Stderr)
	}
}

// hangScript writes a fence agent that records its PID and its child's,
// then waits for the child, a sleep of 1000 s.
func hangScript(t *testing.T) (script, agentPID, childPID string) {
	dir := t.TempDir()
	agentPID, childPID = filepath.Join(dir, "agent.pid"), filepath.Join(dir, "child.pid")
	// It speaks before it writes its child's pid: the tests wait for
	// that file, then expect the words (CI once cancelled in between).
	script = writeScript(t, dir, "fence_hang", fmt.Sprintf(`cat >/dev/null
echo $$ >%s.tmp && mv %s.tmp %s
echo 'Connecting...' >&2
sleep 1000 &
echo $! >%s.tmp && mv %s.tmp %s
wait
`, quote(agentPID), quote(agentPID), quote(agentPID), quote(childPID), quote(childPID), quote(childPID)))
	return script, agentPID, childPID
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestAgentTimeoutKillsProcessGroup(t *testing.T) {
	script, agentPID, childPID := hangScript(t)
	const timeout = time.Second
	a := newAgent(t, script, nil, timeout)
	err := a.Off(testContext(t))
	if !errors.Is(err, fence.ErrTimeout) {
		t.Fatalf("Off of a hanging agent: %v, want ErrTimeout", err)
	}
	ae := agentError(t, err)
	if ae.ExitCode != -1 || ae.Action != "off" || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("error %v, fields %+v", err, ae)
	}
	if !exists(agentPID) || !exists(childPID) {
		t.Fatalf("the agent did not get to write its PIDs within %v", timeout)
	}
	waitFor(t, "the agent to be gone", func() bool { return gone(t, agentPID) })
	waitFor(t, "the agent's child to be gone", func() bool { return gone(t, childPID) })
}

func TestAgentCancelKillsProcessGroup(t *testing.T) {
	script, agentPID, childPID := hangScript(t)
	a := newAgent(t, script, nil, time.Hour)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- a.Off(ctx) }()
	waitFor(t, "the agent to start its child", func() bool { return exists(childPID) })
	if gone(t, agentPID) || gone(t, childPID) {
		t.Fatal("the agent or its child ended by itself")
	}
	cancel()
	err := <-result
	if !errors.Is(err, fence.ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Off cancelled: %v; want ErrTimeout and context.Canceled", err)
	}
	if ae := agentError(t, err); ae.Stderr != "Connecting..." {
		t.Errorf("stderr %q, want what the agent said before it was killed", ae.Stderr)
	}
	waitFor(t, "the agent to be gone", func() bool { return gone(t, agentPID) })
	waitFor(t, "the agent's child to be gone", func() bool { return gone(t, childPID) })
}

func TestNewAgentRefusesAMissingExecutable(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "fence_plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{filepath.Join(dir, "fence_missing"), "no such file"},
		{plain, "permission denied"},
		{dir, "directory"},
		{"fence_surely_not_in_path", "not found"},
		{"", "no executable"},
	} {
		a, err := fence.NewAgent(c.path, nil, 0)
		if err == nil {
			t.Errorf("NewAgent(%q) = %v, want an error", c.path, a)
			continue
		}
		if !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewAgent(%q): %q, want the path and %q", c.path, err, c.want)
		}
	}
}

func TestAgentExecutableRemovedLater(t *testing.T) {
	script, _ := recordScript(t, 0)
	a := newAgent(t, script, nil, time.Minute)
	if err := os.Remove(script); err != nil {
		t.Fatal(err)
	}
	err := a.Off(testContext(t))
	ae := agentError(t, err)
	if ae.ExitCode != -1 || !strings.Contains(err.Error(), "cannot start") || !strings.Contains(err.Error(), script) {
		t.Errorf("Off with the agent gone: %v", err)
	}
}

func TestNewAgentRefusesBadOptions(t *testing.T) {
	script, _ := recordScript(t, 0)
	_, err := fence.NewAgent(script, map[string]string{
		"port":      "node-b",
		"password":  "line1\nline2",
		"ip\naddr":  "10.0.0.2",
		"action":    "on",
		"option":    "on",
		"":          "x",
		"#comment":  "x",
		"user name": "admin",
		"crlf":      "admin\r",
	}, 0)
	if err == nil {
		t.Fatal("NewAgent accepted options that cannot go one per line")
	}
	for _, want := range []string{`"password"`, `"ip\naddr"`, `"action"`, `"option"`, "empty name", `"#comment"`, `"user name"`, `"crlf"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "line1") || strings.Contains(err.Error(), `"port"`) {
		t.Errorf("error %q shows a value, or a good option", err)
	}
}
