package pair

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// admitted is a write handed to group commit, with the commit path (term)
// that was current when Write let it in.
type admitted struct {
	op     store.Op
	origin protocols.Origin
	term   uint64
}

// outcome is what a commit did with one operation.
type outcome struct {
	store.Result
	// result, when set, is called after the commit, outside it, and
	// waits for the operation's outcome: on an active it applies once the
	// passive holds it (batches overlap the wait). Its error means the
	// change is in the log but not known to be durable where the node
	// promises: the client is told to retry.
	result func(ctx context.Context) (store.Result, error)
	// refused is set when the operation was not committed because the
	// role changed before its flush began.
	refused error
}

// errPathChanged refuses a write that waited for a flush while the commit
// path it was admitted for was replaced.
var errPathChanged = fmt.Errorf("%w: the node's write path changed while the write waited", protocols.ErrUnavailable)

// Write admits op, commits it with group commit (through the log, on an
// active) and returns once it is durable as docs/architecture.md promises an
// acknowledgement is: in the local store (standalone) or in both nodes'
// logs (an active in sync mode); and once its change was told to the
// frontends (Attach), with origin. Failures of the write path, not of the
// operation, are temporary (protocols.ErrUnavailable); a passive refuses
// with protocols.ErrReadOnly.
//
// A role change while op waits for its flush refuses it, uncommitted.
// Once its flush has begun, op gets its real outcome whatever change
// comes next.
func (p *Pair) Write(ctx context.Context, op store.Op, origin protocols.Origin) (store.Result, error) {
	if p.closing.Load() {
		return store.Result{}, errClosing
	}
	// Counted before the role is read: a demotion that waits for the
	// writes in flight after turning writes off either is seen here or
	// sees this write.
	p.inflight.add()
	defer p.inflight.done()
	s := p.roles.get()
	if !s.writable {
		return store.Result{}, s.refusal()
	}
	if err := p.loc.Load().st.Admit(op); err != nil {
		return store.Result{}, err
	}
	out, err := p.commit.Do(ctx, admitted{op: op, origin: origin, term: s.term})
	if err == nil && out.refused != nil {
		p.lg.Info("write refused: the node's role changed before its commit", "op", op.Kind(), "err", out.refused)
		return store.Result{}, out.refused
	}
	if err != nil {
		p.writeErrs.Add(1)
		p.lg.Error("write failed", "op", op.Kind(), "err", err)
		return out.Result, fmt.Errorf("%w: %w", protocols.ErrUnavailable, err)
	}
	var unconfirmed error
	if out.result != nil {
		// Losing the role ends the wait: nothing more is acknowledged.
		wctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(s.ctx, cancel)
		out.Result, unconfirmed = out.result(wctx)
		stop()
		cancel()
	}
	if unconfirmed == nil {
		p.pub.waitTold(ctx, out.Seq)
	}
	if unconfirmed != nil {
		p.unconfirmed.Add(1)
		return out.Result, fmt.Errorf("%w: %w", protocols.ErrUnavailable, unconfirmed)
	}
	p.writes.Add(1)
	return out.Result, nil
}

// flush is the group commit's FlushFunc: it commits a batch through the
// role current when the flush starts. Writes the role no longer allows
// are refused here, not committed: all of the batch when writes have
// stopped since they were admitted, and those admitted for a commit path
// that has been replaced since.
func (p *Pair) flush(ctx context.Context, batch []admitted) ([]outcome, error) {
	s := p.roles.get()
	out := make([]outcome, len(batch))
	if !s.writable {
		for i := range out {
			out[i].refused = s.refusal()
		}
		return out, nil
	}
	ops := make([]store.Op, 0, len(batch))
	tags := make([]any, 0, len(batch))
	for i, a := range batch {
		if a.term != s.term {
			out[i].refused = errPathChanged
			continue
		}
		ops = append(ops, a.op)
		tags = append(tags, a.origin)
	}
	if len(ops) == 0 {
		return out, nil
	}
	if p.flushHook != nil {
		p.flushHook()
	}
	var res []outcome
	if s.primary != nil {
		// Alone, UID skips go before the first new message of a mailbox
		// (alone.go); their outcomes are nobody's.
		all, allTags, mine := ops, tags, []int(nil)
		if skips := p.skipsFor(ops, s.epoch); skips != nil {
			all, allTags = nil, nil
			for i, op := range ops {
				for _, sk := range skips[i] {
					all, allTags = append(all, sk), append(allTags, nil)
				}
				mine = append(mine, len(all))
				all, allTags = append(all, op), append(allTags, tags[i])
			}
		}
		committed, err := s.primary.CommitTagged(ctx, all, allTags)
		if err != nil {
			return nil, err
		}
		if mine != nil {
			picked := make([]replog.Committed, len(mine))
			for i, j := range mine {
				picked[i] = committed[j]
			}
			committed = picked
		}
		res = make([]outcome, len(committed))
		for i, c := range committed {
			res[i] = outcome{Result: store.Result{Seq: c.Seq}, result: c.Result}
		}
	} else {
		results, err := p.loc.Load().st.ApplyNext(ctx, store.Now(), ops...)
		if err != nil {
			return nil, err
		}
		res = make([]outcome, len(results))
		for i := range results {
			p.pub.applied(results[i].Seq, ops[i], &results[i], tags[i])
			res[i] = outcome{Result: results[i]}
		}
	}
	if len(res) != len(ops) {
		return nil, fmt.Errorf("pair: the commit path returned %d outcomes for %d writes", len(res), len(ops))
	}
	j := 0
	for i := range out {
		if out[i].refused == nil {
			out[i] = res[j]
			j++
		}
	}
	return out, nil
}

