package pair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/twinbox/twinbox/cache"
	"github.com/twinbox/twinbox/failover"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// Pair is a node: its store and read cache, its write path and, in a
// pair, its log, its embedded NATS server, its role and its automatic
// failover. It is a protocols.Reader and protocols.Writer for the
// protocol servers (its frontends, see Attach) and a failover.Node for
// the failover driver. It is safe for concurrent use.
type Pair struct {
	cfg Config
	lay Layout
	lg  *slog.Logger

	loc      atomic.Pointer[local] // the store and its caches; a resync replaces it
	commit   *cache.GroupCommit[admitted, outcome]
	inflight inflight
	pub      *publisher

	// The replication's parts (nil on a standalone node).
	srv *server.Server
	nc  *nats.Conn // in-process, to srv
	log *replog.Log

	// changeMu serialises role changes (promotion, demotion, resync,
	// Close) from beginning to end.
	changeMu sync.Mutex
	roles    roles
	// The active's parts (under changeMu).
	primary    *replog.Primary
	stopServe  func() // the checkpoint service for a passive's resync
	follow     atomic.Pointer[following]
	needResync atomic.Bool // the store cannot follow the active's log as it is

	alone  aloneSkips
	fo     *failoverRun
	merges merges
	// stopMerges stops answering merge steps (the active's).
	stopMerges func()

	writes, writeErrs, unconfirmed atomic.Uint64
	// flushHook, in tests, runs in a flush once it has read the role.
	flushHook func()

	closing atomic.Bool
	ctx     context.Context // the node's lifetime; background work ends with it
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var (
	_ protocols.Reader = (*Pair)(nil)
	_ protocols.Writer = (*Pair)(nil)
	_ failover.Node    = (*Pair)(nil)
)

// local is the node's store with its read caches: replaced whole by a
// resync, so that a read sees one store.
type local struct {
	st      *store.Store
	reads   *cache.Reader
	loaders *store.Loaders
}

func (p *Pair) openLocal(ctx context.Context) (*local, error) {
	st, err := store.Open(ctx, p.lay.Store(), &store.Options{
		CacheSize: p.cfg.StoreCache, MaxMessageSize: p.cfg.MaxMessageSize,
		Logger: p.lg.With("component", "store"),
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	reads, err := cache.NewReader(st, &cache.ReaderOptions{
		Bodies: &cache.Options{MaxBytes: p.cfg.CacheBytes * 15 / 16},
		Metas:  &cache.Options{MaxBytes: p.cfg.CacheBytes / 16},
	})
	if err != nil {
		st.Close(ctx)
		return nil, err
	}
	// SEARCH reads metadata through the cache: decoding every message's
	// metadata from the store was 3/4 of a header search.
	loaders := &store.Loaders{Meta: func(id store.BlobID) (*store.Meta, error) {
		return reads.Meta(context.Background(), id)
	}}
	return &local{st: st, reads: reads, loaders: loaders}, nil
}

// Open opens the node in cfg.Dir: its store, and in a pair its log and
// NATS server, in its starting role. A standalone node, or an active
// without failover, writes at once; a passive follows its active (with
// failover both nodes start passive and the driver decides). Close undoes
// it.
func Open(ctx context.Context, cfg Config) (*Pair, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pair: %w", err)
	}
	p := &Pair{cfg: cfg, lay: cfg.layout()}
	p.roles.hint = cfg.WriteHint
	p.lg = cfg.Logger.With("node", cfg.Name)
	if err := p.lay.Create(); err != nil {
		return nil, err
	}
	l, err := p.openLocal(ctx)
	if err != nil {
		return nil, err
	}
	p.loc.Store(l)
	if _, err := os.Stat(p.lay.resyncMarker()); err == nil {
		p.needResync.Store(true) // a rebuild was cut short: the store and log are not to be trusted
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.pub = newPublisher(l.st.AppliedSeq())
	p.commit = cache.NewGroupCommit(p.flush, nil)
	if err := p.start(ctx); err != nil {
		p.Close(context.Background())
		return nil, err
	}
	p.wg.Go(p.collect)
	return p, nil
}

// start brings the node into its first role.
func (p *Pair) start(ctx context.Context) error {
	c := &p.cfg
	if c.Role == Standalone {
		p.roles.set(&state{role: Standalone, writable: true, term: p.roles.nextTerm(), serving: true, ctx: p.ctx})
		p.afterWritable()
		return nil
	}
	var err error
	so := replog.ServerOptions{Name: c.Name, Dir: p.lay.Log(), Addr: c.NATSAddr,
		User: c.LinkUser, Password: c.LinkPassword, TLS: c.LinkTLS}
	if p.srv, err = replog.StartServer(so); err != nil {
		return err
	}
	if p.nc, err = replog.Connect(p.srv, c.LinkUser, c.LinkPassword, c.Name+"-local"); err != nil {
		return err
	}
	if p.log, err = replog.OpenLog(ctx, p.nc, nil); err != nil {
		return err
	}
	epoch := c.Epoch
	if s, err := p.log.State(ctx); err == nil && s.Last > 0 {
		if e, err := p.log.Get(ctx, s.Last); err == nil {
			epoch = max(epoch, e.Epoch)
		}
	}
	p.changeMu.Lock()
	if c.Role == Active && c.Failover == nil {
		err = p.becomeActive(ctx, epoch, false)
	} else {
		p.becomePassive(epoch)
	}
	p.changeMu.Unlock()
	if err != nil {
		return err
	}
	p.wg.Go(p.trim)
	if c.Failover != nil {
		if p.fo, err = p.startFailover(); err != nil {
			return fmt.Errorf("failover: %w", err)
		}
	}
	return nil
}

// Close stops the node: failover, role and background work, the write
// path (writes not yet committed fail), the store, the log and the NATS
// server. Stop the frontends first, so that transactions in flight end.
func (p *Pair) Close(ctx context.Context) error {
	p.closing.Store(true)
	p.StopFailover() // no role change from now on
	p.cancel()
	p.changeMu.Lock()
	p.stopFollowing()
	p.stopWriting()
	p.changeMu.Unlock()
	p.wg.Wait()
	if p.commit != nil {
		p.commit.Close()
	}
	if p.pub != nil {
		p.pub.close()
	}
	var err error
	if l := p.loc.Load(); l != nil {
		err = l.st.Close(ctx)
	}
	if p.nc != nil {
		p.nc.Close()
	}
	if p.srv != nil {
		p.srv.Shutdown()
		p.srv.WaitForShutdown()
	}
	return err
}

// StopFailover stops the automatic failover: no role change from now on
// (a shutdown in progress). Close does it too.
func (p *Pair) StopFailover() {
	if p.fo != nil {
		p.fo.close()
	}
}

// NATSAddr is the address of the node's NATS server (the replication
// link), "" on a standalone node.
func (p *Pair) NATSAddr() string {
	if p.srv == nil {
		return ""
	}
	return p.srv.Addr().String()
}

// Closing reports whether Close has begun.
func (p *Pair) Closing() bool { return p.closing.Load() }

// Layout is the node's data directory.
func (p *Pair) Layout() Layout { return p.lay }

// Store is the node's store now (a resync replaces it), for status,
// digests and tests.
func (p *Pair) Store() *store.Store { return p.loc.Load().st }

// Reads: the store's, with bodies and metadata through the cache.

func (p *Pair) HasUser(user string) (bool, error) { return p.loc.Load().st.HasUser(user) }
func (p *Pair) Mailboxes(user string) ([]store.MailboxInfo, error) {
	return p.loc.Load().st.Mailboxes(user)
}
func (p *Pair) Mailbox(user, name string) (store.MailboxInfo, error) {
	return p.loc.Load().st.Mailbox(user, name)
}
func (p *Pair) UIDs(user, name string) (store.UIDList, error) {
	return p.loc.Load().st.UIDs(user, name)
}
func (p *Pair) UIDsAfter(user, name string, after uint32) (store.MailboxInfo, store.UIDList, error) {
	return p.loc.Load().st.UIDsAfter(user, name, after)
}
func (p *Pair) Messages(user, name string, uids []uint32) ([]store.Message, error) {
	return p.loc.Load().st.Messages(user, name, uids)
}
func (p *Pair) Search(user, name string, c *store.Criteria) ([]uint32, error) {
	l := p.loc.Load()
	return l.st.SearchWith(user, name, c, l.loaders)
}
func (p *Pair) Body(ctx context.Context, id store.BlobID) ([]byte, error) {
	return p.loc.Load().reads.Body(ctx, id)
}
func (p *Pair) Meta(ctx context.Context, id store.BlobID) (*store.Meta, error) {
	return p.loc.Load().reads.Meta(ctx, id)
}
func (p *Pair) MaxMessageSize() int64 { return p.cfg.MaxMessageSize }

// Digest is the store's digest at its applied position.
func (p *Pair) Digest() (store.Digest, error) { return p.loc.Load().st.Digest() }

// errClosing refuses a write during Close.
var errClosing = fmt.Errorf("%w: shutting down", protocols.ErrUnavailable)

// isFatalFollow reports whether a follower's error means this node's store
// must be rebuilt from the active's.
func isFatalFollow(err error) bool {
	return errors.Is(err, replog.ErrDiverged) || errors.Is(err, replog.ErrLogTrimmed)
}
