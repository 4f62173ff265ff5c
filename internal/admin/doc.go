// Package admin is a node's admin HTTP API: its handler (/healthz,
// /status, /digest, /metrics, Go's profiler, the operator's role commands
// under /failover/), its Prometheus metrics, and Status, the wire format of
// /status that the node writes and every client of it reads (the CLI's
// `twinbox status`, the process harness, the benches).
//
// Metrics of the node's state are read from one pair.Status per scrape.
package admin
