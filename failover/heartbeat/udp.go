package heartbeat

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

const (
	// udpSendTimeout bounds one UDP write (it never blocks in practice).
	udpSendTimeout = time.Second
	// udpRetry is the pause after a read error that is not the close,
	// so a persistent error cannot spin.
	udpRetry = 50 * time.Millisecond
)

// UDPPath is the UDP heartbeat path: datagrams to the peer's address,
// from any address (the signature decides what is accepted).
type UDPPath struct {
	conn *net.UDPConn
	peer *LazyAddr

	ch   chan []byte
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	err  error
}

// ListenUDP listens on listen ("host:port", port 0 picks one; see
// LocalAddr) and sends to peer ("host:port").
func ListenUDP(listen, peer string) (*UDPPath, error) {
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: udp listen address %q: %w", listen, err)
	}
	conn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: udp: %w", err)
	}
	p, err := NewUDPPath(conn, peer)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return p, nil
}

// NewUDPPath makes a path of a socket already bound (so that two sockets
// can learn each other's port before either path exists); the path owns
// conn from now on and closes it.
//
// A peer name that does not resolve yet (the peer's container not up, the
// network not back: seen in the docker lab, where the node exited and was
// restarted over and over) is not an error: sends fail, and the name is
// looked up again at most every resolveEvery, until it resolves.
func NewUDPPath(conn *net.UDPConn, peer string) (*UDPPath, error) {
	addr, err := NewLazyAddr(peer)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: udp peer: %w", err)
	}
	if _, err := addr.Resolve(); err != nil {
		if _, ok := errors.AsType[*net.DNSError](err); !ok {
			return nil, fmt.Errorf("heartbeat: udp peer: %w", err)
		}
	}
	p := &UDPPath{conn: conn, peer: addr, ch: make(chan []byte, receiveBuffer), done: make(chan struct{})}
	p.wg.Add(1)
	go p.read()
	return p, nil
}

// Name returns "udp".
func (p *UDPPath) Name() string { return "udp" }

// LocalAddr returns the address the path listens on.
func (p *UDPPath) LocalAddr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

// Send sends b to the peer in one datagram.
func (p *UDPPath) Send(b []byte) error {
	select {
	case <-p.done:
		return errClosed
	default:
	}
	if len(b) > MaxDatagram {
		return fmt.Errorf("heartbeat: udp: datagram of %d bytes, at most %d", len(b), MaxDatagram)
	}
	if err := p.conn.SetWriteDeadline(time.Now().Add(udpSendTimeout)); err != nil {
		return fmt.Errorf("heartbeat: udp: %w", err)
	}
	peer, err := p.peer.Resolve()
	if err != nil {
		return fmt.Errorf("heartbeat: udp peer: %w", err)
	}
	if _, err := p.conn.WriteToUDP(b, peer); err != nil {
		return fmt.Errorf("heartbeat: udp: send to %s: %w", peer, err)
	}
	return nil
}

// Receive returns the datagrams received; datagrams above MaxDatagram
// bytes are dropped unread.
func (p *UDPPath) Receive() <-chan []byte { return p.ch }

// Close closes the socket, stops the reader and closes Receive's channel.
func (p *UDPPath) Close() error {
	p.once.Do(func() {
		close(p.done)
		p.err = p.conn.Close()
		p.wg.Wait()
		close(p.ch)
	})
	return p.err
}

func (p *UDPPath) read() {
	defer p.wg.Done()
	// One byte more than the bound: a datagram that fills it is too long
	// (the kernel truncates it to the buffer).
	buf := make([]byte, MaxDatagram+1)
	for {
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (an ICMP error reported on the socket, say).
			t := time.NewTimer(udpRetry)
			select {
			case <-p.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if n > MaxDatagram {
			continue
		}
		select {
		case p.ch <- append([]byte(nil), buf[:n]...):
		case <-p.done:
			return
		}
	}
}
