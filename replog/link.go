package replog

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// PeerOptions say how to reach the peer's NATS server over the link.
type PeerOptions struct {
	// Addr is the peer's host:port.
	Addr string
	// User and Password are the link's credentials.
	User, Password string
	// TLS requires TLS, trusting RootCAs (nil: the system's roots).
	TLS     bool
	RootCAs *x509.CertPool
	// Name names the connection on the peer's server.
	Name string
	// Received, when set, counts every byte read from the link as it
	// arrives (below TLS), also in the middle of a large message: the
	// follower's evidence that it is receiving (FollowerOptions.Received).
	Received *atomic.Uint64
}

// countingDialer dials TCP and counts what is read from the connection.
type countingDialer struct {
	d net.Dialer
	n *atomic.Uint64
}

func (c countingDialer) Dial(network, addr string) (net.Conn, error) {
	conn, err := c.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: conn, n: c.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(uint64(n))
	return n, err
}

// DialPeer connects to the peer's NATS server with the link's
// credentials. The connection retries for ever, in the background, when
// the peer is down or goes away, so a peer that is not up yet is no
// error.
func DialPeer(o PeerOptions) (*nats.Conn, error) {
	opts := []nats.Option{nats.UserInfo(o.User, o.Password), nats.Name(o.Name),
		nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond), nats.RetryOnFailedConnect(true)}
	if o.Received != nil {
		opts = append(opts, nats.SetCustomDialer(countingDialer{d: net.Dialer{Timeout: nats.DefaultTimeout}, n: o.Received}))
	}
	url := "nats://" + o.Addr
	if o.TLS {
		opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs}))
		url = "tls://" + o.Addr
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("replog: connect to the peer at %s: %w", o.Addr, err)
	}
	return nc, nil
}
