package imap_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

// appendMsg APPENDs raw to mailbox.
func appendMsg(c *imapclient.Client, mailbox string, raw []byte) error {
	cmd := c.Append(mailbox, int64(len(raw)), nil)
	if _, err := cmd.Write(raw); err != nil {
		return err
	}
	if err := cmd.Close(); err != nil {
		return err
	}
	_, err := cmd.Wait()
	return err
}

func flag(c *imapclient.Client, f imap.Flag) error {
	_, err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{f}}, nil).Collect()
	return err
}

// wantReadOnly fails unless err is the NO of a read-only server, with the
// hint.
func wantReadOnly(t *testing.T, what string, err error, hint string) {
	t.Helper()
	var ie *imap.Error
	if !asIMAPError(err, &ie) || ie.Type != imap.StatusResponseTypeNo || !strings.Contains(ie.Text, hint) {
		t.Errorf("%s on a read-only server: %v, want NO with %q", what, err, hint)
	}
}

// TestSetReadOnlyAtRuntime: turned read-only while clients are connected,
// the server refuses APPEND and STORE with the hint, also in a mailbox
// selected before; turned writable again, they work. A mailbox selected
// while read-only stays so until selected again.
func TestSetReadOnlyAtRuntime(t *testing.T) {
	const hint = "imap.active.test:993"
	e := prototest.Start(t, nil)
	send(t, e, msg("ro", "x"), "alice@localhost")
	c := login(t, e, "alice", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	e.IMAP.SetReadOnly(true, hint)
	wantReadOnly(t, "APPEND", appendMsg(c, "INBOX", msg("refused", "y")), hint)
	wantReadOnly(t, "STORE", flag(c, imap.FlagFlagged), hint)
	late := login(t, e, "alice", nil) // selects while read-only
	if _, err := late.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	wantReadOnly(t, "STORE in a mailbox selected while read-only", flag(late, imap.FlagSeen), hint)
	msgs, err := e.Node.Store().Messages("alice", "INBOX", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || len(msgs[0].Flags) != 0 {
		t.Fatalf("a read-only server changed the mailbox: %+v", msgs)
	}

	e.IMAP.SetReadOnly(false, "")
	if err := appendMsg(c, "INBOX", msg("accepted", "z")); err != nil {
		t.Errorf("APPEND after SetReadOnly(false): %v", err)
	}
	if err := flag(c, imap.FlagFlagged); err != nil {
		t.Errorf("STORE after SetReadOnly(false): %v", err)
	}
	// The late session's SELECT acted as EXAMINE: it keeps that state.
	if err := flag(late, imap.FlagSeen); err == nil {
		t.Error("STORE in a mailbox selected while read-only succeeded before a new SELECT")
	}
	if _, err := late.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := flag(late, imap.FlagSeen); err != nil {
		t.Errorf("STORE after selecting again: %v", err)
	}
	msgs, err = e.Node.Store().Messages("alice", "INBOX", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || strings.Join(msgs[0].Flags, " ") != `\Flagged \Seen` {
		t.Errorf("after the writable server's APPEND and STOREs: %+v", msgs)
	}
}

// wire is a client's protocol trace.
type wire struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *wire) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestKickSaysByeAndKeepsServing: every session, idle or idling, gets an
// untagged BYE with the reason and is disconnected; the server still
// accepts, and a new session works.
func TestKickSaysByeAndKeepsServing(t *testing.T) {
	const reason = "[UNAVAILABLE] this node is no longer the active; reconnect"
	e := prototest.Start(t, nil)
	send(t, e, msg("kick", "x"), "alice@localhost")
	var clients []*imapclient.Client
	var wires []*wire
	for range 2 {
		w := &wire{}
		c, err := imapclient.DialInsecure(e.IMAPAddr, &imapclient.Options{DebugWriter: w})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Login("alice", prototest.Password).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		clients, wires = append(clients, c), append(wires, w)
	}
	if _, err := clients[1].Idle(); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 10*time.Second, "both sessions counted", func() bool { return e.IMAP.Sessions() == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.IMAP.Kick(ctx, reason); err != nil {
		t.Fatalf("Kick: %v", err)
	}
	for i, c := range clients {
		select {
		case <-c.Closed():
		case <-time.After(10 * time.Second):
			t.Fatalf("session %d still connected after Kick", i)
		}
		if !strings.Contains(wires[i].String(), "* BYE "+reason+"\r\n") {
			t.Errorf("session %d got no BYE with the reason; it read:\n%s", i, wires[i].String())
		}
	}
	poll.Eventually(t, 10*time.Second, "kicked sessions gone", func() bool { return e.IMAP.Sessions() == 0 })

	c := login(t, e, "alice", nil)
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT in a session after Kick: %v", err)
	}
	if sel.NumMessages != 1 {
		t.Errorf("SELECT after Kick: %d messages, want 1", sel.NumMessages)
	}
	if err := flag(c, imap.FlagSeen); err != nil {
		t.Errorf("STORE after Kick: %v", err)
	}
}
