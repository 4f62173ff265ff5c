package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/twinbox/twinbox/internal/tlscert"
	"github.com/twinbox/twinbox/protocols/users"
)

// Pair is an active/passive pair with automatic failover on loopback:
// two `twinbox serve` processes of one binary, node a (the preferred
// node) and node b, on data directories under Root. Every address is
// picked free once and kept, so that a node restarted on its data serves
// where it did and its peer finds it again.
type Pair struct {
	Bin, Root string
	Names     [2]string
	Nodes     [2]*Node
	// LinkPassword is the replication link's, shared by both nodes.
	LinkPassword string
}

// NewPair lays the pair out under root: a certificate both nodes serve
// and trust on the link, a random heartbeat key and link password, free
// ports, the built-in process fence agent (each node SIGKILLs the other's
// pid file). extra are more serve flags for both nodes. Nothing runs yet.
func NewPair(bin, root string, extra []string) (*Pair, error) {
	p := &Pair{Bin: bin, Root: root, Names: [2]string{"a", "b"}, LinkPassword: randomHex(16)}
	tlsDir := filepath.Join(root, "tls")
	cert, key := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	if _, err := os.Stat(cert); errors.Is(err, os.ErrNotExist) {
		if err := tlscert.SelfSigned(tlsDir, cert, key, "localhost"); err != nil {
			return nil, fmt.Errorf("a certificate for the pair: %w", err)
		}
	}
	tcp, udp, err := FreeLoopback(2*5, 2)
	if err != nil {
		return nil, err
	}
	env := []string{"TWINBOX_LINK_PASSWORD=" + p.LinkPassword, "TWINBOX_HEARTBEAT_KEY=" + randomHex(32)}
	for i, name := range p.Names {
		peer := p.Names[1-i]
		role := map[int]string{0: "active", 1: "passive"}[i]
		port := func(k int) string { return tcp[5*i+k] }
		peerPort := func(k int) string { return tcp[5*(1-i)+k] }
		n := &Node{Name: name, Bin: bin, Data: filepath.Join(root, name), LogPath: filepath.Join(root, name+".log"),
			Env: append(Env(), env...)}
		n.Args = append([]string{"serve", "--data", n.Data, "--hostname", "localhost",
			"--role", role, "--failover=true", "--node-name", name, "--peer-name", peer,
			"--imap-addr", port(0), "--imaps-addr", "", "--smtp-addr", port(1), "--smtps-addr", "",
			"--lmtp-addr", port(2), "--metrics-addr", port(3),
			"--nats-addr", port(4), "--peer-nats", peerPort(4),
			"--heartbeat-addr", udp[i], "--peer-heartbeat", udp[1-i],
			"--tls-cert", cert, "--tls-key", key, "--link-ca", cert,
			"--fence-agent", "process", "--fence-options", "port=" + p.PidFile(peer),
			"--pid-file", p.PidFile(name)}, extra...)
		if err := os.MkdirAll(n.Data, 0o700); err != nil {
			return nil, err
		}
		p.Nodes[i] = n
	}
	return p, nil
}

// PidFile is where node name writes its process id.
func (p *Pair) PidFile(name string) string { return filepath.Join(p.Root, name+".pid") }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// AddUser adds name to both nodes' passwd-files, or sets its password
// where it is already (a kept data directory). cost 0 is the default.
func (p *Pair) AddUser(name, password string, cost int) error {
	for _, n := range p.Nodes {
		path := filepath.Join(n.Data, "passwd")
		opts := &users.EditOptions{Cost: cost}
		err := users.Add(path, name, password, opts)
		if errors.Is(err, users.ErrExists) {
			err = users.SetPassword(path, name, password, opts)
		}
		if err != nil {
			return fmt.Errorf("user %s on node %s: %w", name, n.Name, err)
		}
	}
	return nil
}

// Start starts both nodes, and stops them again if either fails.
func (p *Pair) Start(ctx context.Context) error {
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, n := range p.Nodes {
		wg.Go(func() { errs[i] = n.Start(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return errors.Join(err, p.Stop())
	}
	return nil
}

// Stop sends SIGTERM to both nodes and waits for them, the passive first:
// it tells the active it is leaving, and the active, alone, then stops
// without trying to hand over to a node that is going away (and without
// the passive fencing it meanwhile).
func (p *Pair) Stop() error {
	order := []int{0, 1}
	if v, err := p.View(context.Background(), 0); err == nil && v.Role == "active" {
		order = []int{1, 0}
	}
	var errs []error
	for _, i := range order {
		if n := p.Nodes[i]; n != nil {
			errs = append(errs, n.Stop())
		}
	}
	return errors.Join(errs...)
}

// View is the part of a node's /status a role change shows in.
type View struct {
	Role, Peer, PeerRole, Fencing string
	Epoch                         uint64
	Degraded, Outdated            bool
}

// View reads node i's /status.
func (p *Pair) View(ctx context.Context, i int) (View, error) {
	st, err := p.Nodes[i].Status(ctx)
	if err != nil {
		return View{}, err
	}
	f := st.Failover
	if f == nil {
		return View{}, fmt.Errorf("node %s: no failover in its /status", p.Names[i])
	}
	return View{Role: f.Role, Peer: f.Peer, PeerRole: f.PeerRole, Fencing: f.Fencing, Epoch: f.Epoch,
		Degraded: f.Degraded, Outdated: f.Outdated}, nil
}

// WaitActive waits until one node reports itself active and returns it
// with both nodes' views.
func (p *Pair) WaitActive(ctx context.Context, bound time.Duration) (int, [2]View, error) {
	active := -1
	var views [2]View
	err := p.Nodes[0].WaitFor(ctx, bound, "a node to become active", func() (bool, error) {
		var errs []error
		for i := range p.Nodes {
			v, err := p.View(ctx, i)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			views[i] = v
			if v.Role == "active" {
				active = i
			}
		}
		return active >= 0, errors.Join(errs...)
	}, p.Nodes[1])
	return active, views, err
}

// PassiveCurrent reports whether node i is a passive that follows an
// active and lacks nothing it acknowledged: the active may be killed
// without losing an acknowledged write.
func (p *Pair) PassiveCurrent(ctx context.Context, i int) bool {
	v, err := p.View(ctx, i)
	return err == nil && v.Role == "passive" && !v.Outdated && v.PeerRole == "active"
}
