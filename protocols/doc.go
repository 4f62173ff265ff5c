// Package protocols holds the mail protocols in front of the store (docs/architecture.md,
// protocols/): IMAP with a protocol layer of its own (protocols/imap), SMTP and
// LMTP through go-smtp (protocols/smtp), and the users of a node in Dovecot's
// passwd-file format (protocols/users).
//
// This package declares what they need of a node, as small interfaces:
// Reader for the store's reads (through the read cache), Writer for changes
// (with the writer's Origin, a plain argument), Notifier for the changes
// the node tells them (IDLE), Users for logins. The protocols import store
// and dedupe only, never replog, failover or the node: the node (package
// pair) implements Reader and Writer, guarded by its role, and drives the
// servers' role-dependent behaviour through interfaces of its own
// (pair.Frontend: SetReadOnly; Drain and Kick where a server has them).
//
// A Writer's error decides what a client is told. ErrUnavailable (wrapped)
// is temporary: SMTP answers 451 4.3.0 and IMAP NO [UNAVAILABLE], so the
// sender retries and nothing is lost. ErrReadOnly means this node does not
// take writes (a passive). Store errors (a missing mailbox, a message too
// large) are permanent and mapped to the matching protocol code.
package protocols
