// Package demo is `twinbox demo`: an active/passive pair with automatic
// failover on loopback, two `twinbox serve` processes (harness.Pair),
// with the lines to try and a report of every role change as it happens.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/twinbox/twinbox/internal/harness"
)

// Usage is `twinbox demo -h`.
const Usage = `usage: twinbox demo [--data DIR] [--user demo] [--password demo] [--restart-after 5s]

Starts an active/passive pair with automatic failover on loopback, in one
command and without configuration: two 'twinbox serve' processes of this
binary, node a (the preferred node) and node b, each on its own data
directory and on free loopback ports, with a random heartbeat key and link
password, a self-signed certificate both trust on the replication link, and
the built-in process fence agent, which SIGKILLs the peer's process (its pid
file) before a node takes over. A demo user is added to both nodes.

It prints both nodes' IMAP and SMTP addresses, admin sockets and process ids, and
the lines to try; then it reports every role change as it happens (both
nodes' /status, polled every 200 ms). kill -9 the active's pid and watch the
passive fence it and take over. A node that exits is started again on its
data --restart-after the other node is seen active, and joins as the
passive; 0 leaves it down.

Ctrl-C stops both nodes (SIGTERM) and removes the data unless --data was
given.

Flags:`

// Bounds, pace and defaults of the demo.
const (
	demoPoll          = 200 * time.Millisecond // both /status, for role changes
	demoElectTimeout  = 60 * time.Second       // initdead is 10 s; the election is at once
	DefaultUser       = "demo"
	DefaultPassword   = "demo"
	demoDefaultDomain = "localhost"
)

// Config is one run of the demo.
type Config struct {
	// Bin is the twinbox binary the nodes run.
	Bin string
	// Data keeps the pair's data there; "" makes a temporary directory,
	// removed at the end.
	Data string
	// User and Password are the demo user's, added to both nodes.
	User, Password string
	// RestartAfter starts a node that exited again this long after the
	// other is seen active (0: never).
	RestartAfter time.Duration
	// Out receives what the demo says.
	Out io.Writer
}

// Run runs the demo until ctx ends (Ctrl-C), then stops both nodes and
// removes the data unless Config.Data was given.
func Run(ctx context.Context, cfg Config) (err error) {
	root, keep := cfg.Data, cfg.Data != ""
	if keep {
		if root, err = filepath.Abs(root); err == nil {
			err = os.MkdirAll(root, 0o700)
		}
	} else {
		root, err = os.MkdirTemp("", "twinbox-demo-")
	}
	if err != nil {
		return fmt.Errorf("demo: data directory: %w", err)
	}
	stdout := cfg.Out
	d := &demo{out: stdout, restartAfter: cfg.RestartAfter, user: cfg.User, password: cfg.Password}
	defer func() {
		if d.pair != nil {
			fmt.Fprintf(stdout, "%s stopping both nodes (SIGTERM)\n", clock())
			if serr := d.pair.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
			fmt.Fprintf(stdout, "%s both nodes stopped\n", clock())
		}
		if !keep {
			if rerr := os.RemoveAll(root); rerr != nil {
				err = errors.Join(err, rerr)
			} else {
				fmt.Fprintf(stdout, "%s removed %s\n", clock(), root)
			}
		}
		if err != nil {
			err = fmt.Errorf("demo: %w", err)
		}
	}()
	if d.pair, err = harness.NewPair(cfg.Bin, root, nil); err != nil {
		return err
	}
	if err := d.pair.AddUser(cfg.User, cfg.Password, 0); err != nil {
		return err
	}
	if err := d.pair.Start(ctx); err != nil {
		return err
	}
	active, views, err := d.pair.WaitActive(ctx, demoElectTimeout)
	if err != nil {
		return err
	}
	d.last = views
	d.banner(root, keep, active)
	return d.watch(ctx)
}

