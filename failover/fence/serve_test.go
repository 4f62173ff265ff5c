package fence_test

import (
	"encoding/xml"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/failover/fence"
)

// served is the outcome of one ServeAgent run.
type served struct {
	code           int
	stdout, stderr string
	opts           map[string]string // what newDevice was given; nil if not called
}

func serve(t *testing.T, stdin string, d fence.Device) served {
	t.Helper()
	var out, errOut strings.Builder
	var r served
	r.code = fence.ServeAgent(strings.NewReader(stdin), &out, &errOut, func(opts map[string]string) (fence.Device, error) {
		r.opts = maps.Clone(opts)
		if d == nil {
			return nil, errors.New("no such device")
		}
		return d, nil
	})
	r.stdout, r.stderr = out.String(), errOut.String()
	return r
}

func TestServeAgentOff(t *testing.T) {
	f := &fence.Fake{}
	r := serve(t, "# sent by the fencer\n\n  action=off  \nport=node-b\nnodename=node-b\npassword=\"with spaces \"\nflag\n", f)
	if r.code != fence.ExitOK || r.stdout != "Success: Powered OFF\n" || r.stderr != "" {
		t.Fatalf("off: %+v", r)
	}
	want := map[string]string{"port": "node-b", "nodename": "node-b", "password": "with spaces ", "flag": ""}
	if !maps.Equal(r.opts, want) {
		t.Errorf("newDevice got %q, want %q", r.opts, want)
	}
	if off, status := f.Calls(); off != 1 || status < 1 {
		t.Errorf("off: Off called %d times, Status %d: not confirmed", off, status)
	}
}

func TestServeAgentStatus(t *testing.T) {
	f := &fence.Fake{}
	// "option" is the older name of "action".
	if r := serve(t, "option=status\n", f); r.code != fence.ExitOK || r.stdout != "Status: ON\n" {
		t.Fatalf("status of a running peer: %+v", r)
	}
	if r := serve(t, "action=reboot\n", f); r.code != fence.ExitOK {
		t.Fatalf("reboot: %+v", r)
	}
	if f.Power() != fence.Off {
		t.Fatal("reboot left the peer on: our devices leave it off")
	}
	if r := serve(t, "action=status\noption=on\n", f); r.code != fence.ExitOff || r.stdout != "Status: OFF\n" {
		t.Fatalf("status of a peer off: %+v", r)
	}
	if r := serve(t, "action=on\n", f); r.code != fence.ExitOK || f.Power() != fence.On {
		t.Fatalf("on: %+v", r)
	}
	if r := serve(t, "action=monitor\n", f); r.code != fence.ExitOK {
		t.Fatalf("monitor: %+v", r)
	}
}

func TestServeAgentFailures(t *testing.T) {
	hanging := &fence.Fake{}
	hanging.ScriptOff(fence.Step{Hang: true})
	stuckOn := &fence.Fake{}
	stuckOn.ScriptStatus(fence.Step{Power: fence.On})
	unreachable := &fence.Fake{}
	unreachable.ScriptStatus(fence.Step{Err: errors.New("no route to host")})
	unknown := &fence.Fake{}
	unknown.ScriptStatus(fence.Step{Power: fence.Unknown})

	for _, c := range []struct {
		name, stdin string
		device      fence.Device
		stderr      string // what stderr must say
	}{
		{"no action", "port=x\n", &fence.Fake{}, "no action"},
		{"unknown action", "action=list\n", &fence.Fake{}, "unknown action"},
		{"no device", "action=off\n", nil, "no such device"},
		{"on unsupported", "action=on\n", &fence.Process{}, "not supported"},
		{"off hangs", "action=off\npower_timeout=0.2\n", hanging, "timed out"},
		{"off not confirmed", "action=off\npower_timeout=0.2\n", stuckOn, "not confirmed"},
		{"status fails", "action=status\n", unreachable, "no route to host"},
		{"status unknown", "action=status\n", unknown, "unknown"},
		{"monitor fails", "action=monitor\n", unreachable, "no route to host"},
		{"bad power_timeout", "action=off\npower_timeout=soon\n", &fence.Fake{}, "power_timeout"},
		{"stdin too long", "action=off\n" + strings.Repeat("x", 70<<10), &fence.Fake{}, "more than"},
	} {
		r := serve(t, c.stdin, c.device)
		if r.code != fence.ExitFailed || !strings.Contains(r.stderr, c.stderr) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", c.name, r.code, r.stderr, c.stderr)
		}
	}
}

func TestServeAgentMetadata(t *testing.T) {
	r := serve(t, "action=metadata\n", nil)
	if r.code != fence.ExitOK || r.opts != nil {
		t.Fatalf("metadata: %+v (newDevice must not be called)", r)
	}
	var md struct {
		Name       string `xml:"name,attr"`
		Parameters []struct {
			Name string `xml:"name,attr"`
		} `xml:"parameters>parameter"`
		Actions []struct {
			Name string `xml:"name,attr"`
		} `xml:"actions>action"`
	}
	if err := xml.Unmarshal([]byte(r.stdout), &md); err != nil {
		t.Fatalf("metadata is not XML: %v\n%s", err, r.stdout)
	}
	var params, actions []string
	for _, p := range md.Parameters {
		params = append(params, p.Name)
	}
	for _, a := range md.Actions {
		actions = append(actions, a.Name)
	}
	if md.Name == "" || strings.Join(params, " ") != "action port power_timeout" ||
		strings.Join(actions, " ") != "on off reboot status monitor metadata validate-all" {
		t.Errorf("metadata: name %q, parameters %v, actions %v", md.Name, params, actions)
	}
}

func TestServeAgentValidate(t *testing.T) {
	if r := serve(t, "action=validate-all\nport=node-b\n", &fence.Fake{}); r.code != fence.ExitOK {
		t.Errorf("validate-all: %+v", r)
	}
	if r := serve(t, "action=validate-all\n", nil); r.code != fence.ExitFailed {
		t.Errorf("validate-all of a bad device: %+v", r)
	}
}

// The errors of a device run through ServeAgent reach the Agent that ran
// it: the real protocol end to end.
func TestAgentRunningServeAgentReportsItsErrors(t *testing.T) {
	a := helperAgent(t, "process", map[string]string{"nodename": "node-b"})
	err := a.Off(testContext(t))
	ae := agentError(t, err)
	if ae.ExitCode != fence.ExitFailed || !strings.Contains(ae.Stderr, "no port= option") {
		t.Fatalf("Off through ServeAgent without a port: %v", err)
	}
	if err := a.On(testContext(t)); err == nil {
		t.Fatal("On through ServeAgent without a port succeeded")
	}
}
