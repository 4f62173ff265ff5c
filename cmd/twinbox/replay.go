package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/replog"
	"github.com/twinbox/twinbox/store"
)

// Replay's batching: entries go to the new store replayBatch at a time
// (one Pebble batch and one fsync each), fewer when the bodies they carry
// in full add up to replayBatchBytes.
const (
	replayBatch      = 512
	replayBatchBytes = 64 << 20
	// DefaultProgressEvery is how many log entries apart replay's
	// progress lines are when stderr is not a terminal (at the end of a
	// batch).
	DefaultProgressEvery = 10000
)

const replayUsage = `usage: twinbox replay [--data DIR] [--until SEQ|TIME] [--out DIR]
                      [--mailbox USER/NAME --export FILE] [--json]

Rebuilds a store from a stopped pair node's log (DIR/nats): applies its
entries in order, from the first up to the last or up to --until, to a new
store, and prints the resulting digest (applied sequence and store sum).
The node's own store and log are not changed; its store stays locked while
replay runs, so the node cannot start meanwhile.

--until is a log sequence number or an RFC 3339 time (the entries written
at or before it). The new store is made in a temporary directory ($TMPDIR)
and removed at the end, unless --out names a new or empty directory to keep
it in (OUT/store: 'twinbox verify --data OUT' reads it).

With --mailbox USER/NAME --export FILE, that mailbox as it was at the end
of the replay is written to FILE (which must not exist) in mboxrd format,
each message with its exact bytes: a point-in-time restore of one mailbox.

A log that does not start at entry 1 (trimmed, or started after an existing
store) cannot rebuild a store: replay says so and exits 1.`

// replayReport is what replay prints (--json).
type replayReport struct {
	Log       logSpan       `json:"log"`
	Until     string        `json:"until,omitempty"`
	Ops       uint64        `json:"operations"`
	Refused   uint64        `json:"refused"`
	Seconds   float64       `json:"seconds"`
	Applied   uint64        `json:"applied"`
	Digest    string        `json:"digest"`
	Mailboxes []mailboxJSON `json:"mailboxes"`
	Out       string        `json:"out,omitempty"`
	Export    *exportJSON   `json:"export,omitempty"`
}

