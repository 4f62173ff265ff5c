// Package loadgen generates mail load against any SMTP, LMTP or IMAP server
// and measures what the server did with it. It backs `twinbox bench`, and
// the same load runs against Twinbox, Dovecot or Postfix.
//
// A run has a fixed number of sessions, each one connection used back to
// back. Sessions connect (and, for IMAP, log in and select) before the clock
// starts; the run ends at Duration or after Count transactions, whichever
// comes first, and a transaction in flight at that moment is finished and
// counted. Cancelling the context closes every connection at once: the
// transactions it cuts short are counted nowhere and the result is marked
// Interrupted.
//
// Only what the server acknowledged counts as done: a delivery counts when
// every recipient got a 250 (for LMTP, one 250 per recipient after DATA); an
// IMAP command counts when it ended in OK. Everything else is a failure,
// counted by its reply code ("550", "NO", ...) or "network" when the
// connection broke, after which the session reconnects.
//
// Latencies are kept per transaction in a slice per session and merged at
// the end; percentiles are nearest-rank over the sorted samples.
//
// RunDelivery and RunIMAP are safe to call concurrently; a run owns every
// goroutine it starts and waits for them before it returns.
package loadgen
