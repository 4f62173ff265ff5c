package replog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// checkDiverged makes sure this node's log is a prefix of the active's
// before following it: the entry at this node's position must be in the
// active's log with the same epoch (one writer per epoch numbers each
// sequence once, so equal (sequence, epoch) means equal logs up to there,
// as in Raft's log matching). A former active that wrote entries the
// passive never received, and then lost the role, fails this: its tail is
// set aside in a file and ErrDiverged returned, since its store applied
// entries the new active does not have.
func (f *Follower) checkDiverged(ctx context.Context, remote jetstream.Stream, rs State, pos uint64) error {
	if pos == 0 {
		return nil
	}
	local, err := f.log.State(ctx)
	if err != nil {
		return err
	}
	if local.Last == 0 || pos < local.First || pos > local.Last {
		// No local entry to compare (a store restored from the active's
		// checkpoint starts with an empty log): it came from the active.
		return nil
	}
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
	ok, err := agree(pos)
	if err != nil || ok {
		return err
	}
	// The logs agree up to some entry and differ after it: find the
	// first that differs (binary search over what both still hold).
	lo, hi := max(local.First, rs.First), pos // the answer is in [lo, hi]
	if ok, err := agree(lo); err != nil {
		return err
	} else if ok {
		for lo+1 < hi {
			mid := lo + (hi-lo)/2
			ok, err := agree(mid)
			if err != nil {
				return err
			}
			if ok {
				lo = mid
			} else {
				hi = mid
			}
		}
		lo = hi
	} else {
		lo = local.First // cannot tell where: set aside all that is held
	}
	path, epoch, err := f.setAside(ctx, lo, pos)
	if err != nil {
		return fmt.Errorf("%w at %d (set aside failed: %v)", ErrDiverged, lo, err)
	}
	return fmt.Errorf("%w: entries %d..%d (epoch %d) are not in the active's log (it ends at %d); set aside in %s",
		ErrDiverged, lo, pos, epoch, rs.Last, path)
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
