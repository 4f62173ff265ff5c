package heartbeat

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultKeepalive is the interval between rounds of heartbeats when
// Options.Keepalive is 0 (the failover machine's default).
const DefaultKeepalive = 200 * time.Millisecond

const (
	// receivedBuffer is the capacity of Heart.Received's channel.
	receivedBuffer = 64
	// logEvery: at most one log line per path and reason this often, so
	// a flood of bad datagrams or a dead path cannot fill the disk.
	logEvery = 10 * time.Second
)

// Options configure a Heart.
type Options struct {
	// Node is this node's name (1 to MaxNode bytes).
	Node string
	// Key is the shared secret of the pair, at least MinKey bytes.
	Key []byte
	// Keepalive is the interval between rounds; 0 means DefaultKeepalive.
	Keepalive time.Duration
	// MaxSkew bounds |now - Sent| of a received message; 0 means
	// DefaultMaxSkew.
	MaxSkew time.Duration
	// Paths are the transports, with distinct names. The Heart owns them
	// once Start succeeds and closes them in Close.
	Paths []Path
	// Payload, when set, is called once per round of sends and its result
	// (at most MaxPayload bytes) goes on every path of the round.
	Payload func() []byte
	// Logger receives rejections and send errors at Warn, rate-limited.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Validate reports every problem of the options at once.
func (o *Options) Validate() error {
	var errs []error
	if len(o.Node) == 0 || len(o.Node) > MaxNode {
		errs = append(errs, fmt.Errorf("node: %q must be 1 to %d bytes", o.Node, MaxNode))
	}
	if len(o.Key) < MinKey {
		errs = append(errs, fmt.Errorf("key: %d bytes, at least %d are needed", len(o.Key), MinKey))
	}
	if o.Keepalive < 0 {
		errs = append(errs, fmt.Errorf("keepalive: %v must not be negative", o.Keepalive))
	}
	if o.MaxSkew < 0 {
		errs = append(errs, fmt.Errorf("max skew: %v must not be negative", o.MaxSkew))
	}
	if len(o.Paths) == 0 {
		errs = append(errs, errors.New("paths: none given"))
	}
	names := make(map[string]bool)
	for i, p := range o.Paths {
		switch {
		case p == nil:
			errs = append(errs, fmt.Errorf("paths[%d]: nil", i))
		case p.Name() == "":
			errs = append(errs, fmt.Errorf("paths[%d]: empty name", i))
		case names[p.Name()]:
			errs = append(errs, fmt.Errorf("paths[%d]: name %q used twice", i, p.Name()))
		default:
			names[p.Name()] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// Received is a verified heartbeat.
type Received struct {
	Path string
	Msg  *Message
	// At is the receiver's clock when the message was accepted.
	At time.Time
}

// PathStats are one path's counters since Start.
type PathStats struct {
	// Sent counts datagrams the path took without error; SendErrors the
	// others.
	Sent, SendErrors uint64
	// Received counts accepted messages; LastReceived is the receiver's
	// clock at the last one.
	Received     uint64
	LastReceived time.Time
	// Dropped counts accepted messages dropped unread because the
	// consumer of Received fell behind (the oldest go first).
	Dropped uint64
	// Rejected counts refused datagrams by reason (see Reason).
	Rejected map[string]uint64
	// LastError is the last send error, and LastErrorAt its time.
	LastError   string
	LastErrorAt time.Time
}

// Heart sends a heartbeat on every path every keepalive and delivers the
// messages that pass its Verifier. Its methods are safe for concurrent use.
type Heart struct {
	node     string
	key      []byte
	boot     uint64
	counter  atomic.Uint64
	payload  func() []byte
	now      func() time.Time
	log      *slog.Logger
	v        *Verifier
	paths    []*pathState
	byName   map[string]*pathState
	received chan Received
	kick     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup

	deliverMu sync.Mutex // one drop-oldest delivery at a time

	mu     sync.Mutex // the paths' counters and logged
	logged map[logKey]*logState

	closeOnce sync.Once
	closeErr  error
}

type pathState struct {
	p    Path
	name string
	out  chan []byte // the next datagram to send; the latest wins
	// Guarded by Heart.mu.
	stats PathStats
}

type logKey struct{ path, reason string }

type logState struct {
	last       time.Time
	suppressed uint64
}

// Start checks opts, sends a first round at once and then one every
// keepalive. If it fails, the paths are left to the caller.
func Start(opts Options) (*Heart, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	v, err := NewVerifier(opts.Key, opts.Node, &VerifierOptions{MaxSkew: opts.MaxSkew})
	if err != nil {
		return nil, err
	}
	keepalive := opts.Keepalive
	if keepalive == 0 {
		keepalive = DefaultKeepalive
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var boot [8]byte
	_, _ = rand.Read(boot[:]) // never fails (crypto/rand)
	h := &Heart{
		node:     opts.Node,
		key:      append([]byte(nil), opts.Key...),
		boot:     binary.BigEndian.Uint64(boot[:]),
		payload:  opts.Payload,
		now:      now,
		log:      logger.With("component", "heartbeat", "node", opts.Node),
		v:        v,
		byName:   make(map[string]*pathState, len(opts.Paths)),
		received: make(chan Received, receivedBuffer),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		logged:   make(map[logKey]*logState),
	}
	for _, p := range opts.Paths {
		ps := &pathState{p: p, name: p.Name(), out: make(chan []byte, 1)}
		h.paths = append(h.paths, ps)
		h.byName[ps.name] = ps
	}
	for _, ps := range h.paths {
		h.wg.Add(2)
		go h.sender(ps)
		go h.receiver(ps)
	}
	h.wg.Add(1)
	go h.beat(keepalive)
	return h, nil
}

// Boot returns this process's boot number, sent in every message.
func (h *Heart) Boot() uint64 { return h.boot }

// Received returns the verified messages, oldest first. When the consumer
// falls behind, the oldest are dropped rather than the receivers blocked.
// It is closed by Close.
func (h *Heart) Received() <-chan Received { return h.received }

// SendNow asks for an extra round at once (a role change is announced
// without waiting for the next tick). Requests made while one is pending
// are merged.
func (h *Heart) SendNow() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Stats returns each path's counters, by path name.
func (h *Heart) Stats() map[string]PathStats {
	rejected := h.v.Rejected()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]PathStats, len(h.paths))
	for _, ps := range h.paths {
		s := ps.stats
		s.Rejected = rejected[ps.name]
		if s.Rejected == nil {
			s.Rejected = map[string]uint64{}
		}
		out[ps.name] = s
	}
	return out
}

// Close stops sending and receiving, closes the paths, waits for every
// goroutine and closes the Received channel.
func (h *Heart) Close() error {
	h.closeOnce.Do(func() {
		close(h.done)
		var errs []error
		for _, ps := range h.paths {
			if err := ps.p.Close(); err != nil {
				errs = append(errs, fmt.Errorf("heartbeat: close path %s: %w", ps.name, err))
			}
		}
		h.wg.Wait()
		close(h.received)
		h.closeErr = errors.Join(errs...)
	})
	return h.closeErr
}

// beat runs the rounds: one at once, then on every tick and SendNow.
func (h *Heart) beat(keepalive time.Duration) {
	defer h.wg.Done()
	t := time.NewTicker(keepalive)
	defer t.Stop()
	for {
		h.round()
		select {
		case <-h.done:
			return
		case <-t.C:
		case <-h.kick:
		}
	}
}

// round seals one message per path (each with its own counter) and hands
// it to the path's sender, replacing one still waiting there.
func (h *Heart) round() {
	var payload []byte
	if h.payload != nil {
		payload = h.payload()
	}
	sent := h.now()
	for _, ps := range h.paths {
		b, err := Seal(h.key, &Message{
			Node: h.node, Boot: h.boot, Counter: h.counter.Add(1), Sent: sent, Payload: payload,
		})
		if err != nil {
			h.sendFailed(ps, err)
			continue
		}
		offer(ps.out, b)
	}
}

// offer puts b in ch, dropping what waits there if ch is full. Only one
// goroutine offers to a given ch.
func offer(ch chan []byte, b []byte) {
	for {
		select {
		case ch <- b:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// sender sends the path's datagrams; a slow or failing path delays and
// fails alone.
func (h *Heart) sender(ps *pathState) {
	defer h.wg.Done()
	for {
		select {
		case <-h.done:
			return
		case b := <-ps.out:
			if err := ps.p.Send(b); err != nil {
				select {
				case <-h.done: // the path was closed under the send
					return
				default:
				}
				h.sendFailed(ps, err)
				continue
			}
			h.mu.Lock()
			ps.stats.Sent++
			h.mu.Unlock()
		}
	}
}

func (h *Heart) sendFailed(ps *pathState, err error) {
	at := h.now()
	h.mu.Lock()
	ps.stats.SendErrors++
	ps.stats.LastError, ps.stats.LastErrorAt = err.Error(), at
	h.mu.Unlock()
	h.warn(ps.name, "send", at, "heartbeat send failed", err)
}

// receiver verifies what the path delivers and hands on what passes.
func (h *Heart) receiver(ps *pathState) {
	defer h.wg.Done()
	in := ps.p.Receive()
	for {
		var b []byte
		var ok bool
		select {
		case <-h.done:
			return
		case b, ok = <-in:
		}
		if !ok {
			select {
			case <-h.done:
			default:
				h.log.Warn("heartbeat path stopped receiving", "path", ps.name)
			}
			return
		}
		at := h.now()
		m, err := h.v.Open(ps.name, b, at)
		if err != nil {
			h.warn(ps.name, Reason(err), at, "heartbeat rejected", err)
			continue
		}
		h.mu.Lock()
		ps.stats.Received++
		ps.stats.LastReceived = at
		h.mu.Unlock()
		h.deliver(Received{Path: ps.name, Msg: m, At: at})
	}
}

// deliver queues r, dropping the oldest queued message if the queue is
// full.
func (h *Heart) deliver(r Received) {
	h.deliverMu.Lock()
	defer h.deliverMu.Unlock()
	for {
		select {
		case h.received <- r:
			return
		default:
		}
		select {
		case old := <-h.received:
			h.mu.Lock()
			h.byName[old.Path].stats.Dropped++
			h.mu.Unlock()
		default:
		}
	}
}

// warn logs at most one line per path and reason every logEvery, with the
// number of lines suppressed since the last.
func (h *Heart) warn(path, reason string, at time.Time, msg string, err error) {
	h.mu.Lock()
	k := logKey{path, reason}
	st := h.logged[k]
	if st == nil {
		st = &logState{}
		h.logged[k] = st
	} else if d := at.Sub(st.last); d >= 0 && d < logEvery {
		st.suppressed++
		h.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = at, 0
	h.mu.Unlock()
	h.log.Warn(msg, "path", path, "reason", reason, "err", err, "suppressed", suppressed)
}
