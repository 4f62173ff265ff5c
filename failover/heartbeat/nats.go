package heartbeat

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// SubjectPrefix starts the subject a node receives its peer's heartbeats
// on: SubjectPrefix + node name.
const SubjectPrefix = "twinbox.heartbeat."

// NATSPath is the heartbeat path over the NATS link: it receives on this
// node's own server and publishes on the peer's.
type NATSPath struct {
	remote  *nats.Conn
	subject string // where the peer listens
	sub     *nats.Subscription

	mu     sync.Mutex
	closed bool
	ch     chan []byte
}

// NewNATSPath subscribes on local (a connection to this node's own NATS
// server) to SubjectPrefix+self and publishes to SubjectPrefix+peer on
// remote (a connection to the peer's server, which may be down or
// reconnecting). The connections stay the caller's: Close does not close
// them.
func NewNATSPath(local, remote *nats.Conn, self, peer string) (*NATSPath, error) {
	var errs []error
	if local == nil {
		errs = append(errs, errors.New("local connection is nil"))
	}
	if remote == nil {
		errs = append(errs, errors.New("remote connection is nil"))
	}
	for _, n := range []struct{ field, name string }{{"self", self}, {"peer", peer}} {
		if err := checkToken(n.name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.field, err))
		}
	}
	if self == peer {
		errs = append(errs, fmt.Errorf("self and peer are both %q", self))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("heartbeat: nats: %w", err)
	}
	p := &NATSPath{remote: remote, subject: SubjectPrefix + peer, ch: make(chan []byte, receiveBuffer)}
	sub, err := local.Subscribe(SubjectPrefix+self, p.deliver)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: nats: subscribe to %s: %w", SubjectPrefix+self, err)
	}
	p.sub = sub
	if local.IsConnected() {
		// Have the server know the subscription before returning; if it
		// does not answer, the subscription is sent again on reconnect.
		_ = local.FlushTimeout(time.Second)
	}
	return p, nil
}

// checkToken accepts a node name usable as one subject token.
func checkToken(s string) error {
	if len(s) == 0 || len(s) > MaxNode {
		return fmt.Errorf("%q must be 1 to %d bytes", s, MaxNode)
	}
	if strings.ContainsAny(s, ".*> \t\r\n") {
		return fmt.Errorf("%q is not a NATS subject token (no '.', '*', '>' or white space)", s)
	}
	return nil
}

// deliver runs on the subscription's goroutine. It never blocks: when the
// channel is full the oldest datagram goes, since the newest heartbeat is
// the one that matters.
func (p *NATSPath) deliver(msg *nats.Msg) {
	if len(msg.Data) > MaxDatagram {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for {
		select {
		case p.ch <- msg.Data:
			return
		default:
		}
		select {
		case <-p.ch:
		default:
		}
	}
}

// Name returns "nats".
func (p *NATSPath) Name() string { return "nats" }

// Send publishes b to the peer's server. While the link to it is down it
// fails at once rather than letting the client buffer heartbeats that
// would arrive late. On a stalled link a publish may wait for the
// connection's write timeout (nats.FlusherTimeout) once the client's
// buffer is full; Heart sends from the path's own goroutine, so only
// this path waits.
func (p *NATSPath) Send(b []byte) error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return errClosed
	}
	if !p.remote.IsConnected() {
		return fmt.Errorf("heartbeat: nats: link to the peer is %v", p.remote.Status())
	}
	if err := p.remote.Publish(p.subject, b); err != nil {
		return fmt.Errorf("heartbeat: nats: publish to %s: %w", p.subject, err)
	}
	return nil
}

// Receive returns the datagrams published to this node's subject.
func (p *NATSPath) Receive() <-chan []byte { return p.ch }

// Close unsubscribes and closes Receive's channel; the connections stay
// open.
func (p *NATSPath) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.ch)
	p.mu.Unlock()
	err := p.sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil // gone with its connection
	}
	if err != nil {
		return fmt.Errorf("heartbeat: nats: unsubscribe: %w", err)
	}
	return nil
}
