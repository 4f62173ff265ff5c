// Package failover decides which node of a pair is active (docs/architecture.md,
// failover/), as Linux-HA Heartbeat with STONITH and DRBD's
// resource-and-stonith fencing would.
//
// Machine is a pure state machine: its inputs are ticks (with the node's
// log position), verified heartbeats from the peer (Heard: its role, epoch,
// log position, standby, handover), fence results, the ends of role
// changes and operator commands; its outputs are actions (Fence, Promote,
// Demote, SetDegraded, Announce, Event). It reads no clock and does no I/O,
// so its scenarios (testdata/*.txt, datadriven) never sleep. Its rules:
//
//   - The peer is dead when no heartbeat path was heard for deadtime
//     (initdead before it was first heard). A path late by warntime is a
//     warning; one path alone keeps the peer alive. A tick far behind the
//     last one (this process was paused) restarts the count from now, so a
//     node waking from SIGSTOP never shoots a healthy peer on stale
//     information.
//   - No promotion without a confirmed fence: a passive whose active died
//     fences it (after fence_delay), and promotes only on success; failures
//     are retried after FenceRetry and reported in Status. An active whose
//     passive died keeps waiting for it (writes fail after peer_timeout)
//     until the passive is fenced, then acknowledges alone (degraded) until
//     a passive has caught up and hears it again.
//   - Two live passives elect the one with the later log (epoch, then
//     sequence), then the preferred node; a handover (switchover) names the
//     position the peer must reach before it promotes without fencing.
//   - A node that hears the peer active at a later epoch steps down at
//     once. Promotions take an epoch above every epoch known, with the
//     node's parity (the preferred node's are odd), so the two nodes can
//     never write the same epoch even if both promote.
//
// Driver runs a Machine: one goroutine owns it, reads queued heartbeats
// before each tick, carries out actions in goroutines that report back,
// persists the epoch (fsynced) before a promotion writes at it, and runs
// the on_promote and on_demote hooks with a timeout (a failed on_promote
// steps the node down again, standby). The node it drives is an interface
// (Node); fencing is a Fencer (package fence's devices).
//
// Subpackages: heartbeat (signed, replay-protected heartbeats on UDP and
// the NATS link) and fence (STONITH devices and the fence-agents stdin
// protocol). It imports no other Twinbox package: log positions come
// through the Node interface.
package failover
