package replog

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// MaxPayload is the largest NATS message the servers take: a log entry
// carries a whole delivered body, and the store's default message limit is
// 50 MiB, which must fit with its encoding.
const MaxPayload = 64 << 20

// ServerOptions configure a node's embedded NATS server.
type ServerOptions struct {
	// Name identifies the node.
	Name string
	// Dir holds JetStream's files (the log).
	Dir string
	// Addr is where the peer connects ("host:port"; port 0 picks one).
	Addr string
	// User and Password are required of every client: the link is private.
	User, Password string
	// TLS, when set, is required of every client.
	TLS *tls.Config
}

// StartServer starts an embedded nats-server with JetStream, fsyncing
// every write (SyncAlways: the default fsyncs only every two minutes, and
// Jepsen showed acknowledged writes lost that way). It refuses to run if
// the server does not report SyncAlways.
func StartServer(o ServerOptions) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("replog: NATS address %q: %w", o.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("replog: NATS address %q: bad port", o.Addr)
	}
	if port == 0 {
		port = -1 // nats-server's "pick one"; 0 means its default 4222
	}
	if o.User == "" || o.Password == "" {
		return nil, fmt.Errorf("replog: the NATS link needs a user and password")
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.Dir,
		SyncAlways: true,
		MaxPayload: MaxPayload,
		NoSigs:     true,
		NoLog:      true,
		Username:   o.User,
		Password:   o.Password,
		// The HTTP monitor, leaf nodes, clustering and websockets stay off.
	}
	if o.TLS != nil {
		opts.TLSConfig = o.TLS
		opts.TLS = true
		opts.AllowNonTLS = false
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("replog: NATS server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("replog: NATS server did not start listening on %s", o.Addr)
	}
	if cfg := s.JetStreamConfig(); cfg == nil || !cfg.SyncAlways {
		s.Shutdown()
		return nil, fmt.Errorf("%w: JetStream is not fsyncing every write (SyncAlways)", ErrWeakDurable)
	}
	return s, nil
}
