package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/internal/testmail"
	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

const replayLinkUser, replayLinkPass = "twinbox", "link-secret"

// pairNode is an active node's log and store, as serve runs them.
type pairNode struct {
	data string
	stop func()
	log  *replog.Log
	st   *store.Store
	p    *replog.Primary
}

// startPairNode starts the NATS server and log in data/nats and the store
// in data/store, and makes the node the active of epoch (async: no
// passive). close stops it all, as a node stopping does.
func startPairNode(t *testing.T, data string, epoch uint64) *pairNode {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, pair.Layout(data).Store(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := replog.StartServer(replog.ServerOptions{Name: "a", Dir: filepath.Join(data, "nats"),
		Addr: "127.0.0.1:0", User: replayLinkUser, Password: replayLinkPass})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := replog.Connect(srv, replayLinkUser, replayLinkPass, "a-local")
	if err != nil {
		t.Fatal(err)
	}
	n := &pairNode{data: data, st: st, stop: func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
		st.Close(ctx)
	}}
	t.Cleanup(n.close)
	if n.log, err = replog.OpenLog(ctx, nc, nil); err != nil {
		t.Fatal(err)
	}
	if n.p, err = replog.NewPrimary(ctx, n.log, st, nc, &replog.PrimaryOptions{Epoch: epoch, Async: true}); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *pairNode) close() {
	if n.stop != nil {
		n.p.Close()
		n.stop()
		n.stop = nil
	}
}

