package pair

import (
	"context"
	"sync"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// publisher is the node's one notification path: every applied
// operation, whoever applied it (this node's writes as the active or
// standalone, the log's entries on a passive, the log's tail applied when
// a node opens or promotes), is queued here in log order, and one
// goroutine tells the notifiers (IMAP IDLE and unsolicited updates) in
// that order. A write returns to its client only once its change was told
// (waitTold), so a session's own EXPUNGE responses are ready before its
// tagged OK.
//
// The queue is bounded: a slow notifier slows the writers, never fills
// memory. Queued deliveries keep their targets, not their bodies.
type publisher struct {
	mu        sync.Mutex
	queue     []pending
	told      uint64        // the last sequence told (or skipped)
	advanced  chan struct{} // closed when told advances
	space     chan struct{} // closed when the queue shrinks
	wake      chan struct{} // the goroutine has work
	notifiers []protocols.Notifier
	closed    bool
	done      chan struct{}
}

type pending struct {
	seq uint64
	c   protocols.Change
}

// maxQueued bounds the changes waiting to be told.
const maxQueued = 4096

func newPublisher(told uint64) *publisher {
	p := &publisher{told: told, advanced: make(chan struct{}), space: make(chan struct{}),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go p.run()
	return p
}

// add makes n one of the notifiers told of every change from now on.
func (p *publisher) add(n protocols.Notifier) {
	p.mu.Lock()
	p.notifiers = append(p.notifiers, n)
	p.mu.Unlock()
}

// applied queues the change applied at seq. It waits while the queue is
// full; after close it drops the change.
func (p *publisher) applied(seq uint64, op store.Op, res *store.Result, origin protocols.Origin) {
	c := protocols.Change{Op: lean(op), Result: res, Origin: origin}
	p.mu.Lock()
	for len(p.queue) >= maxQueued && !p.closed {
		space := p.space
		p.mu.Unlock()
		<-space
		p.mu.Lock()
	}
	if !p.closed {
		p.queue = append(p.queue, pending{seq, c})
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// lean drops what a notifier never reads and a queue should not hold: a
// delivery's body.
func lean(op store.Op) store.Op {
	if d, ok := op.(*store.Deliver); ok && !d.Body.Stored {
		c := *d
		c.Body = d.Body.Reference()
		return &c
	}
	return op
}

func (p *publisher) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		for len(p.queue) == 0 && !p.closed {
			p.mu.Unlock()
			<-p.wake
			p.mu.Lock()
		}
		if len(p.queue) == 0 && p.closed {
			p.mu.Unlock()
			return
		}
		batch := p.queue
		p.queue = nil
		notifiers := p.notifiers
		close(p.space)
		p.space = make(chan struct{})
		p.mu.Unlock()
		for _, pc := range batch {
			if pc.c.Result == nil || pc.c.Result.Err == nil {
				for _, n := range notifiers {
					n.Notify(pc.c)
				}
			}
			p.mu.Lock()
			if pc.seq > p.told {
				p.told = pc.seq
				close(p.advanced)
				p.advanced = make(chan struct{})
			}
			p.mu.Unlock()
		}
	}
}

// waitTold waits until the change at seq was told, or ctx ends, or the
// publisher closes.
func (p *publisher) waitTold(ctx context.Context, seq uint64) {
	for {
		p.mu.Lock()
		told, adv, closed := p.told, p.advanced, p.closed
		p.mu.Unlock()
		if told >= seq || closed {
			return
		}
		select {
		case <-adv:
		case <-ctx.Done():
			return
		case <-p.done:
			return
		}
	}
}

// reset forgets what is queued and starts again at told (a store
// replaced by a resync).
func (p *publisher) reset(told uint64) {
	p.mu.Lock()
	p.queue = nil
	p.told = told
	close(p.advanced)
	p.advanced = make(chan struct{})
	close(p.space)
	p.space = make(chan struct{})
	p.mu.Unlock()
}

// close tells what is queued, then stops the goroutine.
func (p *publisher) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return
	}
	p.closed = true
	close(p.space)
	p.space = make(chan struct{})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	<-p.done
}
