package fence

import (
	"context"
	"fmt"
	"sync"
)

// Manual is a fence device worked by hand: an operator powers the peer off
// and says so (`twinbox fence confirm` ends in Confirm). Off only waits for
// that confirmation, until its context ends; Status reports Off once
// confirmed, Unknown before. Reset arms it again for the next incident.
//
// The zero value is ready to use. A Manual is safe for concurrent use.
type Manual struct {
	mu        sync.Mutex
	confirmed bool
	done      chan struct{} // closed by Confirm
	requested chan struct{} // closed by the first Off since Reset
	waiting   int           // Off calls waiting
}

var _ Device = (*Manual)(nil)

// init makes the channels of the zero value. Called with mu held.
func (m *Manual) init() {
	if m.done == nil {
		m.done = make(chan struct{})
		m.requested = make(chan struct{})
	}
}

// Off waits until Confirm is called (at once if it was already) or ctx ends.
func (m *Manual) Off(ctx context.Context) error {
	m.mu.Lock()
	m.init()
	done := m.done
	select {
	case <-m.requested:
	default:
		close(m.requested)
	}
	m.waiting++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.waiting--
		m.mu.Unlock()
	}()

	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("fence manual: no operator confirmed the peer is off: %w", context.Cause(ctx))
	}
}

// Status reports Off once Confirm has been called, Unknown before.
func (m *Manual) Status(ctx context.Context) (Power, error) {
	if err := ctx.Err(); err != nil {
		return Unknown, fmt.Errorf("fence manual: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.confirmed {
		return Off, nil
	}
	return Unknown, nil
}

// Confirm records that an operator made sure the peer is powered off: a
// waiting Off returns, Status reports Off. Confirming twice is harmless.
func (m *Manual) Confirm() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if !m.confirmed {
		m.confirmed = true
		close(m.done)
	}
}

// Requested returns a channel closed once Off has been called since the
// last Reset: the moment to ask an operator to power the peer off.
func (m *Manual) Requested() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	return m.requested
}

// Reset forgets the confirmation, and the request unless an Off is still
// waiting (it goes on waiting for the next Confirm), for the next incident.
func (m *Manual) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if m.confirmed {
		m.confirmed = false
		m.done = make(chan struct{})
	}
	if m.waiting == 0 {
		m.requested = make(chan struct{})
	}
}
