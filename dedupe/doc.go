// Package dedupe turns a raw message body into content-addressed pieces and
// back, byte for byte.
//
// The contract:
//
//   - Message-level single copy. Prepare gives a body the ID
//     store.HashBlob(raw): the same bytes always get the same store.Body.ID,
//     whatever the number of recipients or mailboxes, so the store keeps and
//     replicates one copy.
//   - MIME-part level single copy. The body of each large MIME leaf part (not
//     multipart/*, not message/rfc822, whose contents are descended into) of
//     at least Options.MinPartSize bytes becomes a part blob addressed by the
//     hash of exactly those bytes, still transfer-encoded. An attachment
//     forwarded in another message, inside a message/rfc822 or re-attached
//     with the same encoding, has the same bytes and so the same part ID: it
//     is stored and sent once.
//   - Exact reassembly. The manifest's segments cover the body contiguously,
//     in order; concatenating them (Assemble, or store.Manifest.Assemble)
//     gives back the exact bytes received, as IMAP BODY[] must.
//
// Prepare works on the shared body only: per-recipient header fields such as
// Delivered-To and Return-Path are added by the caller outside it.
//
// All functions are safe for concurrent use; they keep no state.
package dedupe
