package loadgen

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText prints the result for a person.
func (r *DeliveryResult) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d sessions, %d-byte messages, %d recipient(s) each, %.2f s%s\n",
		r.Protocol, r.Target, r.Sessions, r.MessageSize, r.Recipients, r.ElapsedSec, interrupted(r.Interrupted))
	fmt.Fprintf(&b, "  delivered   %d messages, %d recipients\n", r.Delivered, r.RecipientsDelivered)
	fmt.Fprintf(&b, "  failed      %d messages, %d recipients%s\n", r.Failed, r.RecipientsFailed, failures(r.Failures))
	fmt.Fprintf(&b, "  rate        %.1f messages/s, %.1f recipients/s, %.2f MB/s\n",
		r.MessagesPerSec, r.RecipientsPerSec, r.BytesPerSec/1e6)
	fmt.Fprintf(&b, "  latency     p50 %s  p90 %s  p99 %s  max %s  (MAIL to last reply, delivered messages)\n",
		msText(r.Latency.P50), msText(r.Latency.P90), msText(r.Latency.P99), msText(r.Latency.Max))
	if r.Reconnects > 0 {
		fmt.Fprintf(&b, "  reconnects  %d\n", r.Reconnects)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteText prints the result for a person: a line of setup, then a table
// with a row per operation.
func (r *IMAPResult) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "imap %s: %d sessions as %d user(s), %s with %d messages, mix %s, %.2f s%s\n",
		r.Target, r.Sessions, r.Logins, r.Mailbox, r.MailboxMessages, r.Mix, r.ElapsedSec, interrupted(r.Interrupted))
	if r.Preloaded > 0 {
		fmt.Fprintf(&b, "preloaded %d messages in %.2f s\n", r.Preloaded, r.PreloadSec)
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tcount\tfailed\tops/s\tp50\tp90\tp99\tmax\t")
	for _, o := range append(slices.Clone(r.Ops), r.Total) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t\n", o.Name, o.Count, o.Failed, o.PerSec,
			msText(o.Latency.P50), msText(o.Latency.P90), msText(o.Latency.P99), msText(o.Latency.Max))
	}
	tw.Flush()
	for _, o := range r.Ops {
		if len(o.Failures) > 0 {
			fmt.Fprintf(&b, "%s failures%s\n", o.Name, failures(o.Failures))
		}
	}
	if r.Reconnects > 0 {
		fmt.Fprintf(&b, "reconnects %d\n", r.Reconnects)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func interrupted(b bool) string {
	if b {
		return " (interrupted)"
	}
	return ""
}

// failures writes ": 550 ×3, network ×1" in a stable order.
func failures(t tally) string {
	if len(t) == 0 {
		return ""
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, t[k])
	}
	return ": " + strings.Join(parts, ", ")
}

func msText(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}
