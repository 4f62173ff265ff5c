package smtp_test

import (
	"bytes"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
	"github.com/twinbox/twinbox/protocols/smtp"
)

// hugeHeaderMessage is a message whose header is one Subject field folded
// over n bytes of continuation lines (issue 14, D7: "one 46 MB header").
func hugeHeaderMessage(n int) []byte {
	var b bytes.Buffer
	b.Grow(n + 1024)
	b.WriteString("From: a@example.org\r\nTo: alice@localhost\r\nSubject: big")
	line := "\r\n\t" + strings.Repeat("y", 76)
	for b.Len() < n {
		b.WriteString(line)
	}
	b.WriteString("\r\n\r\nHello.\r\n.\r\n")
	return b.Bytes()
}

// procStatus returns a field of /proc/self/status in bytes (VmRSS, VmHWM).
func procStatus(tb testing.TB, field string) int64 {
	tb.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status: %v", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatalf("%s: %q", field, l)
			}
			return kb << 10
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// BenchmarkHugeHeaderRSS delivers one message with a 46 MB header over SMTP
// to a node and prints the process's peak resident size while the server
// handles it (VmHWM, reset just before), next to the resident size before.
// Client and server share the process; the client's message is built
// before the measurement starts. "default" has the default limits (the
// header is refused at 1 MiB); "no-header-limit" admits it, so that what
// the store keeps of it (bounded metadata) is measured.
//
//	go test -run '^$' -bench HugeHeaderRSS -benchtime 1x ./protocols/smtp/
func BenchmarkHugeHeaderRSS(b *testing.B) {
	e := prototest.Start(b, nil)
	msg := hugeHeaderMessage(46 << 20)
	_, open := serveWith(b, e, false, nil, func(o *smtp.Options) { o.MaxHeaderBytes = 64 << 20 })
	for _, bc := range []struct{ name, addr string }{{"default", e.SMTPAddr}, {"no-header-limit", open}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				hugeHeaderRSS(b, bc.addr, msg)
			}
		})
	}
}

func hugeHeaderRSS(b *testing.B, addr string, msg []byte) {
	c := dialRaw(b, addr)
	defer c.conn.Close()
	c.within(5 * time.Minute)
	c.cmd("EHLO client.test")
	c.cmd("MAIL FROM:<a@example.org>")
	c.cmd("RCPT TO:<alice@localhost>")
	if l := c.cmd("DATA"); !strings.HasPrefix(l, "354") {
		b.Fatal(l)
	}
	runtime.GC()
	debug.FreeOSMemory()
	before := procStatus(b, "VmRSS")
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset VmHWM: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.conn.Write(msg)
		done <- err
	}()
	reply := c.reply()
	if err := <-done; err != nil && err != io.EOF {
		b.Logf("client write: %v", err)
	}
	peak := procStatus(b, "VmHWM")
	b.ReportMetric(float64(before>>20), "MB-rss-before")
	b.ReportMetric(float64(peak>>20), "MB-peak")
	b.ReportMetric(float64((peak-before)>>20), "MB-peak-growth")
	b.Logf("reply %q; RSS before %d MB, peak %d MB (+%d MB) for a %d MB header",
		reply, before>>20, peak>>20, (peak-before)>>20, len(msg)>>20)
}

// BenchmarkConnectionFloodRSS opens 4000 idle SMTP connections from one
// address at once (issue 14, D4: 20 000 idle connections exhausted the
// descriptors) and prints how many were served a greeting, how many were
// refused 421, the server's open descriptors, and the process's peak
// resident size growth. Loopback is exempt from the per-address limit,
// so the overall limit (256 by default) is what holds.
//
//	go test -run '^$' -bench ConnectionFloodRSS -benchtime 1x ./protocols/smtp/
func BenchmarkConnectionFloodRSS(b *testing.B) {
	e := prototest.Start(b, nil)
	for b.Loop() {
		connectionFlood(b, e.SMTPAddr, 4000)
	}
}

func connectionFlood(b *testing.B, addr string, n int) {
	runtime.GC()
	debug.FreeOSMemory()
	before := procStatus(b, "VmRSS")
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset VmHWM: %v", err)
	}
	var greeted, refused, failed int
	conns := make([]net.Conn, 0, n)
	buf := make([]byte, 512)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			failed++
			continue
		}
		conns = append(conns, c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _ := c.Read(buf)
		switch {
		case bytes.HasPrefix(buf[:k], []byte("220")):
			greeted++
		case bytes.HasPrefix(buf[:k], []byte("421")):
			refused++
		default:
			failed++
		}
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	peak := procStatus(b, "VmHWM")
	for _, c := range conns {
		c.Close()
	}
	b.ReportMetric(float64(greeted), "greeted")
	b.ReportMetric(float64(refused), "refused-421")
	b.ReportMetric(float64((peak-before)>>20), "MB-peak-growth")
	b.Logf("%d connections: %d greeted, %d refused 421, %d failed; %d descriptors open in the process (both ends); RSS %d MB, peak +%d MB",
		n, greeted, refused, failed, len(fds), before>>20, (peak-before)>>20)
}