type logSpan struct {
	Dir   string `json:"dir"`
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

type mailboxJSON struct {
	User string `json:"user"`
	Name string `json:"name"`
	Sum  string `json:"sum"`
}

type exportJSON struct {
	Mailbox  string `json:"mailbox"`
	File     string `json:"file"`
	Messages int    `json:"messages"`
}

// until is where a replay stops: after a sequence, or after the last entry
// written at or before a time; the zero value replays everything.
type until struct {
	seq uint64
	t   time.Time
}

func parseUntil(s string) (until, error) {
	if s == "" {
		return until{}, nil
	}
	if s[0] >= '0' && s[0] <= '9' && !strings.ContainsAny(s, "-:T") {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return until{}, fmt.Errorf("--until %q: not a log sequence (1 or more) nor an RFC 3339 time", s)
		}
		return until{seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return until{}, fmt.Errorf("--until %q: not a log sequence nor an RFC 3339 time (like 2025-01-31T17:00:00Z)", s)
	}
	return until{t: t}, nil
}

func (u until) isSet() bool { return u.seq != 0 || !u.t.IsZero() }

func (u until) String() string {
	switch {
	case u.seq != 0:
		return fmt.Sprintf("sequence %d", u.seq)
	case !u.t.IsZero():
		return u.t.Format(time.RFC3339Nano)
	}
	return "the end"
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", envDefault("TWINBOX_DATA", DefaultDataDir), "the stopped node's data directory, holding the log in DIR/nats (env TWINBOX_DATA)")
	untilArg := fs.String("until", "", "stop after this log sequence, or after the entries written at or before this RFC 3339 time")
	out := fs.String("out", "", "keep the rebuilt store in this new or empty directory (OUT/store); default: a temporary one, removed")
	mailbox := fs.String("mailbox", "", "USER/NAME: the mailbox to export (with --export)")
	export := fs.String("export", "", "write the --mailbox, as it was at the end of the replay, to this new mbox file")
	every := fs.Int("progress", DefaultProgressEvery, "when stderr is not a terminal, a progress line every this many entries (0: none)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() { fmt.Fprintln(stderr, replayUsage); fs.PrintDefaults() }
	if help, err := parseFlags(fs, args, "replay"); help || err != nil {
		return err
	}
	syscall.Umask(0o077) // the rebuilt store and the export hold mail: private (issue 14 D12)
	u, err := parseUntil(*untilArg)
	if err != nil {
		return fmt.Errorf("%w: replay: %v", errUsage, err)
	}
	if *every < 0 {
		return fmt.Errorf("%w: replay: --progress %d: must not be negative", errUsage, *every)
	}
	var exUser, exName string
	if (*mailbox == "") != (*export == "") {
		return fmt.Errorf("%w: replay: --mailbox and --export go together", errUsage)
	}
	if *mailbox != "" {
		var ok bool
		exUser, exName, ok = strings.Cut(*mailbox, "/")
		if !ok || exUser == "" || exName == "" {
			return fmt.Errorf("%w: replay: --mailbox %q: want USER/NAME, like alice/INBOX", errUsage, *mailbox)
		}
		if _, err := os.Lstat(*export); err == nil {
			return fmt.Errorf("%w: replay: --export %s: the file exists; replay does not overwrite it", errUsage, *export)
		}
	}
	natsDir := pair.Layout(*data).Log()
	if !replog.HasLog(natsDir) {
		return fmt.Errorf("%w: replay: no log in %s (replay reads a stopped pair node's data directory: --data)", errUsage, natsDir)
	}
	if *out != "" {
		if err := checkEmptyDir(*out); err != nil {
			return fmt.Errorf("%w: replay: --out %s: %v", errUsage, *out, err)
		}
	}

	// A running node holds its store's lock (and writes its log): hold the
	// same lock for the whole replay, so that neither happens meanwhile.
	unlock, err := lockNode(*data)
	if err != nil {
		return err
	}
	defer unlock()

	lg, closeLog, err := openLogOffline(ctx, natsDir)
	if err != nil {
		return err
	}
	defer closeLog()
	state, err := lg.State(ctx)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	rep := replayReport{Log: logSpan{Dir: natsDir, First: state.First, Last: state.Last}}
	if u.isSet() {
		rep.Until = u.String()
	}
	if state.First > 1 {
		return fmt.Errorf("replay: %w: the log in %s starts at entry %d, not 1 (trimmed, or started after an existing store); "+
			"a store cannot be rebuilt from a partial log (that needs a whole-store resync)", replog.ErrLogTrimmed, natsDir, state.First)
	}
	end := state.Last
	if u.seq != 0 {
		if u.seq > state.Last {
			return fmt.Errorf("replay: --until %d: the log in %s ends at entry %d", u.seq, natsDir, state.Last)
		}
		end = u.seq
	}

	// The new store, and the export file, made before the long part so a
	// mistake shows at once; removed if the replay fails.
	outDir, cleanup, err := makeOutDir(*out)
	if err != nil {
		return err
	}
	ok := false
	defer func() { cleanup(ok) }()
	st, err := store.Open(ctx, pair.Layout(outDir).Store(), nil)
	if err != nil {
		return fmt.Errorf("replay: new store: %w", err)
	}
	defer st.Close(ctx)
	var exf *os.File
	if *export != "" {
		if exf, err = os.OpenFile(*export, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return fmt.Errorf("replay: --export: %w", err)
		}
		defer func() {
			exf.Close()
			if !ok {
				os.Remove(*export)
			}
		}()
	}

	pr := newProgress(stderr, *every, end)
	start := time.Now()
	ops, refused, err := replayInto(ctx, lg, st, end, u.t, pr)
	pr.done()
	if err != nil {
		return err
	}
	rep.Ops, rep.Refused = ops, refused
	rep.Seconds = time.Since(start).Seconds()
	d, err := st.Digest()
	if err != nil {
		return fmt.Errorf("replay: digest: %w", err)
	}
	rep.Applied, rep.Digest = d.Applied, d.Store.String()
	rep.Mailboxes = make([]mailboxJSON, 0, len(d.Mailboxes))
	for _, m := range d.Mailboxes {
		rep.Mailboxes = append(rep.Mailboxes, mailboxJSON{User: m.User, Name: m.Name, Sum: m.Sum.String()})
	}
	if *out != "" {
		rep.Out = outDir
	}
	if exf != nil {
		count, err := exportMbox(exf, st, exUser, exName)
		if errors.Is(err, store.ErrNoMailbox) || errors.Is(err, store.ErrNoUser) {
			return fmt.Errorf("replay: --mailbox %s does not exist at sequence %d", *mailbox, d.Applied)
		}
		if err != nil {
			return fmt.Errorf("replay: export %s to %s: %w", *mailbox, *export, err)
		}
		rep.Export = &exportJSON{Mailbox: *mailbox, File: *export, Messages: count}
	}
	ok = true

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(stdout, "log        %s: entries %d..%d\n", natsDir, state.First, state.Last)
	if u.isSet() {
		fmt.Fprintf(stdout, "until      %s\n", u)
	}
	fmt.Fprintf(stdout, "replayed   %d operations, entries 1..%d, in %s (%.0f entries/s)", rep.Ops, rep.Applied,
		time.Duration(rep.Seconds*float64(time.Second)).Round(time.Millisecond), perSecond(rep.Applied, rep.Seconds))
	if refused > 0 {
		fmt.Fprintf(stdout, "; %d refused by the store, as on the node", refused)
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, "applied    %d\n", rep.Applied)
	fmt.Fprintf(stdout, "mailboxes  %d\n", len(rep.Mailboxes))
	fmt.Fprintf(stdout, "digest     %s\n", rep.Digest)
	if rep.Out != "" {
		fmt.Fprintf(stdout, "store      %s\n", pair.Layout(rep.Out).Store())
	}
	if rep.Export != nil {
		fmt.Fprintf(stdout, "exported   %d messages of %s to %s\n", rep.Export.Messages, rep.Export.Mailbox, rep.Export.File)
	}
	return nil
}

// checkEmptyDir accepts a directory that does not exist or is empty.
func checkEmptyDir(dir string) error {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if len(names) > 0 {
		if _, err := os.Stat(pair.Layout(dir).Store()); err == nil {
			return fmt.Errorf("holds a store already; replay builds a new one")
		}
		return fmt.Errorf("not empty; replay builds a new store in a new or empty directory")
	}
	return nil
}

// makeOutDir makes the directory the new store goes in: out, or a
// temporary one. cleanup(false) removes what was made; cleanup(true)
// removes only a temporary directory.
func makeOutDir(out string) (dir string, cleanup func(ok bool), err error) {
	if out == "" {
		dir, err := os.MkdirTemp("", "twinbox-replay-")
		if err != nil {
			return "", nil, fmt.Errorf("replay: %w", err)
		}
		return dir, func(bool) { os.RemoveAll(dir) }, nil
	}
	_, statErr := os.Stat(out)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return "", nil, fmt.Errorf("replay: --out: %w", err)
	}
	made := errors.Is(statErr, os.ErrNotExist)
	return out, func(ok bool) {
		switch {
		case ok:
		case made:
			os.RemoveAll(out)
		default:
			os.RemoveAll(pair.Layout(out).Store())
		}
	}, nil
}

// lockNode takes the lock a running node holds on its store, if the data
// directory has a store. The returned func releases it.
func lockNode(data string) (func(), error) {
	dir := pair.Layout(data).Store()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return func() {}, nil // a log without a store: no node runs here
	}
	l, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return nil, fmt.Errorf("replay: %s is in use (is the node still running? stop the node first; replay reads a stopped node's log): %v", data, err)
	}
	return func() { l.Close() }, nil
}

