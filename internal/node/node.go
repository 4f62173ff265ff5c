// Package node is a standalone node's write and read paths: the store, the
// read cache and group commit, as protocols.Reader and protocols.Writer.
// cmd/twinbox wires it to the protocol servers; tests use it the same way.
// (The replicated pair puts the log between Write and the store; the
// protocols do not change.)
//
// A node's role can change while it serves (failover): SetReadOnly,
// SetWritable and UseCommit are safe at any time, concurrently with
// writes, and WaitWrites lets a demotion wait for the writes in flight.
// What a write in flight at a switch gets is stated on Write.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinbox/twinbox/cache"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// Local is a standalone node: writes go through group commit straight to
// the store. It is safe for concurrent use.
type Local struct {
	st     *store.Store
	reads  *cache.Reader
	commit *cache.GroupCommit[admitted, Outcome]
	// role is what writes see now: refused (a passive) or not, and the
	// commit path. Setters replace it whole under roleMu; readers load it
	// once per decision.
	role   atomic.Pointer[role]
	roleMu sync.Mutex
	// inflight counts the calls of Write in progress, for WaitWrites.
	inflight inflight
	log      *slog.Logger
	// loaders read for SEARCH through the cache.
	loaders *store.Loaders

	// notify is told of every applied operation (IMAP updates).
	notify protocols.Notifier

	writes    atomic.Uint64
	writeErrs atomic.Uint64
	// unconfirmed counts writes applied but not confirmed by the peer.
	unconfirmed atomic.Uint64
	closing     atomic.Bool
	wg          sync.WaitGroup
	stop        context.CancelFunc
	bgCtx       context.Context
}

var (
	_ protocols.Reader = (*Local)(nil)
	_ protocols.Writer = (*Local)(nil)
)

// Options configure a Local node. A nil *Options means defaults.
type Options struct {
	Store *store.Options
	// CacheBytes bounds the read cache (bodies and metadata); 0 means
	// cache.DefaultMaxBytes.
	CacheBytes int64
	Logger     *slog.Logger
}

// Open opens the store in dir and returns the node.
func Open(ctx context.Context, dir string, opts *Options) (*Local, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = cache.DefaultMaxBytes
	}
	so := store.Options{}
	if o.Store != nil {
		so = *o.Store
	}
	if so.Logger == nil {
		so.Logger = o.Logger.With("component", "store")
	}
	st, err := store.Open(ctx, dir, &so)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	reads, err := cache.NewReader(st, &cache.ReaderOptions{
		Bodies: &cache.Options{MaxBytes: o.CacheBytes * 15 / 16},
		Metas:  &cache.Options{MaxBytes: o.CacheBytes / 16},
	})
	if err != nil {
		st.Close(ctx)
		return nil, err
	}
	n := &Local{st: st, reads: reads, log: o.Logger}
	// SEARCH reads metadata through the cache: decoding every message's
	// metadata from the store was 3/4 of a header search.
	n.loaders = &store.Loaders{Meta: func(id store.BlobID) (*store.Meta, error) {
		return reads.Meta(context.Background(), id)
	}}
	n.bgCtx, n.stop = context.WithCancel(context.Background())
	n.role.Store(&role{commit: func(ctx context.Context, ops []store.Op) ([]Outcome, error) {
		res, err := st.ApplyNext(ctx, store.Now(), ops...)
		if err != nil {
			return nil, err
		}
		out := make([]Outcome, len(res))
		for i, r := range res {
			out[i].Result = r
		}
		return out, nil
	}})
	n.commit = cache.NewGroupCommit(n.flush, nil)
	return n, nil
}

// role is a node's write role at one moment. It is never changed in
// place: a switch stores a new one.
type role struct {
	// readOnly, when set, refuses every write with it (a passive).
	readOnly error
	// commit is what a group commit flushes through: the store itself
	// (standalone) or the replication log (the active of a pair).
	commit CommitFunc
	// path numbers commit: UseCommit increments it, so that a flush can
	// tell the writes admitted for another path.
	path uint64
}

// admitted is a write handed to group commit, with the commit path that
// was current when Write let it in.
type admitted struct {
	op   store.Op
	path uint64
}

