package store_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/twinbox/twinbox/cache"
	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/store"
)

// BenchmarkDeliver measures durable deliveries of a 10 KB message (a new
// message each time) to 1 and to 50 mailboxes, by 1 and by 16 concurrent
// senders. Every delivery returns only after its entry is fsynced. Two write
// paths: "direct", each sender calls Store.ApplyNext (Pebble's WAL writer
// shares one fsync among the batches waiting), and "group", senders go
// through cache.GroupCommit, which puts concurrent operations in one batch.
func BenchmarkDeliver(b *testing.B) {
	for _, rcpts := range []int{1, 50} {
		for _, conc := range []int{1, 16} {
			for _, grouped := range []bool{false, true} {
				mode := "direct"
				if grouped {
					mode = "group"
				}
				b.Run(fmt.Sprintf("rcpt=%d/conc=%d/%s", rcpts, conc, mode), func(b *testing.B) {
					benchDeliver(b, rcpts, conc, 10<<10, grouped)
				})
			}
		}
	}
}

func benchDeliver(b *testing.B, rcpts, conc, size int, grouped bool) {
	fs := &syncCounter{FS: vfs.Default}
	s := newTestStore(b, &store.Options{FS: fs})
	var targets []store.Target
	for i := range rcpts {
		u := fmt.Sprintf("user%02d", i)
		apply(b, s, &store.CreateUser{User: u})
		targets = append(targets, store.Target{User: u, Mailbox: "INBOX"})
	}
	warmUp(b, s)
	gc := cache.NewGroupCommit(func(ctx context.Context, ops []store.Op) ([]store.Result, error) {
		return s.ApplyNext(ctx, store.Now(), ops...)
	}, nil)
	defer gc.Close()
	deliver := func(op store.Op) (store.Result, error) {
		// As a writer does: check and encode in the sender's goroutine.
		if err := s.Admit(op); err != nil {
			return store.Result{}, err
		}
		if grouped {
			return gc.Do(context.Background(), op)
		}
		res, err := s.ApplyNext(context.Background(), store.Now(), op)
		if err != nil {
			return store.Result{}, err
		}
		return res[0], nil
	}
	// Prepare the messages outside the timed part: the benchmark measures
	// the store, not MIME parsing.
	ops := make([]store.Op, b.N)
	for i := range ops {
		ops[i] = &store.Deliver{Body: *dedupe.Prepare(message(i, size), nil), Targets: targets, InternalDate: store.Now()}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	syncs, syncNanos := fs.n.Load(), fs.nanos.Load()
	b.ResetTimer()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				res, err := deliver(ops[i])
				if err == nil {
					err = res.Err
				}
				if err == nil && (res.Skipped || len(res.Placed) != rcpts) {
					err = fmt.Errorf("delivery %d not applied: %+v", i, res)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
	n := float64(fs.n.Load() - syncs)
	b.ReportMetric(float64(b.N)/n, "deliveries/fsync")
	b.ReportMetric(float64(fs.nanos.Load()-syncNanos)/n/1e6, "ms/fsync")
	b.ReportMetric(b.Elapsed().Seconds()*1e3/n, "ms-between-fsyncs")
	if grouped {
		b.ReportMetric(gc.Stats().AvgBatch(), "ops/batch")
	}
}

// warmUp puts a fresh store in the state of one that has been running: a
// few memtable flushes leave write-ahead log files behind for Pebble to
// recycle, so fsyncs overwrite allocated blocks as they do in a store that
// has been running for a while, instead of extending brand-new files (which
// costs a file-system journal commit on every fsync).
func warmUp(tb testing.TB, s *store.Store) {
	tb.Helper()
	for range 3 {
		if err := s.Flush(); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkBodyRead reads random bodies of 2 000 stored 10 KB messages from
// the store (Pebble with a small block cache, so most reads go to the files)
// and through the read cache once it is warm.
func BenchmarkBodyRead(b *testing.B) {
	s := newTestStore(b, &store.Options{CacheSize: 1 << 20})
	apply(b, s, &store.CreateUser{User: "alice"})
	const n = 2000
	ids := make([]store.BlobID, n)
	var ops []store.Op
	for i := range n {
		body := dedupe.Prepare(message(i, 10<<10), nil)
		ids[i] = body.ID
		ops = append(ops, &store.Deliver{Body: *body, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
		if len(ops) == 200 {
			apply(b, s, ops...)
			ops = nil
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	b.Run("store", func(b *testing.B) {
		b.SetBytes(10 << 10)
		for i := range b.N {
			if _, err := s.Body(ids[(i*7919)%n]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
	})
	b.Run("cached", func(b *testing.B) {
		c, err := cache.New[store.BlobID, []byte](nil, func(_ store.BlobID, v []byte) int64 { return int64(len(v)) })
		if err != nil {
			b.Fatal(err)
		}
		load := func(_ context.Context, id store.BlobID) ([]byte, error) { return s.Body(id) }
		for _, id := range ids {
			if _, err := c.Get(context.Background(), id, load); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(10 << 10)
		b.ResetTimer()
		for i := range b.N {
			if _, err := c.Get(context.Background(), ids[(i*7919)%n], load); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
	})
}

// BenchmarkDiskPerMessage delivers 1 MB messages (text and a base64
// attachment of random bytes, which no compressor shrinks) to 50 mailboxes,
// flushes, and reports per message the bytes the store's data files grew
// by (sstables and blob files: what holds the messages once the WAL is
// flushed) and the bytes the whole directory grew by. The difference is the
// write-ahead log, a fixed cost (a file or two of about the memtable size,
// kept for recycling) that does not grow with the number of messages.
func BenchmarkDiskPerMessage(b *testing.B) {
	const rcpts, msgs = 50, 40
	for range b.N {
		dir := b.TempDir()
		s, err := store.Open(context.Background(), dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		var targets []store.Target
		for i := range rcpts {
			u := fmt.Sprintf("user%02d", i)
			apply(b, s, &store.CreateUser{User: u})
			targets = append(targets, store.Target{User: u, Mailbox: "INBOX", Prefix: []byte("Delivered-To: " + u + "@example.com\r\n")})
		}
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
		before, beforeData := dirSize(b, dir)
		var msgBytes int64
		for i := range msgs {
			raw := bigMessage(i, 1<<20)
			msgBytes += int64(len(raw))
			apply(b, s, &store.Deliver{Body: *dedupe.Prepare(raw, nil), Targets: targets, InternalDate: testNow})
		}
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
		after, afterData := dirSize(b, dir)
		b.ReportMetric(float64(msgBytes)/msgs, "msg-bytes")
		b.ReportMetric(float64(afterData-beforeData)/msgs, "data-bytes/msg")
		b.ReportMetric(float64(afterData-beforeData)/float64(msgBytes), "data/msg-ratio")
		b.ReportMetric(float64(after-before)/msgs, "dir-bytes/msg")
		_ = s.Close(context.Background())
	}
}

// bigMessage is a multipart message of about size bytes: a short text part
// and a base64 attachment of random bytes.
func bigMessage(i, size int) []byte {
	att := make([]byte, size*3/4)
	_, _ = rand.Read(att)
	enc := base64.StdEncoding.EncodeToString(att)
	var lines []byte
	for len(enc) > 76 {
		lines = append(lines, enc[:76]+"\r\n"...)
		enc = enc[76:]
	}
	lines = append(lines, enc+"\r\n"...)
	return []byte(fmt.Sprintf("From: a@example.org\r\nTo: list@example.com\r\nSubject: report %d\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"+
		"--b%d\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n%s--b%d--\r\n",
		i, i, i, i, lines, i))
}

// dirSize returns the size of every file under dir, and of the data files
// alone (everything but the write-ahead log).
func dirSize(tb testing.TB, dir string) (all, data int64) {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			all += info.Size()
			if filepath.Ext(path) != ".log" {
				data += info.Size()
			}
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return all, data
}

// BenchmarkMailbox100k measures reads of a mailbox of 100 000 messages: the
// UID list that maps sequence numbers to UIDs (read at SELECT), a sequence
// number lookup in it, a page of 50 message records, and STATUS.
func BenchmarkMailbox100k(b *testing.B) {
	const n = 100_000
	s := newTestStore(b, nil)
	apply(b, s, &store.CreateUser{User: "alice"})
	bd := *dedupe.Prepare(message(1, 2000), nil)
	ops := make([]store.Op, 0, 1000)
	for i := range n {
		ops = append(ops, &store.Deliver{Body: bd, InternalDate: testNow, Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}})
		if len(ops) == cap(ops) || i == n-1 {
			apply(b, s, ops...)
			ops = ops[:0]
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	b.Run("uid-list", func(b *testing.B) {
		for range b.N {
			l, err := s.UIDs("alice", "INBOX")
			if err != nil || len(l) != n {
				b.Fatal(len(l), err)
			}
		}
	})
	l, _ := s.UIDs("alice", "INBOX")
	b.Run("seqnum-of-uid", func(b *testing.B) {
		for i := range b.N {
			if l.SeqNum(uint32(i%n+1)) == 0 {
				b.Fatal("missing")
			}
		}
	})
	b.Run("fetch-50", func(b *testing.B) {
		for i := range b.N {
			lo := uint32(i*50%(n-50) + 1)
			uids := make([]uint32, 50)
			for j := range uids {
				uids[j] = lo + uint32(j)
			}
			if m, err := s.Messages("alice", "INBOX", uids); err != nil || len(m) != 50 {
				b.Fatal(len(m), err)
			}
		}
	})
	b.Run("status", func(b *testing.B) {
		for range b.N {
			if mb, err := s.Mailbox("alice", "INBOX"); err != nil || mb.Messages != n {
				b.Fatal(err)
			}
		}
	})
}

// syncCounter is a file system that counts fsyncs of WAL files, so that
// benchmarks can report how many deliveries share one.
type syncCounter struct {
	vfs.FS
	n, nanos atomic.Int64
}

type countedFile struct {
	vfs.File
	c *syncCounter
}

func (f countedFile) timed(sync func() error) error {
	start := time.Now()
	err := sync()
	f.c.n.Add(1)
	f.c.nanos.Add(int64(time.Since(start)))
	return err
}

func (f countedFile) Sync() error     { return f.timed(f.File.Sync) }
func (f countedFile) SyncData() error { return f.timed(f.File.SyncData) }

func (c *syncCounter) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || filepath.Ext(name) != ".log" {
		return f, err
	}
	return countedFile{f, c}, nil
}

func (c *syncCounter) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := c.FS.Create(name, cat)
	return c.wrap(name, f, err)
}

func (c *syncCounter) ReuseForWrite(old, name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := c.FS.ReuseForWrite(old, name, cat)
	return c.wrap(name, f, err)
}

func (c *syncCounter) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := c.FS.OpenReadWrite(name, cat, opts...)
	return c.wrap(name, f, err)
}
