package fence

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultTimeout bounds Fence when it is given no timeout, and each call of
// an Agent built without one. It is Pacemaker's default stonith-timeout.
const DefaultTimeout = 60 * time.Second

// Polling of Status after Off: the first query is immediate, then the
// interval doubles from firstPoll up to maxPoll.
const (
	firstPoll = 50 * time.Millisecond
	maxPoll   = time.Second
)

var (
	// ErrTimeout: a fence action did not finish in time. The action was cut
	// short (an agent is killed), and the peer's state is unknown.
	ErrTimeout = errors.New("fence: timed out")
	// ErrNotConfirmed: Off returned, but no status query reported the peer
	// off before the deadline.
	ErrNotConfirmed = errors.New("fence: power off not confirmed")
)

// Power is the state of the peer as a fence device reports it.
type Power int

const (
	Unknown Power = iota // not known: the device could not tell
	On                   // the peer is running, or may be
	Off                  // the peer is confirmed powered off
)

func (p Power) String() string {
	switch p {
	case Unknown:
		return "unknown"
	case On:
		return "on"
	case Off:
		return "off"
	}
	return fmt.Sprintf("Power(%d)", int(p))
}

// Device is a fence device: something that can power the peer off and
// report its state.
//
// Off returns nil when the device accepted the order (powering off a peer
// that is already off is a success); it does not have to wait for the
// power to go. Status reports On for a peer that is, or may be, running;
// Off only when the device knows it is not. Both return when ctx ends, with
// an error.
type Device interface {
	Off(ctx context.Context) error
	Status(ctx context.Context) (Power, error)
}

// Switcher is a Device that can also power the peer back on (the
// fence-agents "on" action).
type Switcher interface {
	Device
	On(ctx context.Context) error
}

// Fence powers the peer off and confirms it: Off, then Status until it
// reports Off, polling a few times within timeout (DefaultTimeout when
// timeout <= 0). It returns nil only when Off is confirmed; on any error the
// caller must not promote.
//
// An Off that does not finish in time gives an error matching ErrTimeout; an
// Off that succeeded without a Status reporting Off in time gives one
// matching ErrNotConfirmed (and wrapping the last status error, if any).
// Status errors while polling are retried until the deadline.
func Fence(ctx context.Context, d Device, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	if err := d.Off(ctx); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &timeoutError{msg: fmt.Sprintf("fence: timed out (%v) powering the peer off: %v", timeout, err), cause: err}
		}
		return fmt.Errorf("fence: power off: %w", err)
	}

	var (
		last    = Unknown
		lastErr error
		asked   int
		wait    = firstPoll
	)
poll:
	for {
		p, err := d.Status(ctx)
		if err == nil && p == Off {
			return nil
		}
		// Keep the last answer that was not cut short by the deadline.
		if ctx.Err() == nil || asked == 0 {
			last, lastErr = p, err
		}
		asked++
		select {
		case <-ctx.Done():
			break poll
		case <-time.After(wait):
		}
		wait = min(2*wait, maxPoll)
	}
	if lastErr != nil {
		return fmt.Errorf("%w: status asked %d times within %v, last answer: %w", ErrNotConfirmed, asked, timeout, lastErr)
	}
	return fmt.Errorf("%w: status still %v, asked %d times within %v", ErrNotConfirmed, last, asked, timeout)
}

// timeoutError matches ErrTimeout and wraps what was cut short.
type timeoutError struct {
	msg   string
	cause error
}

func (e *timeoutError) Error() string        { return e.msg }
func (e *timeoutError) Is(target error) bool { return target == ErrTimeout }
func (e *timeoutError) Unwrap() error        { return e.cause }
