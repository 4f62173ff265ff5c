package imap

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// hub keeps one view per selected mailbox and turns store changes into the
// unsolicited updates of the sessions that have it selected (EXISTS,
// EXPUNGE, FETCH FLAGS, FLAGS when a keyword appears): each session gets
// the updates in a queue of its own and writes them when the protocol
// lets it (see session.poll). A view also hands out \Recent: each new
// message is recent in one session only, the one that first has the
// mailbox selected read-write after it arrived (RFC 3501 2.3.2).
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
	// recentMu guards firstRecent. It is taken under a view's lock (and
	// never the other way), while mu is taken before a view's lock.
	recentMu sync.Mutex
	// firstRecent is, per mailbox, the lowest UID no session has been
	// given as \Recent yet. It lives in memory: after a restart or a
	// failover every message is recent to the first session again, as
	// when Dovecot loses its index.
	firstRecent map[protocols.MailboxRef]recentMark
	// kw remembers mailboxes' keywords between views.
	kw keywordMemory
	// floors are mailboxes' floors (guarded by recentMu).
	floors map[protocols.MailboxRef]floorMark
}

// recentMark is the lowest UID not yet given as \Recent in one
// incarnation of a mailbox (a mailbox deleted and made again has another
// UIDVALIDITY, and starts afresh).
type recentMark struct {
	uidValidity uint32
	first       uint32
}

// view is the server's view of one selected mailbox.
type view struct {
	ref protocols.MailboxRef

	// mu serialises reconciles and guards the fields below; sessions'
	// update queues are filled under it, so each gets them in order.
	mu          sync.Mutex
	opened      bool
	uids        []uint32 // the server view: ascending
	uidValidity uint32
	modseq      uint64
	gone        bool
	sessions    map[*session]struct{}
	// keywords are the keywords seen in the mailbox since the view was
	// made (FLAGS lists them; one is never taken back while selected).
	keywords map[string]struct{}
	refs     int // guarded by hub.mu
}

func newHub(r protocols.Reader) *hub {
	return &hub{r: r, views: make(map[protocols.MailboxRef]*view), firstRecent: make(map[protocols.MailboxRef]recentMark)}
}

// opened is what a session gets when it selects a mailbox.
type opened struct {
	view     *view
	uids     []uint32 // the session's first view: a copy
	info     store.MailboxInfo
	keywords []string
	recent   []uint32 // the UIDs recent in this session
}

// open returns the view of a mailbox, up to date, registers sess for its
// updates, and gives sess the messages no session was given as \Recent
// yet unless it selects read-only.
func (h *hub) open(ref protocols.MailboxRef, sess *session, readOnly bool) (*opened, error) {
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
		v = &view{ref: ref, sessions: make(map[*session]struct{}), keywords: make(map[string]struct{})}
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
		return nil, err
	}
	defer v.mu.Unlock()
	v.sessions[sess] = struct{}{}
	sess.rw = !readOnly
	o := &opened{view: v, uids: slices.Clone(v.uids), info: info}
	o.info.Messages = uint32(len(v.uids))
	for k := range v.keywords {
		o.keywords = append(o.keywords, k)
	}
	slices.Sort(o.keywords)
	if !readOnly {
		h.recentMu.Lock()
		first := h.firstRecentLocked(ref, info.UIDValidity)
		var last uint32
		if len(v.uids) > 0 {
			last = v.uids[len(v.uids)-1]
		}
		h.firstRecent[ref] = recentMark{info.UIDValidity, max(first, last+1)}
		h.recentMu.Unlock()
		i, _ := slices.BinarySearch(v.uids, max(first, 1))
		o.recent = slices.Clone(v.uids[i:])
	}
	return o, nil
}

// unclaimed are the UIDs among uids that no session was given as
// \Recent yet (what EXAMINE shows as recent, without claiming them).
func (h *hub) unclaimed(ref protocols.MailboxRef, uidValidity uint32, uids []uint32) []uint32 {
	h.recentMu.Lock()
	first := h.firstRecentLocked(ref, uidValidity)
	h.recentMu.Unlock()
	i, _ := slices.BinarySearch(uids, max(first, 1))
	return uids[i:]
}

// recentCount is STATUS RECENT: how many messages of the mailbox no
// session was given as \Recent yet.
func (h *hub) recentCount(ref protocols.MailboxRef, info store.MailboxInfo) uint32 {
	h.recentMu.Lock()
	first := h.firstRecentLocked(ref, info.UIDValidity)
	h.recentMu.Unlock()
	if first <= 1 {
		return info.Messages
	}
	if first >= info.UIDNext {
		return 0
	}
	_, uids, err := h.r.UIDsAfter(ref.User, ref.Mailbox, first-1)
	if err != nil {
		return 0
	}
	return uint32(len(uids))
}

