// Package poll is the one bounded wait of the project's tests and tools:
// a condition is polled until it holds, the bound passes or the context
// ends. Nothing sleeps to "let it settle"; every wait says what it waited
// for when it gives up.
package poll

import (
	"context"
	"fmt"
	"time"
)

// Every is how often a condition is polled.
const Every = 10 * time.Millisecond

// Until polls cond every Every until it returns true, within bound (0:
// until ctx ends). It returns nil once cond holds; otherwise an error
// naming what and cond's last error, if any.
func Until(ctx context.Context, bound time.Duration, what string, cond func() (bool, error)) error {
	if bound > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, bound)
		defer cancel()
	}
	t := time.NewTicker(Every)
	defer t.Stop()
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("waited %v for %s: %w (last: %v)", bound, what, ctx.Err(), err)
			}
			return fmt.Errorf("waited %v for %s: %w", bound, what, ctx.Err())
		case <-t.C:
		}
	}
}

// TB is the part of testing.TB that Eventually needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Eventually fails the test unless cond holds within bound.
func Eventually(tb TB, bound time.Duration, what string, cond func() bool) {
	tb.Helper()
	if err := Until(context.Background(), bound, what, func() (bool, error) { return cond(), nil }); err != nil {
		tb.Fatalf("%v", err)
	}
}

// EventuallyNil fails the test unless cond returns nil within bound, with
// its last error.
func EventuallyNil(tb TB, bound time.Duration, what string, cond func() error) {
	tb.Helper()
	if err := Until(context.Background(), bound, what, func() (bool, error) {
		err := cond()
		return err == nil, err
	}); err != nil {
		tb.Fatalf("%v", err)
	}
}
