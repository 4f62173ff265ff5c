// Package pair is a Twinbox node: its store and read cache, its write
// path (group commit, then the store or the replication log), and, in a
// pair, its log, its embedded NATS server, its role and its automatic
// failover (docs/architecture.md).
// Open starts one; Close undoes it. Two Pairs can run in one process,
// which is how the pair's tests run them.
//
// # The role has one owner
//
// The role (standalone, active, passive; writable or not; serving or
// not) is one value, replaced whole at every change and never kept
// anywhere else. Everything that behaves by role learns it from here:
//
//   - Write reads it for every write, and the group commit's flush reads it
//     again: a write admitted under one role is refused, uncommitted, by a
//     flush under another (protocols.ErrReadOnly on a passive,
//     protocols.ErrUnavailable mid-change).
//   - Frontends (Attach: the IMAP, SMTP and LMTP servers) are told the role
//     when attached and at every change, in order: SetReadOnly always;
//     SetAvailable, Drain and Kick when they implement them (Availability,
//     Drainer, Kicker, found by type assertion).
//   - WritableCtx gives a context that is cancelled when the node stops
//     taking writes in its current role; Subscribe tells every change.
//
// Role changes (Promote, Demote, a resync, Close) run one at a time.
// Promote stops the follower, applies the rest of the local log and opens
// the log for writing at a new epoch. Demote drains the frontends, stops
// writes, with a handover waits until the peer confirmed every entry,
// kicks IMAP sessions and follows the peer. Pair is the failover.Node the
// failover driver drives; Position never waits for a role change.
//
// # What an acknowledgement means
//
// Write returns nil only once the change is durable as docs/architecture.md promises:
// fsynced in the store (standalone), or appended and fsynced in the
// active's log and confirmed durable by the passive (sync mode), and once
// its change was told to the frontends. A write the passive did not
// confirm within PeerTimeout is applied here but answered with
// protocols.ErrUnavailable: the client retries.
//
// # One notification path
//
// Every applied change, whoever applied it (this node's writes, the
// follower on a passive, the log's tail applied when the node opens or is
// promoted), goes through one queue, in log order, to the frontends that
// are protocols.Notifiers (IMAP IDLE), from one goroutine. A change this
// node's frontend made carries that frontend's origin (a plain argument
// of Write).
//
// # Resync in place
//
// A passive whose log cannot follow the active's (a former active with a
// diverged tail, set aside in Layout.Diverged; or a position the active's
// log no longer holds) rebuilds its store from a checkpoint of the
// active's, in process: it serves nothing meanwhile, kicks its IMAP
// sessions, downloads the checkpoint into Layout.Tmp, swaps the store and
// empties its log. A marker file makes a rebuild that a crash cut short
// start again at the next Open.
//
// Layout names the data directory's files; Status reports the node as
// plain data.
package pair
