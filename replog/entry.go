package replog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twinbox/twinbox/store"
)

// FormatVersion is the version of the entry encoding this build writes and
// reads. An entry of another version is refused, loudly: a node never
// applies what it cannot read exactly.
const FormatVersion = 1

// Errors of the log.
var (
	ErrFormat       = errors.New("replog: malformed log entry")
	ErrVersion      = errors.New("replog: unknown log entry format version")
	ErrStaleEpoch   = errors.New("replog: entry from an older epoch")
	ErrStaleWriter  = errors.New("replog: log moved on under this writer")
	ErrPeerTimeout  = errors.New("replog: the peer did not confirm in time")
	ErrNotActive    = errors.New("replog: this node is not the active")
	ErrGap          = errors.New("replog: gap in the log")
	ErrWeakDurable  = errors.New("replog: log durability weakened")
	ErrClosed       = errors.New("replog: closed")
	ErrLogTrimmed   = errors.New("replog: the entries needed were trimmed from the log")
	ErrSeqMismatch  = errors.New("replog: log sequence mismatch")
	ErrNoSuchEntry  = errors.New("replog: no such entry")
	ErrUnavailable  = errors.New("replog: log unavailable")
	errShortPayload = fmt.Errorf("%w: shorter than its header", ErrFormat)
)

// Entry is one change in the log: a store operation with the epoch of the
// writer that made it and its place in the log.
type Entry struct {
	Epoch uint64
	Seq   uint64
	Time  int64    // Unix nanoseconds, when the active wrote it
	Op    store.Op // decoded
}

// headerLen is version (1) + epoch (8) + seq (8) + time (8).
const headerLen = 1 + 8 + 8 + 8

// Encode returns the entry as it travels and is stored:
// version, epoch, sequence, time (big-endian), then the operation
// (store.EncodeOp, itself versioned CBOR).
func (e *Entry) Encode() []byte {
	op := store.EncodeOp(e.Op)
	b := make([]byte, headerLen, headerLen+len(op))
	b[0] = FormatVersion
	binary.BigEndian.PutUint64(b[1:], e.Epoch)
	binary.BigEndian.PutUint64(b[9:], e.Seq)
	binary.BigEndian.PutUint64(b[17:], uint64(e.Time))
	return append(b, op...)
}

// DecodeEntry decodes an entry; it never panics on bad input.
func DecodeEntry(b []byte) (Entry, error) {
	if len(b) < 1 {
		return Entry{}, errShortPayload
	}
	if b[0] != FormatVersion {
		return Entry{}, fmt.Errorf("%w: %d (this build reads %d)", ErrVersion, b[0], FormatVersion)
	}
	if len(b) < headerLen {
		return Entry{}, errShortPayload
	}
	e := Entry{
		Epoch: binary.BigEndian.Uint64(b[1:]),
		Seq:   binary.BigEndian.Uint64(b[9:]),
		Time:  int64(binary.BigEndian.Uint64(b[17:])),
	}
	op, err := store.DecodeOp(b[headerLen:])
	if err != nil {
		return Entry{}, fmt.Errorf("%w: entry %d: %v", ErrFormat, e.Seq, err)
	}
	e.Op = op
	return e, nil
}

// storeEntry is the entry as the store applies it.
func (e *Entry) storeEntry() store.Entry {
	return store.Entry{Seq: e.Seq, Time: e.Time, Op: e.Op}
}
