package imap

import (
	"errors"
	"slices"
	"sync"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// hub keeps one view per selected mailbox and turns store changes into the
// unsolicited updates of the sessions that have it selected (EXISTS,
// EXPUNGE, FETCH FLAGS), through go-imap's MailboxTracker.
//
// A view is brought up to date by reconciling it with the store: the UID
// list and the messages whose modseq rose since the last reconcile. That
// makes it indifferent to the order, batching or duplication of change
// notifications: whoever applies a change (this node's writers, or the
// replication log on a passive) only says which mailbox changed.
//
// A full reconcile lists the mailbox and searches it, which costs in
// proportion to its size: 11.7 ms per delivery into an idled-on INBOX of
// 10 000 messages (BenchmarkDeliverToSelectedMailbox). The operation's
// kind therefore says what it can have changed (a change hint), and two
// kinds take a short path that still reads the store's state, so order and
// duplicates stay harmless: an addition lists only the UIDs above the
// view's last one, and checks the mailbox's count to know that nothing it
// knew went away; a flag change reads the flags of the UIDs it names; an
// expunge (or the source of a MOVE) takes out the UIDs its result lists,
// with the same count check. One whose count does not add up, and every
// other kind, reconciles in full.
type hub struct {
	r protocols.Reader

	mu    sync.Mutex
	views map[protocols.MailboxRef]*view
}

// view is the server's view of one selected mailbox.
type view struct {
	ref protocols.MailboxRef

	// mu serialises reconciles, and guards the fields below and every
	// use of the tracker's sequence-number translation with uids.
	mu          sync.Mutex
	tracker     *imapserver.MailboxTracker
	uids        []uint32 // the server view: ascending
	uidValidity uint32
	modseq      uint64
	gone        bool
	sessions    map[*session]struct{}
	refs        int // guarded by hub.mu
}

func newHub(r protocols.Reader) *hub {
	return &hub{r: r, views: make(map[protocols.MailboxRef]*view)}
}

// open returns the view of a mailbox, up to date, with a new session
// tracker for sess, and the mailbox's info as of that view.
func (h *hub) open(ref protocols.MailboxRef, sess *session) (*view, *imapserver.SessionTracker, store.MailboxInfo, error) {
	h.mu.Lock()
	v := h.views[ref]
	if v != nil {
		v.mu.Lock()
		gone := v.gone
		v.mu.Unlock()
		if gone { // deleted and maybe created again: start afresh
			v = nil
		}
	}
	if v == nil {
		v = &view{ref: ref, sessions: make(map[*session]struct{})}
		h.views[ref] = v
	}
	v.refs++
	h.mu.Unlock()

	v.mu.Lock()
	info, err := h.reconcileLocked(v, nil, nil)
	if err == nil && v.gone {
		err = store.ErrNoMailbox
	}
	if err != nil {
		v.mu.Unlock()
		h.release(v)
		return nil, nil, store.MailboxInfo{}, err
	}
	v.sessions[sess] = struct{}{}
	st := v.tracker.NewSession()
	info.Messages = uint32(len(v.uids)) // the tracker's count, which may lag
	v.mu.Unlock()
	return v, st, info, nil
}

// close drops a session's interest in a view.
func (h *hub) close(v *view, sess *session, st *imapserver.SessionTracker) {
	v.mu.Lock()
	delete(v.sessions, sess)
	st.Close()
	v.mu.Unlock()
	h.release(v)
}

func (h *hub) release(v *view) {
	h.mu.Lock()
	v.refs--
	if v.refs == 0 && h.views[v.ref] == v {
		delete(h.views, v.ref)
	}
	h.mu.Unlock()
}

// change is what an operation can have done to one mailbox.
type change struct {
	// added: messages were only added (a delivery, APPEND, the
	// destination of COPY or MOVE).
	added bool
	// flags, when not nil: only the flags of these UIDs changed (STORE).
	flags []uint32
	// expunged, when not nil: only these UIDs went away (EXPUNGE, the
	// source of MOVE), as the operation's result says.
	expunged []uint32
}

// anyChange makes a view reconcile in full.
var anyChange = change{}

// changed brings the view of ref up to date, if any session has it
// selected. Flag changes to the UIDs in own are not reported to the
// session tracker source (it reports them itself, as STORE's response).
func (h *hub) changed(ref protocols.MailboxRef, c change, source *imapserver.SessionTracker, own []uint32) {
	h.mu.Lock()
	v := h.views[ref]
	if v != nil {
		v.refs++
	}
	h.mu.Unlock()
	if v == nil {
		return
	}
	v.mu.Lock()
	switch {
	case v.gone || v.tracker == nil:
	case c.added && h.addedLocked(v):
	case c.flags != nil && h.flagsLocked(v, c.flags, source, own):
	case c.expunged != nil && h.expungedLocked(v, c.expunged):
	default:
		_, _ = h.reconcileLocked(v, source, own)
	}
	v.mu.Unlock()
	h.release(v)
}

// addedLocked takes new messages into v without listing the mailbox: the
// UIDs above the view's last one are new (UIDs only grow), and if the
// mailbox holds exactly the view's messages plus those, none the view
// knew was expunged. It reports false when it could not tell, for a full
// reconcile. Flags are left to their own notifications: every flag change
// is a STORE that notifies, after it applied, so v.modseq may move past
// the ones still on their way.
func (h *hub) addedLocked(v *view) bool {
	var last uint32
	if len(v.uids) > 0 {
		last = v.uids[len(v.uids)-1]
	}
	info, added, err := h.r.UIDsAfter(v.ref.User, v.ref.Mailbox, last)
	if err != nil || info.UIDValidity != v.uidValidity || int(info.Messages) != len(v.uids)+len(added) {
		return false
	}
	if len(added) == 0 {
		return true
	}
	for n := len(v.uids) + 1; n <= len(v.uids)+len(added); n++ {
		v.tracker.QueueNumMessages(uint32(n))
	}
	v.uids = append(v.uids, added...) // readers copy under v.mu; the elements they saw do not change
	v.modseq = max(v.modseq, info.HighestModSeq)
	v.wakeLocked()
	return true
}

// expungedLocked takes the expunge of the given UIDs into v without
// listing the mailbox: the view without them, plus any UIDs above its
// last one, must be exactly what the mailbox holds (its count, from the
// same snapshot as those UIDs), or it reports false for a full reconcile
// before queueing anything.
func (h *hub) expungedLocked(v *view, expunged []uint32) bool {
	if len(v.uids) == 0 {
		return false
	}
	gone := make([]int, 0, len(expunged)) // indexes into v.uids
	for _, uid := range expunged {
		if i, ok := slices.BinarySearch(v.uids, uid); ok {
			gone = append(gone, i)
		}
	}
	slices.Sort(gone)
	gone = slices.Compact(gone)
	last := v.uids[len(v.uids)-1]
	info, added, err := h.r.UIDsAfter(v.ref.User, v.ref.Mailbox, last)
	kept := len(v.uids) - len(gone)
	if err != nil || info.UIDValidity != v.uidValidity || int(info.Messages) != kept+len(added) {
		return false
	}
	// Highest sequence number first, so each is valid when applied.
	for k := len(gone) - 1; k >= 0; k-- {
		v.tracker.QueueExpunge(uint32(gone[k]) + 1)
	}
	uids := make([]uint32, 0, kept+len(added))
	prev := 0
	for _, i := range gone {
		uids = append(uids, v.uids[prev:i]...)
		prev = i + 1
	}
	uids = append(uids, v.uids[prev:]...)
	for n := kept + 1; n <= kept+len(added); n++ {
		v.tracker.QueueNumMessages(uint32(n))
	}
	v.uids = append(uids, added...)
	v.wakeLocked()
	return true
}

// flagsLocked reports the current flags of the given UIDs that v holds.
// It reports false when it could not read them, for a full reconcile.
// v.modseq stays: a full reconcile later may report these again, which
// is harmless.
func (h *hub) flagsLocked(v *view, uids []uint32, source *imapserver.SessionTracker, own []uint32) bool {
	known := make([]uint32, 0, len(uids))
	for _, uid := range uids {
		if store.UIDList(v.uids).SeqNum(uid) != 0 {
			known = append(known, uid)
		}
	}
	if len(known) == 0 {
		return true
	}
	slices.Sort(known)
	msgs, err := h.r.Messages(v.ref.User, v.ref.Mailbox, slices.Compact(known))
	if err != nil {
		return false
	}
	for _, m := range msgs {
		src := (*imapserver.SessionTracker)(nil)
		if _, mine := slices.BinarySearch(own, m.UID); mine {
			src = source
		}
		v.tracker.QueueMessageFlags(store.UIDList(v.uids).SeqNum(m.UID), imap.UID(m.UID), imapFlags(m.Flags), src)
	}
	v.wakeLocked()
	return true
}

// wakeLocked tells v's idling sessions that updates are queued.
func (v *view) wakeLocked() {
	for sess := range v.sessions {
		select {
		case sess.wake <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
}

// changedUser reconciles every view of a user (a deleted user, say).
func (h *hub) changedUser(user string) {
	h.mu.Lock()
	var refs []protocols.MailboxRef
	for ref := range h.views {
		if ref.User == user {
			refs = append(refs, ref)
		}
	}
	h.mu.Unlock()
	for _, ref := range refs {
		h.changed(ref, anyChange, nil, nil)
	}
}

// reconcileLocked brings v up to date with the store and queues the
// updates that take the trackers from the old view to the new one.
func (h *hub) reconcileLocked(v *view, source *imapserver.SessionTracker, own []uint32) (store.MailboxInfo, error) {
	if v.gone {
		return store.MailboxInfo{}, nil
	}
	// Mailbox first: a change landing between the reads is then seen by
	// the UID list and the modseq search, and at worst reported twice.
	info, err := h.r.Mailbox(v.ref.User, v.ref.Mailbox)
	if errors.Is(err, store.ErrNoMailbox) || errors.Is(err, store.ErrNoUser) ||
		(err == nil && v.tracker != nil && info.UIDValidity != v.uidValidity) {
		v.goneLocked()
		return store.MailboxInfo{}, nil
	}
	if err != nil {
		return info, err
	}
	uids, err := h.r.UIDs(v.ref.User, v.ref.Mailbox)
	if err != nil {
		return info, err
	}
	if v.tracker == nil { // first open
		v.tracker = imapserver.NewMailboxTracker(uint32(len(uids)))
		v.uids = uids
		v.uidValidity = info.UIDValidity
		v.modseq = info.HighestModSeq
		return info, nil
	}

	old := v.uids
	// Expunged: in old, not in uids. Queued from the highest sequence
	// number down, so each number is still valid when it is applied.
	var kept []uint32
	j := 0
	var gone []int
	for i, uid := range old {
		for j < len(uids) && uids[j] < uid {
			j++
		}
		if j < len(uids) && uids[j] == uid {
			kept = append(kept, uid)
		} else {
			gone = append(gone, i)
		}
	}
	for k := len(gone) - 1; k >= 0; k-- {
		v.tracker.QueueExpunge(uint32(gone[k]) + 1)
	}
	// New: UIDs only grow, so every UID above the last kept one is new.
	var last uint32
	if len(kept) > 0 {
		last = kept[len(kept)-1]
	}
	at := len(uids)
	for i, uid := range uids {
		if uid > last {
			at = i
			break
		}
	}
	if at != len(kept) { // a UID below a kept one appeared: not a mailbox we knew
		v.goneLocked()
		return store.MailboxInfo{}, nil
	}
	// One EXISTS per new message: the session tracker's translation of
	// sequence numbers relies on increments of one.
	for n := len(kept) + 1; n <= len(uids); n++ {
		v.tracker.QueueNumMessages(uint32(n))
	}
	v.uids = uids

	if info.HighestModSeq > v.modseq && len(kept) > 0 {
		changed, err := h.r.Search(v.ref.User, v.ref.Mailbox, &store.Criteria{
			UID:       [][]store.UIDRange{{{Lo: kept[0], Hi: last}}},
			MinModSeq: v.modseq + 1,
		})
		if err == nil && len(changed) > 0 {
			msgs, err2 := h.r.Messages(v.ref.User, v.ref.Mailbox, changed)
			err = err2
			for _, m := range msgs {
				seq := store.UIDList(uids).SeqNum(m.UID)
				if seq == 0 || seq > uint32(len(kept)) {
					continue
				}
				src := (*imapserver.SessionTracker)(nil)
				if _, mine := slices.BinarySearch(own, m.UID); mine {
					src = source
				}
				v.tracker.QueueMessageFlags(seq, imap.UID(m.UID), imapFlags(m.Flags), src)
			}
		}
		if err != nil {
			return info, err
		}
	}
	v.modseq = info.HighestModSeq
	v.wakeLocked()
	return info, nil
}

// goneLocked marks a view whose mailbox was deleted or replaced: its
// sessions are told BYE, as Dovecot does, since their sequence numbers and
// UIDs no longer mean anything.
func (v *view) goneLocked() {
	if v.gone {
		return
	}
	v.gone = true
	for s := range v.sessions {
		go s.conn.Bye("Selected mailbox was deleted or renamed")
	}
}