// flush is the group commit's FlushFunc: it commits a batch through the
// role current when the flush starts. Writes the role no longer allows
// are refused here, not committed: all of the batch when the node has
// become read-only since they were admitted, and those admitted for a
// commit path that UseCommit has replaced since (the new path was not
// theirs: the log of another epoch, or the store of a node that is no
// longer the active).
func (n *Local) flush(ctx context.Context, batch []admitted) ([]Outcome, error) {
	r := n.role.Load()
	out := make([]Outcome, len(batch))
	if r.readOnly != nil {
		for i := range out {
			out[i].refused = r.readOnly
		}
		return out, nil
	}
	ops := make([]store.Op, 0, len(batch))
	for i, a := range batch {
		if a.path != r.path {
			out[i].refused = errPathChanged
			continue
		}
		ops = append(ops, a.op)
	}
	if len(ops) == 0 {
		return out, nil
	}
	res, err := r.commit(ctx, ops)
	if err != nil {
		return nil, err
	}
	if len(res) != len(ops) {
		return nil, fmt.Errorf("node: the commit path returned %d outcomes for %d writes", len(res), len(ops))
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

// errPathChanged refuses a write that waited for a flush while UseCommit
// replaced the commit path it was admitted for.
var errPathChanged = fmt.Errorf("%w: the node's write path changed while the write waited", protocols.ErrUnavailable)

// Outcome is what a commit did with one operation.
type Outcome struct {
	store.Result
	// Unconfirmed is set when the change was applied here but is not
	// known to be durable where the node promises (the passive did not
	// confirm it in time): the client is told to retry.
	Unconfirmed error
	// Wait, when set, is called after the commit, outside it, and decides
	// Unconfirmed (the wait for the passive: batches overlap it).
	Wait func(ctx context.Context) error

	// refused is set by the node when the operation was not committed
	// because the role changed before its flush began.
	refused error
}

// CommitFunc applies a batch of admitted operations durably.
type CommitFunc func(ctx context.Context, ops []store.Op) ([]Outcome, error)

// UseCommit replaces the write path (the replication log's, on the active
// of a pair). It is safe at any time, concurrently with writes: a flush
// uses the path current when it starts, and a write admitted before the
// switch whose flush starts after it is refused as temporarily
// unavailable (protocols.ErrUnavailable), never committed through a path
// it was not admitted for. A flush already running finishes on the old
// path. To promote, call UseCommit before SetWritable; to demote,
// SetReadOnly and WaitWrites before UseCommit.
func (n *Local) UseCommit(f CommitFunc) {
	n.roleMu.Lock()
	defer n.roleMu.Unlock()
	r := *n.role.Load()
	r.commit, r.path = f, r.path+1
	n.role.Store(&r)
}

// SetReadOnly makes every write fail with why wrapped in
// protocols.ErrReadOnly (a passive). It is safe at any time, concurrently
// with writes: a write entering Write afterwards is refused, and so is one
// admitted before it but still waiting for a flush; only a flush already
// running completes, and its writes get their real outcome (WaitWrites
// waits for them). Writes that began earlier than SetReadOnly may thus
// still succeed after it returned, never ones that begin later.
func (n *Local) SetReadOnly(why string) {
	n.roleMu.Lock()
	defer n.roleMu.Unlock()
	r := *n.role.Load()
	r.readOnly = fmt.Errorf("%w: %s", protocols.ErrReadOnly, why)
	n.role.Store(&r)
}

// SetWritable lets writes through again (a promotion), through the commit
// path last given to UseCommit. It is safe at any time; writes refused
// before it are not retried.
func (n *Local) SetWritable() {
	n.roleMu.Lock()
	defer n.roleMu.Unlock()
	r := *n.role.Load()
	r.readOnly = nil
	n.role.Store(&r)
}

// ReadOnly reports whether writes are refused now.
func (n *Local) ReadOnly() bool { return n.role.Load().readOnly != nil }

// WaitWrites waits until no call of Write is in progress (a write's
// commit, and its wait for the passive, included), or until ctx ends, when
// it returns ctx's error. With writes still allowed, a new write may start
// as soon as it returns: a demotion calls SetReadOnly first, so that what
// WaitWrites waits for can only end.
func (n *Local) WaitWrites(ctx context.Context) error { return n.inflight.wait(ctx) }

// Notify tells the IMAP side of an operation applied by someone else
// (the replication log on a passive), with its result.
func (n *Local) Notify(c protocols.Change) {
	if n.notify != nil {
		n.notify.Notify(c)
	}
}

// SetNotify sets the function told of every applied operation, whoever
// made it (the IMAP server's Notify). Call it before serving.
func (n *Local) SetNotify(f protocols.Notifier) { n.notify = f }

// Store is the node's store, for status and tests.
func (n *Local) Store() *store.Store { return n.st }

// Stats are the node's counters.
type Stats struct {
	Writes, WriteFailures uint64
	Unconfirmed           uint64
	Commit                cache.CommitStats
	Cache                 cache.ReaderStats
}

// Stats returns the node's counters.
func (n *Local) Stats() Stats {
	return Stats{Writes: n.writes.Load(), WriteFailures: n.writeErrs.Load(), Unconfirmed: n.unconfirmed.Load(),
		Commit: n.commit.Stats(), Cache: n.reads.Stats()}
}

// Closing reports whether Close has begun.
func (n *Local) Closing() bool { return n.closing.Load() }

// Write admits op, commits it with group commit and returns once it is
// fsynced. Failures of the write path (not of the operation) are
// temporary for clients.
//
// A role switch while op waits for its flush (SetReadOnly, UseCommit)
// refuses it, uncommitted: with the read-only error, or with
// protocols.ErrUnavailable after a change of commit path. Once its flush
// has begun, op gets its real outcome whatever switch comes next.
func (n *Local) Write(ctx context.Context, op store.Op, origin protocols.Origin) (store.Result, error) {
	if n.closing.Load() {
		return store.Result{}, fmt.Errorf("%w: shutting down", protocols.ErrUnavailable)
	}
	// Counted before the role is read: a SetReadOnly that WaitWrites
	// follows either is seen here or sees this write.
	n.inflight.add()
	defer n.inflight.done()
	r := n.role.Load()
	if r.readOnly != nil {
		return store.Result{}, r.readOnly
	}
	if err := n.st.Admit(op); err != nil {
		return store.Result{}, err
	}
	out, err := n.commit.Do(ctx, admitted{op: op, path: r.path})
	if err == nil && out.refused != nil {
		n.log.Info("write refused: the node's role changed before its commit", "op", op.Kind(), "err", out.refused)
		return store.Result{}, out.refused
	}
	if err != nil {
		n.writeErrs.Add(1)
		n.log.Error("write failed", "op", op.Kind(), "err", err)
		return out.Result, fmt.Errorf("%w: %v", protocols.ErrUnavailable, err)
	}
	if out.Wait != nil && out.Err == nil {
		out.Unconfirmed = out.Wait(ctx)
	}
	if out.Err == nil && n.notify != nil {
		n.notify.Notify(protocols.Change{Op: op, Result: &out.Result, Origin: origin})
	}
	if out.Unconfirmed != nil {
		n.unconfirmed.Add(1)
		return out.Result, fmt.Errorf("%w: %v", protocols.ErrUnavailable, out.Unconfirmed)
	}
	n.writes.Add(1)
	return out.Result, nil
}

// Reads: the store's, with bodies and metadata through the cache.

func (n *Local) HasUser(user string) (bool, error) { return n.st.HasUser(user) }
func (n *Local) Mailboxes(user string) ([]store.MailboxInfo, error) {
	return n.st.Mailboxes(user)
}
func (n *Local) Mailbox(user, name string) (store.MailboxInfo, error) {
	return n.st.Mailbox(user, name)
}
func (n *Local) UIDs(user, name string) (store.UIDList, error) { return n.st.UIDs(user, name) }
func (n *Local) UIDsAfter(user, name string, after uint32) (store.MailboxInfo, store.UIDList, error) {
	return n.st.UIDsAfter(user, name, after)
}
func (n *Local) Messages(user, name string, uids []uint32) ([]store.Message, error) {
	return n.st.Messages(user, name, uids)
}
func (n *Local) Search(user, name string, c *store.Criteria) ([]uint32, error) {
	return n.st.SearchWith(user, name, c, n.loaders)
}
func (n *Local) Body(ctx context.Context, id store.BlobID) ([]byte, error) {
	return n.reads.Body(ctx, id)
}
func (n *Local) Meta(ctx context.Context, id store.BlobID) (*store.Meta, error) {
	return n.reads.Meta(ctx, id)
}
func (n *Local) MaxMessageSize() int64 { return n.st.MaxMessageSize() }

// SyncUsers creates the passwd-file's users in the store (with their
// INBOX), so that they exist before their first login or delivery. Users
// removed from the file keep their mail: deleting mail is an operator's
// explicit act, not a side effect of editing a file.
func (n *Local) SyncUsers(ctx context.Context, users []string) {
	if n.ReadOnly() {
		return // the active creates them; they arrive through the log
	}
	var missing []string
	for _, u := range users {
		if ok, err := n.st.HasUser(u); err == nil && !ok {
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
				res, err := n.Write(ctx, &store.CreateUser{User: u, UIDValidity: uint32(time.Now().Unix())}, nil)
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
		n.log.Warn("create users in store", "users", len(missing), "failed", failed, "first", first)
	}
}

// syncUsersWorkers bounds SyncUsers' concurrent writes.
const syncUsersWorkers = 64

// Collect starts deleting bodies unreferenced for longer than grace,
// every interval, through the write path like any other change. It stops
// at Close. While the node is read-only it skips its rounds: the active's
// collections arrive through the log.
func (n *Local) Collect(every, grace time.Duration) {
	ctx := n.bgCtx
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if n.ReadOnly() {
				continue
			}
			res, err := n.Write(ctx, &store.Collect{Before: time.Now().Add(-grace).UnixNano(), Limit: 10000}, nil)
			if err == nil {
				err = res.Err
			}
			if err != nil {
				n.log.Warn("collect", "err", err)
			} else if res.Collected > 0 {
				n.log.Info("collected unreferenced bodies", "blobs", res.Collected, "bytes", res.Freed)
			}
		}
	}()
}

// Close stops the collector, fails writes not yet committed and closes
// the store.
func (n *Local) Close(ctx context.Context) error {
	n.closing.Store(true)
	n.stop()
	n.wg.Wait()
	n.commit.Close()
	return n.st.Close(ctx)
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
