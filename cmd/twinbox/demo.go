package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/twinbox/twinbox/protocols/users"
)

const demoUsage = `usage: twinbox demo [--data DIR] [--user demo] [--password demo] [--restart-after 5s]

Starts an active/passive pair with automatic failover on loopback, in one
command and without configuration: two 'twinbox serve' processes of this
binary, node a (the preferred node) and node b, each on its own data
directory and on free loopback ports, with a random heartbeat key and link
password, a self-signed certificate both trust on the replication link, and
the built-in process fence agent, which SIGKILLs the peer's process (its pid
file) before a node takes over. A demo user is added to both nodes.

It prints both nodes' IMAP, SMTP and admin addresses and process ids, and
the lines to try; then it reports every role change as it happens (both
nodes' /status, polled every 200 ms). kill -9 the active's pid and watch the
passive fence it and take over. A node that exits is started again on its
data --restart-after the other node is seen active, and joins as the
passive; 0 leaves it down.

Ctrl-C stops both nodes (SIGTERM) and removes the data unless --data was
given.

Flags:`

// Bounds and pace of the demo.
const (
	demoPoll          = 200 * time.Millisecond // both /status, for role changes
	demoElectTimeout  = 60 * time.Second       // initdead is 10 s; the election is at once
	demoDefaultUser   = "demo"
	demoDefaultPass   = "demo"
	demoDefaultDomain = "localhost"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "keep the pair's data in this directory (default: a temporary one, removed at the end)")
	user := fs.String("user", demoDefaultUser, "the demo user, added to both nodes")
	password := fs.String("password", demoDefaultPass, "the demo user's password")
	restartAfter := fs.Duration("restart-after", 5*time.Second, "start a node that exited again this long after the other is seen active, as the passive (0: never)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, demoUsage)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args, "demo"); help || err != nil {
		return err
	}
	if *restartAfter < 0 {
		return fmt.Errorf("%w: --restart-after %v: want 0 or more", errUsage, *restartAfter)
	}
	if err := users.CheckPassword(*password); err != nil {
		return fmt.Errorf("%w: --password: %v", errUsage, err)
	}
	bin, err := twinboxBin(ctx, "TWINBOX_DEMO_BIN")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	root, keep := *data, *data != ""
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
	d := &demo{out: stdout, restartAfter: *restartAfter, user: *user, password: *password}
	defer func() {
		if d.pair != nil {
			fmt.Fprintf(stdout, "%s stopping both nodes (SIGTERM)\n", clock())
			if serr := d.pair.stop(); serr != nil {
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
	if d.pair, err = newLoopPair(bin, root, nil); err != nil {
		return err
	}
	if err := d.pair.addUser(*user, *password, 0); err != nil {
		return err
	}
	if err := d.pair.start(ctx); err != nil {
		return err
	}
	active, err := d.pair.waitActive(ctx, demoElectTimeout)
	if err != nil {
		return err
	}
	d.banner(root, keep, active)
	return d.watch(ctx)
}

// twinboxBin returns the twinbox binary to start nodes from: the one the
// environment variable names (a test points it at a twinbox it built, as
// the test binary itself cannot serve), else this executable.
func twinboxBin(ctx context.Context, env string) (string, error) {
	bin := os.Getenv(env)
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return "", fmt.Errorf("the twinbox binary: %w", err)
		}
	}
	if err := checkTwinboxBinary(ctx, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// demo is one run of `twinbox demo`.
type demo struct {
	out          io.Writer
	pair         *loopPair
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
	for i, n := range p.nodes {
		role := "passive, following node " + p.names[1-i]
		if i == active {
			role = fmt.Sprintf("active at epoch %d", p.last[i].epoch)
		}
		if i == 0 {
			role += " (the preferred node)"
		}
		fmt.Fprintf(w, "node %s  pid %d  %s\n", p.names[i], n.cmd.Process.Pid, role)
		fmt.Fprintf(w, "  IMAP   %s  (STARTTLS; plain login allowed on loopback)\n", n.addrs["imap"])
		fmt.Fprintf(w, "  SMTP   %s  (STARTTLS)\n", n.addrs["smtp"])
		fmt.Fprintf(w, "  admin  http://%s/status\n", n.addrs["admin"])
		fmt.Fprintf(w, "  log    %s\n", n.logPath)
	}
	addr := d.user + "@" + demoDefaultDomain
	fmt.Fprintf(w, "\nuser     %s  password %s\n\n", addr, d.password)

	a, b := p.nodes[active], p.nodes[1-active]
	tb := "twinbox"
	if _, err := exec.LookPath("twinbox"); err != nil {
		tb = p.bin // go run: the binary lives as long as the demo
	}
	fmt.Fprintln(w, "Try:")
	fmt.Fprintf(w, "  swaks --server %s --from you@example.com --to %s\n", a.addrs["smtp"], addr)
	fmt.Fprintf(w, "  curl -u %s:%s 'imap://%s/INBOX;UID=1'\n", d.user, d.password, a.addrs["imap"])
	fmt.Fprintf(w, "  %s status --admin %s\n", tb, a.addrs["admin"])
	fmt.Fprintf(w, "  kill -9 %d    # node %s, the active: node %s fences it and takes over within about 3 s\n",
		a.cmd.Process.Pid, p.names[active], p.names[1-active])
	fmt.Fprintf(w, "  %s status --admin %s\n\n", tb, b.addrs["admin"])
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
		ch := p.nodes[i].exited
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
		d.say("node %s will be started again in %v", p.names[i], d.restartAfter)
		due[i] = time.After(d.restartAfter)
	}
	for i := range p.nodes {
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
			n := p.nodes[i]
			up[i], diedAt[i] = false, time.Now()
			p.last[i] = nodeView{}
			why := "exit status 0"
			if n.exitErr != nil {
				why = n.exitErr.Error()
			}
			d.say("node %s exited (pid %d, %s)", p.names[i], n.cmd.Process.Pid, why)
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
			n := p.nodes[r.i]
			if r.err != nil {
				d.say("node %s did not come back; it stays down: %v", p.names[r.i], r.err)
				continue
			}
			up[r.i], diedAt[r.i] = true, time.Time{}
			d.say("node %s is back, pid %d", p.names[r.i], n.cmd.Process.Pid)
			watchExit(r.i)
			continue
		case <-t.C:
		}
		if restart >= 0 {
			due[restart] = nil
			d.say("starting node %s again on its data (it joins as the passive)", p.names[restart])
			wg.Go(func() {
				err := p.nodes[restart].start(ctx, p.rb.http)
				select {
				case restarted <- demoRestarted{restart, err}:
				case <-stop:
				}
			})
			continue
		}
		for i := range p.nodes {
			if !up[i] {
				continue
			}
			v, err := p.view(ctx, i)
			if err != nil {
				continue // busy or going; the exit is reported by itself
			}
			d.report(i, p.last[i], v, diedAt[1-i])
			p.last[i] = v
			if v.role == "active" && waiting[1-i] {
				schedule(1 - i)
			}
		}
	}
}

