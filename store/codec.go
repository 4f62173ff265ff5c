package store

import (
	"encoding/binary"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Records and operations are encoded as deterministic CBOR (RFC 8949 core
// deterministic encoding: sorted map keys, shortest forms), so the same
// logical state is the same bytes on every node.
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	eo := cbor.CoreDetEncOptions()
	eo.Time = cbor.TimeRFC3339Nano // keeps the zone offset of Date: headers
	var err error
	if encMode, err = eo.EncMode(); err != nil {
		panic(err) // static options; cannot fail at run time
	}
	do := cbor.DecOptions{
		MaxNestedLevels:   64,
		MaxArrayElements:  1 << 20,
		MaxMapPairs:       1 << 16,
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}
	if decMode, err = do.DecMode(); err != nil {
		panic(err)
	}
}

func marshal(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		// Only unsupported Go types fail to encode; all ours are supported.
		panic(fmt.Sprintf("store: encode %T: %v", v, err))
	}
	return b
}

func unmarshal(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: decode %T: %v", ErrCorrupt, v, err)
	}
	return nil
}

// Key layout. Every key starts with a one-byte prefix naming its kind.
const (
	pSys     = 0x00 // system values: applied sequence, counters, format
	pUser    = 'u'  // u user -> userRec
	pMbox    = 'n'  // n user 0x00 name -> mailboxRec
	pMsg     = 'm'  // m mailboxID(8) uid(4) -> msgRec
	pBlob    = 'b'  // b bodyID -> blobRec of a message body
	pData    = 'd'  // d bodyID -> encoded Manifest of a message body
	pMeta    = 'x'  // x bodyID -> encoded Meta of a message body
	pPart    = 'p'  // p partID -> blobRec of a part blob
	pPartD   = 'q'  // q partID -> the part's bytes
	pZero    = 'z'  // z zeroAt(8) bodyID -> empty: bodies whose count reached zero
	pMrg     = 'k'  // k mergeID -> time: merged operations applied (exactly once)
	pRetry   = 'e'  // e retryKey -> retryRec: deliveries recognised when retried
	pRetryIx = 'E'  // E at(8) retryKey -> empty: the same, by time, for expiry
	keyEnd   = 0xff
)

var (
	keyApplied    = []byte{pSys, 'a'}
	keyNextMbox   = []byte{pSys, 'm'}
	keyFormat     = []byte{pSys, 'f'}
	formatVersion = []byte{1}
)

func userKey(user string) []byte { return append([]byte{pUser}, user...) }

func mboxPrefix(user string) []byte {
	k := append([]byte{pMbox}, user...)
	return append(k, 0)
}

func mboxKey(user, name string) []byte { return append(mboxPrefix(user), name...) }

func msgPrefix(mboxID uint64) []byte {
	k := make([]byte, 9)
	k[0] = pMsg
	binary.BigEndian.PutUint64(k[1:], mboxID)
	return k
}

func msgKey(mboxID uint64, uid uint32) []byte {
	return binary.BigEndian.AppendUint32(msgPrefix(mboxID), uid)
}

func uidOfMsgKey(k []byte) uint32 { return binary.BigEndian.Uint32(k[9:13]) }

func mergedKey(id string) []byte { return append([]byte{pMrg}, id...) }

func retryKey(k []byte) []byte { return append([]byte{pRetry}, k...) }

func retryIndexKey(at int64, k []byte) []byte {
	b := make([]byte, 9, 9+len(k))
	b[0] = pRetryIx
	binary.BigEndian.PutUint64(b[1:], uint64(at))
	return append(b, k...)
}

func blobKey(id BlobID) []byte { return append([]byte{pBlob}, id[:]...) }
func dataKey(id BlobID) []byte { return append([]byte{pData}, id[:]...) }
func metaKey(id BlobID) []byte { return append([]byte{pMeta}, id[:]...) }

// Parts live in a key space of their own: a part's bytes may well be the
// bytes of some whole message (an .eml attached as text), and the two must
// not be taken for each other.
func partKey(id BlobID) []byte     { return append([]byte{pPart}, id[:]...) }
func partDataKey(id BlobID) []byte { return append([]byte{pPartD}, id[:]...) }

func zeroKey(at int64, id BlobID) []byte {
	k := make([]byte, 9, 9+len(id))
	k[0] = pZero
	binary.BigEndian.PutUint64(k[1:], uint64(at))
	return append(k, id[:]...)
}

// prefixEnd returns the first key after every key with the given prefix.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{keyEnd, keyEnd}
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func putU64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// Stored records.

type userRec struct {
	LastUIDValidity uint32 `cbor:"1,keyasint,omitempty"`
}

type mailboxRec struct {
	ID            uint64   `cbor:"1,keyasint"`
	UIDValidity   uint32   `cbor:"2,keyasint"`
	UIDNext       uint32   `cbor:"3,keyasint"`
	HighestModSeq uint64   `cbor:"4,keyasint"`
	Subscribed    bool     `cbor:"5,keyasint,omitempty"`
	SpecialUse    []string `cbor:"6,keyasint,omitempty"`
	Messages      uint32   `cbor:"7,keyasint,omitempty"`
	Unseen        uint32   `cbor:"8,keyasint,omitempty"`
	Deleted       uint32   `cbor:"9,keyasint,omitempty"`
	Size          int64    `cbor:"10,keyasint,omitempty"`
}

type msgRec struct {
	Body   BlobID   `cbor:"1,keyasint"`
	Prefix []byte   `cbor:"2,keyasint,omitempty"` // per-recipient header lines
	Flags  []string `cbor:"3,keyasint,omitempty"`
	Date   int64    `cbor:"4,keyasint"` // internal date, Unix nanoseconds
	Size   int64    `cbor:"5,keyasint"` // len(Prefix) + body size
	ModSeq uint64   `cbor:"6,keyasint"`
}

const (
	blobMessage = 1 // data is an encoded Manifest; Meta stored beside it
	blobPart    = 2 // data is the part's bytes
)

type blobRec struct {
	Kind   uint8 `cbor:"1,keyasint"`
	Refs   int64 `cbor:"2,keyasint"`
	Size   int64 `cbor:"3,keyasint"`           // assembled size
	ZeroAt int64 `cbor:"4,keyasint,omitempty"` // entry time when Refs reached 0
}
