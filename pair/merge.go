package pair

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// Merging a split brain (docs/architecture.md, "Split brain").
//
// A former active that rejoins with a diverged tail it had acknowledged
// to clients (alone, after a fence that lied, or in async mode) must not
// lose what it acknowledged. Before its store takes the tail back, it
// compares, for every user and mailbox the tail touched, its state at the
// last common position with its state after the tail (store.ViewAt), and
// writes a merge plan: operations to re-apply on the new active through
// its normal, replicated write path, as the Cyrus replication protocol
// resolves a split brain:
//
//   - A message the tail added (a delivery, an APPEND, a copy) is
//     delivered again, with its final flags, in the same mailbox — after a
//     UID skip past every UID the former active used there, so that no UID
//     one of its clients saw is given to another message; UIDVALIDITY
//     stays. A delivery whose client was never told it was done (sync
//     mode: it got a 451 and retries) is not re-applied.
//   - Flag changes to messages both sides hold are re-applied as deltas
//     (flags added, flags removed); messages the tail expunged are
//     expunged on the active too, if the active still holds them.
//   - A mailbox the tail created is created (with its UIDVALIDITY if
//     free); one the tail deleted is deleted only if the active has not
//     changed it since the split (same UIDVALIDITY, UIDNEXT and
//     HIGHESTMODSEQ); otherwise it stays, and the plan says why. A user
//     the tail created is created; one it deleted stays.
//
// Every operation of a plan carries an ID (store.Merged), so that a merge
// interrupted and started again applies nothing twice. The plan and the
// diverged file stay in Layout.Diverged; a finished plan is renamed
// *.merged as the archive of what was done.

// mergeSubject carries a merge's operations from the former active (now a
// passive) to the active, over the link.
const mergeSubject = "twinbox.merge"

// mergePlan is a plan file.
type mergePlan struct {
	ID       string   `json:"id"`
	Diverged string   `json:"diverged"`
	From     uint64   `json:"from"`
	To       uint64   `json:"to"`
	Found    int      `json:"found"`   // operations in the diverged tail
	Acked    int      `json:"acked"`   // of them, acknowledged to a client
	Skipped  []string `json:"skipped"` // what is not re-applied, and why
	Steps    []mergeStep
}

// mergeStep is one operation to re-apply, with the condition it needs.
type mergeStep struct {
	ID string `json:"id"`
	Op []byte `json:"op"` // store.EncodeOp
	// IfUnchanged, for a mailbox deletion: the mailbox as it was at the
	// split; the active deletes it only if it still is.
	IfUnchanged *store.MailboxInfo `json:"if_unchanged,omitempty"`
}

// mergeRequest and mergeReply travel on mergeSubject.
type mergeRequest struct {
	Step mergeStep `json:"step"`
}

