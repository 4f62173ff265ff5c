package replog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Diverged describes a tail of this node's log that the active's log
// does not hold, as the follower found it: entries From..To, set aside in
// Path. Acked tells which of them the store had applied tentatively and
// acknowledged to a client (store.TentativeEntries): what a merge must
// re-apply on the active.
type Diverged struct {
	From, To uint64
	Path     string
	Epoch    uint64
	Acked    map[uint64]bool
}

// errTailInFlight: this node's log extends the active's with entries of
// the active's own epoch, pushed before the active stored them; following
// is retried until the active's log has them or a later writer's differs.
var errTailInFlight = errors.New("replog: this node holds entries the active has not stored yet")

// reconcile makes this node's log a prefix of the active's before the
// follower applies or reports anything (one writer per epoch numbers each
// sequence once, so equal (sequence, epoch) means equal logs up to there,
// as in Raft's log matching). A tail the active does not hold (a former
// active's entries that never reached its passive, or that it wrote alone
// in a split brain) is set aside in a file; entries of it the store
// applied tentatively are taken back in place (store.Rollback) after
// OnDiverged has seen them; the local log starts afresh, and following
// resumes from the store's position: what diverged is all a rejoin costs.
// A tail the store applied firmly cannot be taken back: ErrDiverged, and
// the node must be rebuilt from a checkpoint of the active's.
func (f *Follower) reconcile(ctx context.Context, remote jetstream.Stream, rs State) error {
	local, err := f.log.State(ctx)
	if err != nil {
		return err
	}
	applied := f.st.AppliedSeq()
	pos := local.Last
	if pos == 0 || pos < local.First {
		// No local entry (a new node, a store restored from the active's
		// checkpoint, a log started afresh): the store came from the
		// active, or is empty.
		f.setPos(applied)
		return nil
	}
	common, err := f.commonPrefix(ctx, remote, rs, local, pos)
	if err != nil {
		return err
	}
	if common == pos {
		// A prefix: apply what the store lacks of it, then follow.
		next, last, err := catchUp(ctx, f.log, f.st, f.opts.OnApplied)
		if err != nil {
			return err
		}
		f.lastRecord = last
		f.setPos(next - 1)
		return f.resumeChunks(ctx)
	}
	if common == rs.Last && rs.Last != 0 {
		// This log only extends the active's: entries pushed to this node
		// that the active may still be storing (its append runs beside
		// this node's). Setting them aside now could drop an entry the
		// active is about to acknowledge with this node's confirmation.
		// Only the writer of their epoch may still store them: while it
		// writes there, wait; once another epoch writes, or none, they
		// were never stored there, so never acknowledged.
		mine, err := f.log.Get(ctx, common+1)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err := f.remote.RequestWithContext(rctx, WriterSubject, nil)
		cancel()
		switch {
		case errors.Is(err, nats.ErrNoResponders):
		case err != nil:
			return fmt.Errorf("%w: entries %d..%d here, the active's log ends at %d (%v)", errTailInFlight, common+1, pos, rs.Last, err)
		case len(m.Data) == 8 && binary.BigEndian.Uint64(m.Data) == mine.Epoch:
			return fmt.Errorf("%w: entries %d..%d here, the active's log ends at %d", errTailInFlight, common+1, pos, rs.Last)
		}
	}
	path, epoch, err := f.setAside(ctx, common+1, pos)
	if err != nil {
		return fmt.Errorf("%w at %d (set aside failed: %v)", ErrDiverged, common+1, err)
	}
	if applied > common {
		tent, err := f.st.TentativeEntries()
		if err != nil {
			return err
		}
		d := Diverged{From: common + 1, To: pos, Path: path, Epoch: epoch, Acked: map[uint64]bool{}}
		for _, t := range tent {
			if t.Seq > common && t.Acked {
				d.Acked[t.Seq] = true
			}
		}
		if f.opts.OnDiverged != nil {
			if err := f.opts.OnDiverged(ctx, d); err != nil {
				return fmt.Errorf("replog: diverged tail %d..%d: %w", d.From, d.To, err)
			}
		}
		if err := f.st.Rollback(ctx, common); err != nil {
			return fmt.Errorf("%w: entries %d..%d (epoch %d) are not in the active's log and the store cannot take them back in place (%v); set aside in %s",
				ErrDiverged, common+1, pos, epoch, err, path)
		}
	}
	if err := f.log.Reset(ctx); err != nil {
		return err
	}
	f.lastRecord = 0
	f.asm = assembler{}
	at := f.st.AppliedSeq()
	if rs.Last != 0 && rs.First > at+1 {
		return fmt.Errorf("%w: this node is at %d, the active's log starts at %d", ErrLogTrimmed, at, rs.First)
	}
	f.setPos(at)
	f.rejoins.Add(1)
	f.lg.Warn("this node's log diverged from the active's: tail set aside, store taken back in place; following from the common position",
		"from", common+1, "to", pos, "epoch", epoch, "file", path, "position", at)
	return nil
}

