package replog

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
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
}

// DialPeer connects to the peer's NATS server with the link's
// credentials. The connection retries for ever, in the background, when
// the peer is down or goes away, so a peer that is not up yet is no
// error.
func DialPeer(o PeerOptions) (*nats.Conn, error) {
	opts := []nats.Option{nats.UserInfo(o.User, o.Password), nats.Name(o.Name),
		nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond), nats.RetryOnFailedConnect(true)}
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
