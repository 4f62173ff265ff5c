// Package witness is the pair's optional third vote: a small process on a
// third machine, like corosync-qnetd, that lets a node take the active
// role or go on acknowledging alone only while no other node holds it.
// With a witness, a lying fence device cannot make two actives.
//
// The witness keeps one fact, on disk: which node holds the active role
// (the holder) and at which epoch. A node asks over UDP, in messages
// sealed like heartbeats (package heartbeat: HMAC-SHA256 with the pair's
// heartbeat key, a boot and counter against replays, the send time
// against stale copies), and the witness answers each request with the
// request's boot and counter, so that an answer cannot be replayed to
// another request.
//
// The rules (docs/architecture.md, "Witness"):
//
//   - Every node pings every keepalive, saying its epoch and whether it is
//     active. The witness notes when it last heard each node.
//   - A ping from the holder, active at the holder's epoch, is granted:
//     it renews the holder's lease. The holder's lease runs for half the
//     witness's deadtime from when it sent the granted ping; an active
//     whose peer is lost and whose lease has run out steps down.
//   - A ping from the holder saying it is passive releases the role (a
//     switchover, a restart).
//   - A promotion to epoch E by node N is granted when E is later than the
//     witness's epoch, and the holder is N, or nobody, or silent for at
//     least deadtime (it is dead, or cut off from the witness: its lease
//     ran out before that). The grant is fsynced before it is answered.
//   - An active ping when nobody holds the role (a new witness, or one
//     whose holder released it) makes the pinging node the holder, if its
//     epoch is not older than the witness's.
//
// Without the witness, a node promotes when the peer is fenced; with it,
// also only when the witness agrees. If the witness is down the pair
// runs on, but cannot fail over: the price of a vote, as with qnetd.
package witness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Want is what a request asks for.
type Want uint8

const (
	// Ping reports the sender's role and epoch, and renews its lease if
	// it is the holder.
	Ping Want = iota
	// Promote asks for the active role at Request.Epoch.
	Promote
)

func (w Want) String() string {
	switch w {
	case Ping:
		return "ping"
	case Promote:
		return "promote"
	}
	return fmt.Sprintf("want(%d)", uint8(w))
}

// Request is the payload of a node's message.
type Request struct {
	Want   Want
	Epoch  uint64
	Active bool
}

// Reply is the payload of the witness's answer.
type Reply struct {
	// Boot and Counter are the request's, which this answers.
	Boot, Counter uint64
	Granted       bool
	// Holder and Epoch are the witness's state after the request.
	Holder string
	Epoch  uint64
	// Why says why a request was not granted.
	Why string
}

// The payloads start with a tag, so that a heartbeat sent to the witness
// by mistake, or a reply sent back to it, is refused as malformed.
const (
	requestTag = "TBW1q"
	replyTag   = "TBW1r"
)

// ErrFormat is a payload that is not a witness request or reply.
var ErrFormat = errors.New("witness: malformed payload")

func (r Request) encode() []byte {
	b := []byte(requestTag)
	b = append(b, byte(r.Want))
	b = binary.BigEndian.AppendUint64(b, r.Epoch)
	if r.Active {
		return append(b, 1)
	}
	return append(b, 0)
}

func decodeRequest(b []byte) (Request, error) {
	if len(b) != len(requestTag)+1+8+1 || string(b[:len(requestTag)]) != requestTag {
		return Request{}, ErrFormat
	}
	b = b[len(requestTag):]
	r := Request{Want: Want(b[0]), Epoch: binary.BigEndian.Uint64(b[1:]), Active: b[9] == 1}
	if r.Want > Promote || b[9] > 1 {
		return Request{}, ErrFormat
	}
	return r, nil
}

// maxText bounds the holder's name and the reason in a reply.
const maxText = 255

func (r Reply) encode() []byte {
	b := []byte(replyTag)
	b = binary.BigEndian.AppendUint64(b, r.Boot)
	b = binary.BigEndian.AppendUint64(b, r.Counter)
	if r.Granted {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint64(b, r.Epoch)
	holder, why := clip(r.Holder), clip(r.Why)
	b = append(b, byte(len(holder)))
	b = append(b, holder...)
	b = append(b, byte(len(why)))
	return append(b, why...)
}

func clip(s string) string {
	if len(s) > maxText {
		return s[:maxText]
	}
	return s
}

func decodeReply(b []byte) (Reply, error) {
	fixed := len(replyTag) + 8 + 8 + 1 + 8
	if len(b) < fixed+2 || string(b[:len(replyTag)]) != replyTag {
		return Reply{}, ErrFormat
	}
	b = b[len(replyTag):]
	r := Reply{Boot: binary.BigEndian.Uint64(b), Counter: binary.BigEndian.Uint64(b[8:]), Granted: b[16] == 1,
		Epoch: binary.BigEndian.Uint64(b[17:])}
	if b[16] > 1 {
		return Reply{}, ErrFormat
	}
	b = b[25:]
	n := int(b[0])
	if len(b) < 1+n+1 {
		return Reply{}, ErrFormat
	}
	r.Holder = string(b[1 : 1+n])
	b = b[1+n:]
	m := int(b[0])
	if len(b) != 1+m {
		return Reply{}, ErrFormat
	}
	r.Why = string(b[1:])
	return r, nil
}

// State is what the witness keeps on disk.
type State struct {
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
}

// decide applies a request from node at now to st, with holderSeen the
// time the witness last heard the holder (its own start, if it has not
// heard it since) and deadtime the silence after which a holder counts as gone. It returns
// the new state and the answer (without Boot and Counter).
func decide(st State, node string, r Request, holderSeen time.Time, now time.Time, deadtime time.Duration) (State, Reply) {
	rep := func(granted bool, why string) Reply {
		return Reply{Granted: granted, Holder: st.Holder, Epoch: st.Epoch, Why: why}
	}
	switch r.Want {
	case Ping:
		switch {
		case st.Holder == node && r.Active && r.Epoch == st.Epoch:
			return st, rep(true, "")
		case st.Holder == node && !r.Active:
			st.Holder = "" // released: a switchover, a restart
			return st, rep(false, "passive")
		case st.Holder == "" && r.Active && r.Epoch >= st.Epoch:
			st.Holder, st.Epoch = node, r.Epoch
			return st, rep(true, "")
		case r.Active:
			return st, rep(false, fmt.Sprintf("active at epoch %d, but the witness gave the role to %q at epoch %d", r.Epoch, st.Holder, st.Epoch))
		}
		return st, rep(false, "passive")
	case Promote:
		switch {
		case r.Epoch <= st.Epoch && !(st.Holder == node && r.Epoch == st.Epoch):
			return st, rep(false, fmt.Sprintf("epoch %d is not after the witness's epoch %d", r.Epoch, st.Epoch))
		case st.Holder != "" && st.Holder != node && now.Sub(holderSeen) < deadtime:
			return st, rep(false, fmt.Sprintf("%q holds the active role at epoch %d and was heard %v ago", st.Holder, st.Epoch, now.Sub(holderSeen).Round(time.Millisecond)))
		}
		st.Holder, st.Epoch = node, r.Epoch
		return st, rep(true, "")
	}
	return st, rep(false, "unknown request")
}
