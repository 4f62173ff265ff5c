package failover

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// TestMachine runs the scenarios in testdata/: each line of input is fed
// to the machine, and its actions (and, after `status`, its state) are
// compared with the expected output. Times are offsets from the start.
// Rewrite the expectations with -rewrite after a deliberate change.
func TestMachine(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var m *Machine
		var counter uint64 // the peer's heartbeats, numbered
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		at := func(d *datadriven.TestData) time.Time {
			var s string
			d.ScanArgs(t, "t", &s)
			dur, err := time.ParseDuration(s)
			if err != nil {
				d.Fatalf(t, "t=%s: %v", s, err)
			}
			return t0.Add(dur)
		}
		pos := func(d *datadriven.TestData, key string) Position {
			if !d.HasArg(key) {
				return Position{}
			}
			var s string
			d.ScanArgs(t, key, &s)
			last, epoch, ok := strings.Cut(s, "/")
			a, err1 := strconv.ParseUint(last, 10, 64)
			b, err2 := strconv.ParseUint(epoch, 10, 64)
			if !ok || err1 != nil || err2 != nil {
				d.Fatalf(t, "%s=%s: want LAST/EPOCH", key, s)
			}
			return Position{Last: a, LastEpoch: b}
		}
		u64 := func(d *datadriven.TestData, key string) uint64 {
			var v uint64
			if d.HasArg(key) {
				d.ScanArgs(t, key, &v)
			}
			return v
		}
		dur := func(d *datadriven.TestData, key string, def time.Duration) time.Duration {
			if !d.HasArg(key) {
				return def
			}
			var s string
			d.ScanArgs(t, key, &s)
			v, err := time.ParseDuration(s)
			if err != nil {
				d.Fatalf(t, "%s=%s: %v", key, s, err)
			}
			return v
		}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			var acts []Action
			switch d.Cmd {
			case "new":
				cfg := Config{Node: "a", Preferred: d.HasArg("preferred"), Fencing: !d.HasArg("nofence"),
					AutoFailback: d.HasArg("auto_failback"), Paths: []string{"udp", "nats"},
					Keepalive: dur(d, "keepalive", DefaultKeepalive), Warntime: dur(d, "warntime", DefaultWarntime),
					Deadtime: dur(d, "deadtime", DefaultDeadtime), Initdead: dur(d, "initdead", 5*time.Second),
					FenceDelay: dur(d, "fence_delay", 0), FenceRetry: dur(d, "fence_retry", 0), Witness: d.HasArg("witness")}
				if d.HasArg("node") {
					d.ScanArgs(t, "node", &cfg.Node)
				}
				if err := cfg.Validate(); err != nil {
					return "invalid: " + err.Error()
				}
				m = New(cfg, t0, u64(d, "epoch"), d.HasArg("standby"))
				if d.HasArg("active") {
					m.role = Active // as if promoted before the scenario
				}
				return "ok"
			case "ticks":
				// Ticks every 100ms up to t, as the driver does.
				end := at(d)
				for now := m.lastTick.Add(100 * time.Millisecond); !now.After(end); now = now.Add(100 * time.Millisecond) {
					acts = append(acts, m.Step(Tick{Now: now, Local: pos(d, "log"), PeerConfirmed: u64(d, "confirmed")})...)
				}
			case "tick":
				acts = m.Step(Tick{Now: at(d), Local: pos(d, "log"), PeerConfirmed: u64(d, "confirmed"), AheadAlone: d.HasArg("alone")})
			case "heard":
				p := PeerState{Node: "other", Role: Passive, Epoch: u64(d, "epoch"), Log: pos(d, "log"),
					Preferred: d.HasArg("preferred"), Standby: d.HasArg("standby"), Takeover: d.HasArg("takeover"),
					Handover: u64(d, "handover"), Hears: !d.HasArg("deaf"), Leaving: d.HasArg("leaving"),
					AheadAlone: d.HasArg("ahead_alone")}
				if d.HasArg("node") {
					d.ScanArgs(t, "node", &p.Node)
				}
				if d.HasArg("role") {
					var r string
					d.ScanArgs(t, "role", &r)
					p.Role = map[string]Role{"active": Active, "passive": Passive}[r]
				}
				path := "udp"
				if d.HasArg("path") {
					d.ScanArgs(t, "path", &path)
				}
				// Heartbeats are numbered in the order the scenario gives
				// them, unless counter= says otherwise (one sent earlier
				// arriving late on another path).
				counter++
				c := counter
				if d.HasArg("counter") {
					c = u64(d, "counter")
				}
				acts = m.Step(Heard{Path: path, At: at(d), Peer: p, Boot: 1, Counter: c})
			case "witness":
				// The witness's answer: witness t=.. [promote] epoch=N
				// granted|refused=why|noanswer holder=x holder_epoch=M
				r := WitnessReply{Promote: d.HasArg("promote"), Epoch: u64(d, "epoch"), Sent: at(d),
					Granted: d.HasArg("granted"), HolderEpoch: u64(d, "holder_epoch")}
				if d.HasArg("holder") {
					d.ScanArgs(t, "holder", &r.Holder)
				}
				if d.HasArg("refused") {
					d.ScanArgs(t, "refused", &r.Why)
				}
				if d.HasArg("noanswer") {
					r.Err = errors.New("no answer")
				}
				acts = m.Step(r)
			case "fence-done":
				acts = m.Step(FenceDone{Err: errArg(t, d)})
			case "promote-done":
				acts = m.Step(PromoteDone{Epoch: u64(d, "epoch"), Err: errArg(t, d)})
			case "demote-done":
				acts = m.Step(DemoteDone{Handover: u64(d, "handover"), Err: errArg(t, d)})
			case "command":
				c := map[string]Command{"switchover": CmdSwitchover, "promote": CmdPromote,
					"promote-force": CmdPromoteForce, "demote": CmdDemote}[d.CmdArgs[0].Key]
				var err error
				if acts, err = m.Command(c); err != nil {
					return "error: " + err.Error()
				}
			case "leave":
				m.Leave()
				self := m.Self()
				return fmt.Sprintf("leaving=%t", self.Leaving)
			case "status":
				s := m.Status()
				self := m.Self()
				out := fmt.Sprintf("role=%s epoch=%d busy=%s peer=%s fencing=%q degraded=%t standby=%t takeover=%t handover=%d reason=%q",
					s.Role, s.Epoch, orNone(s.Busy), s.Peer, s.Fencing, s.Degraded, s.Standby, self.Takeover, self.Handover, s.Reason)
				if s.Witness != "" {
					out += fmt.Sprintf(" witness=%q", s.Witness)
				}
				return out
			default:
				d.Fatalf(t, "unknown command %s", d.Cmd)
			}
			return formatActions(acts)
		})
	})
}

func errArg(t *testing.T, d *datadriven.TestData) error {
	if !d.HasArg("err") {
		return nil
	}
	var s string
	d.ScanArgs(t, "err", &s)
	return errors.New(s)
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatActions(acts []Action) string {
	if len(acts) == 0 {
		return "-"
	}
	var b strings.Builder
	for _, a := range acts {
		switch a := a.(type) {
		case Fence:
			b.WriteString("FENCE\n")
		case Promote:
			fmt.Fprintf(&b, "PROMOTE epoch=%d alone=%t\n", a.Epoch, a.Alone)
		case Demote:
			fmt.Fprintf(&b, "DEMOTE handover=%t (%s)\n", a.Handover, a.Reason)
		case SetDegraded:
			fmt.Fprintf(&b, "DEGRADED %t\n", a.On)
		case Announce:
			b.WriteString("ANNOUNCE\n")
		case AskWitness:
			fmt.Fprintf(&b, "ASK-WITNESS epoch=%d\n", a.Epoch)
		case Event:
			lvl := "info"
			if a.Warn {
				lvl = "warn"
			}
			fmt.Fprintf(&b, "%s: %s\n", lvl, a.Msg)
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}