// applied is the log's OnApplied, on both roles: every entry applied to
// the store goes to the one notification path, with its writer's origin
// when this node wrote it.
func (p *Pair) applied(e *replog.Entry, res *store.Result, tag any) {
	p.pub.applied(e.Seq, e.Op, res, tag)
}

// afterWritable starts what a writing node does once: creating the
// users the store lacks.
func (p *Pair) afterWritable() {
	if p.cfg.Users == nil {
		return
	}
	ctx, ok := p.WritableCtx(p.ctx)
	if !ok {
		return
	}
	p.wg.Go(func() { p.SyncUsers(ctx, p.cfg.Users()) })
}

// SyncUsers creates the given users in the store (with their INBOX)
// where they are missing, so that they exist before their first login or
// delivery. Users not in the list keep their mail: deleting mail is an
// operator's explicit act, not a side effect of editing a file. A node
// that does not write now does nothing: the active creates them, and they
// arrive through the log.
func (p *Pair) SyncUsers(ctx context.Context, users []string) {
	if !p.roles.get().writable {
		return
	}
	st := p.loc.Load().st
	var missing []string
	for _, u := range users {
		if ok, err := st.HasUser(u); err == nil && !ok {
			missing = append(missing, u)
		}
	}
	// Concurrently, so that group commit batches them: a passwd-file of
	// thousands of users (a Dovecot migration) is then a few commits, and
	// on an active whose passive is down, a few waits of peer_timeout
	// instead of one per user.
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		first  error
		next   = make(chan string)
	)
	for range min(syncUsersWorkers, len(missing)) {
		wg.Go(func() {
			for u := range next {
				res, err := p.Write(ctx, &store.CreateUser{User: u, UIDValidity: uint32(time.Now().Unix())}, nil)
				if err == nil {
					err = res.Err
				}
				if err != nil && !errors.Is(err, store.ErrUserExists) {
					mu.Lock()
					if failed++; first == nil {
						first = fmt.Errorf("%s: %w", u, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, u := range missing {
		next <- u
	}
	close(next)
	wg.Wait()
	if failed > 0 {
		p.lg.Warn("create users in store", "users", len(missing), "failed", failed, "first", first)
	}
}

// syncUsersWorkers bounds SyncUsers' concurrent writes.
const syncUsersWorkers = 64

// collect deletes bodies unreferenced for longer than CollectGrace, every
// CollectEvery, through the write path like any other change, while the
// node writes (a passive's collections arrive through the log).
func (p *Pair) collect() {
	t := time.NewTicker(p.cfg.CollectEvery)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		ctx, ok := p.WritableCtx(p.ctx)
		if !ok {
			continue
		}
		res, err := p.Write(ctx, &store.Collect{Before: time.Now().Add(-p.cfg.CollectGrace).UnixNano(), Limit: 10000}, nil)
		if err == nil {
			err = res.Err
		}
		switch {
		case err != nil && ctx.Err() == nil:
			p.lg.Warn("collect", "err", err)
		case err == nil && res.Collected > 0:
			p.lg.Info("collected unreferenced bodies", "blobs", res.Collected, "bytes", res.Freed)
		}
	}
}

// trim trims the log every LogTrimEvery: as the active, below what the
// passive confirmed; as a passive, below its own position; keeping
// LogKeep entries either way.
func (p *Pair) trim() {
	t := time.NewTicker(p.cfg.LogTrimEvery)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		var err error
		if pr := p.activePrimary(); pr != nil {
			err = pr.Retain(p.ctx, p.cfg.LogKeep)
		} else if f := p.follow.Load(); f != nil {
			f.mu.Lock()
			fl := f.f
			f.mu.Unlock()
			if fl != nil {
				err = fl.Retain(p.ctx, p.cfg.LogKeep)
			}
		}
		if err != nil && p.ctx.Err() == nil {
			p.lg.Warn("trim the log", "err", err)
		}
	}
}

// inflight counts calls in progress and wakes those waiting for none.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n falls to 0; nil while nobody waits
}

func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) done() {
	f.mu.Lock()
	if f.n--; f.n == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
	f.mu.Unlock()
}

// wait waits until no call is in progress, or until ctx ends.
func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return nil
	}
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
