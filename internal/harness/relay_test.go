package harness

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/twinbox/twinbox/internal/poll"
)

// TestTCPRelayCutHoldsBytes: bytes written during a cut arrive after the
// heal, in order, on the connection made before the cut and on one made
// during it.
func TestTCPRelayCutHoldsBytes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // an echo server
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
	r, err := NewTCPRelay(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	rb := bufio.NewReader(before)
	before.Write([]byte("one\n"))
	if line, err := rb.ReadString('\n'); err != nil || line != "one\n" {
		t.Fatalf("through the relay: %q %v", line, err)
	}
	r.Cut()
	before.Write([]byte("two\n"))
	during, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer during.Close()
	during.Write([]byte("three\n"))
	r.Heal()
	if line, err := rb.ReadString('\n'); err != nil || line != "two\n" {
		t.Fatalf("held during the cut: %q %v", line, err)
	}
	if line, err := bufio.NewReader(during).ReadString('\n'); err != nil || line != "three\n" {
		t.Fatalf("connected during the cut: %q %v", line, err)
	}
}

// TestUDPRelayCutDrops: a datagram sent during a cut is lost; the next
// one after the heal arrives.
func TestUDPRelayCutDrops(t *testing.T) {
	dst, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	r, err := NewUDPRelay(dst.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src, err := net.Dial("udp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r.Cut()
	src.Write([]byte("lost"))
	if err := poll.Until(t.Context(), time.Minute, "the relay to drop the datagram", func() (bool, error) {
		return r.Dropped() == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	r.Heal()
	src.Write([]byte("kept"))
	buf := make([]byte, 64)
	n, err := dst.Read(buf)
	if err != nil || string(buf[:n]) != "kept" {
		t.Fatalf("first datagram after the heal: %q %v", buf[:n], err)
	}
}