// openLogOffline opens a stopped node's log (replog.OpenOffline); a
// directory without one is a usage error.
func openLogOffline(ctx context.Context, natsDir string) (*replog.Log, func(), error) {
	lg, closeLog, err := replog.OpenOffline(ctx, natsDir)
	if errors.Is(err, replog.ErrNoLog) {
		return nil, nil, fmt.Errorf("%w: replay: %v", errUsage, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("replay: %w", err)
	}
	return lg, closeLog, nil
}

// replayInto applies the operations of the log's entries 1..end in order
// to st, stopping before the first one written after notAfter (when set).
// It returns how many operations were applied and how many of those the
// store refused (as it did on the node: a refused operation still takes
// its sequence). A large operation spans several entries (chunks) and
// applies at its last one: one whose last chunk is after end is left out.
func replayInto(ctx context.Context, lg *replog.Log, st *store.Store, end uint64, notAfter time.Time, pr *progress) (ops, refused uint64, err error) {
	type fetched struct {
		e   replog.Entry
		err error
	}
	// One goroutine reads ahead (assembling chunks) while this one applies.
	rctx, cancel := context.WithCancel(ctx)
	ch := make(chan fetched, 2*replayBatch)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(ch)
		if end == 0 {
			return // an empty log (Replay's 0 means "to the end")
		}
		err := lg.Replay(rctx, 1, end, func(e *replog.Entry) error {
			select {
			case ch <- fetched{e: *e}:
				return nil
			case <-rctx.Done():
				return rctx.Err()
			}
		})
		if err != nil {
			select {
			case ch <- fetched{err: err}:
			case <-rctx.Done():
			}
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()

	batch := make([]store.Entry, 0, replayBatch)
	var size int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		res, err := st.Apply(ctx, batch...)
		if err != nil {
			return fmt.Errorf("replay: apply entries %d..%d: %w", batch[0].Seq, batch[len(batch)-1].Seq, err)
		}
		for _, r := range res {
			if r.Err != nil {
				refused++
			}
		}
		ops += uint64(len(batch))
		pr.update(batch[len(batch)-1].Seq)
		batch, size = batch[:0], 0
		return nil
	}
	limit := notAfter.UnixNano()
	for f := range ch {
		if f.err != nil {
			if errors.Is(f.err, replog.ErrNoSuchEntry) {
				return ops, refused, fmt.Errorf("replay: %w (a gap in the log: it cannot be replayed past it)", f.err)
			}
			return ops, refused, fmt.Errorf("replay: %w", f.err)
		}
		if !notAfter.IsZero() && f.e.Time > limit {
			break
		}
		batch = append(batch, store.Entry{Seq: f.e.Seq, Time: f.e.Time, Op: f.e.Op})
		if d, ok := f.e.Op.(*store.Deliver); ok && !d.Body.Stored {
			size += d.Body.Size
		}
		if len(batch) == replayBatch || size >= replayBatchBytes {
			if err := flush(); err != nil {
				return ops, refused, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return ops, refused, fmt.Errorf("replay: %w", err)
	}
	return ops, refused, flush()
}

// progress shows how far a replay is on stderr: a line rewritten in place
// on a terminal, a line every so many entries otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	every uint64
	total uint64
	start time.Time
	pos   uint64    // the log entry reached
	shown time.Time // terminal: when the line was last drawn
	drawn uint64    // terminal: the position it showed
	next  uint64    // otherwise: the position that prints the next line
}

func newProgress(w io.Writer, every int, total uint64) *progress {
	p := &progress{w: w, every: uint64(every), total: total, start: time.Now(), next: uint64(every)}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) line() string {
	secs := time.Since(p.start).Seconds()
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.pos) / float64(p.total)
	}
	return fmt.Sprintf("replay: entry %d of %d (%.0f%%), %.0f entries/s", p.pos, p.total, pct, perSecond(p.pos, secs))
}

