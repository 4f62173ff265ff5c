// Package failover decides which node of a pair is active (DESIGN.md,
// failover/): a pure state machine fed by ticks, signed heartbeats, peer log
// positions and fence results, with a thin driver for the network, timers,
// STONITH agents and hooks. It depends on replog for log positions only.
//
// It arrives with the automatic-failover issue; nothing here yet.
package failover
