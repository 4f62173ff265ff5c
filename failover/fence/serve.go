package fence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Exit codes of ServeAgent, those of fence-agents.
const (
	ExitOK     = 0 // success; for status and monitor: on, reachable
	ExitFailed = 1 // failure, of any action
	ExitOff    = 2 // status: off
)

// DefaultPowerTimeout bounds a ServeAgent action when stdin has no
// power_timeout= line (the default of fence-agents).
const DefaultPowerTimeout = 20 * time.Second

// agentInputLimit bounds what ServeAgent reads from stdin.
const agentInputLimit = 64 << 10

// ServeAgent is the agent side of the fence-agents stdin protocol, so that
// this package's devices can be run as fence agents by anything that runs
// them (Pacemaker included), and tests exercise the real protocol.
//
// It reads "key=value" lines from stdin (surrounding blanks trimmed, blank
// lines and # comments ignored, a value in double quotes unquoted, a
// repeated key's last value kept): "action" (or its older name "option")
// is the action, "power_timeout" the seconds the action may take
// (DefaultPowerTimeout when absent), and every line, unknown ones included,
// goes to newDevice as options, action excepted. Then it runs the action:
//
//	off       Fence: power off and confirm with status
//	reboot    the same: our devices leave the peer off
//	on        power on, for a Switcher; "not supported" otherwise
//	status    exit 0 when on, 2 when off
//	monitor   exit 0 when status can be asked, whatever the answer
//	validate-all  exit 0 when newDevice accepts the options
//	metadata  print an XML description (without calling newDevice)
//
// It returns the exit code (ExitOK, ExitOff for status off, ExitFailed for
// any failure), prints what fence-agents print on stdout, and writes errors
// to stderr.
func ServeAgent(stdin io.Reader, stdout, stderr io.Writer, newDevice func(opts map[string]string) (Device, error)) int {
	opts, err := parseAgentInput(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "fence-agent: %v\n", err)
		return ExitFailed
	}
	action := opts["action"]
	delete(opts, "action")
	fail := func(err error) int {
		fmt.Fprintf(stderr, "fence-agent: %s: %v\n", action, err)
		return ExitFailed
	}
	switch action {
	case "metadata":
		io.WriteString(stdout, agentMetadata)
		return ExitOK
	case "":
		fmt.Fprintln(stderr, "fence-agent: no action= line on stdin")
		return ExitFailed
	case "off", "reboot", "on", "status", "monitor", "validate-all":
	default:
		return fail(errors.New("unknown action (want off, reboot, on, status, monitor, validate-all or metadata)"))
	}

	timeout := DefaultPowerTimeout
	if s, ok := opts["power_timeout"]; ok {
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil || secs <= 0 || secs > 24*3600 {
			return fail(fmt.Errorf("power_timeout=%q: want seconds, more than 0", s))
		}
		timeout = time.Duration(secs * float64(time.Second))
	}
	d, err := newDevice(opts)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	switch action {
	case "off", "reboot":
		if err := Fence(ctx, d, timeout); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, "Success: Powered OFF")
	case "on":
		s, ok := d.(Switcher)
		if !ok {
			return fail(errors.New("not supported by this fence device"))
		}
		if err := s.On(ctx); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, "Success: Powered ON")
	case "status":
		p, err := d.Status(ctx)
		switch {
		case err != nil:
			return fail(err)
		case p == On:
			fmt.Fprintln(stdout, "Status: ON")
		case p == Off:
			fmt.Fprintln(stdout, "Status: OFF")
			return ExitOff
		default:
			return fail(fmt.Errorf("the device reports the power %v", p))
		}
	case "monitor":
		if _, err := d.Status(ctx); err != nil {
			return fail(err)
		}
	}
	return ExitOK
}

// parseAgentInput reads fence-agents stdin lines into options, as
// fence-agents' fencing.py does; "option" is an older name of "action".
func parseAgentInput(r io.Reader) (map[string]string, error) {
	b, err := io.ReadAll(io.LimitReader(r, agentInputLimit+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(b) > agentInputLimit {
		return nil, fmt.Errorf("stdin: more than %d bytes", agentInputLimit)
	}
	opts := make(map[string]string)
	var older string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, _ := strings.Cut(line, "=")
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		if key == "option" {
			older = value
			continue
		}
		opts[key] = value
	}
	if _, ok := opts["action"]; !ok && older != "" {
		opts["action"] = older
	}
	return opts, nil
}

// agentMetadata is the description "metadata" prints, in the format of
// fence-agents.
const agentMetadata = `<?xml version="1.0" ?>
<resource-agent name="fence_twinbox" shortdesc="Fence agent for twinbox's built-in fence devices">
<longdesc>Powers off the peer of a twinbox pair through one of twinbox's built-in fence devices (a Docker container, a local process), and confirms it with a status query.</longdesc>
<vendor-url>https://github.com/twinbox/twinbox</vendor-url>
<parameters>
	<parameter name="action" unique="0" required="1">
		<getopt mixed="-o, --action=[action]" />
		<content type="string" />
		<shortdesc lang="en">Fencing action</shortdesc>
	</parameter>
	<parameter name="port" unique="0" required="1">
		<getopt mixed="-n, --plug=[id]" />
		<content type="string" />
		<shortdesc lang="en">The peer: a container name, or a pid file (plug= is accepted too)</shortdesc>
	</parameter>
	<parameter name="power_timeout" unique="0" required="0">
		<getopt mixed="--power-timeout=[seconds]" />
		<content type="second" default="20" />
		<shortdesc lang="en">Seconds an action may take, confirmation included</shortdesc>
	</parameter>
</parameters>
<actions>
	<action name="on" automatic="0"/>
	<action name="off" />
	<action name="reboot" />
	<action name="status" />
	<action name="monitor" />
	<action name="metadata" />
	<action name="validate-all" />
</actions>
</resource-agent>
`