// report prints what changed on node i between two views.
func (d *demo) report(i int, was, now nodeView, peerDied time.Time) {
	p := d.pair
	name, peer := p.names[i], p.names[1-i]
	if now.peer == "dead" && was.peer != "dead" && was.role != "" {
		d.say("node %s: no heartbeat from node %s within deadtime; it is declared dead", name, peer)
	}
	if now.fencing != was.fencing && was.role != "" {
		switch {
		case now.fencing == "peer confirmed off":
			d.say("node %s fenced node %s (confirmed off)", name, peer)
		case strings.HasPrefix(now.fencing, "failed"):
			d.say("node %s could not fence node %s: %s", name, peer, now.fencing)
		}
	}
	if now.role != was.role || now.epoch != was.epoch {
		switch now.role {
		case "active":
			line := fmt.Sprintf("node %s is now active at epoch %d", name, now.epoch)
			if !peerDied.IsZero() && was.role != "" {
				line += fmt.Sprintf(", %.1f s after node %s exited", time.Since(peerDied).Seconds(), peer)
			}
			if now.degraded {
				line += " (acknowledging alone: its peer is fenced)"
			}
			n := p.nodes[i]
			d.say("%s; write to SMTP %s, IMAP %s", line, n.addrs["smtp"], n.addrs["imap"])
		default:
			d.say("node %s is now %s at epoch %d", name, now.role, now.epoch)
		}
	}
	if now.role == "active" && was.role == "active" && was.degraded && !now.degraded {
		d.say("node %s: the passive caught up; acknowledging with both nodes again", name)
	}
}

// loopPair is an active/passive pair with automatic failover on
// loopback: two `twinbox serve` processes of one binary, node a (the
// preferred node) and node b, on data directories under root. Every
// address is picked free once and kept, so that a node restarted on its
// data serves where it did and its peer finds it again.
type loopPair struct {
	bin, root string
	names     [2]string
	nodes     [2]*benchNode
	last      [2]nodeView // the last /status seen of each node
	rb        *replBench  // its status, digest and wait helpers
}

// nodeView is the part of a node's /status a role change shows in.
type nodeView struct {
	role, peer, fencing string
	epoch               uint64
	degraded            bool
}

