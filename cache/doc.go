// Package cache holds the two performance layers between the protocols and
// the store: a read cache (Cache, and Reader, which puts two of them in
// front of a store.Store for bodies and parsed metadata) and write group
// commit (GroupCommit). Cache and GroupCommit are generic; Reader is the
// package's only use of another Twinbox package (store). The node (package
// pair) wires them: its reads go through a Reader, its writes through a
// GroupCommit whose flush commits to the store or the replication log.
//
// # Reads
//
// Cache is a read-through cache of values that do not change once written,
// such as content-addressed bodies and the metadata computed at delivery.
// It is bounded by the sum of the values' weights (bytes, as the caller's
// weigh function counts them):
//
//   - Get returns the cached value or calls the caller's load function, once
//     for all concurrent Gets of the same key; load errors are returned to
//     those callers and never cached.
//   - A value heavier than Options.MaxEntryBytes (default MaxBytes/8) is
//     returned but not cached, so one huge message cannot flush the cache.
//   - Invalidate removes a key, also from a load in flight: that load's value
//     is not cached.
//   - The bound is enforced by the goroutines that write to the cache; with
//     a single writer it holds whenever Get returns, with concurrent writers
//     it may be exceeded by the entries being written until the next cache
//     operation completes the eviction. Stats settles the cache first.
//
// A Cache is a cache, not a source of truth: losing it (a restart) loses
// nothing but warm-up, and it holds nothing that is not durable in the
// store.
//
// # Writes
//
// GroupCommit turns concurrent writes into batches, each applied by one call
// of the caller's FlushFunc, which performs one durable commit (one Pebble
// batch with pebble.Sync, one batch of log publishes) for the whole batch.
//
// Durable means: Do returns a result only after the FlushFunc that applied
// its request has returned, that is after the FlushFunc's durable commit.
// A nil error from Do is therefore an acknowledgement that may be passed on
// to a client. Flushes run one at a time, in queue order, and a request
// handed to a flush is applied even if its caller's context ends meanwhile
// (Do then still waits and returns the real outcome). A request whose
// caller's context ends before it is handed to a flush, or that is still
// queued when Close is called, is dropped and not applied (Do returns
// ctx.Err() or ErrClosed).
//
// # Concurrency
//
// Every method of Cache and GroupCommit is safe for concurrent use. Neither
// starts a goroutine: a Cache's eviction work runs on the goroutines that
// write to it, a load runs on the goroutine of the Get that started it, and
// a flush runs on the goroutine of the Do whose request leads its batch
// (GroupCommit.Close waits for a flush in progress). Callbacks (weigh, load,
// FlushFunc) must not call back into the Cache or GroupCommit that runs
// them, except that a load may Get other keys.
package cache
