// Package migrate brings an existing mail store into a Twinbox node:
// Dovecot Maildir (Maildir++ layout, with dovecot-uidlist and
// dovecot-keywords) and mbox files.
//
// It has two halves joined by HTTP on the node's admin server:
//
//   - Sources (ReadMaildir, ReadMbox) list folders and messages with the
//     UIDVALIDITY and UIDs the old server gave them, their flags and
//     keywords; message bytes are read one batch at a time, so memory is
//     bounded by the batch size, not the store's.
//   - Handler, on the node, turns each batch into operations of the
//     node's ordinary write path (Writer): on an active they go through the
//     replication log, so the passive gets every imported message.
//   - Client (Run) sends the batches and reports progress and a summary.
//
// Numbering: a folder whose source has a UIDVALIDITY is imported with its
// UIDs kept (store.ImportMailbox, store.Import) when the target mailbox is
// new, has never given a UID, or already has that UIDVALIDITY (an earlier
// run); clients that cached the old server's UIDs download nothing again.
// Otherwise messages are appended with new UIDs, each under an ID made of
// the user, mailbox, position and content (store.Merged), so they too are
// stored at most once.
//
// Idempotence: running an import again, whole or after an interruption,
// stores no message twice. Messages expunged on the node since an earlier
// run are not brought back (their UIDs are never reused).
//
// Concurrency: Handler is safe for concurrent requests; one Run imports
// folders one after another, a batch at a time.
package migrate
