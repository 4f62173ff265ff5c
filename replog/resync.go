package replog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinbox/twinbox/store"
)

// A passive whose position was trimmed from the active's log cannot catch
// up entry by entry: it takes a checkpoint of the active's store (Pebble's
// consistent checkpoint, shipped through a JetStream object store on the
// active's server) and follows the log from the checkpoint's position.
const (
	ResyncSubject = "twinbox.resync"
	ResyncBucket  = "TWINBOX_RESYNC"
)

type resyncFile struct {
	Name string `json:"name"` // path inside the checkpoint
	Size int64  `json:"size"`
}

type resyncReply struct {
	ID    string       `json:"id"`
	Files []resyncFile `json:"files"`
	Error string       `json:"error,omitempty"`
}

// ServeResync answers the passive's resync requests on nc, a connection to
// the active's own server, until the returned stop is called. Checkpoints
// are made in tmpDir ("" means the system's temporary directory), which
// must be on the store's file system for Pebble to hard-link its files.
func ServeResync(nc *nats.Conn, st *store.Store, tmpDir string, lg *slog.Logger) (stop func(), err error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	var busy atomic.Bool
	sub, err := nc.Subscribe(ResyncSubject, func(m *nats.Msg) {
		if !busy.CompareAndSwap(false, true) {
			reply(m, resyncReply{Error: "a resync is already being prepared; retry"})
			return
		}
		go func() {
			defer busy.Store(false)
			r, err := prepareResync(nc, st, tmpDir)
			if err != nil {
				lg.Error("prepare a resync", "err", err)
				r = resyncReply{Error: err.Error()}
			} else {
				lg.Info("a checkpoint is ready for the passive", "id", r.ID, "files", len(r.Files))
			}
			reply(m, r)
		}()
	})
	if err != nil {
		return nil, err
	}
	return func() { sub.Unsubscribe() }, nil
}

func reply(m *nats.Msg, r resyncReply) {
	b, _ := json.Marshal(r)
	_ = m.Respond(b)
}

// prepareResync checkpoints the store and uploads the files.
func prepareResync(nc *nats.Conn, st *store.Store, tmpDir string) (resyncReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	tmp, err := os.MkdirTemp(tmpDir, "checkpoint-")
	if err != nil {
		return resyncReply{}, err
	}
	defer os.RemoveAll(tmp)
	cp := filepath.Join(tmp, "store")
	if err := st.Checkpoint(cp); err != nil {
		return resyncReply{}, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return resyncReply{}, err
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: ResyncBucket, Description: "Twinbox store checkpoints for a passive's resync",
		TTL: 6 * time.Hour, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return resyncReply{}, fmt.Errorf("replog: resync bucket: %w", err)
	}
	r := resyncReply{ID: strconv.FormatInt(time.Now().UnixNano(), 36)}
	err = filepath.WalkDir(cp, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(cp, path)
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		info, err := obs.Put(ctx, jetstream.ObjectMeta{Name: r.ID + "/" + filepath.ToSlash(rel)}, f)
		if err != nil {
			return fmt.Errorf("replog: upload %s: %w", rel, err)
		}
		r.Files = append(r.Files, resyncFile{Name: filepath.ToSlash(rel), Size: int64(info.Size)})
		return nil
	})
	return r, err
}

// Resync asks the active (over remote) for a checkpoint of its store and
// writes it into dir, which must not exist yet, reporting progress on w.
// It returns the checkpoint's applied position.
func Resync(ctx context.Context, remote *nats.Conn, dir string, w io.Writer) (uint64, error) {
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("replog: resync into %s: already exists", dir)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	m, err := remote.RequestWithContext(rctx, ResyncSubject, nil)
	if err != nil {
		return 0, fmt.Errorf("replog: ask the active for a checkpoint: %w", err)
	}
	var r resyncReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return 0, fmt.Errorf("replog: the active's resync answer: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("replog: the active could not make a checkpoint: %s", r.Error)
	}
	js, err := jetstream.New(remote)
	if err != nil {
		return 0, err
	}
	obs, err := js.ObjectStore(ctx, ResyncBucket)
	if err != nil {
		return 0, fmt.Errorf("replog: resync bucket: %w", err)
	}
	var total, done int64
	for _, f := range r.Files {
		total += f.Size
	}
	tmp := dir + ".partial"
	os.RemoveAll(tmp)
	last := time.Now()
	for _, f := range r.Files {
		path := filepath.Join(tmp, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return 0, err
		}
		obj, err := obs.Get(ctx, r.ID+"/"+f.Name)
		if err != nil {
			return 0, fmt.Errorf("replog: download %s: %w", f.Name, err)
		}
		out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			obj.Close()
			return 0, err
		}
		n, err := io.Copy(out, obj)
		obj.Close()
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, fmt.Errorf("replog: download %s: %w", f.Name, err)
		}
		done += n
		if w != nil && n > 0 && (time.Since(last) > 500*time.Millisecond || done == total) {
			last = time.Now()
			fmt.Fprintf(w, "resync: %s of %s (%d%%)\n", mib(done), mib(total), percent(done, total))
		}
	}
	st, err := store.Open(ctx, tmp, &store.Options{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("replog: the checkpoint does not open: %w", err)
	}
	applied := st.AppliedSeq()
	st.Close(ctx)
	if err := os.Rename(tmp, dir); err != nil {
		return 0, err
	}
	if w != nil {
		fmt.Fprintf(w, "resync: checkpoint at log position %d in place\n", applied)
	}
	return applied, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func percent(a, b int64) int64 {
	if b == 0 {
		return 100
	}
	return a * 100 / b
}

// NeedsResync reports whether a node whose store has applied up to
// applied can no longer follow the active's log entry by entry.
func NeedsResync(ctx context.Context, remote *nats.Conn, applied uint64) (bool, error) {
	js, err := jetstream.New(remote)
	if err != nil {
		return false, err
	}
	st, err := js.Stream(ctx, StreamName)
	if err != nil {
		return false, fmt.Errorf("replog: the active's log: %w", err)
	}
	s, err := stateOf(ctx, st)
	if err != nil {
		return false, err
	}
	return s.Last != 0 && s.First > applied+1, nil
}
