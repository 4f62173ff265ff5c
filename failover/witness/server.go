package witness

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/twinbox/twinbox/failover/heartbeat"
	"github.com/twinbox/twinbox/internal/fsutil"
)

// Name is the witness's own name in the messages it seals: no node may
// be called so.
const Name = "witness"

// path is the name requests are verified under (one replay mark per
// sender and boot).
const path = "witness"

// ServerOptions configure a Server.
type ServerOptions struct {
	// Listen is the UDP address, "host:port".
	Listen string
	// Key is the pair's heartbeat key.
	Key []byte
	// StateFile keeps the holder and epoch across restarts.
	StateFile string
	// Deadtime is how long the holder must be silent before another node
	// may take the role; the nodes' deadtime.
	Deadtime time.Duration
	Logger   *slog.Logger
}

// Validate reports every problem at once.
func (o *ServerOptions) Validate() error {
	var errs []error
	if o.Listen == "" {
		errs = append(errs, errors.New("listen: an address is needed"))
	}
	if len(o.Key) < heartbeat.MinKey {
		errs = append(errs, fmt.Errorf("key: %d bytes, at least %d are needed", len(o.Key), heartbeat.MinKey))
	}
	if o.StateFile == "" {
		errs = append(errs, errors.New("state file: a path is needed"))
	}
	if o.Deadtime <= 0 {
		errs = append(errs, fmt.Errorf("deadtime: %v must be positive", o.Deadtime))
	}
	return errors.Join(errs...)
}

// Server is a running witness.
type Server struct {
	opts  ServerOptions
	lg    *slog.Logger
	conn  *net.UDPConn
	v     *heartbeat.Verifier
	boot  uint64
	start time.Time
	done  chan struct{}

	mu       sync.Mutex
	st       State
	seen     map[string]time.Time
	counter  uint64
	requests uint64
}

// Listen opens the state file and the UDP socket and starts answering.
func Listen(opts ServerOptions) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	st, err := loadState(opts.StateFile)
	if err != nil {
		return nil, err
	}
	v, err := heartbeat.NewVerifier(opts.Key, Name, nil)
	if err != nil {
		return nil, err
	}
	addr, err := net.ResolveUDPAddr("udp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("witness: listen address: %w", err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	s := &Server{opts: opts, lg: lg.With("component", "witness"), conn: conn, v: v, boot: binary.BigEndian.Uint64(b[:]),
		start: time.Now(), done: make(chan struct{}), st: st, seen: map[string]time.Time{}}
	go s.serve()
	s.lg.Info("witness listening", "addr", conn.LocalAddr().String(), "holder", st.Holder, "epoch", st.Epoch)
	return s, nil
}

// Addr is the address the witness listens on.
func (s *Server) Addr() string { return s.conn.LocalAddr().String() }

// State returns the witness's current state.
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Close stops the witness.
func (s *Server) Close() error {
	err := s.conn.Close()
	<-s.done
	return err
}

func (s *Server) serve() {
	defer close(s.done)
	buf := make([]byte, heartbeat.MaxDatagram+1)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n > heartbeat.MaxDatagram {
			continue
		}
		if out := s.handle(buf[:n], time.Now()); out != nil {
			_, _ = s.conn.WriteToUDP(out, from)
		}
	}
}

// handle answers one datagram, or returns nil for one it refuses.
func (s *Server) handle(b []byte, now time.Time) []byte {
	m, err := s.v.Open(path, b, now)
	if err != nil {
		return nil
	}
	req, err := decodeRequest(m.Payload)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.seen[m.Node] = now
	holderSeen := s.start
	if t, ok := s.seen[s.st.Holder]; ok && t.After(holderSeen) {
		holderSeen = t
	}
	if m.Node == s.st.Holder {
		holderSeen = now
	}
	st, rep := decide(s.st, m.Node, req, holderSeen, now, s.opts.Deadtime)
	if st != s.st {
		if err := saveState(s.opts.StateFile, st); err != nil {
			// Not on disk: not granted, and the state stays as it was.
			s.lg.Error("witness: cannot keep its state; refusing", "err", err)
			rep = Reply{Holder: s.st.Holder, Epoch: s.st.Epoch, Why: "the witness cannot write its state"}
			st = s.st
		} else {
			s.lg.Info("witness: role changed", "node", m.Node, "want", req.Want.String(), "holder", st.Holder, "epoch", st.Epoch,
				"was_holder", s.st.Holder, "was_epoch", s.st.Epoch)
		}
	}
	if !rep.Granted && req.Want == Promote {
		s.lg.Info("witness: promotion refused", "node", m.Node, "epoch", req.Epoch, "why", rep.Why)
	}
	s.st = st
	rep.Boot, rep.Counter = m.Boot, m.Counter
	s.counter++
	out, err := heartbeat.Seal(s.opts.Key, &heartbeat.Message{Node: Name, Boot: s.boot, Counter: s.counter, Sent: now, Payload: rep.encode()})
	if err != nil {
		return nil
	}
	return out
}

func loadState(file string) (State, error) {
	var st State
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("witness: state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("witness: state file %s is damaged (%v); move it aside only if both nodes are known passive or stopped", file, err)
	}
	return st, nil
}

// saveState writes st durably (fsutil.WriteFileAtomic).
func saveState(file string, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(file, b, 0o600)
}
