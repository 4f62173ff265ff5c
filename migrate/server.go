package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/store"
)

// Writer is the node's write path: on an active, through the
// replication log; it returns once the change is acknowledgeable.
type Writer interface {
	Write(ctx context.Context, op store.Op) (store.Result, error)
}

// HandlerOptions configure Handler. A nil pointer means defaults.
type HandlerOptions struct {
	// MaxMessageSize is the node's limit; larger messages are reported,
	// not imported. 0: store.DefaultMaxMessageSize.
	MaxMessageSize int64
	// MaxBatchBytes bounds a request's body. 0: DefaultMaxBatchBytes.
	MaxBatchBytes int64
	// Mailbox, when set, reads a mailbox on the node, so that a resumed
	// import skips what it imported before without sending it.
	Mailbox func(user, name string) (store.MailboxInfo, error)
	Logger  *slog.Logger
}

// DefaultMaxBatchBytes bounds one batch request: the client's batches
// (DefaultBatchBytes) and one message at the node's largest limit fit.
const DefaultMaxBatchBytes = 256 << 20

// Handler serves the import endpoints under /import/ (POST mailbox,
// messages, finish) for Client, writing through w.
func Handler(w Writer, o *HandlerOptions) http.Handler {
	h := &handler{w: w}
	if o != nil {
		h.opts = *o
	}
	if h.opts.MaxMessageSize == 0 {
		h.opts.MaxMessageSize = store.DefaultMaxMessageSize
	}
	if h.opts.MaxBatchBytes == 0 {
		h.opts.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if h.opts.Logger == nil {
		h.opts.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /import/mailbox", h.mailbox)
	mux.HandleFunc("POST /import/messages", h.messages)
	mux.HandleFunc("POST /import/finish", h.finish)
	return mux
}

type handler struct {
	w    Writer
	opts HandlerOptions
}

// write writes op and returns the operation's own refusal as an error too.
func (h *handler) write(ctx context.Context, op store.Op) (store.Result, error) {
	res, err := h.w.Write(ctx, op)
	if err == nil {
		err = res.Err
	}
	return res, err
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	http.Error(w, fmt.Sprintf(format, args...), code)
}

// failed answers a write that failed: a refusal of the request's content
// is the client's (422), anything else the node's (503: retry).
func failed(w http.ResponseWriter, what string, err error) {
	code := http.StatusServiceUnavailable
	for _, e := range []error{store.ErrInvalidName, store.ErrInvalidOp, store.ErrInvalidFlag, store.ErrNoUser, store.ErrNoMailbox} {
		if errors.Is(err, e) {
			code = http.StatusUnprocessableEntity
		}
	}
	httpError(w, code, "import: %s: %v", what, err)
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (h *handler) mailbox(w http.ResponseWriter, r *http.Request) {
	var req mailboxRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "import: mailbox request: %v", err)
		return
	}
	name, err := store.CanonicalMailbox(req.Mailbox)
	if err != nil {
		failed(w, "mailbox "+strconv.Quote(req.Mailbox), err)
		return
	}
	ctx := r.Context()
	if _, err := h.write(ctx, &store.CreateUser{User: req.User, UIDValidity: uint32(time.Now().Unix())}); err != nil && !errors.Is(err, store.ErrUserExists) {
		failed(w, "user "+strconv.Quote(req.User), err)
		return
	}
	var rep mailboxReply
	if req.UIDValidity != 0 {
		res, err := h.write(ctx, &store.ImportMailbox{User: req.User, Name: name, UIDValidity: req.UIDValidity, Subscribe: req.Subscribe})
		switch {
		case err == nil:
			rep := mailboxReply{Keep: true, UIDValidity: res.UIDValidity}
			if h.opts.Mailbox != nil {
				if mb, err := h.opts.Mailbox(req.User, name); err == nil && mb.UIDValidity == res.UIDValidity {
					rep.UIDNext = mb.UIDNext
				}
			}
			reply(w, rep)
			return
		case errors.Is(err, store.ErrUIDValidity):
			rep.Why = err.Error()
		default:
			failed(w, "mailbox "+strconv.Quote(name), err)
			return
		}
	}
	if _, err := h.write(ctx, &store.CreateMailbox{User: req.User, Name: name, Subscribe: req.Subscribe}); err != nil && !errors.Is(err, store.ErrMailboxExists) {
		failed(w, "mailbox "+strconv.Quote(name), err)
		return
	}
	reply(w, rep)
}

func (h *handler) messages(w http.ResponseWriter, r *http.Request) {
	var req batchRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBatchBytes))
	if err != nil {
		httpError(w, http.StatusRequestEntityTooLarge, "import: batch: %v", err)
		return
	}
	if err := cbor.Unmarshal(body, &req); err != nil {
		httpError(w, http.StatusBadRequest, "import: batch: %v", err)
		return
	}
	name, err := store.CanonicalMailbox(req.Mailbox)
	if err != nil {
		failed(w, "mailbox "+strconv.Quote(req.Mailbox), err)
		return
	}
	var rep batchReply
	ctx := r.Context()
	if req.UIDValidity != 0 {
		op := &store.Import{User: req.User, Mailbox: name, UIDValidity: req.UIDValidity}
		sizes := map[uint32]int64{}
		for i, m := range req.Messages {
			if int64(len(m.Raw)) > h.opts.MaxMessageSize {
				rep.TooLarge = append(rep.TooLarge, uint32(i+1))
				continue
			}
			op.Messages = append(op.Messages, store.ImportedMessage{
				UID: m.UID, Body: *dedupe.Prepare(m.Raw, nil), Flags: flagsFor(m.Flags), InternalDate: m.Date,
			})
			sizes[m.UID] = int64(len(m.Raw))
		}
		if len(op.Messages) > 0 {
			res, err := h.write(ctx, op)
			if err != nil {
				failed(w, "batch of "+name, err)
				return
			}
			rep.Imported, rep.Present, rep.Gone = len(res.Imported), len(res.Present), len(res.Gone)
			for _, u := range res.Imported {
				rep.Bytes += sizes[u]
			}
		}
		reply(w, rep)
		return
	}
	// Appended one at a time, in source order, each at most once.
	for i, m := range req.Messages {
		if int64(len(m.Raw)) > h.opts.MaxMessageSize {
			rep.TooLarge = append(rep.TooLarge, uint32(i+1))
			continue
		}
		d := &store.Deliver{
			Body:         *dedupe.Prepare(m.Raw, nil),
			Targets:      []store.Target{{User: req.User, Mailbox: name, Flags: flagsFor(m.Flags)}},
			InternalDate: m.Date,
		}
		sum := sha256.Sum256([]byte(req.User + "\x00" + name + "\x00" + m.Key + "\x00" + string(d.Body.ID[:])))
		res, err := h.write(ctx, &store.Merged{ID: "import/" + hex.EncodeToString(sum[:20]), Op: store.EncodeOp(d)})
		if err != nil {
			if errors.Is(err, store.ErrInvalidFlag) || errors.Is(err, store.ErrInvalidOp) {
				rep.Refused = append(rep.Refused, fmt.Sprintf("message %d: %v", i+1, err))
				continue
			}
			failed(w, "append to "+name, err)
			return
		}
		if res.Duplicate {
			rep.Duplicates++
			continue
		}
		rep.Appended++
		rep.Bytes += int64(len(m.Raw))
	}
	reply(w, rep)
}

// flagsFor keeps the flags the store accepts: a source's keyword that is
// no IMAP atom is dropped rather than refusing the message.
func flagsFor(flags []string) []string {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if c, err := store.CanonicalFlags([]string{f}); err == nil {
			out = append(out, c...)
		}
	}
	return out
}

func (h *handler) finish(w http.ResponseWriter, r *http.Request) {
	var req finishRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "import: finish request: %v", err)
		return
	}
	name, err := store.CanonicalMailbox(req.Mailbox)
	if err != nil {
		failed(w, "mailbox "+strconv.Quote(req.Mailbox), err)
		return
	}
	if req.UIDNext > 1 {
		if _, err := h.write(r.Context(), &store.SkipUIDs{User: req.User, Mailbox: name, Next: uint64(req.UIDNext)}); err != nil {
			failed(w, "UIDNEXT of "+name, err)
			return
		}
	}
	reply(w, struct{}{})
}
