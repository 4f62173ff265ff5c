package imap_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

// BenchmarkLogin measures IMAP logins per second through a real socket
// (connect, LOGIN, LOGOUT) with BLF-CRYPT cost 10 passwords, the
// verified-login cache off (every login pays bcrypt, as before the cache)
// and on:
//
//	go test ./protocols/imap -run '^$' -bench Login -benchtime 30x
func BenchmarkLogin(b *testing.B) {
	for _, cache := range []bool{false, true} {
		name := map[bool]string{false: "cache-off", true: "cache-on"}[cache]
		b.Run("BLF-CRYPT-10/"+name, func(b *testing.B) {
			e := prototest.Start(b, &prototest.Options{HashCost: 10, NoLoginCache: !cache})
			login := func() {
				conn, err := net.Dial("tcp", e.IMAPAddr)
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				r := bufio.NewReader(conn)
				if _, err := r.ReadString('\n'); err != nil {
					b.Fatal(err)
				}
				fmt.Fprintf(conn, "a LOGIN alice %s\r\nb LOGOUT\r\n", prototest.Password)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						b.Fatal(err)
					}
					if strings.HasPrefix(l, "a ") && !strings.HasPrefix(l, "a OK") {
						b.Fatalf("LOGIN: %q", l)
					}
					if strings.HasPrefix(l, "b ") {
						return
					}
				}
			}
			login() // the first login pays the hash either way
			b.ResetTimer()
			for b.Loop() {
				login()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}
