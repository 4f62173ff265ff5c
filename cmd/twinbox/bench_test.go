package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestBenchUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "bench needs a kind: failover, imap, lmtp, replication, smtp"},
		{[]string{"pop3"}, `unknown bench kind "pop3" (known: failover, imap, lmtp, replication, smtp)`},
		{[]string{"lmtp"}, "needs --target"},
		{[]string{"lmtp", "--target", "127.0.0.1:1", "extra"}, "takes no arguments"},
		{[]string{"smtp", "--target", "127.0.0.1:1", "--nope"}, "flag provided but not defined"},
		{[]string{"smtp", "--target", "127.0.0.1:1", "--tls", "--starttls"}, "exclude each other"},
		{[]string{"lmtp", "--target", "127.0.0.1:1", "--starttls"}, "STARTTLS is not available with LMTP"},
		{[]string{"smtp", "--target", "127.0.0.1:1", "--rcpts", "51"}, "Recipients = 51"},
		{[]string{"smtp", "--target", "127.0.0.1:1", "--sessions", "0"}, "--sessions 0"},
		{[]string{"smtp", "--target", "127.0.0.1:1", "--duration", "0"}, "never end"},
		{[]string{"smtp", "--target", "nocolon"}, `Target = "nocolon"`},
		{[]string{"imap", "--target", "127.0.0.1:1"}, "needs --password"},
		{[]string{"imap", "--target", "127.0.0.1:1", "--password", "x", "--mix", "copy=1"}, "unknown operation"},
	} {
		t.Setenv("TWINBOX_BENCH_PASSWORD", "")
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"bench"}, tc.args...), &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench %q: err = %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestBenchHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"lmtp", "-h"}, {"imap", "--help"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), append([]string{"bench"}, args...), &out, &errOut); err != nil {
			t.Errorf("bench %q: %v", args, err)
		}
		if !strings.Contains(out.String()+errOut.String(), "usage: twinbox bench") {
			t.Errorf("bench %q printed no usage:\n%s%s", args, out.String(), errOut.String())
		}
	}
}

// countingLMTP accepts every message and counts them.
type countingLMTP struct{ n atomic.Int64 }

func (b *countingLMTP) NewSession(*smtp.Conn) (smtp.Session, error) { return lmtpSession{b}, nil }

type lmtpSession struct{ b *countingLMTP }

func (lmtpSession) Reset()                               {}
func (lmtpSession) Logout() error                        { return nil }
func (lmtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (lmtpSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s lmtpSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	s.b.n.Add(1)
	return err
}
func (s lmtpSession) LMTPData(r io.Reader, _ smtp.StatusCollector) error { return s.Data(r) }

func TestBenchLMTPJSON(t *testing.T) {
	be := &countingLMTP{}
	srv := smtp.NewServer(be)
	srv.LMTP = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"bench", "lmtp", "--target", ln.Addr().String(),
		"--count", "20", "--sessions", "2", "--rcpts", "3", "--size", "2048", "--json"}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var res struct {
		Protocol            string  `json:"protocol"`
		Delivered           int64   `json:"delivered"`
		Failed              int64   `json:"failed"`
		RecipientsDelivered int64   `json:"recipients_delivered"`
		MessagesPerSec      float64 `json:"messages_per_s"`
		Latency             struct {
			P99 float64 `json:"p99_ms"`
		} `json:"latency"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if res.Protocol != "lmtp" || res.Delivered != 20 || res.Failed != 0 || res.RecipientsDelivered != 60 ||
		res.MessagesPerSec <= 0 || res.Latency.P99 <= 0 || be.n.Load() != 20 {
		t.Errorf("result %+v, server saw %d messages\n%s", res, be.n.Load(), out.String())
	}
}