// commonPrefix returns the last entry, at or below pos, that this node's
// log and the active's hold alike.
func (f *Follower) commonPrefix(ctx context.Context, remote jetstream.Stream, rs State, local State, pos uint64) (uint64, error) {
	agree := func(seq uint64) (bool, error) {
		if rs.Last == 0 || seq < rs.First || seq > rs.Last {
			return false, nil
		}
		mine, err := f.log.Get(ctx, seq)
		if err != nil {
			return false, err
		}
		theirs, err := remoteEntry(ctx, remote, rs, seq)
		if err != nil {
			return false, err
		}
		return mine.Epoch == theirs.Epoch, nil
	}
	if ok, err := agree(pos); err != nil || ok {
		return pos, err
	}
	lo, hi := max(local.First, rs.First), pos // the answer is in [lo, hi)
	ok, err := agree(lo)
	if err != nil {
		return 0, err
	}
	if !ok {
		return local.First - 1, nil // cannot tell where: all that is held diverged
	}
	for lo+1 < hi {
		mid := lo + (hi-lo)/2
		ok, err := agree(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// remoteEntry reads one entry of the active's log.
func remoteEntry(ctx context.Context, st jetstream.Stream, s State, seq uint64) (Entry, error) {
	rec, err := findRecord(ctx, st, s, seq)
	if err != nil {
		return Entry{}, err
	}
	r, err := readRecord(ctx, st, rec)
	if err != nil {
		return Entry{}, err
	}
	if i := seq - r[0].Seq; seq >= r[0].Seq && i < uint64(len(r)) {
		return r[i], nil
	}
	return Entry{}, fmt.Errorf("%w: the active's record %d does not hold entry %d", ErrSeqMismatch, rec, seq)
}

// DivergedMagic starts a file of entries set aside.
const DivergedMagic = "twinbox-diverged-1\n"

// setAside writes the local entries from..to to a file (DivergedMagic,
// then each entry's encoding after its 4-byte length), fsynced, and
// returns its path and the epoch of the last entry.
func (f *Follower) setAside(ctx context.Context, from, to uint64) (string, uint64, error) {
	dir := f.opts.DivergedDir
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, err
	}
	path := filepath.Join(dir, fmt.Sprintf("diverged-%d-%d-%s.log", from, to, time.Now().UTC().Format("20060102T150405")))
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", 0, err
	}
	var epoch uint64
	werr := func() error {
		if _, err := fh.WriteString(DivergedMagic); err != nil {
			return err
		}
		for seq := from; seq <= to; seq++ {
			e, err := f.log.Get(ctx, seq)
			if err != nil {
				return err
			}
			epoch = e.Epoch
			b := e.Encode()
			var n [4]byte
			binary.BigEndian.PutUint32(n[:], uint32(len(b)))
			if _, err := fh.Write(n[:]); err != nil {
				return err
			}
			if _, err := fh.Write(b); err != nil {
				return err
			}
		}
		return fh.Sync()
	}()
	if err := errors.Join(werr, fh.Close()); err != nil {
		os.Remove(path)
		return "", 0, err
	}
	f.lg.Error("diverged tail set aside", "from", from, "to", to, "epoch", epoch, "file", path)
	return path, epoch, nil
}

// ReadDiverged reads a file written when a diverged tail was set aside,
// with its operations assembled from their chunks.
func ReadDiverged(path string) ([]Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < len(DivergedMagic) || string(b[:len(DivergedMagic)]) != DivergedMagic {
		return nil, fmt.Errorf("%w: %s is not a file of diverged entries", ErrFormat, path)
	}
	b = b[len(DivergedMagic):]
	var asm assembler
	var out []Entry
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: %s: truncated", ErrFormat, path)
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return nil, fmt.Errorf("%w: %s: truncated", ErrFormat, path)
		}
		raw, err := DecodeEntry(b[4 : 4+n])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		b = b[4+n:]
		e, whole, err := asm.add(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if whole {
			out = append(out, e)
		}
	}
	return out, nil
}
