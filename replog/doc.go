// Package replog is the ordered write log of a Twinbox pair (DESIGN.md,
// replog/): store operations become log entries (format version, epoch,
// sequence, operation) in a local JetStream file stream with SyncAlways,
// streamed to the passive node, which appends them at the same sequence
// numbers and applies them to its store.
//
// It depends on store (the operations and Apply) and dedupe (bodies sent
// once) only. The replicated pair is the subject of its own issue; until it
// lands, a standalone node's log is the store's own applied sequence
// (store.Store.ApplyNext).
package replog
