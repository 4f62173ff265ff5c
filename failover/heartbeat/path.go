package heartbeat

import "errors"

// A Path sends sealed datagrams to the peer and delivers what arrives.
// Send, Receive and Close may be called from different goroutines; Send is
// not called concurrently with itself by Heart. After Close, Send returns
// an error.
type Path interface {
	// Name identifies the path in stats and logs ("udp", "nats").
	Name() string
	// Send hands one datagram to the transport. It must not block for
	// long; Heart calls it from the path's own goroutine, so a slow path
	// delays only itself.
	Send(b []byte) error
	// Receive delivers the datagrams that arrive, unverified. It is
	// closed by Close.
	Receive() <-chan []byte
	// Close stops the path and closes the Receive channel. A Send in
	// progress must return soon after: Heart.Close waits for it.
	Close() error
}

var (
	_ Path = (*UDPPath)(nil)
	_ Path = (*NATSPath)(nil)
)

// errClosed is returned by Send on a closed path.
var errClosed = errors.New("heartbeat: path closed")

// receiveBuffer is the capacity of a path's Receive channel.
const receiveBuffer = 64