// firstRecentLocked is the lowest UID of the mailbox not given as
// \Recent yet (0: none was).
func (h *hub) firstRecentLocked(ref protocols.MailboxRef, uidValidity uint32) uint32 {
	m, ok := h.firstRecent[ref]
	if !ok || m.uidValidity != uidValidity {
		return 0
	}
	return m.first
}

// close drops a session's interest in a view. The last one to leave
// leaves the mailbox's floor behind for the next view.
func (h *hub) close(v *view, sess *session) {
	v.mu.Lock()
	delete(v.sessions, sess)
	if len(v.sessions) == 0 && len(v.uids) > 0 && !v.gone {
		h.setFloor(v.ref, v.uidValidity, v.uids[0]-1)
	}
	v.mu.Unlock()
	h.release(v)
}

// A mailbox's floor is a UID below which no message can exist any more:
// UIDs are never reused, so once the lowest message has a UID, none below
// it comes back. Listing from above the floor does not walk the
// tombstones that expunged messages leave in the store until it compacts
// them, which made every SELECT of a mailbox with a long history of
// expunges slower than the last (imaptest's stress, run after run).
type floorMark struct {
	uidValidity uint32
	floor       uint32
}

// maxFloors bounds the mailboxes whose floor is remembered.
const maxFloors = 10000

func (h *hub) setFloor(ref protocols.MailboxRef, uidValidity, floor uint32) {
	h.recentMu.Lock()
	defer h.recentMu.Unlock()
	if h.floors == nil || len(h.floors) >= maxFloors {
		h.floors = make(map[protocols.MailboxRef]floorMark)
	}
	h.floors[ref] = floorMark{uidValidity, floor}
}

func (h *hub) floorOf(ref protocols.MailboxRef, uidValidity uint32) uint32 {
	h.recentMu.Lock()
	defer h.recentMu.Unlock()
	if f, ok := h.floors[ref]; ok && f.uidValidity == uidValidity {
		return f.floor
	}
	return 0
}

// liveUIDs lists the mailbox's UIDs from above its floor (the view's
// lowest UID, or the one remembered), or all of them.
func (h *hub) liveUIDs(v *view, info store.MailboxInfo) (store.UIDList, error) {
	var floor uint32
	if v.opened && len(v.uids) > 0 {
		floor = v.uids[0] - 1
	} else {
		floor = h.floorOf(v.ref, info.UIDValidity)
	}
	if floor > 0 {
		now, uids, err := h.r.UIDsAfter(v.ref.User, v.ref.Mailbox, floor)
		if err == nil && now.UIDValidity == info.UIDValidity && int(now.Messages) == len(uids) {
			return uids, nil
		}
	}
	return h.r.UIDs(v.ref.User, v.ref.Mailbox)
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
// session source (it reports them itself, as STORE's response).
func (h *hub) changed(ref protocols.MailboxRef, c change, source *session, own []uint32) {
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
	case v.gone || !v.opened:
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
	h.keywordsOfLocked(v, added)
	h.addLocked(v, added)
	v.modseq = max(v.modseq, info.HighestModSeq)
	v.wakeLocked()
	return true
}

// addLocked appends new UIDs to v and queues them to its sessions, as
// \Recent to one session that has the mailbox selected read-write.
func (h *hub) addLocked(v *view, added []uint32) {
	v.uids = append(v.uids, added...) // readers copy under v.mu; the elements they saw do not change
	var owner *session
	for sess := range v.sessions {
		if sess.rw {
			owner = sess
			break
		}
	}
	if owner != nil {
		h.recentMu.Lock()
		h.firstRecent[v.ref] = recentMark{v.uidValidity, added[len(added)-1] + 1}
		h.recentMu.Unlock()
	}
	for sess := range v.sessions {
		sess.queue(update{kind: updExists, uids: added, recent: sess == owner})
	}
}

// keywordsOfLocked reads the flags of uids and takes any new keyword into
// v, telling its sessions.
func (h *hub) keywordsOfLocked(v *view, uids []uint32) {
	msgs, err := h.r.Messages(v.ref.User, v.ref.Mailbox, uids)
	if err != nil {
		return
	}
	for _, m := range msgs {
		h.noteKeywordsLocked(v, m.Flags)
	}
}

// noteKeywordsLocked takes the keywords among flags into v; if one is
// new, every session is told the mailbox's flags anew.
func (h *hub) noteKeywordsLocked(v *view, flags []string) {
	grew := false
	for _, f := range flags {
		if isKeyword(f) {
			if _, ok := v.keywords[f]; !ok {
				v.keywords[f] = struct{}{}
				grew = true
			}
		}
	}
	if !grew {
		return
	}
	kw := make([]string, 0, len(v.keywords))
	for k := range v.keywords {
		kw = append(kw, k)
	}
	slices.Sort(kw)
	for sess := range v.sessions {
		sess.queue(update{kind: updKeywords, flags: kw})
	}
}

// isKeyword tells a keyword from a system flag.
func isKeyword(f string) bool { return f != "" && f[0] != '\\' }

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
	goneUIDs := make([]uint32, len(gone))
	for k, i := range gone {
		goneUIDs[k] = v.uids[i]
	}
	for sess := range v.sessions {
		sess.queue(update{kind: updExpunge, uids: goneUIDs})
	}
	uids := make([]uint32, 0, kept+len(added))
	prev := 0
	for _, i := range gone {
		uids = append(uids, v.uids[prev:i]...)
		prev = i + 1
	}
	uids = append(uids, v.uids[prev:]...)
	v.uids = uids
	if len(added) > 0 {
		h.keywordsOfLocked(v, added)
		h.addLocked(v, added)
	}
	v.wakeLocked()
	return true
}

