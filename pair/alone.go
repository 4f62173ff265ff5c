package pair

import (
	"sync"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// UIDs while acknowledging alone (docs/architecture.md, "UIDs").
//
// An active that acknowledges alone (its peer fenced) cannot be sure that
// the peer is really off: a fence device that lies lets both nodes write
// (a split brain), and in async mode the other node may have shown
// messages this one never received. Both would then give the same UIDs to
// different messages. So while alone, before its first new message in a
// mailbox, a node skips that mailbox's UIDs ahead (store.SkipUIDs) by an
// amount that depends on its epoch's parity: the two nodes' epochs have
// different parities, so their ranges never meet (unless one side adds
// over a million messages to one mailbox during the split), and the merge
// afterwards skips past both. UIDs have gaps then, which IMAP allows;
// UIDVALIDITY stays, so no client re-downloads anything.

// aloneSkip is the skip: 2^20 or 2^21 UIDs.
const aloneSkip = 1 << 20

// aloneSkips tracks the mailboxes skipped in the current alone period.
type aloneSkips struct {
	mu   sync.Mutex
	on   bool
	done map[protocols.MailboxRef]bool
}

// set starts (on) or ends an alone period.
func (a *aloneSkips) set(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if on && !a.on {
		a.done = map[protocols.MailboxRef]bool{}
	}
	a.on = on
}

// skipsFor returns the UID skips to write before ops (ops[i]'s come
// before it: skips[i]), when alone.
func (p *Pair) skipsFor(ops []store.Op, epoch uint64) [][]store.Op {
	a := &p.alone
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.on {
		return nil
	}
	out := make([][]store.Op, len(ops))
	for i, op := range ops {
		for _, ref := range adding(op) {
			if name, err := store.CanonicalMailbox(ref.Mailbox); err == nil {
				ref.Mailbox = name
			}
			if a.done[ref] {
				continue
			}
			a.done[ref] = true
			next := uint64(1)
			if mb, err := p.Mailbox(ref.User, ref.Mailbox); err == nil {
				next = uint64(mb.UIDNext)
			}
			next += aloneSkip * (1 + epoch%2)
			out[i] = append(out[i], &store.SkipUIDs{User: ref.User, Mailbox: ref.Mailbox, Next: next})
		}
	}
	return out
}

// adding lists the mailboxes an operation adds messages to.
func adding(op store.Op) []protocols.MailboxRef {
	switch o := op.(type) {
	case *store.Deliver:
		refs := make([]protocols.MailboxRef, 0, len(o.Targets))
		for _, t := range o.Targets {
			refs = append(refs, protocols.MailboxRef{User: t.User, Mailbox: t.Mailbox})
		}
		return refs
	case *store.Copy:
		return []protocols.MailboxRef{{User: o.User, Mailbox: o.To}}
	case *store.Move:
		return []protocols.MailboxRef{{User: o.User, Mailbox: o.To}}
	}
	return nil
}