type mergeReply struct {
	Applied   bool   `json:"applied,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Skipped   string `json:"skipped,omitempty"`
	Error     string `json:"error,omitempty"`
}

// MergeStatus reports the merges of diverged tails.
type MergeStatus struct {
	// Pending plans not finished yet.
	Pending int
	// Over every plan made since start: operations found in diverged
	// tails, acknowledged ones, steps re-applied on the active (or found
	// applied already), and steps or operations skipped, by reason.
	Found, Acked, Applied, Duplicates int
	Skipped                           map[string]int
	LastError                         string
}

// merges is a node's merge bookkeeping.
type merges struct {
	mu     sync.Mutex
	status MergeStatus
}

func (m *merges) add(f func(s *MergeStatus)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.status.Skipped == nil {
		m.status.Skipped = map[string]int{}
	}
	f(&m.status)
}

func (m *merges) get() MergeStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.status
	s.Skipped = map[string]int{}
	for k, v := range m.status.Skipped {
		s.Skipped[k] = v
	}
	return s
}

// planMerge is the follower's OnDiverged: it writes the merge plan of a
// diverged tail while the store still holds it.
func (p *Pair) planMerge(ctx context.Context, d replog.Diverged) error {
	entries, err := replog.ReadDiverged(d.Path)
	if err != nil {
		return err
	}
	plan := &mergePlan{ID: fmt.Sprintf("%s/%d-%d", p.cfg.Name, d.From, d.To), Diverged: d.Path, From: d.From, To: d.To,
		Found: len(entries), Acked: len(d.Acked)}
	if len(d.Acked) == 0 {
		plan.Skipped = append(plan.Skipped, fmt.Sprintf("all %d operations: none was acknowledged to a client (its senders retry)", len(entries)))
	} else if err := p.buildPlan(plan, entries, d); err != nil {
		return err
	}
	p.merges.add(func(s *MergeStatus) {
		s.Found += plan.Found
		s.Acked += plan.Acked
		for _, why := range plan.Skipped {
			s.Skipped[skipReason(why)]++
		}
	})
	path := strings.TrimSuffix(d.Path, ".log") + ".plan"
	b, err := json.MarshalIndent(plan, "", " ")
	if err != nil {
		return err
	}
	if err := writeSync(path, b); err != nil {
		return fmt.Errorf("write the merge plan: %w", err)
	}
	p.lg.Warn("diverged tail: merge planned", "plan", path, "found", plan.Found, "acknowledged", plan.Acked,
		"steps", len(plan.Steps), "skipped", len(plan.Skipped))
	return nil
}

// skipReason is the kind of a skip, for counting: the text after "): ".
func skipReason(why string) string {
	if i := strings.LastIndex(why, ": "); i >= 0 {
		return why[i+2:]
	}
	return why
}

// buildPlan compares the state at the split with the state after the
// tail, for everything the tail touched.
func (p *Pair) buildPlan(plan *mergePlan, entries []replog.Entry, d replog.Diverged) error {
	st := p.loc.Load().st
	before, err := st.ViewAt(d.From - 1)
	if err != nil {
		return err
	}
	defer before.Close()
	after, err := st.ViewAt(st.AppliedSeq())
	if err != nil {
		return err
	}
	defer after.Close()

	ackedBodies := map[store.BlobID]bool{}
	unackedBodies := map[store.BlobID]bool{}
	touched := map[string]map[string]bool{} // user -> mailboxes
	touch := func(user, box string) {
		if touched[user] == nil {
			touched[user] = map[string]bool{}
		}
		if box != "" {
			touched[user][box] = true
		}
	}
	for _, e := range entries {
		for _, r := range protocols.Affected(e.Op) {
			touch(r.User, r.Mailbox)
		}
		switch op := e.Op.(type) {
		case *store.CreateUser:
			touch(op.User, "INBOX")
		case *store.DeleteUser:
			touch(op.User, "")
		case *store.Deliver:
			if d.Acked[e.Seq] {
				ackedBodies[op.Body.ID] = true
			} else {
				unackedBodies[op.Body.ID] = true
			}
		}
	}
	step := func(op store.Op) {
		plan.Steps = append(plan.Steps, mergeStep{ID: fmt.Sprintf("%s/%d", plan.ID, len(plan.Steps)), Op: store.EncodeOp(op)})
	}
	users := make([]string, 0, len(touched))
	for u := range touched {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, user := range users {
		bBoxes, err := before.Mailboxes(user)
		if err != nil {
			return err
		}
		aBoxes, err := after.Mailboxes(user)
		if err != nil {
			return err
		}
		switch {
		case len(bBoxes) > 0 && len(aBoxes) == 0:
			plan.Skipped = append(plan.Skipped, fmt.Sprintf("user %s (deleted on this node during the split): kept on the active", user))
			continue
		case len(bBoxes) == 0 && len(aBoxes) > 0:
			step(&store.CreateUser{User: user, UIDValidity: boxNamed(aBoxes, store.Inbox).UIDValidity})
		}
		names := make([]string, 0, len(touched[user]))
		for n := range touched[user] {
			if c, err := store.CanonicalMailbox(n); err == nil {
				names = append(names, c)
			}
		}
		sort.Strings(names)
		names = slices.Compact(names)
		for _, name := range names {
			if err := p.planMailbox(plan, step, before, after, user, name, bBoxes, aBoxes, ackedBodies, unackedBodies); err != nil {
				return err
			}
		}
	}
	return nil
}

// boxNamed finds a mailbox in a list; the zero value when absent.
func boxNamed(boxes []store.MailboxInfo, name string) store.MailboxInfo {
	for _, b := range boxes {
		if b.Name == name {
			return b
		}
	}
	return store.MailboxInfo{}
}

func hasBox(boxes []store.MailboxInfo, name string) bool {
	return slices.ContainsFunc(boxes, func(b store.MailboxInfo) bool { return b.Name == name })
}

// planMailbox adds the steps of one mailbox.
func (p *Pair) planMailbox(plan *mergePlan, step func(store.Op), before, after *store.View, user, name string,
	bBoxes, aBoxes []store.MailboxInfo, acked, unacked map[store.BlobID]bool) error {
	inB, inA := hasBox(bBoxes, name), hasBox(aBoxes, name)
	b, a := boxNamed(bBoxes, name), boxNamed(aBoxes, name)
	where := fmt.Sprintf("%s/%s", user, name)
	switch {
	case !inA && !inB:
		return nil
	case inB && !inA:
		s := mergeStep{ID: fmt.Sprintf("%s/%d", plan.ID, len(plan.Steps)),
			Op: store.EncodeOp(&store.DeleteMailbox{User: user, Name: name}), IfUnchanged: &b}
		plan.Steps = append(plan.Steps, s)
		return nil
	case inA && !inB:
		step(&store.CreateMailbox{User: user, Name: name, UIDValidity: a.UIDValidity, SpecialUse: a.SpecialUse, Subscribe: a.Subscribed})
	}
	aMsgs, err := after.Messages(user, name)
	if err != nil {
		return err
	}
	var bMsgs []store.Message
	if inB && b.UIDValidity == a.UIDValidity {
		if bMsgs, err = before.Messages(user, name); err != nil {
			return err
		}
	}
	old := map[uint32]store.Message{}
	for _, m := range bMsgs {
		old[m.UID] = m
	}
	var news []store.Message
	for _, m := range aMsgs {
		if o, ok := old[m.UID]; ok && o.Body == m.Body {
			p.planFlags(step, user, name, o, m)
			delete(old, m.UID)
			continue
		}
		news = append(news, m)
	}
	var gone []uint32
	for uid := range old {
		gone = append(gone, uid)
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		step(&store.StoreFlags{User: user, Mailbox: name, UIDs: gone, Action: store.FlagsAdd, Flags: []string{store.FlagDeleted}})
		step(&store.Expunge{User: user, Mailbox: name, UIDs: gone})
	}
	skipped := false
	for _, m := range news {
		if unacked[m.Body] && !acked[m.Body] {
			plan.Skipped = append(plan.Skipped, fmt.Sprintf("a message in %s (UID %d): not acknowledged (the sender retries)", where, m.UID))
			continue
		}
		if !skipped {
			// Past every UID this node used here: none of them will ever
			// name another message on the active.
			step(&store.SkipUIDs{User: user, Mailbox: name, Next: uint64(a.UIDNext)})
			skipped = true
		}
		raw, err := after.Body(m.Body)
		if err != nil {
			return err
		}
		body := dedupe.Prepare(raw, nil)
		step(&store.Deliver{Body: *body, InternalDate: m.InternalDate.UnixNano(),
			Targets: []store.Target{{User: user, Mailbox: name, Prefix: m.Prefix, Flags: m.Flags}}})
	}
	return nil
}

// planFlags re-applies the tail's change of one message's flags as
// deltas, so that changes made on the active meanwhile stay.
func (p *Pair) planFlags(step func(store.Op), user, name string, before, after store.Message) {
	var added, removed []string
	for _, f := range after.Flags {
		if !slices.Contains(before.Flags, f) {
			added = append(added, f)
		}
	}
	for _, f := range before.Flags {
		if !slices.Contains(after.Flags, f) {
			removed = append(removed, f)
		}
	}
	if len(added) > 0 {
		step(&store.StoreFlags{User: user, Mailbox: name, UIDs: []uint32{after.UID}, Action: store.FlagsAdd, Flags: added})
	}
	if len(removed) > 0 {
		step(&store.StoreFlags{User: user, Mailbox: name, UIDs: []uint32{after.UID}, Action: store.FlagsRemove, Flags: removed})
	}
}

// pendingPlans lists the merge plans not finished yet.
func (p *Pair) pendingPlans() []string {
	plans, _ := filepath.Glob(filepath.Join(p.lay.Diverged(), "*.plan"))
	sort.Strings(plans)
	return plans
}

// runMerges sends the pending plans' steps to the active until they are
// all done or ctx ends (the follower loop runs it while following).
func (p *Pair) runMerges(ctx context.Context, remote *nats.Conn) {
	for _, path := range p.pendingPlans() {
		for ctx.Err() == nil {
			err := p.runPlan(ctx, remote, path)
			if err == nil {
				break
			}
			p.merges.add(func(s *MergeStatus) { s.LastError = err.Error() })
			p.lg.Warn("merge: retrying", "plan", path, "err", err)
			sleep(ctx, time.Second)
		}
	}
}

// runPlan sends one plan's steps, in order, and marks it done.
func (p *Pair) runPlan(ctx context.Context, remote *nats.Conn, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var plan mergePlan
	if err := json.Unmarshal(b, &plan); err != nil {
		return fmt.Errorf("merge plan %s: %w", path, err)
	}
	// Each step is a replicated write on the active and waits for its
	// passive (this node) to confirm: one at a time, a merge of a few
	// thousand steps took minutes. Steps on single messages (deliveries,
	// flag deltas) do not depend on one another, so they go out
	// concurrently, mergeWindow at a time; any other step (a mailbox or
	// user change, a UID skip, an expunge) waits for every step before it
	// and runs alone. Deliveries of one window may take their new UIDs in
	// another order than in the tail; every UID is still new.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(mergeWindow)
	for _, s := range plan.Steps {
		if concurrentStep(s) {
			g.Go(func() error { return p.sendStep(gctx, remote, s) })
			continue
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if err := p.sendStep(ctx, remote, s); err != nil {
			return err
		}
		g, gctx = errgroup.WithContext(ctx)
		g.SetLimit(mergeWindow)
	}
	if err := g.Wait(); err != nil {
		return err
	}
	done := strings.TrimSuffix(path, ".plan") + ".merged"
	if err := os.Rename(path, done); err != nil {
		return err
	}
	p.lg.Warn("merge done: what this node acknowledged alone is on the active", "plan", done, "steps", len(plan.Steps))
	return nil
}

// mergeWindow bounds the merge steps in flight at once.
const mergeWindow = 32

// concurrentStep tells a step that may run beside its neighbours: one
// that changes a single message.
func concurrentStep(s mergeStep) bool {
	if s.IfUnchanged != nil {
		return false
	}
	op, err := store.DecodeOp(s.Op)
	if err != nil {
		return false // sendStep reports it, alone
	}
	switch op := op.(type) {
	case *store.Deliver:
		return true
	case *store.StoreFlags:
		return len(op.UIDs) == 1
	}
	return false
}

// sendStep has the active apply one step and counts its outcome.
func (p *Pair) sendStep(ctx context.Context, remote *nats.Conn, s mergeStep) error {
	req, _ := json.Marshal(mergeRequest{Step: s})
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	msg, err := remote.RequestWithContext(rctx, mergeSubject, req)
	cancel()
	if err != nil {
		return fmt.Errorf("step %s: %w", s.ID, err)
	}
	var r mergeReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return fmt.Errorf("step %s: the active's answer: %w", s.ID, err)
	}
	switch {
	case r.Error != "":
		return fmt.Errorf("step %s: %s", s.ID, r.Error)
	case r.Skipped != "":
		p.merges.add(func(st *MergeStatus) { st.Skipped[r.Skipped]++ })
	case r.Duplicate:
		p.merges.add(func(st *MergeStatus) { st.Duplicates++ })
	default:
		p.merges.add(func(st *MergeStatus) { st.Applied++ })
	}
	return nil
}

// serveMerges answers merge steps on the active (on its own NATS server,
// where the passive's link connection arrives), through the replicated
// write path. The returned func stops it.
func (p *Pair) serveMerges() (func(), error) {
	// A subscription's handler runs one message at a time; the steps a
	// merge sends concurrently are applied concurrently (their writes
	// share group commits), at most mergeWindow at once.
	var (
		slots   = make(chan struct{}, mergeWindow)
		mu      sync.Mutex
		stopped bool
		wg      sync.WaitGroup
	)
	sub, err := p.nc.Subscribe(mergeSubject, func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return // the sender's request times out and it retries
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			var req mergeRequest
			var rep mergeReply
			if err := json.Unmarshal(m.Data, &req); err != nil {
				rep.Error = "malformed merge request: " + err.Error()
			} else {
				rep = p.applyMergeStep(req.Step)
			}
			b, _ := json.Marshal(rep)
			_ = m.Respond(b)
		})
	})
	if err != nil {
		return nil, err
	}
	return func() {
		sub.Unsubscribe()
		mu.Lock()
		stopped = true
		mu.Unlock()
		wg.Wait()
	}, nil
}

// applyMergeStep applies one step on the active, once.
func (p *Pair) applyMergeStep(s mergeStep) mergeReply {
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	op, err := store.DecodeOp(s.Op)
	if err != nil {
		return mergeReply{Error: err.Error()}
	}
	if c := s.IfUnchanged; c != nil {
		if d, ok := op.(*store.DeleteMailbox); ok {
			now, err := p.Mailbox(d.User, d.Name)
			if err == nil && (now.UIDValidity != c.UIDValidity || now.UIDNext != c.UIDNext || now.HighestModSeq != c.HighestModSeq) {
				return mergeReply{Skipped: "a mailbox deleted on the former active was changed on the active: kept"}
			}
		}
	}
	res, err := p.Write(ctx, &store.Merged{ID: s.ID, Op: s.Op}, nil)
	if err != nil {
		return mergeReply{Error: err.Error()}
	}
	if res.Err != nil {
		// The operation does not apply to the active's state (a mailbox
		// gone, a user gone): nothing to merge, and it is recorded so.
		if errors.Is(res.Err, store.ErrNoMailbox) || errors.Is(res.Err, store.ErrNoUser) || errors.Is(res.Err, store.ErrMailboxExists) || errors.Is(res.Err, store.ErrUserExists) {
			return mergeReply{Skipped: fmt.Sprintf("%s does not apply on the active: %v", op.Kind(), res.Err)}
		}
		return mergeReply{Skipped: res.Err.Error()}
	}
	return mergeReply{Applied: !res.Duplicate, Duplicate: res.Duplicate}
}