// newLoopPair lays the pair out under root: a certificate both nodes
// serve and trust on the link, a random heartbeat key and link password,
// and free ports. extra are more `serve` flags for both nodes. Nothing
// runs yet.
func newLoopPair(bin, root string, extra []string) (*loopPair, error) {
	p := &loopPair{bin: bin, root: root, names: [2]string{"a", "b"}}
	p.rb = &replBench{cfg: replBenchConfig{Bin: bin}, root: root, http: &http.Client{Timeout: 5 * time.Second}, began: time.Now()}
	tlsDir := filepath.Join(root, "tls")
	cert, key := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	if _, err := os.Stat(cert); errors.Is(err, os.ErrNotExist) {
		if err := selfSigned(tlsDir, cert, key, "localhost"); err != nil {
			return nil, fmt.Errorf("a certificate for the pair: %w", err)
		}
	}
	tcp, udp, err := freeLoopbackAddrs(2*5, 2)
	if err != nil {
		return nil, err
	}
	p.rb.linkPassword = randomHex(16)
	env := append(benchEnv(), "TWINBOX_LINK_PASSWORD="+p.rb.linkPassword, "TWINBOX_HEARTBEAT_KEY="+randomHex(32))
	for i, name := range p.names {
		peer := p.names[1-i]
		role := map[int]string{0: "active", 1: "passive"}[i]
		port := func(k int) string { return tcp[5*i+k] }
		peerPort := func(k int) string { return tcp[5*(1-i)+k] }
		n := &benchNode{
			name: name, bin: bin, data: filepath.Join(root, name),
			logPath: filepath.Join(root, name+".log"), paired: true, env: env,
		}
		n.args = append([]string{"serve", "--data", n.data, "--hostname", "localhost",
			"--role", role, "--failover=true", "--node-name", name, "--peer-name", peer,
			"--imap-addr", port(0), "--imaps-addr", "", "--smtp-addr", port(1), "--smtps-addr", "",
			"--lmtp-addr", port(2), "--admin-addr", port(3),
			"--nats-addr", port(4), "--peer-nats", peerPort(4),
			"--heartbeat-addr", udp[i], "--peer-heartbeat", udp[1-i],
			"--tls-cert", cert, "--tls-key", key, "--link-ca", cert,
			"--fence-agent", "process", "--fence-options", "port=" + p.pidFile(peer),
			"--pid-file", p.pidFile(name)}, extra...)
		if err := os.MkdirAll(n.data, 0o700); err != nil {
			return nil, err
		}
		p.nodes[i] = n
	}
	return p, nil
}

func (p *loopPair) pidFile(name string) string { return filepath.Join(p.root, name+".pid") }

// freeLoopbackAddrs returns TCP and UDP loopback addresses nothing
// listens on now, all distinct: each is held open until every one is
// picked.
func freeLoopbackAddrs(nTCP, nUDP int) (tcp, udp []string, err error) {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for range nTCP {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("pick a free port: %w", err)
		}
		closers = append(closers, ln)
		tcp = append(tcp, ln.Addr().String())
	}
	for range nUDP {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("pick a free UDP port: %w", err)
		}
		closers = append(closers, pc)
		udp = append(udp, pc.LocalAddr().String())
	}
	return tcp, udp, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// addUser adds name to both nodes' passwd-files, or sets its password
// where it is already (a kept --data directory). cost 0 is the default.
func (p *loopPair) addUser(name, password string, cost int) error {
	for _, n := range p.nodes {
		path := filepath.Join(n.data, "passwd")
		opts := &users.EditOptions{Cost: cost}
		err := users.Add(path, name, password, opts)
		if errors.Is(err, users.ErrExists) {
			err = users.SetPassword(path, name, password, opts)
		}
		if err != nil {
			return fmt.Errorf("user %s on node %s: %w", name, n.name, err)
		}
	}
	return nil
}

// start starts both nodes, and stops them again if either fails.
func (p *loopPair) start(ctx context.Context) error {
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, n := range p.nodes {
		wg.Go(func() { errs[i] = n.start(ctx, p.rb.http) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return errors.Join(err, p.stop())
	}
	return nil
}

// stop sends SIGTERM to both nodes at once and waits for them. At once,
// because each stops its failover first: one stopped alone would be
// declared dead by the other, fenced and taken over.
//
// The passive goes first: it tells the active it is leaving, and the
// active, alone, then stops without trying to hand over to a node that
// is going away (and without the passive fencing it meanwhile).
func (p *loopPair) stop() error {
	order := []int{0, 1}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if v, err := p.view(ctx, 0); err == nil && v.role == "active" {
		order = []int{1, 0}
	}
	cancel()
	var errs []error
	for _, i := range order {
		n := p.nodes[i]
		if n == nil {
			continue
		}
		if !n.running() {
			n.stopped = true // its exit was reported when it happened
			continue
		}
		errs = append(errs, n.stop())
	}
	return errors.Join(errs...)
}

// running reports whether the node's process was started and has not
// exited.
func (n *benchNode) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// view reads node i's /status.
func (p *loopPair) view(ctx context.Context, i int) (nodeView, error) {
	st, err := p.rb.status(ctx, p.nodes[i])
	if err != nil {
		return nodeView{}, err
	}
	if st.Failover == nil {
		return nodeView{}, fmt.Errorf("node %s: no failover in its /status", p.names[i])
	}
	f := st.Failover
	return nodeView{role: f.Role, peer: f.Peer, fencing: f.Fencing, epoch: f.Epoch, degraded: f.Degraded}, nil
}

// waitActive waits until one node reports itself active and returns it;
// p.last then holds both nodes' views.
func (p *loopPair) waitActive(ctx context.Context, timeout time.Duration) (int, error) {
	active := -1
	err := p.rb.waitFor(ctx, timeout, "a node to become active", p.nodes[0], func() (bool, error) {
		var errs []error
		for i := range p.nodes {
			v, err := p.view(ctx, i)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			p.last[i] = v
			if v.role == "active" {
				active = i
			}
		}
		return active >= 0, errors.Join(errs...)
	}, p.nodes[1])
	return active, err
}
