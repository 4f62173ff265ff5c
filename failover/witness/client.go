package witness

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/twinbox/twinbox/failover/heartbeat"
)

// Client asks a witness on behalf of one node. It is safe for concurrent
// use.
type Client struct {
	node string
	key  []byte
	addr *heartbeat.LazyAddr // the name may resolve later
	conn *net.UDPConn        // unconnected, for that reason
	v    *heartbeat.Verifier
	boot uint64
	done chan struct{}

	mu      sync.Mutex
	counter uint64
	waiting map[uint64]chan Reply // by request counter
}

// Dial returns a client of the witness at addr for node, with the pair's
// heartbeat key. Nothing is sent until Ask.
func Dial(addr, node string, key []byte) (*Client, error) {
	if node == Name {
		return nil, fmt.Errorf("witness: a node may not be called %q", Name)
	}
	v, err := heartbeat.NewVerifier(key, node, nil)
	if err != nil {
		return nil, err
	}
	to, err := heartbeat.NewLazyAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	c := &Client{node: node, key: append([]byte(nil), key...), addr: to, conn: conn, v: v, boot: binary.BigEndian.Uint64(b[:]),
		done: make(chan struct{}), waiting: map[uint64]chan Reply{}}
	go c.read()
	return c, nil
}

// ErrNoAnswer is an Ask that got no answer before its context ended.
var ErrNoAnswer = errors.New("witness: no answer")

// resendEvery is how often Ask sends its request again (a datagram may be
// lost).
const resendEvery = 100 * time.Millisecond

// Ask sends r and waits for the witness's answer until ctx ends. sent is
// when the answered request was sent: a granted lease counts from there.
func (c *Client) Ask(ctx context.Context, r Request) (rep Reply, sent time.Time, err error) {
	t := time.NewTicker(resendEvery)
	defer t.Stop()
	var mine []uint64
	defer func() {
		c.mu.Lock()
		for _, n := range mine {
			delete(c.waiting, n)
		}
		c.mu.Unlock()
	}()
	ch := make(chan Reply, 1)
	sentAt := map[uint64]time.Time{}
	for {
		// Each send is a new message (a new counter): the witness's
		// replay check refuses a copy.
		c.mu.Lock()
		c.counter++
		n := c.counter
		c.waiting[n] = ch
		c.mu.Unlock()
		mine = append(mine, n)
		now := time.Now()
		sentAt[n] = now
		b, err := heartbeat.Seal(c.key, &heartbeat.Message{Node: c.node, Boot: c.boot, Counter: n, Sent: now, Payload: r.encode()})
		if err != nil {
			return Reply{}, time.Time{}, err
		}
		if to, err := c.addr.Resolve(); err == nil {
			_, _ = c.conn.WriteToUDP(b, to) // a refused send is a lost datagram: retried
		}
		select {
		case rep := <-ch:
			return rep, sentAt[rep.Counter], nil
		case <-t.C:
		case <-ctx.Done():
			return Reply{}, time.Time{}, fmt.Errorf("%w: %v", ErrNoAnswer, ctx.Err())
		case <-c.done:
			return Reply{}, time.Time{}, errors.New("witness: client closed")
		}
	}
}

// Close stops the client.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

func (c *Client) read() {
	defer close(c.done)
	buf := make([]byte, heartbeat.MaxDatagram+1)
	for {
		n, _, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a refused send shows up here as ECONNREFUSED
		}
		if n > heartbeat.MaxDatagram {
			continue
		}
		// From any address: a witness on a host with several addresses
		// may answer from another; the seal says who sent it.
		m, err := c.v.Open(path, buf[:n], time.Now())
		if err != nil || m.Node != Name {
			continue
		}
		rep, err := decodeReply(m.Payload)
		if err != nil || rep.Boot != c.boot {
			continue
		}
		c.mu.Lock()
		ch := c.waiting[rep.Counter]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- rep:
			default:
			}
		}
	}
}
