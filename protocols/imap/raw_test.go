package imap_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

// raw is an IMAP session on a real socket, spoken byte by byte, for the
// rules a library client would hide.
type raw struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	n    int
}

// dialRaw connects and reads the greeting.
func dialRaw(t testing.TB, e *prototest.Env) *raw {
	t.Helper()
	conn, err := net.Dial("tcp", e.IMAPAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
	if l := s.line(); !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting: %q", l)
	}
	return s
}

// loginRaw connects and logs in as user.
func loginRaw(t testing.TB, e *prototest.Env, user string) *raw {
	t.Helper()
	s := dialRaw(t, e)
	s.ok("LOGIN " + user + " " + prototest.Password)
	return s
}

// line reads one line (a literal's bytes are read as lines too).
func (s *raw) line() string {
	s.t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := s.r.ReadString('\n')
	if err != nil {
		s.t.Fatalf("read: %v (so far %q)", err, l)
	}
	return l
}

// send writes text as it is (add CRLF yourself).
func (s *raw) send(text string) {
	s.t.Helper()
	if _, err := s.conn.Write([]byte(text)); err != nil {
		s.t.Fatal(err)
	}
}

// tag is the next command tag.
func (s *raw) tag() string {
	s.n++
	return fmt.Sprintf("t%d", s.n)
}

// do sends a command and returns the untagged lines and the tagged one.
func (s *raw) do(cmd string) (untagged []string, tagged string) {
	s.t.Helper()
	tag := s.tag()
	s.send(tag + " " + cmd + "\r\n")
	return s.until(tag)
}

// until reads lines up to the one tagged tag.
func (s *raw) until(tag string) (untagged []string, tagged string) {
	s.t.Helper()
	for {
		l := s.line()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, strings.TrimRight(l, "\r\n")
		}
		untagged = append(untagged, strings.TrimRight(l, "\r\n"))
	}
}

// ok runs cmd and fails unless it is answered OK.
func (s *raw) ok(cmd string) []string {
	s.t.Helper()
	u, tagged := s.do(cmd)
	if !strings.Contains(tagged, " OK") {
		s.t.Fatalf("%s: %q (untagged %q)", cmd, tagged, u)
	}
	return u
}

// has reports whether one of lines is want.
func has(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// hasPrefix reports whether one of lines begins with prefix.
func hasPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
