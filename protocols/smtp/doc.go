// Package smtp takes inbound mail for local users over SMTP and LMTP,
// through go-smtp, and delivers it into the store with one write per
// transaction: the body stored once, exactly as the client sent it, linked
// into every recipient's INBOX, with the lines the server writes
// (Return-Path, Delivered-To, Received) kept per recipient outside the
// shared body.
//
// # Acknowledgements
//
// 250 (for LMTP, each recipient's 250) is sent only after protocols.Writer
// returned, that is once the delivery is durable as the node promises. A
// temporary failure of the writer answers 451 4.3.0 so that the sender
// retries; nothing half-stored is ever acknowledged.
//
// # Limits (docs/limits.md)
//
// Every limit has a default in Options; what a client sees over it:
//
//   - Connections: at most MaxConnections open at once, and
//     MaxConnectionsPerAddr from one client IP address (loopback exempt
//     unless LimitLoopback). A connection over either is answered 421
//     4.7.0 instead of the greeting and closed; refusals are logged at
//     most once per logEvery, with their count.
//   - Idle: ReadTimeout bounds the wait for each command (421 4.4.2, then
//     the connection is closed).
//   - Transaction: from MAIL to the reply to DATA at most
//     TransactionTimeout, whatever the client does in between (421 4.4.2,
//     closed). A delivery already being written is never cut.
//   - DATA: the message must arrive within DataTimeout, and at no less
//     than DataMinRate bytes per second on average after a first
//     ReadTimeout (time is earned by bytes received, as Apache's
//     mod_reqtimeout does, not re-armed by each byte). Too slow: 421 4.4.2
//     and the connection is closed; nothing is stored.
//   - Size: a message of MaxMessageBytes is accepted, one byte more is
//     refused 552 5.3.4 once the client has sent it all (MAIL SIZE= above
//     the limit is refused at once); the server's own lines do not count.
//     The EHLO reply says SIZE without a number: go-smtp refuses a message
//     of exactly the size it advertises, so the library's limit is off and
//     this package enforces the limit itself.
//   - Header: a header section of more than MaxHeaderBytes bytes or
//     MaxHeaderFields fields is refused 552 5.3.4 when the message ends,
//     and nothing of it is kept past the limit. The session goes on.
//   - Memory: the messages a server holds at once (being received or
//     written) are bounded by MaxBytesInFlight; one that does not fit is
//     read to its end, discarded and refused 452 4.3.1, so its sender
//     retries later.
//   - Lines: a line longer than MaxLineLength in a command gets go-smtp's
//     500 5.4.0; in DATA, one reply 552 5.3.4, then the connection is
//     closed (the library cannot resynchronise after a long line).
//   - Envelope: an address with a control character (CR, LF, NUL...) is
//     refused 501 5.5.2, one longer than RFC 5321's 256-octet path or with
//     a malformed domain 501 5.1.7 (MAIL) or 501 5.1.3 (RCPT). Addresses
//     are written into header fields only in RFC 5322 form (a local part
//     that is not a dot-atom is quoted), never as the client spelled them.
//
// # Concurrency
//
// A Server is safe for concurrent use. A listener made by tls.NewListener
// may be served as long as Options.TLSConfig is the same configuration:
// the server takes the TLS layer off each connection and puts it back on
// top of its own accounting, so that limits and deadlines act beneath TLS
// and go-smtp still sees a *tls.Conn.
package smtp