func (n *pairNode) commit(t *testing.T, ops ...store.Op) {
	t.Helper()
	res, err := n.p.Commit(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range res {
		r, err := c.Result(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r.Err != nil {
			t.Fatalf("op %d (%T) refused: %v", i, ops[i], r.Err)
		}
	}
}

func mustDigest(t *testing.T, st *store.Store) store.Digest {
	t.Helper()
	d, err := st.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// literals returns a mailbox's messages, each as BODY[] gives it.
func literals(t *testing.T, st *store.Store, user, name string) [][]byte {
	t.Helper()
	msgs, err := st.Messages(user, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := st.Literal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// replayFixture is a stopped pair node's data directory with a log of a
// few hundred operations, and what its store held along the way.
type replayFixture struct {
	data      string
	last      uint64
	final     store.Digest
	mid       uint64
	midTime   time.Time
	midDigest store.Digest
	midInbox  [][]byte
	ops       int    // operations committed
	bigFirst  uint64 // the first entry of the big message, which spans several
	bigAt     uint64 // the entry where it applies
}

// newReplayFixture commits users, mailboxes, deliveries (the corpus and
// messages with "From " lines), flag changes, expunges, copies and moves
// through the active's write path, over two epochs, recording the store
// half way; then stops the node. After the middle comes a message bigger
// than replog.ChunkSize (logged as several entries), delivered twice (the
// second time by reference to the stored body).
func newReplayFixture(t *testing.T) *replayFixture {
	t.Helper()
	f := &replayFixture{data: t.TempDir()}
	n := startPairNode(t, f.data, 1)
	n.commit(t, &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"},
		&store.CreateMailbox{User: "alice", Name: "Archive"}, &store.CreateMailbox{User: "alice", Name: "Trash"})
	f.ops = 4

	corpus := testmail.Corpus(t)
	var bodies [][]byte
	for _, name := range slices.Sorted(maps.Keys(corpus)) {
		bodies = append(bodies, corpus[name])
	}
	for i := range 20 {
		bodies = append(bodies, fmt.Appendf(nil, "From: a@example.org\r\nSubject: m%d\r\n\r\n"+
			"From the start\r\n>From quoted\r\n>>From twice\r\nbody %d\r\nFrom here\n", i, i))
	}
	r := rand.New(rand.NewPCG(1, 2))
	// 12 MiB of base64-like text: compressed (6 bits a character) it is
	// still more than replog.ChunkSize.
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	big := []byte("From: big@example.org\r\nSubject: big\r\n\r\n")
	for len(big) < 12<<20 {
		for range 76 {
			big = append(big, b64[r.IntN(64)])
		}
		big = append(big, "\r\n"...)
	}
	uids := func(user, box string) []uint32 {
		l, err := n.st.UIDs(user, box)
		if err != nil {
			t.Fatal(err)
		}
		var pick []uint32
		for _, u := range l {
			if r.IntN(3) == 0 {
				pick = append(pick, u)
			}
		}
		if len(pick) == 0 && len(l) > 0 {
			pick = l[:1]
		}
		return pick
	}
	deliver := func(k int) store.Op {
		targets := []store.Target{{User: "alice", Mailbox: "INBOX",
			Prefix: []byte("Return-Path: <sender@example.org>\r\nDelivered-To: alice@example.org\r\n")}}
		if k%2 == 0 {
			targets = append(targets, store.Target{User: "bob", Mailbox: "INBOX", Flags: []string{`\Flagged`}})
		}
		return &store.Deliver{Body: *dedupe.Prepare(bodies[r.IntN(len(bodies))], nil),
			InternalDate: time.Now().UnixNano(), Targets: targets}
	}
	const ops = 320
	i := 0
	for i < ops {
		var batch []store.Op
		for range 1 + r.IntN(3) {
			var op store.Op
			k := r.IntN(10)
			picked := uids("alice", "INBOX")
			switch {
			case k < 5 || len(picked) == 0:
				op = deliver(k)
			case k < 7:
				flag := []string{`\Seen`, `\Deleted`, `$Label1`}[r.IntN(3)]
				op = &store.StoreFlags{User: "alice", Mailbox: "INBOX", UIDs: picked,
					Action: store.FlagsAdd, Flags: []string{flag}}
			case k < 8:
				op = &store.Expunge{User: "alice", Mailbox: "INBOX", All: true}
			case k < 9:
				op = &store.Copy{User: "alice", From: "INBOX", To: "Archive", UIDs: picked}
			default:
				op = &store.Move{User: "alice", From: "INBOX", To: "Trash", UIDs: picked}
			}
			batch = append(batch, op)
		}
		// Some commits carry several operations, as a group commit does
		// (UIDs picked before an earlier operation of the batch moved
		// them are ignored, as on a node).
		if r.IntN(2) == 0 {
			n.commit(t, batch...)
		} else {
			for _, op := range batch {
				n.commit(t, op)
			}
		}
		i += len(batch)
		if f.mid == 0 && i >= ops/2 {
			f.mid = n.st.AppliedSeq()
			f.midDigest = mustDigest(t, n.st)
			f.midInbox = literals(t, n.st, "alice", "INBOX")
			f.midTime = time.Now()
			// A failover: the rest of the log is another epoch's.
			n.close()
			n = startPairNode(t, f.data, 2)
			n.commit(t, &store.Deliver{Body: *dedupe.Prepare(big, nil), InternalDate: time.Now().UnixNano(),
				Targets: []store.Target{{User: "alice", Mailbox: "Archive"}}})
			f.bigFirst, f.bigAt = f.mid+1, n.st.AppliedSeq()
			if f.bigAt < f.bigFirst+1 {
				t.Fatalf("the big message took one entry (%d): it tests no chunks", f.bigAt)
			}
		}
	}
	// The big body again: logged as a reference to the stored one.
	before := n.st.AppliedSeq()
	n.commit(t, &store.Deliver{Body: *dedupe.Prepare(big, nil), InternalDate: time.Now().UnixNano(),
		Targets: []store.Target{{User: "bob", Mailbox: "INBOX"}}})
	if n.st.AppliedSeq() != before+1 {
		t.Fatalf("the big body delivered again took %d entries", n.st.AppliedSeq()-before)
	}
	f.ops += i + 2
	f.last = n.st.AppliedSeq()
	f.final = mustDigest(t, n.st)
	if len(f.midInbox) < 5 || f.mid < 50 || f.last < f.mid+50 {
		t.Fatalf("fixture too small: %d messages in INBOX at %d of %d", len(f.midInbox), f.mid, f.last)
	}
	n.close()
	t.Logf("fixture: %d entries; at %d: %d messages in alice/INBOX", f.last, f.mid, len(f.midInbox))
	return f
}

func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestReplay(t *testing.T) {
	f := newReplayFixture(t)

	t.Run("whole log", func(t *testing.T) {
		out, errOut, err := runCmd(t, "replay", "--data", f.data)
		if err != nil {
			t.Fatalf("replay: %v\n%s%s", err, out, errOut)
		}
		for _, want := range []string{
			fmt.Sprintf("applied    %d\n", f.last),
			"digest     " + f.final.Store.String() + "\n",
			fmt.Sprintf("entries 1..%d\n", f.last),
			fmt.Sprintf("replayed   %d operations, entries 1..%d, in ", f.ops, f.last),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		out, _, err := runCmd(t, "replay", "--data", f.data, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rep replayReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if rep.Applied != f.last || rep.Digest != f.final.Store.String() || rep.Ops != uint64(f.ops) {
			t.Errorf("replay --json: applied %d, digest %s, %d operations; want %d, %s, %d", rep.Applied, rep.Digest, rep.Ops, f.last, f.final.Store, f.ops)
		}
		if len(rep.Mailboxes) != len(f.final.Mailboxes) {
			t.Fatalf("%d mailboxes, want %d", len(rep.Mailboxes), len(f.final.Mailboxes))
		}
		for i, m := range f.final.Mailboxes {
			if got := rep.Mailboxes[i]; got.User != m.User || got.Name != m.Name || got.Sum != m.Sum.String() {
				t.Errorf("mailbox %d: %+v, want %s/%s %s", i, got, m.User, m.Name, m.Sum)
			}
		}
	})

	t.Run("until sequence", func(t *testing.T) {
		out, _, err := runCmd(t, "replay", "--data", f.data, "--until", fmt.Sprint(f.mid))
		if err != nil {
			t.Fatal(err)
		}
		if want := "digest     " + f.midDigest.Store.String(); !strings.Contains(out, want) {
			t.Errorf("output lacks %q (the store at %d):\n%s", want, f.mid, out)
		}
	})

	// Up to an entry in the middle of the big message: it is not applied,
	// as on the node, which applied it at its last entry.
	t.Run("until inside a chunked operation", func(t *testing.T) {
		out, _, err := runCmd(t, "replay", "--data", f.data, "--until", fmt.Sprint(f.bigAt-1), "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rep replayReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Applied != f.mid || rep.Digest != f.midDigest.Store.String() {
			t.Errorf("replay until %d: applied %d, digest %s; want %d, %s", f.bigAt-1, rep.Applied, rep.Digest, f.mid, f.midDigest.Store)
		}
	})

	t.Run("until time", func(t *testing.T) {
		out, _, err := runCmd(t, "replay", "--data", f.data, "--until", f.midTime.Format(time.RFC3339Nano), "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rep replayReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Applied != f.mid || rep.Digest != f.midDigest.Store.String() {
			t.Errorf("replay until %s: applied %d, digest %s; want %d, %s", f.midTime, rep.Applied, rep.Digest, f.mid, f.midDigest.Store)
		}
	})

	t.Run("export", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "inbox.mbox")
		out, _, err := runCmd(t, "replay", "--data", f.data, "--until", fmt.Sprint(f.mid),
			"--mailbox", "alice/INBOX", "--export", file)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("exported   %d messages of alice/INBOX to %s\n", len(f.midInbox), file); !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(raw, []byte("From sender@example.org ")) {
			t.Errorf("mbox starts with %q", raw[:min(len(raw), 60)])
		}
		got := readMbox(t, raw)
		if len(got) != len(f.midInbox) {
			t.Fatalf("%d messages in the mbox, want %d", len(got), len(f.midInbox))
		}
		quoted := false
		for i := range got {
			if !bytes.Equal(got[i], f.midInbox[i]) {
				t.Errorf("message %d differs from the mailbox's literal:\n%q\nwant\n%q", i, got[i], f.midInbox[i])
			}
			quoted = quoted || bytes.Contains(f.midInbox[i], []byte("\nFrom "))
		}
		if !quoted {
			t.Error("no exported message had a From line to quote: the fixture does not test quoting")
		}
	})

	t.Run("out", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "rebuilt")
		if _, _, err := runCmd(t, "replay", "--data", f.data, "--out", dir); err != nil {
			t.Fatal(err)
		}
		st, err := store.Open(context.Background(), pair.Layout(dir).Store(), &store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		d := mustDigest(t, st)
		st.Close(context.Background())
		if d.Store != f.final.Store || d.Applied != f.last {
			t.Errorf("kept store at %d %s, want %d %s", d.Applied, d.Store, f.last, f.final.Store)
		}
		// It is a store verify can check.
		if out, _, err := runCmd(t, "verify", "--data", dir); err != nil || !strings.Contains(out, "result     OK") {
			t.Errorf("verify of the rebuilt store: %v\n%s", err, out)
		}
		// Never into an existing store.
		_, _, err = runCmd(t, "replay", "--data", f.data, "--out", dir)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "holds a store") {
			t.Errorf("replay into an existing store: %v", err)
		}
	})

	t.Run("progress", func(t *testing.T) {
		_, errOut, err := runCmd(t, "replay", "--data", f.data, "--progress", "100")
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(errOut, "entries/s\n"); lines < 1 || !strings.Contains(errOut, fmt.Sprintf("entry %d of %d (100%%)", f.last, f.last)) {
			t.Errorf("progress on stderr:\n%s", errOut)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		tmp := t.TempDir()
		existing := filepath.Join(tmp, "exists.mbox")
		if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		nonEmpty := filepath.Join(tmp, "nonempty")
		if err := os.MkdirAll(filepath.Join(nonEmpty, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name  string
			args  []string
			usage bool
			want  string
		}{
			{"unknown flag", []string{"--frob"}, true, "frob"},
			{"argument", []string{"extra"}, true, "no arguments"},
			{"until words", []string{"--until", "yesterday"}, true, "RFC 3339"},
			{"until zero", []string{"--until", "0"}, true, "not a log sequence"},
			{"until past the end", []string{"--until", fmt.Sprint(f.last + 1)}, false, fmt.Sprintf("ends at entry %d", f.last)},
			{"mailbox alone", []string{"--mailbox", "alice/INBOX"}, true, "go together"},
			{"export alone", []string{"--export", filepath.Join(tmp, "x.mbox")}, true, "go together"},
			{"mailbox shape", []string{"--mailbox", "alice", "--export", filepath.Join(tmp, "x.mbox")}, true, "USER/NAME"},
			{"export exists", []string{"--mailbox", "alice/INBOX", "--export", existing}, true, "exists"},
			{"no such mailbox", []string{"--mailbox", "alice/Nope", "--export", filepath.Join(tmp, "nope.mbox")}, false, "does not exist at sequence"},
			{"no such user", []string{"--mailbox", "carol/INBOX", "--export", filepath.Join(tmp, "nope.mbox")}, false, "does not exist at sequence"},
			{"out not empty", []string{"--out", nonEmpty}, true, "not empty"},
		} {
			_, _, err := runCmd(t, append([]string{"replay", "--data", f.data}, c.args...)...)
			if err == nil || errors.Is(err, errUsage) != c.usage || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v (want usage %v, %q)", c.name, err, c.usage, c.want)
			}
		}
		if b, _ := os.ReadFile(existing); string(b) != "keep me" {
			t.Errorf("an existing export file was changed: %q", b)
		}
		if _, err := os.Stat(filepath.Join(tmp, "nope.mbox")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed export left its file: %v", err)
		}
		if _, err := os.Stat(filepath.Join(nonEmpty, "store")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused --out got a store: %v", err)
		}
		// No log: a data directory without one, or none at all.
		for _, data := range []string{tmp, filepath.Join(tmp, "none")} {
			_, _, err := runCmd(t, "replay", "--data", data)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "no log in") {
				t.Errorf("replay of %s: %v", data, err)
			}
		}
	})

	t.Run("running node", func(t *testing.T) {
		st, err := store.Open(context.Background(), pair.Layout(f.data).Store(), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = runCmd(t, "replay", "--data", f.data)
		st.Close(context.Background())
		if err == nil || !strings.Contains(err.Error(), "stop the node first") {
			t.Fatalf("replay while the node runs: %v", err)
		}
	})

	// Nothing above changed the node: its store and its log are as they
	// were, and the node starts on them.
	n := startPairNode(t, f.data, 2)
	if d := mustDigest(t, n.st); d.Store != f.final.Store {
		t.Errorf("the node's store changed: %s, was %s", d.Store, f.final.Store)
	}
	if s, err := n.log.State(context.Background()); err != nil || s.First != 1 || s.Last != f.last {
		t.Errorf("the node's log: %+v %v, want 1..%d", s, err, f.last)
	}
	n.close()
}

// TestReplayPartialLog: a log that does not start at entry 1 cannot
// rebuild a store, and replay says why.
func TestReplayPartialLog(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		make  func(t *testing.T, data string)
		first uint64
	}{
		{"started after an existing store", func(t *testing.T, data string) {
			st, err := store.Open(ctx, pair.Layout(data).Store(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.ApplyNext(ctx, store.Now(), &store.CreateUser{User: "alice"}, &store.CreateUser{User: "bob"}); err != nil {
				t.Fatal(err)
			}
			st.Close(ctx)
			n := startPairNode(t, data, 1)
			n.commit(t, &store.CreateUser{User: "carol"})
			n.close()
		}, 3},
		{"trimmed", func(t *testing.T, data string) {
			n := startPairNode(t, data, 1)
			for _, u := range []string{"alice", "bob", "carol", "dave"} {
				n.commit(t, &store.CreateUser{User: u})
			}
			if err := n.log.Trim(ctx, 3); err != nil {
				t.Fatal(err)
			}
			n.close()
		}, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := t.TempDir()
			c.make(t, data)
			out, _, err := runCmd(t, "replay", "--data", data)
			if err == nil || errors.Is(err, errUsage) || !errors.Is(err, replog.ErrLogTrimmed) ||
				!strings.Contains(err.Error(), fmt.Sprintf("starts at entry %d, not 1", c.first)) {
				t.Fatalf("replay of a partial log: %v\n%s", err, out)
			}
		})
	}
}

// readMbox splits an mboxrd file into messages, undoing the quoting.
func readMbox(t testing.TB, raw []byte) [][]byte {
	t.Helper()
	var msgs [][]byte
	var cur []byte
	in := false
	r := bufio.NewReader(bytes.NewReader(raw))
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			switch {
			case bytes.HasPrefix(line, []byte("From ")):
				if in {
					msgs = append(msgs, endMbox(t, cur))
				}
				cur, in = nil, true
			case !in:
				t.Fatalf("mbox does not start with a From_ line: %q", line)
			default:
				if bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From ")) {
					line = line[1:]
				}
				cur = append(cur, line...)
			}
		}
		if err != nil {
			break
		}
	}
	if in {
		msgs = append(msgs, endMbox(t, cur))
	}
	return msgs
}

// endMbox removes the empty line that ends a message in an mbox.
func endMbox(t testing.TB, msg []byte) []byte {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\n")) {
		t.Fatalf("mbox message does not end with an empty line: %q", msg)
	}
	return msg[:len(msg)-1]
}

