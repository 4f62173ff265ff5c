package heartbeat

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// LazyAddr is a peer's UDP address given as host:port, looked up when
// first needed and again at most every resolveEvery until it resolves: a
// name that does not resolve yet (the peer's container not up, the
// network not back) is a peer that does not answer, not an error that
// stops the node. It is safe for concurrent use.
type LazyAddr struct {
	name string

	mu       sync.Mutex
	addr     *net.UDPAddr // nil until name resolves
	resolved time.Time    // the last lookup
}

// resolveEvery bounds the lookups of a name that does not resolve.
const resolveEvery = time.Second

// NewLazyAddr checks that name has the form host:port with a port, and
// returns it unresolved.
func NewLazyAddr(name string) (*LazyAddr, error) {
	_, port, err := net.SplitHostPort(name)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", name, err)
	}
	if port == "" || port == "0" {
		return nil, fmt.Errorf("address %q: needs a port", name)
	}
	return &LazyAddr{name: name}, nil
}

// String is the address as given.
func (a *LazyAddr) String() string { return a.name }

// Resolve returns the address, looking the name up if it has not
// resolved yet and the last lookup is resolveEvery old.
func (a *LazyAddr) Resolve() (*net.UDPAddr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.addr != nil {
		return a.addr, nil
	}
	if !a.resolved.IsZero() && time.Since(a.resolved) < resolveEvery {
		return nil, fmt.Errorf("address %q does not resolve yet", a.name)
	}
	a.resolved = time.Now()
	ua, err := net.ResolveUDPAddr("udp", a.name)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", a.name, err)
	}
	a.addr = ua
	return ua, nil
}
