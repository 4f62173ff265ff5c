// Package replog is the ordered write log of a Twinbox pair (docs/architecture.md,
// replog/): store operations become log entries (format version, epoch,
// sequence, operation) in a local JetStream file stream, streamed to the
// passive node, which appends them at the same sequence numbers and
// applies them to its store.
//
// Durability. StartServer runs nats-server with SyncAlways (checked) and
// OpenLog keeps the log in an R1 file stream in the default persist mode
// (checked); Log.Append returns once its records are fsynced. A group
// commit's entries travel and are stored as one record (one stream
// message, one fsync per node); an operation above ChunkSize is cut into
// chunk entries, since JetStream's file store refuses records above
// 32 MiB. The store applies behind the log without an fsync of its own
// (store.ApplyLogged): a restart replays the log's tail from the store's
// applied position.
//
// Roles. The primitives a role change is made of:
//   - NewPrimary(log, store, epoch E) makes this node the writer at epoch E:
//     it first applies the local log's tail, then numbers every entry after
//     the log's last one and appends with expected-last-sequence, so a
//     second or stale writer fails (ErrStaleWriter) instead of forking the
//     log. Commit appends and applies; WaitPeer(seq) is the wait for the
//     passive's durable position (DRBD's protocol C), outside the commit.
//     A delivered body the store already holds travels as a reference,
//     except after a Collect in the same commit (which may delete it).
//   - NewFollower(log, store, connection to the active) makes this node a
//     passive: Run takes the records the active pushes as it appends them
//     (PushSubject: the two fsyncs run side by side) and reads the active's
//     stream for its headers (what the active stored; a record not pushed
//     is read from there), from its own position; it refuses
//     entries of an older epoch (ErrStaleEpoch) and gaps, appends, reports
//     its position (PositionSubject) and hands the operations to an
//     applier goroutine that applies them in order behind the log (bounded
//     in batches and bytes), so the active's wait is the passive's append
//     and fsync, not its store apply too. Status tells the durable
//     position; the store's AppliedSeq may be a little behind it.
//   - Resync / ServeResync move a checkpoint of the active's store to a
//     passive whose position was trimmed away (NeedsResync).
//
// To change roles a node stops the one (Follower.Run's context, or
// Primary.Close, which fails the waits for the passive with ErrNotActive)
// before making the other, and the epoch of a new active must be above
// every epoch in the log (NewPrimary refuses otherwise). A follower first
// checks that its log is a prefix of the active's (the entry at its
// position has the same epoch there); a former active whose tail never
// reached the passive fails with ErrDiverged, its tail set aside in a file
// (ReadDiverged), and must be rebuilt from the active. A degraded active
// (SetDegraded: its passive is fenced) acknowledges alone. Persisting and
// raising epochs, fencing and deciding who is active belong to the
// failover package.
//
// It depends on store only (dedupe in tests).
package replog
