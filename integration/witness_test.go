package integration

import (
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/internal/harness"
	"github.com/twinbox/twinbox/internal/poll"
)

// withWitness starts a witness process (twinbox witness) and, for each
// node, a UDP relay in front of it, so that a test can cut one node off
// the witness.
func (p *foPair) withWitness(t *testing.T) {
	t.Helper()
	addr := freeUDPPort(t)
	cmd := exec.Command(p.bin, "witness", "--listen", addr, "--data", t.TempDir(), "--deadtime", "800ms")
	cmd.Env = append(harness.Env(), "TWINBOX_HEARTBEAT_KEY="+heartbeatKey)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("the witness's output:\n%s", out.String())
		}
	})
	for i := range 2 {
		r, err := harness.NewUDPRelay(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		p.witness[i] = r
	}
}

// twoActives samples both nodes' status until stop, and counts the
// samples in which both said active.
func (p *foPair) twoActives(t *testing.T) (stop func() int) {
	var both atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
			}
			sa, oka := p.nodes[0].foStatus()
			sb, okb := p.nodes[1].foStatus()
			if oka && okb && sa.Role == "active" && sb.Role == "active" {
				both.Add(1)
			}
		}
	})
	return func() int {
		close(done)
		wg.Wait()
		return int(both.Load())
	}
}

// TestWitnessPreventsTwoActives: both nodes have fence devices that lie
// (they report success and kill nothing), and a witness. Each of the three
// is cut off in turn, and the nodes from each other, with SMTP load on
// both nodes: never are both nodes active, no node acknowledges what the
// other lacks (no merge has anything acknowledged to re-apply), and every
// acknowledged message is on both nodes afterwards.
func TestWitnessPreventsTwoActives(t *testing.T) {
	type cut struct {
		name string
		// apply cuts (or heals) the links of the scenario.
		apply func(p *foPair, heal bool)
		// want is the node active during the cut (-1: whichever was).
		want int
	}
	set := func(heal bool, rs ...*harness.Relay) {
		for _, r := range rs {
			if heal {
				r.Heal()
			} else {
				r.Cut()
			}
		}
	}
	cuts := []cut{
		{"the active isolated", func(p *foPair, heal bool) {
			p.partition(heal)
			set(heal, p.witness[0])
		}, 1},
		{"the passive isolated", func(p *foPair, heal bool) {
			p.partition(heal)
			set(heal, p.witness[1])
		}, 0},
		{"the witness isolated", func(p *foPair, heal bool) {
			set(heal, p.witness[0], p.witness[1])
		}, 0},
		{"the nodes cut apart", func(p *foPair, heal bool) {
			p.partition(heal)
		}, 0},
	}
	for _, c := range cuts {
		t.Run(c.name, func(t *testing.T) {
			lying := writeScript(t, "fence-lies.sh", lyingFence)
			p := newFOPair(t, func(int) string { return lying })
			p.withRelays(t)
			p.withWitness(t)
			na, nb := p.startPreferred(t)
			stopBoth := p.twoActives(t)
			var la, lb load
			stopA := runLoadTo(t, &la, na.smtp, 2)
			stopB := runLoadTo(t, &lb, nb.smtp, 2)
			na.waitFor(t, 60*time.Second, "some deliveries", func() bool { return ackedCount(&la) >= 20 })
			c.apply(p, false)
			cutAt := time.Now()
			n0 := ackedCount(&la) + ackedCount(&lb)
			// The cut lasts 4 s and until the node that should be active
			// is, and has acknowledged deliveries after the cut.
			var st admin.Status
			err := poll.Until(t.Context(), 60*time.Second, "the expected node active and acknowledging during the cut", func() (bool, error) {
				var ok bool
				st, ok = p.nodes[c.want].foStatus()
				return ok && time.Since(cutAt) >= 4*time.Second && st.Role == "active" && st.Serving &&
					ackedCount(&la)+ackedCount(&lb) > n0+5, nil
			})
			if err != nil {
				p.dump(t)
				t.Fatal(err)
			}
			t.Logf("during the cut, %s: role %s, witness %q, reason %q", foNames[c.want], st.Role, st.Failover.Witness, st.Failover.Reason)
			c.apply(p, true)
			stopA()
			stopB()
			active := p.waitActive(t, -1)
			if both := stopBoth(); both > 0 {
				t.Errorf("both nodes said active in %d samples", both)
			}
			for i := range 2 {
				if s, _ := p.nodes[i].foStatus(); s.Merge != nil && s.Merge.Acked > 0 {
					t.Errorf("node %s had acknowledged alone what the other lacks: %+v", foNames[i], *s.Merge)
				}
			}
			all := union(&la, &lb)
			t.Logf("active after the heal: %s; acknowledged %d, temporary failures %d", foNames[active], len(all.acked),
				la.temporary.Load()+lb.temporary.Load())
			sameDigest(t, p.nodes[active], p.nodes[1-active])
			checkAcked(t, &pairNodes{active: p.nodes[active], passive: p.nodes[1-active]}, all)
		})
	}
}
