package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Batch bounds: a request carries up to this many messages or bytes (one
// larger message travels alone). One batch of kept UIDs is one operation
// of the log: one replicated commit for many messages.
const (
	DefaultBatchMessages = 256
	DefaultBatchBytes    = 8 << 20
)

// Options configure Run.
type Options struct {
	// URL is the node's admin server ("http://127.0.0.1:8410"); with
	// HTTP set, it may be empty (HTTP then routes each request's path).
	URL string
	// HTTP sends the requests; nil: http.DefaultClient.
	HTTP Doer
	// User receives the folders.
	User          string
	BatchMessages int // 0: DefaultBatchMessages
	BatchBytes    int // 0: DefaultBatchBytes
	// Progress, when set, is called after each batch.
	Progress func(Progress)
}

// Progress is where an import stands.
type Progress struct {
	Folder            string
	Messages, Of      int   // messages done (any outcome) and in all
	Bytes, OfBytes    int64 // source bytes done and in all
	Elapsed           time.Duration
	Imported, Skipped int
}

// Summary is what an import did.
type Summary struct {
	Folders, Messages int
	// Kept lists the folders imported with their UIDs; Renumbered those
	// appended with new UIDs, with why.
	Kept, Renumbered []string
	Imported         int // placed at the source's UIDs
	Appended         int // with new UIDs
	Present          int // held already (an earlier run; not sent again)
	Gone             int // expunged on the node since an earlier run
	TooLarge         []string
	Refused          []string
	Bytes            int64 // bytes stored (imported or appended)
	Elapsed          time.Duration
}

// String is the summary a person reads.
func (s Summary) String() string {
	var b strings.Builder
	secs := s.Elapsed.Seconds()
	if secs <= 0 {
		secs = 1e-9
	}
	fmt.Fprintf(&b, "%d folders, %d messages: %d imported with their UIDs, %d appended with new UIDs, %d already there, %d expunged here since\n",
		s.Folders, s.Messages, s.Imported, s.Appended, s.Present, s.Gone)
	fmt.Fprintf(&b, "%.1f MB stored in %s: %.0f msg/s, %.1f MB/s\n", float64(s.Bytes)/1e6, s.Elapsed.Round(time.Millisecond),
		float64(s.Imported+s.Appended)/secs, float64(s.Bytes)/1e6/secs)
	if len(s.Kept) > 0 {
		fmt.Fprintf(&b, "UIDs kept: %s\n", strings.Join(s.Kept, ", "))
	}
	for _, r := range s.Renumbered {
		fmt.Fprintf(&b, "new UIDs: %s\n", r)
	}
	for _, r := range s.TooLarge {
		fmt.Fprintf(&b, "not imported, over the node's size limit: %s\n", r)
	}
	for _, r := range s.Refused {
		fmt.Fprintf(&b, "not imported: %s\n", r)
	}
	return b.String()
}

// Run imports folders for o.User into the node at o.URL, one folder after
// another, a batch at a time. Run again after an interruption, it stores
// nothing twice (see the package comment).
func Run(ctx context.Context, folders []Folder, o Options) (Summary, error) {
	if o.HTTP == nil {
		o.HTTP = http.DefaultClient
	}
	if o.BatchMessages <= 0 {
		o.BatchMessages = DefaultBatchMessages
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = DefaultBatchBytes
	}
	c := &client{o: o}
	start := time.Now()
	var sum Summary
	pr := Progress{}
	for _, f := range folders {
		pr.Of += len(f.Messages)
		pr.OfBytes += f.Bytes()
	}
	for _, f := range folders {
		sum.Folders++
		var mb mailboxReply
		if err := c.post(ctx, "/import/mailbox", "application/json", jsonBody(mailboxRequest{
			User: o.User, Mailbox: f.Name, UIDValidity: f.UIDValidity, Subscribe: f.Subscribed,
		}), &mb); err != nil {
			return sum, err
		}
		switch {
		case mb.Keep:
			sum.Kept = append(sum.Kept, fmt.Sprintf("%s (UIDVALIDITY %d)", f.Name, mb.UIDValidity))
		case f.UIDValidity != 0:
			sum.Renumbered = append(sum.Renumbered, fmt.Sprintf("%s: %s", f.Name, mb.Why))
		default:
			sum.Renumbered = append(sum.Renumbered, fmt.Sprintf("%s: the source has no UIDs", f.Name))
		}
		pr.Folder = f.Name
		skip := 0
		if mb.Keep && mb.UIDNext > 1 {
			// Imported by an earlier run (or expunged here since): not
			// sent again.
			for skip < len(f.Messages) && f.Messages[skip].UID < mb.UIDNext {
				pr.Bytes += f.Messages[skip].Size
				skip++
			}
			sum.Messages += skip
			sum.Present += skip
			pr.Messages += skip
			pr.Skipped += skip
		}
		for i := skip; i < len(f.Messages); {
			req := batchRequest{User: o.User, Mailbox: f.Name}
			if mb.Keep {
				req.UIDValidity = mb.UIDValidity
			}
			size, first := 0, i
			for i < len(f.Messages) && len(req.Messages) < o.BatchMessages && (len(req.Messages) == 0 || size+int(f.Messages[i].Size) <= o.BatchBytes) {
				m := &f.Messages[i]
				raw, err := m.Read()
				if err != nil {
					return sum, fmt.Errorf("%s: %w", f.Name, err)
				}
				bm := batchMessage{Flags: m.Flags, Date: m.Date.UnixNano(), Raw: raw, Key: strconv.Itoa(i)}
				if mb.Keep {
					bm.UID = m.UID
				}
				if m.Date.IsZero() {
					bm.Date = time.Now().UnixNano()
				}
				req.Messages = append(req.Messages, bm)
				size += len(raw)
				pr.Bytes += m.Size
				i++
			}
			enc, err := cbor.Marshal(req)
			if err != nil {
				return sum, err
			}
			var rep batchReply
			if err := c.post(ctx, "/import/messages", "application/cbor", bytes.NewReader(enc), &rep); err != nil {
				return sum, fmt.Errorf("%s: messages %d to %d: %w", f.Name, first+1, i, err)
			}
			sum.Messages += len(req.Messages)
			sum.Imported += rep.Imported
			sum.Appended += rep.Appended
			sum.Present += rep.Present + rep.Duplicates
			sum.Gone += rep.Gone
			sum.Bytes += rep.Bytes
			for _, p := range rep.TooLarge {
				sum.TooLarge = append(sum.TooLarge, fmt.Sprintf("%s message %d", f.Name, first+int(p)))
			}
			for _, r := range rep.Refused {
				sum.Refused = append(sum.Refused, f.Name+": "+r)
			}
			pr.Messages += len(req.Messages)
			pr.Imported += rep.Imported + rep.Appended
			pr.Skipped += rep.Present + rep.Duplicates + rep.Gone + len(rep.TooLarge) + len(rep.Refused)
			pr.Elapsed = time.Since(start)
			if o.Progress != nil {
				o.Progress(pr)
			}
		}
		if mb.Keep && f.UIDNext > 1 {
			if err := c.post(ctx, "/import/finish", "application/json", jsonBody(finishRequest{
				User: o.User, Mailbox: f.Name, UIDNext: f.UIDNext,
			}), nil); err != nil {
				return sum, err
			}
		}
	}
	sum.Elapsed = time.Since(start)
	return sum, nil
}

// Doer sends an HTTP request (an *http.Client, or the node's admin
// client, which adds the socket or the token).
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

type client struct{ o Options }

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

// post sends a request and decodes a JSON reply into out (nil: none).
func (c *client) post(ctx context.Context, path, ctype string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.o.URL, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	resp, err := c.o.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return fmt.Errorf("the node does not serve imports (%s %s)", resp.Request.URL.Redacted(), resp.Status)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
