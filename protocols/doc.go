// Package protocols holds the mail protocols in front of the store (DESIGN.md,
// protocols/): IMAP through go-imap's imapserver, SMTP and LMTP through
// go-smtp, each in a sub-package. They use store, cache and dedupe through
// small interfaces they declare, never replog or failover: cmd hands them a
// writer backed by the log and guarded by the node's role.
//
// It arrives with the standalone-node issue; nothing here yet.
package protocols
