package imap_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/protocols/internal/prototest"
	"github.com/twinbox/twinbox/store"
)

func deliverOp(i int) store.Op {
	raw := msg(fmt.Sprintf("bench %d", i), fmt.Sprintf("body of message %d", i))
	return &store.Deliver{Body: *dedupe.Prepare(raw, nil), InternalDate: time.Now().UnixNano(),
		Targets: []store.Target{{User: "alice", Mailbox: "INBOX"}}}
}

// mailboxFor starts a node whose alice has n messages in her INBOX and,
// if selected, an IMAP session that has it selected and idles.
func mailboxFor(b *testing.B, n int, selected bool) *prototest.Env {
	e := prototest.Start(b, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if _, err := e.Node.Write(ctx, deliverOp(i), nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if selected {
		c := login(b, e, "alice", nil)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			b.Fatal(err)
		}
		idle, err := c.Idle()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { idle.Close() })
	}
	return e
}

// BenchmarkDeliverToSelectedMailbox is one delivery (the node's write
// path: group commit, fsync, then the IMAP notification) into an INBOX of
// n messages, with no IMAP session and with one that has the INBOX
// selected and idles, as every mail client does. The difference is what
// keeping that session up to date costs per delivery.
func BenchmarkDeliverToSelectedMailbox(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, selected := range []bool{false, true} {
			b.Run(fmt.Sprintf("messages=%d/selected=%v", n, selected), func(b *testing.B) {
				e, ctx := mailboxFor(b, n, selected), context.Background()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if _, err := e.Node.Write(ctx, deliverOp(n+i), nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDeleteFromSelectedMailbox is what a client's delete costs (STORE
// \Deleted and EXPUNGE of one message, two writes) in an INBOX of n
// messages, with no other session and with one that has the INBOX
// selected and idles (the user's other device).
func BenchmarkDeleteFromSelectedMailbox(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, selected := range []bool{false, true} {
			b.Run(fmt.Sprintf("messages=%d/selected=%v", n, selected), func(b *testing.B) {
				e, ctx := mailboxFor(b, n, selected), context.Background()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					// A new message first, untimed, keeps the INBOX at n.
					b.StopTimer()
					if _, err := e.Node.Write(ctx, deliverOp(n+i), nil); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					uid := []uint32{uint32(i + 1)}
					for _, op := range []store.Op{
						&store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: uid, Action: store.FlagsAdd, Flags: []string{`\Deleted`}},
						&store.Expunge{User: "alice", Mailbox: "INBOX", UIDs: uid},
					} {
						if res, err := e.Node.Write(ctx, op, nil); err != nil || res.Err != nil {
							b.Fatal(err, res.Err)
						}
					}
				}
			})
		}
	}
}
