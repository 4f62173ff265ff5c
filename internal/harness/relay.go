package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Relay stands between a node and its peer's address on loopback, so
// that a test can cut the network between two processes without root (no
// network namespaces, no iptables): the node is given the relay's address
// as its peer's, and the relay forwards to the real one.
//
// A cut relay behaves like a pulled cable, not like a refused
// connection: open TCP connections stay open but no byte crosses in
// either direction (the senders' buffers fill, TCP's timeouts and the
// applications' pings are what notice), new connections are accepted but
// carry nothing, and UDP datagrams are dropped. Heal lets the held bytes
// through, as TCP's retransmissions would after a real partition. A rate
// limit slows every direction to about that many bytes a second (a slow
// link).
type Relay struct {
	target string
	tcp    net.Listener
	udp    *net.UDPConn
	out    *net.UDPConn // UDP: the socket the datagrams are sent from

	mu     sync.Mutex
	cut    bool
	healed chan struct{} // closed on Heal; replaced on Cut
	rate   int           // bytes per second, 0 unlimited
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	dropped atomic.Uint64               // UDP datagrams dropped by a cut
	client  atomic.Pointer[net.UDPAddr] // UDP: the last sender, where answers go
}

// NewTCPRelay listens on a loopback port the kernel chooses and forwards
// every connection to target.
func NewTCPRelay(target string) (*Relay, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay to %s: %w", target, err)
	}
	r := newRelay(target)
	r.tcp = l
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// NewUDPRelay listens on a loopback UDP port and forwards every datagram
// to target, and the target's answers back to the last sender (a witness
// answers; a heartbeat path does not).
func NewUDPRelay(target string) (*Relay, error) {
	in, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("relay to %s: %w", target, err)
	}
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("relay to %s: %w", target, err)
	}
	out, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("relay to %s: %w", target, err)
	}
	r := newRelay(target)
	r.udp, r.out = in, out
	r.wg.Add(2)
	go r.datagrams()
	go r.answers()
	return r, nil
}

func newRelay(target string) *Relay {
	h := make(chan struct{})
	close(h)
	return &Relay{target: target, healed: h, conns: map[net.Conn]struct{}{}}
}

// Addr is the address to give the node in place of its peer's.
func (r *Relay) Addr() string {
	if r.tcp != nil {
		return r.tcp.Addr().String()
	}
	return r.udp.LocalAddr().String()
}

// Cut stops all traffic through the relay until Heal.
func (r *Relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.cut {
		r.cut = true
		r.healed = make(chan struct{})
	}
}

// Heal lets traffic through again, the held bytes first.
func (r *Relay) Heal() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut {
		r.cut = false
		close(r.healed)
	}
}

// SetRate limits each direction of each connection to about bytesPerSec
// (0: no limit).
func (r *Relay) SetRate(bytesPerSec int) {
	r.mu.Lock()
	r.rate = bytesPerSec
	r.mu.Unlock()
}

// Dropped counts the UDP datagrams a cut dropped.
func (r *Relay) Dropped() uint64 { return r.dropped.Load() }

// Close stops the relay and closes its connections.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	if r.cut {
		close(r.healed) // wake the held copies; they see closed
	}
	r.mu.Unlock()
	var err error
	if r.tcp != nil {
		err = r.tcp.Close()
	}
	if r.udp != nil {
		err = errors.Join(r.udp.Close(), r.out.Close())
	}
	r.wg.Wait()
	return err
}

// pass waits until the relay is not cut, and reports whether it is still
// open.
func (r *Relay) pass() (rate int, open bool) {
	for {
		r.mu.Lock()
		cut, healed, rate, closed := r.cut, r.healed, r.rate, r.closed
		r.mu.Unlock()
		if closed {
			return 0, false
		}
		if !cut {
			return rate, true
		}
		<-healed
	}
}

func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *Relay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			return
		}
		if !r.track(c) {
			return
		}
		r.wg.Add(1)
		go r.serve(c)
	}
}

// serve connects c to the target once the relay lets traffic through
// (a connection made during a cut hangs, as a SYN into a partition
// would), then copies both ways.
func (r *Relay) serve(c net.Conn) {
	defer r.wg.Done()
	defer r.untrack(c)
	if _, open := r.pass(); !open {
		return
	}
	t, err := net.DialTimeout("tcp", r.target, 10*time.Second)
	if err != nil {
		return
	}
	if !r.track(t) {
		return
	}
	defer r.untrack(t)
	done := make(chan struct{}, 2)
	go func() { r.copy(t, c); done <- struct{}{} }()
	go func() { r.copy(c, t); done <- struct{}{} }()
	<-done
	// One side ended: end the other, as a TCP peer's close would.
	c.Close()
	t.Close()
	<-done
}

// copy forwards src to dst in small chunks, holding each chunk while the
// relay is cut and pacing them to the rate.
func (r *Relay) copy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			rate, open := r.pass()
			if !open {
				return
			}
			if rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate)) // the slow link's pace
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// answers forwards the target's datagrams to the last sender, unless cut.
func (r *Relay) answers() {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := r.out.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP refusal while the target is down
		}
		r.mu.Lock()
		drop := r.cut || r.closed
		r.mu.Unlock()
		to := r.client.Load()
		if drop || to == nil {
			r.dropped.Add(1)
			continue
		}
		r.udp.WriteToUDP(buf[:n], to)
	}
}

func (r *Relay) datagrams() {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.udp.ReadFromUDP(buf)
		if err != nil {
			return
		}
		r.client.Store(from)
		r.mu.Lock()
		drop := r.cut || r.closed
		r.mu.Unlock()
		if drop {
			r.dropped.Add(1)
			continue
		}
		r.out.Write(buf[:n])
	}
}