// FuzzMboxRoundTrip: reading back what writeMboxMessage wrote gives the
// messages' exact bytes (for messages that end with a newline, as every
// received message does).
func FuzzMboxRoundTrip(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nFrom me\r\n"), []byte(">From x\n"))
	f.Add([]byte("a\nFrom b\n>>From c\r\n\n\nFrom \n"), []byte("From"))
	f.Add([]byte("\n"), []byte("x"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var in [][]byte
		for _, m := range [][]byte{a, b} {
			if len(m) > 0 && m[len(m)-1] != '\n' {
				m = append(m, '\n')
			}
			in = append(in, m)
		}
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		for _, m := range in {
			if err := writeMboxMessage(w, "s@example.org", time.Unix(0, 0), m); err != nil {
				t.Fatal(err)
			}
		}
		w.Flush()
		got := readMbox(t, buf.Bytes())
		if len(got) != len(in) {
			t.Fatalf("%d messages read back, want %d:\n%q", len(got), len(in), buf.Bytes())
		}
		for i := range in {
			if !bytes.Equal(got[i], in[i]) {
				t.Fatalf("message %d: %q, want %q", i, got[i], in[i])
			}
		}
	})
}

func TestEnvelopeSender(t *testing.T) {
	for prefix, want := range map[string]string{
		"Return-Path: <a@example.org>\r\nDelivered-To: b@example.org\r\n": "a@example.org",
		"Delivered-To: b\r\nreturn-path:<x@y>\r\n":                        "x@y",
		"Return-Path: <>\r\n":                                             "MAILER-DAEMON",
		"":                                                                "MAILER-DAEMON",
		"Return-Path: <a b@c>\r\n":                                        "MAILER-DAEMON",
	} {
		if got := envelopeSender([]byte(prefix)); got != want {
			t.Errorf("envelopeSender(%q) = %q, want %q", prefix, got, want)
		}
	}
}
