package fence

import (
	"context"
	"fmt"
	"sync"
)

// Step is one scripted answer of a Fake.
type Step struct {
	Power Power // what Status reports (when Err is nil and Hang false)
	Err   error // returned as it is
	Hang  bool  // block until the call's context ends, then fail
}

// Fake is a fence device for tests of what uses one (the failover driver):
// a simulated peer, switched on at first, with scripted answers.
//
// Unscripted, Off succeeds and powers the peer off, On powers it on, and
// Status reports its power. ScriptOff and ScriptStatus queue answers: each
// call takes the next one, and the last one stays, answering every later
// call. A scripted Off that succeeds also powers the peer off.
//
// The zero value is ready to use. A Fake is safe for concurrent use.
type Fake struct {
	mu                    sync.Mutex
	off, status           []Step
	down                  bool // the simulated peer is off
	offCalls, statusCalls int
}

var _ Switcher = (*Fake)(nil)

// ScriptOff queues answers for Off.
func (f *Fake) ScriptOff(steps ...Step) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.off = append(f.off, steps...)
}

// ScriptStatus queues answers for Status.
func (f *Fake) ScriptStatus(steps ...Step) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = append(f.status, steps...)
}

// Calls returns how many times Off and Status were called.
func (f *Fake) Calls() (off, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.offCalls, f.statusCalls
}

// Power returns the simulated peer's power, whatever the script says.
func (f *Fake) Power() Power {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return Off
	}
	return On
}

// next takes the next scripted step of q, if any. Called with mu held.
func next(q *[]Step) (Step, bool) {
	if len(*q) == 0 {
		return Step{}, false
	}
	s := (*q)[0]
	if len(*q) > 1 {
		*q = (*q)[1:]
	}
	return s, true
}

// Off powers the simulated peer off, or answers as scripted.
func (f *Fake) Off(ctx context.Context) error {
	f.mu.Lock()
	f.offCalls++
	s, scripted := next(&f.off)
	f.mu.Unlock()
	if !scripted {
		s = Step{}
	}
	if err := play(ctx, "off", s); err != nil {
		return err
	}
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	return nil
}

// Status reports the simulated peer's power, or answers as scripted.
func (f *Fake) Status(ctx context.Context) (Power, error) {
	f.mu.Lock()
	f.statusCalls++
	s, scripted := next(&f.status)
	if !scripted {
		s = Step{Power: On}
		if f.down {
			s.Power = Off
		}
	}
	f.mu.Unlock()
	if err := play(ctx, "status", s); err != nil {
		return Unknown, err
	}
	return s.Power, nil
}

// On powers the simulated peer on.
func (f *Fake) On(ctx context.Context) error {
	if err := play(ctx, "on", Step{}); err != nil {
		return err
	}
	f.mu.Lock()
	f.down = false
	f.mu.Unlock()
	return nil
}

// play acts out a step: its error, or a hang until ctx ends.
func play(ctx context.Context, action string, s Step) error {
	if s.Hang {
		<-ctx.Done()
		return fmt.Errorf("fence fake: %s: hung until %w", action, context.Cause(ctx))
	}
	if s.Err != nil {
		return s.Err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fence fake: %s: %w", action, err)
	}
	return nil
}
