package heartbeat

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"
)

// DefaultMaxSkew is how far a message's Sent may be from the receiver's
// clock, either way.
const DefaultMaxSkew = 30 * time.Second

// maxStreams bounds the replay table (one entry per sender, boot and
// path). Only holders of the key create entries, and entries idle for
// twice the skew are dropped first, so the bound is defence in depth.
const maxStreams = 256

// VerifierOptions configure a Verifier. A nil pointer means defaults.
type VerifierOptions struct {
	// MaxSkew bounds |now - Sent|; 0 means DefaultMaxSkew.
	MaxSkew time.Duration
}

// Verifier checks received datagrams. It is safe for concurrent use.
type Verifier struct {
	key     []byte
	self    string
	maxSkew time.Duration

	mu       sync.Mutex
	streams  map[stream]*seen
	rejected map[string]map[string]uint64 // path → reason → count
}

// stream is one sender boot's messages on one path: its counter is
// tracked on its own.
type stream struct {
	node string
	boot uint64
	path string
}

type seen struct {
	counter uint64
	at      time.Time // the receiver's clock at the last acceptance
}

// NewVerifier returns a Verifier for messages sealed with key (at least
// MinKey bytes) that refuses messages carrying self as their node name.
func NewVerifier(key []byte, self string, opts *VerifierOptions) (*Verifier, error) {
	if opts == nil {
		opts = &VerifierOptions{}
	}
	var errs []error
	if len(key) < MinKey {
		errs = append(errs, fmt.Errorf("key: %d bytes, at least %d are needed", len(key), MinKey))
	}
	if len(self) == 0 || len(self) > MaxNode {
		errs = append(errs, fmt.Errorf("node: %q must be 1 to %d bytes", self, MaxNode))
	}
	if opts.MaxSkew < 0 {
		errs = append(errs, fmt.Errorf("max skew: %v must not be negative", opts.MaxSkew))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	skew := opts.MaxSkew
	if skew == 0 {
		skew = DefaultMaxSkew
	}
	return &Verifier{
		key:      append([]byte(nil), key...),
		self:     self,
		maxSkew:  skew,
		streams:  make(map[stream]*seen),
		rejected: make(map[string]map[string]uint64),
	}, nil
}

// Open checks a datagram received on path at the receiver's time now, in
// this order: envelope (ErrFormat), signature (ErrBadSignature), format
// version (ErrVersion), body (ErrFormat), sender's name (ErrSelf),
// freshness (ErrStale) and replay (ErrReplay). A message is a replay when
// its counter is not above the highest accepted from the same node, boot
// and path. Only an accepted message moves that mark; a refused one is
// counted under its path and reason. Open never panics, whatever b holds.
func (v *Verifier) Open(path string, b []byte, now time.Time) (*Message, error) {
	m, err := v.open(path, b, now)
	if err != nil {
		v.mu.Lock()
		r := v.rejected[path]
		if r == nil {
			r = make(map[string]uint64)
			v.rejected[path] = r
		}
		r[Reason(err)]++
		v.mu.Unlock()
		return nil, err
	}
	return m, nil
}

func (v *Verifier) open(path string, b []byte, now time.Time) (*Message, error) {
	m, err := open(v.key, b)
	if err != nil {
		return nil, err
	}
	if m.Node == v.self {
		return nil, fmt.Errorf("%w: node %q", ErrSelf, m.Node)
	}
	if d := now.Sub(m.Sent); d > v.maxSkew || d < -v.maxSkew {
		return nil, fmt.Errorf("%w: sent at %s, %v from this node's clock (at most %v)",
			ErrStale, m.Sent.UTC().Format(time.RFC3339Nano), d, v.maxSkew)
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	k := stream{node: m.Node, boot: m.Boot, path: path}
	s := v.streams[k]
	if s != nil && m.Counter <= s.counter {
		return nil, fmt.Errorf("%w: node %q boot %x counter %d on path %s, %d already seen",
			ErrReplay, m.Node, m.Boot, m.Counter, path, s.counter)
	}
	if s == nil {
		v.prune(now)
		s = &seen{}
		v.streams[k] = s
	}
	s.counter, s.at = m.Counter, now
	return m, nil
}

// prune forgets streams not heard for twice the skew: any message they
// accepted carries a Sent more than one skew behind now, so a replay of
// it would be stale. If the table is still full, the longest idle goes.
// The caller holds v.mu.
func (v *Verifier) prune(now time.Time) {
	if len(v.streams) < maxStreams/2 {
		return
	}
	for k, s := range v.streams {
		if now.Sub(s.at) > 2*v.maxSkew {
			delete(v.streams, k)
		}
	}
	for len(v.streams) >= maxStreams {
		var oldest stream
		var at time.Time
		first := true
		for k, s := range v.streams {
			if first || s.at.Before(at) {
				oldest, at, first = k, s.at, false
			}
		}
		delete(v.streams, oldest)
	}
}

// Rejected returns a copy of the rejection counts: path → reason → count.
func (v *Verifier) Rejected() map[string]map[string]uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]map[string]uint64, len(v.rejected))
	for p, r := range v.rejected {
		out[p] = maps.Clone(r)
	}
	return out
}