// demo is one run of `twinbox demo`.
type demo struct {
	out          io.Writer
	pair         *harness.Pair
	last         [2]harness.View // the last /status seen of each node
	restartAfter time.Duration
	user         string
	password     string
}

func clock() string { return time.Now().Format("15:04:05.000") }

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "%s "+format+"\n", append([]any{clock()}, args...)...)
}

// banner prints both nodes' addresses and the lines to try.
func (d *demo) banner(root string, keep bool, active int) {
	p, w := d.pair, d.out
	fmt.Fprintln(w, "twinbox demo: an active/passive pair with automatic failover, on loopback")
	if keep {
		fmt.Fprintf(w, "data in %s (kept)\n\n", root)
	} else {
		fmt.Fprintf(w, "data in %s (removed on Ctrl-C)\n\n", root)
	}
	for i, n := range p.Nodes {
		role := "passive, following node " + p.Names[1-i]
		if i == active {
			role = fmt.Sprintf("active at epoch %d", d.last[i].Epoch)
		}
		if i == 0 {
			role += " (the preferred node)"
		}
		fmt.Fprintf(w, "node %s  pid %d  %s\n", p.Names[i], n.PID(), role)
		fmt.Fprintf(w, "  IMAP   %s  (STARTTLS; plain login allowed on loopback)\n", n.Addrs["imap"])
		fmt.Fprintf(w, "  SMTP   %s  (STARTTLS)\n", n.Addrs["smtp"])
		fmt.Fprintf(w, "  admin  %s  (the admin API's socket)\n", n.AdminSocket())
		fmt.Fprintf(w, "  log    %s\n", n.LogPath)
	}
	addr := d.user + "@" + demoDefaultDomain
	fmt.Fprintf(w, "\nuser     %s  password %s\n\n", addr, d.password)

	a, b := p.Nodes[active], p.Nodes[1-active]
	tb := "twinbox"
	if _, err := exec.LookPath("twinbox"); err != nil {
		tb = p.Bin // go run: the binary lives as long as the demo
	}
	fmt.Fprintln(w, "Try:")
	fmt.Fprintf(w, "  swaks --server %s --from you@example.com --to %s\n", a.Addrs["smtp"], addr)
	fmt.Fprintf(w, "  curl -u %s:%s 'imap://%s/INBOX;UID=1'\n", d.user, d.password, a.Addrs["imap"])
	fmt.Fprintf(w, "  %s status --admin %s\n", tb, a.AdminSocket())
	fmt.Fprintf(w, "  kill -9 %d    # node %s, the active: node %s fences it and takes over within about 3 s\n",
		a.PID(), p.Names[active], p.Names[1-active])
	fmt.Fprintf(w, "  %s status --admin %s\n\n", tb, b.AdminSocket())
	if d.restartAfter > 0 {
		fmt.Fprintf(w, "A node that exits is started again on its data %v after the other is active, and joins as the passive.\n", d.restartAfter)
	} else {
		fmt.Fprintln(w, "A node that exits stays down (--restart-after 0).")
	}
	fmt.Fprintln(w, "Role changes are printed below as they happen. Ctrl-C stops both nodes.")
	fmt.Fprintln(w)
}

// demoRestarted is the end of a node's restart.
type demoRestarted struct {
	i   int
	err error
}

