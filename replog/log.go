package replog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The log's stream and subject, the same on both nodes.
const (
	StreamName = "TWINBOX_LOG"
	Subject    = "twinbox.log"
	// PositionSubject carries the passive's durable position to the
	// active (core NATS, on the active's server).
	PositionSubject = "twinbox.position"
)

// LogOptions configure a local log. A nil *LogOptions means defaults.
type LogOptions struct {
	// MaxAge keeps entries at least this long (point-in-time restore);
	// 0 keeps them until trimmed explicitly.
	MaxAge time.Duration
}

// Log is a node's local copy of the log: an R1 JetStream file stream whose
// sequence numbers are the log's. Append fsyncs (the server runs with
// SyncAlways) before it returns.
type Log struct {
	nc *nats.Conn
	js jetstream.JetStream
	st jetstream.Stream
}

// Connect opens an in-process client connection to a node's own server.
func Connect(s *server.Server, user, password, name string) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(s), nats.UserInfo(user, password),
		nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("replog: connect to the local NATS server: %w", err)
	}
	return nc, nil
}

// OpenLog opens (creating if needed) the log stream over a connection to
// the node's own server. It refuses a stream whose durability was
// weakened (a persist mode other than the default).
func OpenLog(ctx context.Context, nc *nats.Conn, opts *LogOptions) (*Log, error) {
	var o LogOptions
	if opts != nil {
		o = *opts
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cfg := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Twinbox write log",
		Subjects:    []string{Subject},
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		MaxMsgSize:  -1, // the server's MaxPayload bounds entries
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
		PersistMode: jetstream.DefaultPersistMode,
	}
	st, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replog: log stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("replog: log stream: %w", err)
	}
	if info.Config.PersistMode != jetstream.DefaultPersistMode {
		return nil, fmt.Errorf("%w: stream %s persist mode is %v", ErrWeakDurable, StreamName, info.Config.PersistMode)
	}
	if info.Config.Storage != jetstream.FileStorage {
		return nil, fmt.Errorf("%w: stream %s is not on disk", ErrWeakDurable, StreamName)
	}
	return &Log{nc: nc, js: js, st: st}, nil
}

// State is the span of the log held locally.
type State struct{ First, Last uint64 }

// State returns the first and last sequence held.
func (l *Log) State(ctx context.Context) (State, error) {
	info, err := l.st.Info(ctx)
	if err != nil {
		return State{}, fmt.Errorf("replog: log state: %w", err)
	}
	return State{First: info.State.FirstSeq, Last: info.State.LastSeq}, nil
}

// Append writes entries at their sequence numbers, which must follow the
// log's last one without a gap: each publish expects the one before it
// (JetStream's expected-last-sequence), so a writer whose idea of the log
// is stale fails with ErrStaleWriter instead of forking it. It returns
// once every entry is fsynced.
func (l *Log) Append(ctx context.Context, entries []Entry) error {
	futures := make([]jetstream.PubAckFuture, 0, len(entries))
	for i := range entries {
		e := &entries[i]
		m := nats.NewMsg(Subject)
		m.Data = e.Encode()
		f, err := l.js.PublishMsgAsync(m,
			jetstream.WithExpectLastSequence(e.Seq-1),
			jetstream.WithMsgID(fmt.Sprintf("%d.%d", e.Epoch, e.Seq)))
		if err != nil {
			return fmt.Errorf("replog: append %d: %w", e.Seq, err)
		}
		futures = append(futures, f)
	}
	var first error
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Sequence != entries[i].Seq && first == nil {
				first = fmt.Errorf("%w: entry %d stored as %d", ErrSeqMismatch, entries[i].Seq, ack.Sequence)
			}
		case err := <-f.Err():
			if first == nil {
				var apiErr *jetstream.APIError
				if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
					err = fmt.Errorf("%w: %v", ErrStaleWriter, err)
				}
				first = fmt.Errorf("replog: append %d: %w", entries[i].Seq, err)
			}
		case <-ctx.Done():
			if first == nil {
				first = fmt.Errorf("replog: append %d: %w", entries[i].Seq, ctx.Err())
			}
		}
	}
	return first
}

// Get reads one entry as stored: a chunk of a large operation has no Op
// (Replay assembles operations).
func (l *Log) Get(ctx context.Context, seq uint64) (Entry, error) {
	m, err := l.st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, fmt.Errorf("%w: %d", ErrNoSuchEntry, seq)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("replog: read %d: %w", seq, err)
	}
	e, err := DecodeEntry(m.Data)
	if err != nil {
		return Entry{}, err
	}
	if e.Seq != seq {
		return Entry{}, fmt.Errorf("%w: stream sequence %d holds entry %d", ErrSeqMismatch, seq, e.Seq)
	}
	return e, nil
}

// Replay calls fn with each operation of the log from sequence from to
// until (0: the end), assembled from its chunks, in order. An operation
// whose chunks begin before from is assembled from its first chunk.
func (l *Log) Replay(ctx context.Context, from, until uint64, fn func(e *Entry) error) error {
	state, err := l.State(ctx)
	if err != nil {
		return err
	}
	if until == 0 || until > state.Last {
		until = state.Last
	}
	if from < state.First {
		from = state.First
	}
	start := from
	for start > state.First {
		e, err := l.Get(ctx, start-1)
		if err != nil || !e.IsChunk() {
			break
		}
		start--
	}
	var asm assembler
	for seq := start; seq <= until; seq++ {
		raw, err := l.Get(ctx, seq)
		if err != nil {
			return err
		}
		e, whole, err := asm.add(raw)
		if err != nil {
			return err
		}
		if !whole || seq < from {
			continue
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

// Trim deletes the entries below seq.
func (l *Log) Trim(ctx context.Context, below uint64) error {
	if below <= 1 {
		return nil
	}
	return l.st.Purge(ctx, jetstream.WithPurgeSequence(below))
}
