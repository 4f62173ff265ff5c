package heartbeat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Version is the format version this package writes and reads.
const Version = 1

// Limits of a message.
const (
	// MaxNode is the longest node name, in bytes.
	MaxNode = 64
	// MaxPayload is the largest payload, in bytes.
	MaxPayload = 1024
	// MinKey is the shortest accepted key, in bytes.
	MinKey = 16
	// MaxDatagram is the largest sealed message: a transport may drop
	// anything longer without looking at it.
	MaxDatagram = headerLen + maxBody + macLen
)

// The envelope, the same for every format version so that a peer speaking
// another version is recognised as such (ErrVersion) rather than as noise:
//
//	magic "TBHB" (4) | version (1) | body length n (2, big endian) | body (n) | HMAC-SHA256 (32)
//
// The HMAC covers every byte before it, the magic and version included.
// The body of version 1:
//
//	node length (1) | node | boot (8) | counter (8) | sent, Unix ns (8) | payload length (2) | payload
//
// All integers are big endian.
const (
	magic     = "TBHB"
	headerLen = len(magic) + 1 + 2
	macLen    = sha256.Size
	// fixedBody is the body without node and payload bytes.
	fixedBody = 1 + 8 + 8 + 8 + 2
	maxBody   = fixedBody + MaxNode + MaxPayload
)

// The reasons a received message is refused. Each is wrapped with
// details; compare with errors.Is.
var (
	ErrBadSignature = errors.New("heartbeat: bad signature")
	ErrStale        = errors.New("heartbeat: stale message")
	ErrReplay       = errors.New("heartbeat: replayed message")
	ErrVersion      = errors.New("heartbeat: unsupported format version")
	ErrFormat       = errors.New("heartbeat: malformed message")
	ErrSelf         = errors.New("heartbeat: message from this node (looped back)")
)

// The reasons' names, as counted in PathStats.Rejected and logged.
const (
	ReasonSignature = "signature"
	ReasonStale     = "stale"
	ReasonReplay    = "replay"
	ReasonVersion   = "version"
	ReasonFormat    = "format"
	ReasonSelf      = "self"
)

// Reason names the reason of an error returned by Verifier.Open
// ("signature", "stale", "replay", "version", "format", "self"), or
// returns "" for any other error.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrBadSignature):
		return ReasonSignature
	case errors.Is(err, ErrStale):
		return ReasonStale
	case errors.Is(err, ErrReplay):
		return ReasonReplay
	case errors.Is(err, ErrVersion):
		return ReasonVersion
	case errors.Is(err, ErrFormat):
		return ReasonFormat
	case errors.Is(err, ErrSelf):
		return ReasonSelf
	}
	return ""
}

// Message is one heartbeat.
type Message struct {
	// Node is the sender's node name (1 to MaxNode bytes).
	Node string
	// Boot is chosen at random each time the sender's process starts.
	Boot uint64
	// Counter increases strictly with each message of one sender's boot
	// (one counter may be shared by all paths).
	Counter uint64
	// Sent is the sender's clock when it sealed the message.
	Sent time.Time
	// Payload is opaque to this package, at most MaxPayload bytes.
	Payload []byte
}

// Seal encodes m in the current format version followed by an HMAC-SHA256
// of everything, keyed with key. It fails only on a key shorter than
// MinKey or a message outside the limits (node name, payload size).
func Seal(key []byte, m *Message) ([]byte, error) {
	if len(key) < MinKey {
		return nil, fmt.Errorf("heartbeat: key is %d bytes, at least %d are needed", len(key), MinKey)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	body := fixedBody + len(m.Node) + len(m.Payload)
	b := make([]byte, 0, headerLen+body+macLen)
	b = append(b, magic...)
	b = append(b, Version)
	b = binary.BigEndian.AppendUint16(b, uint16(body))
	b = append(b, byte(len(m.Node)))
	b = append(b, m.Node...)
	b = binary.BigEndian.AppendUint64(b, m.Boot)
	b = binary.BigEndian.AppendUint64(b, m.Counter)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Sent.UnixNano()))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Payload)))
	b = append(b, m.Payload...)
	return appendMAC(b, key), nil
}

func (m *Message) check() error {
	if m == nil {
		return errors.New("heartbeat: nil message")
	}
	var errs []error
	if len(m.Node) == 0 || len(m.Node) > MaxNode {
		errs = append(errs, fmt.Errorf("node: %q must be 1 to %d bytes", m.Node, MaxNode))
	}
	if len(m.Payload) > MaxPayload {
		errs = append(errs, fmt.Errorf("payload: %d bytes, at most %d", len(m.Payload), MaxPayload))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("heartbeat: message: %w", err)
	}
	return nil
}

func appendMAC(b, key []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(b)
	return h.Sum(b)
}

// open checks the envelope, the signature and the version, and decodes
// the body. Freshness, replay and the sender's name are the Verifier's.
func open(key, b []byte) (*Message, error) {
	if len(b) > MaxDatagram {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrFormat, len(b), MaxDatagram)
	}
	if len(b) < headerLen+macLen {
		return nil, fmt.Errorf("%w: %d bytes, too short", ErrFormat, len(b))
	}
	if string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a heartbeat (magic %q)", ErrFormat, b[:len(magic)])
	}
	n := int(binary.BigEndian.Uint16(b[len(magic)+1:]))
	if len(b) != headerLen+n+macLen {
		return nil, fmt.Errorf("%w: %d bytes, the header says %d", ErrFormat, len(b), headerLen+n+macLen)
	}
	signed, mac := b[:headerLen+n], b[headerLen+n:]
	h := hmac.New(sha256.New, key)
	h.Write(signed)
	if !hmac.Equal(h.Sum(nil), mac) {
		return nil, ErrBadSignature
	}
	if v := b[len(magic)]; v != Version {
		return nil, fmt.Errorf("%w: the peer speaks version %d, this node version %d", ErrVersion, v, Version)
	}
	m, err := decodeBody(b[headerLen : headerLen+n])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return m, nil
}

func decodeBody(b []byte) (*Message, error) {
	if len(b) < fixedBody {
		return nil, fmt.Errorf("body of %d bytes, at least %d", len(b), fixedBody)
	}
	nodeLen := int(b[0])
	if nodeLen == 0 || nodeLen > MaxNode {
		return nil, fmt.Errorf("node name of %d bytes, 1 to %d", nodeLen, MaxNode)
	}
	if len(b) < fixedBody+nodeLen {
		return nil, fmt.Errorf("body of %d bytes cannot hold a node name of %d", len(b), nodeLen)
	}
	m := &Message{Node: string(b[1 : 1+nodeLen])}
	rest := b[1+nodeLen:]
	m.Boot = binary.BigEndian.Uint64(rest)
	m.Counter = binary.BigEndian.Uint64(rest[8:])
	m.Sent = time.Unix(0, int64(binary.BigEndian.Uint64(rest[16:])))
	payLen := int(binary.BigEndian.Uint16(rest[24:]))
	rest = rest[26:]
	if payLen > MaxPayload {
		return nil, fmt.Errorf("payload of %d bytes, at most %d", payLen, MaxPayload)
	}
	if len(rest) != payLen {
		return nil, fmt.Errorf("payload of %d bytes, the body holds %d", payLen, len(rest))
	}
	if payLen > 0 {
		m.Payload = append([]byte(nil), rest...)
	}
	return m, nil
}
