// Package heartbeat carries authenticated, replay-protected heartbeats
// between the two nodes of a pair over independent paths (docs/architecture.md,
// failover/), as Linux-HA Heartbeat does with authkeys and redundant
// rings. It moves opaque payloads and does not interpret them: the
// failover package puts its own state in Message.Payload.
//
// Authentication. Seal writes a Message (node name, boot, counter, the
// sender's clock, payload) behind a fixed envelope (magic, format
// version, length) and appends an HMAC-SHA256, keyed with the pair's
// shared key (at least MinKey bytes), over every byte before it. Nothing
// of a datagram is believed before the HMAC is checked (constant-time);
// the envelope is the same in every format version, so a peer with the
// same key and another version is told apart (ErrVersion, both versions
// in the text) from noise (ErrFormat) and forgery (ErrBadSignature).
// The payload is authenticated, not encrypted.
//
// Freshness and replay. A message is accepted only if |now - Sent| is at
// most MaxSkew (default 30 s; ErrStale) and its counter is above the
// highest accepted from the same node, boot and path (ErrReplay): each
// path keeps its own mark, so the same counter may arrive once per path,
// and a restarted sender (a new random boot) is accepted at once if its
// clock is fresh. Marks idle for twice MaxSkew may be forgotten: a replay
// of anything they covered is stale by then. A message carrying the
// receiver's own name is refused (ErrSelf: a looped-back datagram).
// Rejections are counted per path and reason (Reason). Verifier.Open
// never panics, whatever bytes it is given, and holds no more than
// MaxDatagram of them.
//
// Paths. UDPPath (a UDP socket; datagrams from any address are passed up,
// the signature decides) and NATSPath (publishes on the peer's NATS
// server, subscribes on this node's own) implement Path. Losing one path
// does not silence the other: Heart sends on each from its own goroutine,
// and a send error is counted, logged and otherwise ignored.
//
// Heart drives it: a round of heartbeats at Start, every Keepalive and on
// SendNow, each round with one Payload() result; verified messages on
// Received (bounded: the oldest are dropped when the consumer is slow);
// refused ones counted in Stats and logged at Warn, at most once per path
// and reason every 10 s.
//
// Concurrency. Seal is a pure function. Verifier and Heart are safe for
// concurrent use; Heart.Close stops its goroutines, closes its paths,
// waits for them and then closes the Received channel. A Path's Send,
// Receive and Close may be called from different goroutines.
package heartbeat
