package fence

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// Fence-agents exit codes. For "status", 0 is on and 2 is off; any other
// code of any action is a failure.
const (
	agentOK  = 0
	agentOff = 2
)

const (
	// outputKeep is how much of an agent's stdout and stderr is kept, from
	// the end (where fence agents print their "Failed: ..." line).
	outputKeep = 4096
	// outputShow is how much of it an error shows, from the end too.
	outputShow = 300
	// agentWaitDelay bounds the wait for an agent's output pipes after it
	// exited or was killed (a stray grandchild may hold them open).
	agentWaitDelay = time.Second
)

// Agent is an external fence agent speaking the fence-agents stdin protocol,
// as Pacemaker's fencer runs fence_ipmilan, fence_virsh, fence_aws and the
// others: the executable is run with no arguments and reads
//
//	action=off
//	ip=10.0.0.2
//	port=node-b
//	username=admin
//
// on its stdin (the action first, then the options sorted by name), then
// reports with its exit code: 0 success, anything else failure; for
// "status" 0 means on and 2 off.
//
// An agent that outlives its timeout or its context is killed with its
// whole process group, and the call fails with an error matching
// ErrTimeout. Failures are *AgentError values.
//
// An Agent is safe for concurrent use: each call runs its own process.
type Agent struct {
	path    string
	options map[string]string
	timeout time.Duration
}

var _ Switcher = (*Agent)(nil)

