// Package store is a node's message store: a deterministic state machine on
// Pebble, fed with log entries.
//
// Every mutation is an operation value (CreateUser, Deliver, Copy, Move,
// StoreFlags, Expunge, Collect, ImportMailbox and Import for migrations
// that keep a source's UIDs, ...) applied through Apply together with the
// log sequence it came from. One Apply call is one Pebble batch that also
// records the last applied sequence, so:
//
//   - applying an entry twice changes nothing (entries at or below the
//     applied sequence are skipped), and a restart resumes exactly;
//   - the same entries applied to two empty stores give byte-identical state,
//     whatever the batching; Digest compares replicas and names the first
//     mailbox that differs;
//   - an entry is atomic: one that is refused (a missing mailbox, say)
//     leaves nothing behind, and its sequence is still consumed, the same way
//     on every node.
//
// Operations encode with EncodeOp (a version byte, a kind byte, deterministic
// CBOR); DecodeOp refuses unknown versions. Applying never depends on a
// node's configuration: limits are checked by Admit before an operation
// enters the log.
//
// Bodies are content-addressed (SHA-256 of the exact bytes received) and
// reference-counted: one body however many mailboxes hold it; COPY and MOVE
// add links, not bytes. Large MIME leaf parts are part blobs of their own
// (see package dedupe). A body whose count reaches zero is deleted by a
// later Collect operation once its grace period has passed.
//
// Durability: Apply returns only after its batch is fsynced (pebble.Sync).
// Concurrent Apply calls share fsyncs: each applies under a short lock and
// waits for the WAL fsync outside it.
//
// Concurrency: Apply calls are serialised; reads (Mailbox, Messages, Body,
// Search, Digest, Verify, ...) run concurrently with them and with each
// other and see a consistent snapshot.
package store