// watch reports role changes and exits until ctx ends, and starts a node
// that exited again after d.restartAfter.
func (d *demo) watch(ctx context.Context) error {
	p := d.pair
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()
	exits := make(chan int, 2)
	restarted := make(chan demoRestarted, 2)
	watchExit := func(i int) {
		ch := p.Nodes[i].Exited()
		wg.Go(func() {
			select {
			case <-ch:
				exits <- i
			case <-stop:
			}
		})
	}
	up := [2]bool{true, true}
	diedAt := [2]time.Time{}
	// A node that exited is started again restartAfter after its peer is
	// seen active (at once if the peer is down too): after the takeover,
	// so that it joins as the passive, as the demo says.
	var waiting [2]bool         // for the peer to be active
	var due [2]<-chan time.Time // a pending restart
	schedule := func(i int) {
		waiting[i] = false
		d.say("node %s will be started again in %v", p.Names[i], d.restartAfter)
		due[i] = time.After(d.restartAfter)
	}
	for i := range p.Nodes {
		watchExit(i)
	}
	t := time.NewTicker(demoPoll)
	defer t.Stop()
	for {
		restart := -1
		select {
		case <-ctx.Done():
			return nil
		case i := <-exits:
			n := p.Nodes[i]
			up[i], diedAt[i] = false, time.Now()
			d.last[i] = harness.View{}
			why := "exit status 0"
			if err := n.ExitErr(); err != nil {
				why = err.Error()
			}
			d.say("node %s exited (pid %d, %s)", p.Names[i], n.PID(), why)
			if d.restartAfter > 0 {
				waiting[i] = true
				if !up[1-i] {
					schedule(i)
				}
			}
			continue
		case <-due[0]:
			restart = 0
		case <-due[1]:
			restart = 1
		case r := <-restarted:
			n := p.Nodes[r.i]
			if r.err != nil {
				d.say("node %s did not come back; it stays down: %v", p.Names[r.i], r.err)
				continue
			}
			up[r.i], diedAt[r.i] = true, time.Time{}
			d.say("node %s is back, pid %d", p.Names[r.i], n.PID())
			watchExit(r.i)
			continue
		case <-t.C:
		}
		if restart >= 0 {
			due[restart] = nil
			d.say("starting node %s again on its data (it joins as the passive)", p.Names[restart])
			wg.Go(func() {
				err := p.Nodes[restart].Start(ctx)
				select {
				case restarted <- demoRestarted{restart, err}:
				case <-stop:
				}
			})
			continue
		}
		for i := range p.Nodes {
			if !up[i] {
				continue
			}
			v, err := p.View(ctx, i)
			if err != nil {
				continue // busy or going; the exit is reported by itself
			}
			d.report(i, d.last[i], v, diedAt[1-i])
			d.last[i] = v
			if v.Role == "active" && waiting[1-i] {
				schedule(1 - i)
			}
		}
	}
}

// report prints what changed on node i between two views.
func (d *demo) report(i int, was, now harness.View, peerDied time.Time) {
	p := d.pair
	name, peer := p.Names[i], p.Names[1-i]
	if now.Peer == "dead" && was.Peer != "dead" && was.Role != "" {
		d.say("node %s: no heartbeat from node %s within deadtime; it is declared dead", name, peer)
	}
	if now.Fencing != was.Fencing && was.Role != "" {
		switch {
		case now.Fencing == "peer confirmed off":
			d.say("node %s fenced node %s (confirmed off)", name, peer)
		case strings.HasPrefix(now.Fencing, "failed"):
			d.say("node %s could not fence node %s: %s", name, peer, now.Fencing)
		}
	}
	if now.Role != was.Role || now.Epoch != was.Epoch {
		switch now.Role {
		case "active":
			line := fmt.Sprintf("node %s is now active at epoch %d", name, now.Epoch)
			if !peerDied.IsZero() && was.Role != "" {
				line += fmt.Sprintf(", %.1f s after node %s exited", time.Since(peerDied).Seconds(), peer)
			}
			if now.Degraded {
				line += " (acknowledging alone: its peer is fenced)"
			}
			n := p.Nodes[i]
			d.say("%s; write to SMTP %s, IMAP %s", line, n.Addrs["smtp"], n.Addrs["imap"])
		default:
			d.say("node %s is now %s at epoch %d", name, now.Role, now.Epoch)
		}
	}
	if now.Role == "active" && was.Role == "active" && was.Degraded && !now.Degraded {
		d.say("node %s: the passive caught up; acknowledging with both nodes again", name)
	}
}
