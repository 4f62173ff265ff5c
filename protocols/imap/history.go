package imap

import (
	"slices"
	"sync"

	"github.com/twinbox/twinbox/protocols"
)

// expunges is the server's memory of recent expunges, per mailbox, so
// that QRESYNC's VANISHED (EARLIER) names what was expunged since a
// client's mod-sequence and not every gap in its range. It is learnt from
// change notifications, which a passive gets for every entry it applies
// too, so a node that is promoted has the history of its time as passive.
// It lives in memory and is bounded; where it does not reach back to the
// client's mod-sequence (after a restart, or older than what is kept),
// VANISHED falls back to every UID of the range not in the mailbox.
type expunges struct {
	mu    sync.Mutex
	boxes map[protocols.MailboxRef]*expungeLog
}

const (
	// maxExpungedPerMailbox bounds the UIDs remembered per mailbox.
	maxExpungedPerMailbox = 8192
	// maxExpungeLogs bounds the mailboxes remembered.
	maxExpungeLogs = 10000
)

// expungeLog is one mailbox's history: complete for every expunge whose
// mod-sequence is above since.
type expungeLog struct {
	uidValidity uint32
	since       uint64
	events      []expungeEvent
	n           int // UIDs held
}

// expungeEvent is one expunge; modseq is at least the mod-sequence it
// got (the mailbox's, read after it applied), so a client is told of it
// whenever it may not know it yet.
type expungeEvent struct {
	modseq uint64
	uids   []uint32
}

// record notes that uids were expunged at or before modseq.
func (e *expunges) record(ref protocols.MailboxRef, uidValidity uint32, modseq uint64, uids []uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.boxes == nil {
		e.boxes = make(map[protocols.MailboxRef]*expungeLog)
	}
	l := e.boxes[ref]
	if l == nil || l.uidValidity != uidValidity {
		if l == nil && len(e.boxes) >= maxExpungeLogs {
			for k := range e.boxes { // forget one, any
				delete(e.boxes, k)
				break
			}
		}
		// Earlier expunges are unknown: complete only above this one.
		e.boxes[ref] = &expungeLog{uidValidity: uidValidity, since: modseq}
		return
	}
	l.events = append(l.events, expungeEvent{modseq: modseq, uids: slices.Clone(uids)})
	l.n += len(uids)
	for l.n > maxExpungedPerMailbox && len(l.events) > 1 {
		l.since = max(l.since, l.events[0].modseq)
		l.n -= len(l.events[0].uids)
		l.events = l.events[1:]
	}
}

// begin starts a mailbox's history at modseq, read after every expunge
// up to it was applied, if none is kept (a session selected it).
func (e *expunges) begin(ref protocols.MailboxRef, uidValidity uint32, modseq uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.boxes == nil {
		e.boxes = make(map[protocols.MailboxRef]*expungeLog)
	}
	if l := e.boxes[ref]; l != nil && l.uidValidity == uidValidity {
		return
	}
	if len(e.boxes) >= maxExpungeLogs {
		for k := range e.boxes {
			delete(e.boxes, k)
			break
		}
	}
	e.boxes[ref] = &expungeLog{uidValidity: uidValidity, since: modseq}
}

// since returns the UIDs expunged after modseq, ascending, and whether
// the history reaches back that far.
func (e *expunges) since(ref protocols.MailboxRef, uidValidity uint32, modseq uint64) ([]uint32, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.boxes[ref]
	if l == nil || l.uidValidity != uidValidity || modseq < l.since {
		return nil, false
	}
	var out []uint32
	for _, ev := range l.events {
		if ev.modseq > modseq {
			out = append(out, ev.uids...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), true
}