// update says the replay has reached log entry pos.
func (p *progress) update(pos uint64) {
	p.pos = pos
	switch {
	case p.tty:
		if now := time.Now(); now.Sub(p.shown) >= 200*time.Millisecond {
			p.shown, p.drawn = now, pos
			fmt.Fprintf(p.w, "\r%s ", p.line())
		}
	case p.every > 0 && pos >= p.next:
		fmt.Fprintln(p.w, p.line())
		for p.next <= pos {
			p.next += p.every
		}
	}
}

// done ends the progress display.
func (p *progress) done() {
	switch {
	case !p.tty || p.shown.IsZero():
	case p.drawn == p.pos:
		fmt.Fprintln(p.w)
	default:
		fmt.Fprintf(p.w, "\r%s\n", p.line())
	}
}

func perSecond(n uint64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

// exportMbox writes a mailbox to w as an mboxrd file and returns how many
// messages it holds.
func exportMbox(f *os.File, st *store.Store, user, name string) (int, error) {
	msgs, err := st.Messages(user, name, nil)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, m := range msgs {
		lit, err := st.Literal(m)
		if err != nil {
			return 0, fmt.Errorf("UID %d: %w", m.UID, err)
		}
		if err := writeMboxMessage(w, envelopeSender(m.Prefix), m.InternalDate, lit); err != nil {
			return 0, err
		}
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	return len(msgs), f.Sync()
}

// writeMboxMessage writes one message in mboxrd format: a From_ line, the
// message's exact bytes with one '>' added before each line that starts
// with any number of '>' followed by "From ", a newline if the message
// lacks a final one, and an empty line. Reading it back (removing that '>'
// and the empty line) gives the bytes of a message that ends with a
// newline, as every received message does.
func writeMboxMessage(w *bufio.Writer, sender string, date time.Time, msg []byte) error {
	fmt.Fprintf(w, "From %s %s\n", sender, date.UTC().Format("Mon Jan _2 15:04:05 2006"))
	for rest := msg; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		if bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From ")) {
			w.WriteByte('>')
		}
		w.Write(line)
	}
	if len(msg) > 0 && msg[len(msg)-1] != '\n' {
		w.WriteByte('\n')
	}
	_, err := w.WriteString("\n")
	return err
}

// envelopeSender is the address of the Return-Path line of a message's
// per-recipient prefix, for the From_ line; MAILER-DAEMON when there is
// none (or it is empty, a bounce).
func envelopeSender(prefix []byte) string {
	for _, line := range strings.Split(string(prefix), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(k, "Return-Path") {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), "<>")
		if v != "" && !strings.ContainsAny(v, " \t\r\n") {
			return v
		}
	}
	return "MAILER-DAEMON"
}
