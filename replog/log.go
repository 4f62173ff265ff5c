package replog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
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
	// PushSubject carries each record to the passive as the active
	// appends it (core NATS, on the active's server): the passive's
	// append and fsync run beside the active's instead of after it.
	PushSubject = "twinbox.push"
	// lastHeader names, on every record of the stream, the sequence of
	// its last entry: a passive reading the stream's headers only learns
	// from it what the active has stored.
	lastHeader = "Twinbox-Last"
	// WriterSubject is answered by the active's writer with its epoch.
	WriterSubject = "twinbox.writer"
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
	// st is the stream; Reset (and State, after a failed Reset) replace
	// it while status readers use it, so it is read with stream().
	st   atomic.Pointer[jetstream.Stream]
	opts LogOptions
}

// stream is the log's current stream.
func (l *Log) stream() jetstream.Stream { return *l.st.Load() }

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
	l := &Log{nc: nc, js: js, opts: o}
	if err := l.open(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// open creates or opens the stream, refusing weakened durability.
func (l *Log) open(ctx context.Context) error {
	o, js := l.opts, l.js
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
		return fmt.Errorf("replog: log stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("replog: log stream: %w", err)
	}
	if info.Config.PersistMode != jetstream.DefaultPersistMode {
		return fmt.Errorf("%w: stream %s persist mode is %v", ErrWeakDurable, StreamName, info.Config.PersistMode)
	}
	if info.Config.Storage != jetstream.FileStorage {
		return fmt.Errorf("%w: stream %s is not on disk", ErrWeakDurable, StreamName)
	}
	l.st.Store(&st)
	return nil
}

// Reset deletes every entry of the log and starts it afresh, empty: for a
// node whose store was replaced by a checkpoint of the active's (the
// entries it held are before the checkpoint, or diverged from it). Nothing
// may use the log meanwhile.
func (l *Log) Reset(ctx context.Context) error {
	if err := l.js.DeleteStream(ctx, StreamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("replog: reset the log: %w", err)
	}
	// Creating the stream again right after deleting it sometimes fails
	// ("error creating store for stream": the server is still removing
	// the old one). Seen about once in four rejoins of one test; without
	// a retry the node was left with no log and never followed again.
	var err error
	for range resetTries {
		if err = l.open(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(resetPause):
		}
	}
	return err
}

// Reset's retries of creating the stream: about 5 s in all.
const (
	resetTries = 50
	resetPause = 100 * time.Millisecond
)

// State is the span of the log held locally: the first and last entries
// (log sequences; 0 and 0 when empty) and the stream messages (records)
// that hold them.
type State struct {
	First, Last             uint64
	FirstRecord, LastRecord uint64
}

// State returns the span of the log.
//
// A stream that is gone (a Reset that could not create it again) is
// created again here, so that the node can go on.
func (l *Log) State(ctx context.Context) (State, error) {
	s, err := stateOf(ctx, l.stream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if oerr := l.open(ctx); oerr != nil {
			return State{}, errors.Join(err, oerr)
		}
		return stateOf(ctx, l.stream())
	}
	return s, err
}

func stateOf(ctx context.Context, st jetstream.Stream) (State, error) {
	info, err := st.Info(ctx)
	if err != nil {
		return State{}, fmt.Errorf("replog: log state: %w", err)
	}
	s := State{FirstRecord: info.State.FirstSeq, LastRecord: info.State.LastSeq}
	if info.State.Msgs == 0 || s.LastRecord < s.FirstRecord {
		return s, nil
	}
	first, err := readRecord(ctx, st, s.FirstRecord)
	if err != nil {
		return State{}, err
	}
	last, err := readRecord(ctx, st, s.LastRecord)
	if err != nil {
		return State{}, err
	}
	s.First, s.Last = first[0].Seq, last[len(last)-1].Seq
	return s, nil
}

func readRecord(ctx context.Context, st jetstream.Stream, rec uint64) ([]Entry, error) {
	m, err := st.GetMsg(ctx, rec)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: record %d", ErrNoSuchEntry, rec)
	}
	if err != nil {
		return nil, fmt.Errorf("replog: read record %d: %w", rec, err)
	}
	return decodeRecord(m.Data)
}