// NewAgent checks that path (a file, or a name looked up in $PATH) is an
// executable and that options can be sent one per line, and returns the
// Agent. Option names are letters, digits, '_', '-' and '.'; values must not
// contain line breaks; "action" (and its older name "option") is chosen per
// call and cannot be an option. Every problem is reported at once. timeout
// bounds each call (DefaultTimeout when <= 0).
//
// Option values may be secrets (passwords): errors and String never show
// them.
func NewAgent(path string, options map[string]string, timeout time.Duration) (*Agent, error) {
	var problems []error
	resolved := path
	if path == "" {
		problems = append(problems, errors.New("fence agent: no executable given"))
	} else if p, err := exec.LookPath(path); err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			err = ee.Err
		}
		problems = append(problems, fmt.Errorf("fence agent %s: %w", path, err))
	} else {
		resolved = p
	}
	for _, k := range slices.Sorted(maps.Keys(options)) {
		if err := checkOption(k, options[k]); err != nil {
			problems = append(problems, fmt.Errorf("fence agent %s: %w", path, err))
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Agent{path: resolved, options: maps.Clone(options), timeout: timeout}, nil
}

// checkOption tells why an option cannot be sent on its own line, if it
// cannot. It never shows the value.
func checkOption(name, value string) error {
	switch {
	case name == "":
		return errors.New("an option has an empty name")
	case name == "action" || name == "option":
		return fmt.Errorf("option %q: the action is chosen per call, not configured", name)
	case strings.ContainsFunc(name, func(r rune) bool {
		return !(r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-' || r == '.'))
	}):
		return fmt.Errorf("option %q: a name may only hold ASCII letters, digits, '_', '-' and '.'", name)
	case strings.ContainsAny(value, "\n\r\x00"):
		return fmt.Errorf("option %q: the value contains a line break or NUL", name)
	}
	return nil
}

// String names the agent, without its options (they may hold passwords).
func (a *Agent) String() string { return "fence agent " + a.path }

// Off runs action=off: the agent powers the peer off.
func (a *Agent) Off(ctx context.Context) error { return a.expectOK(ctx, "off") }

// On runs action=on: the agent powers the peer on.
func (a *Agent) On(ctx context.Context) error { return a.expectOK(ctx, "on") }

// Reboot runs action=reboot: the agent powers the peer off, then on.
func (a *Agent) Reboot(ctx context.Context) error { return a.expectOK(ctx, "reboot") }

// Monitor runs action=monitor: the agent checks that the fence device
// answers, without changing anything.
func (a *Agent) Monitor(ctx context.Context) error { return a.expectOK(ctx, "monitor") }

// Status runs action=status: exit code 0 is On, 2 is Off, any other a
// failure.
func (a *Agent) Status(ctx context.Context) (Power, error) {
	r, err := a.run(ctx, "status")
	if err != nil {
		return Unknown, err
	}
	switch r.code {
	case agentOK:
		return On, nil
	case agentOff:
		return Off, nil
	}
	return Unknown, a.failure("status", r, fmt.Errorf("exit code %d, neither on (0) nor off (2)", r.code))
}

func (a *Agent) expectOK(ctx context.Context, action string) error {
	r, err := a.run(ctx, action)
	if err != nil {
		return err
	}
	if r.code != agentOK {
		return a.failure(action, r, nil)
	}
	return nil
}

// agentRun is what an agent that exited by itself left.
type agentRun struct {
	code           int
	stdout, stderr string
}

// run runs the agent for action and returns its exit code and output. The
// error, an *AgentError, is for an agent that did not exit by itself: it
// could not start, was killed, or outlived ctx or the agent's timeout.
func (a *Agent) run(ctx context.Context, action string) (agentRun, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, a.path)
	cmd.Stdin = strings.NewReader(agentInput(action, a.options))
	stdout, stderr := &tailBuffer{keep: outputKeep}, &tailBuffer{keep: outputKeep}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Its own process group, so that killing it kills what it started
	// (ipmitool, ssh, ...) too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = agentWaitDelay

	start := time.Now()
	err := cmd.Run()
	r := agentRun{code: -1, stdout: stdout.String(), stderr: stderr.String()}
	st := cmd.ProcessState
	if st != nil && st.Exited() {
		// It exited by itself, maybe just as the deadline came: its exit
		// code stands.
		r.code = st.ExitCode()
		return r, nil
	}
	var why error
	switch {
	case ctx.Err() != nil:
		cause := context.Cause(ctx)
		verb := "timed out"
		if !errors.Is(cause, context.DeadlineExceeded) {
			verb = "cut short (" + cause.Error() + ")"
		}
		what := "killed"
		if st == nil {
			what = "not started"
		}
		why = &timeoutError{
			msg:   fmt.Sprintf("%s after %v (timeout %v), %s", verb, time.Since(start).Round(time.Millisecond), a.timeout, what),
			cause: cause,
		}
	case st == nil:
		why = fmt.Errorf("cannot start: %w", err)
	default:
		why = fmt.Errorf("did not exit by itself: %s", st)
	}
	return r, a.failure(action, r, why)
}

func (a *Agent) failure(action string, r agentRun, why error) *AgentError {
	return &AgentError{
		Agent:    a.path,
		Action:   action,
		ExitCode: r.code,
		Stderr:   trimOutput(r.stderr, outputShow),
		Stdout:   trimOutput(r.stdout, outputShow),
		Err:      why,
	}
}

// agentInput is what an agent reads on its stdin: the action first, then
// the options sorted by name, one "key=value" line each.
func agentInput(action string, options map[string]string) string {
	var b strings.Builder
	b.WriteString("action=" + action + "\n")
	for _, k := range slices.Sorted(maps.Keys(options)) {
		b.WriteString(k + "=" + options[k] + "\n")
	}
	return b.String()
}

// AgentError is the failure of one run of a fence agent.
type AgentError struct {
	Agent    string // the executable
	Action   string // "off", "status", ...
	ExitCode int    // its exit code, -1 when it did not exit by itself
	Stderr   string // the end of its stderr, on one line, at most a few hundred bytes
	Stdout   string // the same for stdout
	// Err says why, when the exit code alone does not: a timeout (matching
	// ErrTimeout), a failure to start, a signal, an exit code that means
	// nothing for the action.
	Err error
}

func (e *AgentError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fence agent %s: %s: ", e.Agent, e.Action)
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		fmt.Fprintf(&b, "exit code %d", e.ExitCode)
	}
	switch {
	case e.Stderr != "":
		b.WriteString(": " + e.Stderr)
	case e.Stdout != "":
		b.WriteString(": stdout: " + e.Stdout)
	}
	return b.String()
}

func (e *AgentError) Unwrap() error { return e.Err }

// tailBuffer keeps about the last keep bytes written to it.
type tailBuffer struct {
	keep int
	b    []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.keep {
		t.b = t.b[:copy(t.b, t.b[len(t.b)-t.keep:])]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	if len(t.b) > t.keep {
		return string(t.b[len(t.b)-t.keep:])
	}
	return string(t.b)
}

// trimOutput makes a program's output fit in an error message: its
// non-blank lines joined with "; ", control characters replaced, and at
// most limit bytes, kept from the end.
func trimOutput(s string, limit int) string {
	var lines []string
	for line := range strings.Lines(strings.ToValidUTF8(s, "\uFFFD")) {
		line = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, line)
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	out := strings.Join(lines, "; ")
	if len(out) <= limit {
		return out
	}
	cut := len(out) - limit
	for cut < len(out) && !utf8.RuneStart(out[cut]) {
		cut++
	}
	return "..." + out[cut:]
}