// flagsLocked reports the current flags of the given UIDs that v holds.
// It reports false when it could not read them, for a full reconcile.
// v.modseq stays: a full reconcile later may report these again, which
// is harmless.
func (h *hub) flagsLocked(v *view, uids []uint32, source *session, own []uint32) bool {
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
		h.noteKeywordsLocked(v, m.Flags)
		h.queueFlagsLocked(v, m, source, own)
	}
	v.wakeLocked()
	return true
}

// queueFlagsLocked queues m's flags to v's sessions, but to source only
// for UIDs not in own.
func (h *hub) queueFlagsLocked(v *view, m store.Message, source *session, own []uint32) {
	_, mine := slices.BinarySearch(own, m.UID)
	for sess := range v.sessions {
		if mine && sess == source {
			continue
		}
		sess.queue(update{kind: updFlags, uid: m.UID, flags: m.Flags, modseq: m.ModSeq})
	}
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
// updates that take the sessions from the old view to the new one.
func (h *hub) reconcileLocked(v *view, source *session, own []uint32) (store.MailboxInfo, error) {
	if v.gone {
		return store.MailboxInfo{}, nil
	}
	// Mailbox first: a change landing between the reads is then seen by
	// the UID list and the modseq search, and at worst reported twice.
	info, err := h.r.Mailbox(v.ref.User, v.ref.Mailbox)
	if errors.Is(err, store.ErrNoMailbox) || errors.Is(err, store.ErrNoUser) ||
		(err == nil && v.opened && info.UIDValidity != v.uidValidity) {
		v.goneLocked()
		return store.MailboxInfo{}, nil
	}
	if err != nil {
		return info, err
	}
	if v.opened && info.HighestModSeq == v.modseq {
		// Every change raises the mod-sequence: nothing changed.
		return info, nil
	}
	uids, err := h.liveUIDs(v, info)
	if err != nil {
		return info, err
	}
	if !v.opened { // first open
		kw, err := h.kw.get(v.ref, info.UIDValidity, func() ([]store.Message, error) {
			return h.r.Messages(v.ref.User, v.ref.Mailbox, nil)
		})
		if err != nil {
			return info, err
		}
		for _, k := range kw {
			v.keywords[k] = struct{}{}
		}
		v.opened = true
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
	if len(gone) > 0 {
		goneUIDs := make([]uint32, len(gone))
		for k, i := range gone {
			goneUIDs[k] = old[i]
		}
		for sess := range v.sessions {
			sess.queue(update{kind: updExpunge, uids: goneUIDs})
		}
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
	v.uids = kept
	if added := uids[len(kept):]; len(added) > 0 {
		h.keywordsOfLocked(v, added)
		h.addLocked(v, slices.Clone(added))
	}

	if info.HighestModSeq > v.modseq && len(kept) > 0 {
		// The kept messages' records, read by UID (a search would walk
		// the whole key range of the mailbox, tombstones included).
		msgs, err := h.r.Messages(v.ref.User, v.ref.Mailbox, kept)
		if err != nil {
			return info, err
		}
		for _, m := range msgs {
			if m.ModSeq <= v.modseq {
				continue
			}
			h.noteKeywordsLocked(v, m.Flags)
			h.queueFlagsLocked(v, m, source, own)
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
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s.bye(ctx, "Selected mailbox was deleted or renamed")
		}()
	}
}