// findRecord returns the record holding entry seq (the first record when
// seq lies before the log), by binary search: records hold ascending
// sequences.
func findRecord(ctx context.Context, st jetstream.Stream, s State, seq uint64) (uint64, error) {
	lo, hi := s.FirstRecord, s.LastRecord
	if s.Last == 0 || seq <= s.First {
		return lo, nil
	}
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		r, err := readRecord(ctx, st, mid)
		if err != nil {
			return 0, err
		}
		if r[0].Seq <= seq {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// Append writes entries, which must follow the log's last entry without a
// gap, as records (one per group commit unless it is very large), each
// expecting the stream's previous record: after is the last record the
// writer knows of, so a writer whose idea of the log is stale fails with
// ErrStaleWriter instead of forking it. It returns once every record is
// fsynced, with the new last record.
func (l *Log) Append(ctx context.Context, after uint64, entries []Entry) (uint64, error) {
	records, data := encodeRecords(entries)
	return l.appendEncoded(ctx, after, records, data)
}

// encodeRecords packs entries into records and encodes each.
func encodeRecords(entries []Entry) ([][]Entry, [][]byte) {
	records := packRecords(entries)
	data := make([][]byte, len(records))
	for i, r := range records {
		data[i] = encodeRecord(r)
	}
	return records, data
}

// appendEncoded is Append of records already packed and encoded.
func (l *Log) appendEncoded(ctx context.Context, after uint64, records [][]Entry, data [][]byte) (uint64, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(records))
	for i, r := range records {
		m := nats.NewMsg(Subject)
		m.Data = data[i]
		m.Header.Set(lastHeader, strconv.FormatUint(r[len(r)-1].Seq, 10))
		f, err := l.js.PublishMsgAsync(m,
			jetstream.WithExpectLastSequence(after+uint64(i)),
			jetstream.WithMsgID(fmt.Sprintf("%d.%d", r[0].Epoch, r[0].Seq)))
		if err != nil {
			return after, fmt.Errorf("replog: append %d: %w", r[0].Seq, err)
		}
		futures = append(futures, f)
	}
	var first error
	last := after
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Sequence != after+uint64(i)+1 && first == nil {
				first = fmt.Errorf("%w: record of entry %d stored as %d", ErrSeqMismatch, records[i][0].Seq, ack.Sequence)
			}
			if first == nil {
				last = ack.Sequence
			}
		case err := <-f.Err():
			if first == nil {
				var apiErr *jetstream.APIError
				if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
					err = fmt.Errorf("%w: %v", ErrStaleWriter, err)
				}
				first = fmt.Errorf("replog: append %d: %w", records[i][0].Seq, err)
			}
		case <-ctx.Done():
			if first == nil {
				first = fmt.Errorf("replog: append %d: %w", records[i][0].Seq, ctx.Err())
			}
		}
	}
	return last, first
}

// Get reads one entry as stored: a chunk of a large operation has no Op
// (Replay assembles operations).
func (l *Log) Get(ctx context.Context, seq uint64) (Entry, error) {
	s, err := l.State(ctx)
	if err != nil {
		return Entry{}, err
	}
	if s.Last == 0 || seq < s.First || seq > s.Last {
		return Entry{}, fmt.Errorf("%w: %d", ErrNoSuchEntry, seq)
	}
	rec, err := findRecord(ctx, l.stream(), s, seq)
	if err != nil {
		return Entry{}, err
	}
	r, err := readRecord(ctx, l.stream(), rec)
	if err != nil {
		return Entry{}, err
	}
	if i := seq - r[0].Seq; seq >= r[0].Seq && i < uint64(len(r)) {
		return r[i], nil
	}
	return Entry{}, fmt.Errorf("%w: record %d does not hold entry %d", ErrSeqMismatch, rec, seq)
}

// Replay calls fn with each operation of the log from sequence from to
// until (0: the end), assembled from its chunks, in order. An operation
// whose chunks begin before from is assembled from its first chunk.
func (l *Log) Replay(ctx context.Context, from, until uint64, fn func(e *Entry) error) error {
	s, err := l.State(ctx)
	if err != nil || s.Last == 0 {
		return err
	}
	if until == 0 || until > s.Last {
		until = s.Last
	}
	rec, err := findRecord(ctx, l.stream(), s, from)
	if err != nil {
		return err
	}
	// Walk back over records that end inside a chunked operation.
	for rec > s.FirstRecord {
		prev, err := readRecord(ctx, l.stream(), rec-1)
		if err != nil || !prev[len(prev)-1].IsChunk() {
			break
		}
		rec--
	}
	var asm assembler
	for ; rec <= s.LastRecord; rec++ {
		r, err := readRecord(ctx, l.stream(), rec)
		if err != nil {
			return err
		}
		for _, raw := range r {
			if raw.Seq > until {
				return nil
			}
			e, whole, err := asm.add(raw)
			if err != nil {
				return err
			}
			if !whole || e.Seq < from {
				continue
			}
			if err := fn(&e); err != nil {
				return err
			}
		}
	}
	return nil
}

// Trim deletes the records wholly below entry seq.
func (l *Log) Trim(ctx context.Context, below uint64) error {
	s, err := l.State(ctx)
	if err != nil || s.Last == 0 || below <= s.First {
		return err
	}
	rec, err := findRecord(ctx, l.stream(), s, below)
	if err != nil || rec <= s.FirstRecord {
		return err
	}
	return l.stream().Purge(ctx, jetstream.WithPurgeSequence(rec))
}
