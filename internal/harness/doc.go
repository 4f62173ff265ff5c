// Package harness runs Twinbox nodes as separate processes, as an operator
// would: `twinbox serve` on a data directory with every listener on a
// free port, its addresses read from what it prints, its /status read
// over the admin API, stopped with SIGTERM or killed with SIGKILL. A Pair
// is two of them with automatic failover on loopback. The integration
// tests, `twinbox demo` and the benches all start nodes through it.
package harness
