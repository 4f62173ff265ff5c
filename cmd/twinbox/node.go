package main

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

// node is a standalone node's write and read paths: the store, the read
// cache and group commit. It implements protocols.Reader and
// protocols.Writer. (The replicated pair puts the log between Write and
// the store; protocols do not change.)
type node struct {
	st     *store.Store
	reads  *cache.Reader
	commit *cache.GroupCommit[store.Op, store.Result]
	log    *slog.Logger

	// notify is told of every applied operation (IMAP updates).
	notify func(ctx context.Context, op store.Op)

	writes    atomic.Uint64
	writeErrs atomic.Uint64
	closing   atomic.Bool
}

var (
	_ protocols.Reader = (*node)(nil)
	_ protocols.Writer = (*node)(nil)
)

func openNode(ctx context.Context, c *config, log *slog.Logger) (*node, error) {
	st, err := store.Open(ctx, storeDir(c.Data), &store.Options{
		CacheSize:      c.StoreCache,
		MaxMessageSize: c.MaxMessageSize,
		Logger:         log.With("component", "store"),
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	reads, err := cache.NewReader(st, &cache.ReaderOptions{
		Bodies: &cache.Options{MaxBytes: c.CacheSize * 15 / 16},
		Metas:  &cache.Options{MaxBytes: c.CacheSize / 16},
	})
	if err != nil {
		st.Close(ctx)
		return nil, err
	}
	n := &node{st: st, reads: reads, log: log}
	n.commit = cache.NewGroupCommit(func(ctx context.Context, ops []store.Op) ([]store.Result, error) {
		return st.ApplyNext(ctx, store.Now(), ops...)
	}, nil)
	return n, nil
}

// Write admits op, commits it with group commit and returns once it is
// fsynced. Failures of the write path (not of the operation) are
// temporary for clients.
func (n *node) Write(ctx context.Context, op store.Op) (store.Result, error) {
	if n.closing.Load() {
		return store.Result{}, fmt.Errorf("%w: shutting down", protocols.ErrUnavailable)
	}
	if err := n.st.Admit(op); err != nil {
		return store.Result{}, err
	}
	res, err := n.commit.Do(ctx, op)
	if err != nil {
		n.writeErrs.Add(1)
		n.log.Error("write failed", "op", op.Kind(), "err", err)
		return res, fmt.Errorf("%w: %v", protocols.ErrUnavailable, err)
	}
	n.writes.Add(1)
	if res.Err == nil && n.notify != nil {
		n.notify(ctx, op)
	}
	return res, nil
}

// Reads: the store's, with bodies and metadata through the cache.

func (n *node) HasUser(user string) (bool, error) { return n.st.HasUser(user) }
func (n *node) Mailboxes(user string) ([]store.MailboxInfo, error) {
	return n.st.Mailboxes(user)
}
func (n *node) Mailbox(user, name string) (store.MailboxInfo, error) {
	return n.st.Mailbox(user, name)
}
func (n *node) UIDs(user, name string) (store.UIDList, error) { return n.st.UIDs(user, name) }
func (n *node) Messages(user, name string, uids []uint32) ([]store.Message, error) {
	return n.st.Messages(user, name, uids)
}
func (n *node) Search(user, name string, c *store.Criteria) ([]uint32, error) {
	return n.st.Search(user, name, c)
}
func (n *node) Body(ctx context.Context, id store.BlobID) ([]byte, error) {
	return n.reads.Body(ctx, id)
}
func (n *node) Meta(ctx context.Context, id store.BlobID) (*store.Meta, error) {
	return n.reads.Meta(ctx, id)
}
func (n *node) MaxMessageSize() int64 { return n.st.MaxMessageSize() }

// syncUsers creates the passwd-file's users in the store (with their
// INBOX), so that they exist before their first login or delivery. Users
// removed from the file keep their mail: deleting mail is an operator's
// explicit act, not a side effect of editing a file.
func (n *node) syncUsers(ctx context.Context, users []string) {
	for _, u := range users {
		ok, err := n.st.HasUser(u)
		if err != nil || ok {
			continue
		}
		res, err := n.Write(ctx, &store.CreateUser{User: u, UIDValidity: uint32(time.Now().Unix())})
		if err == nil {
			err = res.Err
		}
		if err != nil && !errors.Is(err, store.ErrUserExists) {
			n.log.Warn("create user in store", "user", u, "err", err)
		}
	}
}

// collect deletes bodies unreferenced for longer than grace, every
// interval, through the log like any other change.
func (n *node) collect(ctx context.Context, wg *sync.WaitGroup, every, grace time.Duration) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			res, err := n.Write(ctx, &store.Collect{Before: time.Now().Add(-grace).UnixNano(), Limit: 10000})
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

func (n *node) close(ctx context.Context) error {
	n.closing.Store(true)
	n.commit.Close()
	return n.st.Close(ctx)
}
