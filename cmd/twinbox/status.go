package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/twinbox/twinbox/internal/admin"
)

const statusUsage = `usage: twinbox status [--admin SOCKET|HOST:PORT] [--json]

Prints a running node's status from its admin API: by default over the
socket of the node in TWINBOX_DATA (./twinbox-data/admin.sock).

Flags:`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := addAdminFlags(fs, "status")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	fs.Usage = func() { fmt.Fprintln(stderr, statusUsage); fs.PrintDefaults() }
	if help, err := parseFlags(fs, args, "status"); help || err != nil {
		return err
	}
	c, err := af.client(*af.addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	code, body, err := c.Do(ctx, "GET", "/status", 1<<20)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("status: %s answered %d: %s", c.Addr, code, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st admin.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: %s did not answer with a node status: %w", c.Addr, err)
	}
	printStatus(stdout, &st)
	return nil
}

func printStatus(w io.Writer, st *admin.Status) {
	fmt.Fprintf(w, "node        %s (%s), up %s\n", st.Node, st.Role, st.Uptime)
	if st.Waiting != "" {
		fmt.Fprintf(w, "waiting     %s\n", st.Waiting)
	}
	if st.Health != "" && st.Health != "ok" {
		fmt.Fprintf(w, "UNHEALTHY   %s\n", st.Health)
	}
	fmt.Fprintf(w, "applied     sequence %d (%d writes, %d failed, %d not confirmed by the peer)\n", st.Applied, st.Writes, st.WriteFailures, st.Unconfirmed)
	if r := st.Replication; r != nil {
		fmt.Fprintf(w, "log         epoch %d, entries %d..%d\n", r.Epoch, r.LogFirst, r.LogLast)
		if st.Role == "active" {
			fmt.Fprintf(w, "passive     at %d (lag %d entries, last heard %s), %s replication\n", r.PeerPosition, r.Lag, orNever(r.PeerSeen), r.Mode)
		} else {
			fmt.Fprintf(w, "following   durable up to %d\n", r.PeerPosition)
		}
		if r.Appends > 0 {
			fmt.Fprintf(w, "log writes  %d appends, %.2f ms each on average (write and fsync)\n", r.Appends, 1e3*r.AppendSeconds/float64(r.Appends))
		}
		if r.PeerWaits > 0 {
			fmt.Fprintf(w, "confirms    %d waits for the passive, %.2f ms each on average after the local append\n", r.PeerWaits, 1e3*r.PeerWaitSeconds/float64(r.PeerWaits))
		}
		if r.Takes > 0 {
			fmt.Fprintf(w, "batches     %d made durable here, %.2f ms each on average from arrival\n", r.Takes, 1e3*r.TakeSeconds/float64(r.Takes))
		}
		if r.Resyncs > 0 {
			fmt.Fprintf(w, "resyncs     %d rebuilds of the store from the active's checkpoint\n", r.Resyncs)
		}
		if r.Error != "" {
			fmt.Fprintf(w, "problem     %s\n", r.Error)
		}
	}
	if m := st.Merge; m != nil && (m.Found > 0 || m.Pending > 0) {
		skipped := 0
		for _, n := range m.Skipped {
			skipped += n
		}
		fmt.Fprintf(w, "merge       %d operations found in diverged tails, %d acknowledged; %d re-applied on the active, %d already there, %d skipped; %d plans pending\n",
			m.Found, m.Acked, m.Applied, m.Duplicates, skipped, m.Pending)
		if m.LastError != "" {
			fmt.Fprintf(w, "merge error %s\n", m.LastError)
		}
	}
	if st.Failover != nil {
		printFailover(w, st.Failover)
	}
	fmt.Fprintf(w, "sessions    imap %d, smtp %d, lmtp %d\n", st.Sessions["imap"], st.Sessions["smtp"], st.Sessions["lmtp"])
	fmt.Fprintf(w, "users       %d (failed logins since start: %d)\n", st.Users, st.LoginFailures)
	fmt.Fprintf(w, "delivered   %d messages to %d mailboxes since start\n", st.Deliveries, st.Recipients)
	fmt.Fprintf(w, "bytes       %d received, %d as one copy per mailbox; store on disk %d\n",
		st.ReceivedBytes, st.RecipientBytes, st.StoreBytes)
	fmt.Fprintf(w, "cache       %.1f%% hits; group commit %.1f writes per fsync\n", 100*st.CacheHitRate, st.CommitBatch)
	names := make([]string, 0, len(st.Listeners))
	for k := range st.Listeners {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(w, "listen      %-11s %s\n", k, st.Listeners[k])
	}
}

// printFailover prints the failover part of `twinbox status`.
func printFailover(w io.Writer, s *admin.Failover) {
	fmt.Fprintf(w, "failover    %s at epoch %d", s.Role, s.Epoch)
	if s.Busy != "" {
		fmt.Fprintf(w, ", %s", s.Busy)
	}
	if s.Degraded {
		fmt.Fprint(w, ", degraded (acknowledging alone)")
	}
	if s.Standby {
		fmt.Fprint(w, ", standby")
	}
	if s.Outdated {
		fmt.Fprint(w, ", outdated (the active acknowledged writes this node lacks)")
	}
	fmt.Fprintln(w)
	peer := s.Peer
	if s.PeerNode != "" {
		peer = fmt.Sprintf("%s %s (%s)", s.PeerNode, s.Peer, s.PeerRole)
	}
	fmt.Fprintf(w, "peer        %s; fencing: %s (device %s)\n", peer, s.Fencing, s.FenceDevice)
	names := make([]string, 0, len(s.Paths))
	for n := range s.Paths {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := s.Paths[n]
		var rej uint64
		for _, v := range p.Rejected {
			rej += v
		}
		fmt.Fprintf(w, "heartbeat   %-5s last heard %s, %d received, %d sent, %d refused\n", n, orNever(p.LastHeard), p.Received, p.Sent, rej)
	}
	if s.Reason != "" {
		fmt.Fprintf(w, "why         %s\n", s.Reason)
	}
}

func orNever(s string) string {
	if s == "" {
		return "never"
	}
	return s
}
