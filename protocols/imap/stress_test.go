package imap_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinbox/twinbox/protocols/internal/prototest"
)

var fetchRE = regexp.MustCompile(`^\* (\d+) FETCH \(.*UID (\d+).*MODSEQ \((\d+)\)`)

// TestConcurrentSessionsStayConsistent drives sessions that store, append,
// expunge and reselect one mailbox at once, as imaptest's stress does.
// Every command must be answered (a lock-order deadlock between SELECT
// and deliveries once stalled them all), and no session may see a
// message's mod-sequence go back.
func TestConcurrentSessionsStayConsistent(t *testing.T) {
	e := prototest.Start(t, nil)
	for i := range 10 {
		send(t, e, msg(fmt.Sprintf("s%d", i), "x"), "alice@localhost")
	}
	const sessions, commands = 4, 120
	errs := make(chan error, sessions)
	var wg sync.WaitGroup
	for n := range sessions {
		wg.Go(func() { errs <- stressSession(e.IMAPAddr, n, commands) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func stressSession(addr string, n, commands int) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	seen := map[string]uint64{} // UID -> highest MODSEQ told
	exists := 0
	run := func(tag, cmd string) error {
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := fmt.Fprintf(conn, "%s %s\r\n", tag, cmd); err != nil {
			return err
		}
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("session %d, %s: %v", n, cmd, err)
			}
			l = strings.TrimRight(l, "\r\n")
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") && !strings.HasPrefix(l, tag+" NO") {
					return fmt.Errorf("session %d, %s: %q", n, cmd, l)
				}
				return nil
			}
			if m := fetchRE.FindStringSubmatch(l); m != nil {
				if seq, _ := strconv.Atoi(m[1]); seq > exists {
					return fmt.Errorf("session %d: FETCH of %d with %d messages: %q", n, seq, exists, l)
				}
				ms, _ := strconv.ParseUint(m[3], 10, 64)
				if ms < seen[m[2]] {
					return fmt.Errorf("session %d: UID %s MODSEQ went back %d -> %d", n, m[2], seen[m[2]], ms)
				}
				seen[m[2]] = ms
			}
			if f := strings.Fields(l); len(f) == 3 && f[0] == "*" && f[2] == "EXISTS" {
				exists, _ = strconv.Atoi(f[1])
			}
			if f := strings.Fields(l); len(f) == 3 && f[0] == "*" && f[2] == "EXPUNGE" {
				exists--
			}
		}
	}
	if _, err := r.ReadString('\n'); err != nil {
		return err
	}
	if err := run("l", "LOGIN alice "+prototest.Password); err != nil {
		return err
	}
	if err := run("s", "SELECT INBOX (CONDSTORE)"); err != nil {
		return err
	}
	flags := []string{`\Seen`, `\Flagged`, `\Deleted`, "$Label1", "$Label2"}
	m := msg("stress", "x")
	for i := range commands {
		tag := fmt.Sprintf("c%d", i)
		var cmd string
		switch k := rng.IntN(10); {
		case k < 5 && exists > 0:
			op := []string{"+FLAGS", "-FLAGS", "FLAGS"}[rng.IntN(3)]
			cmd = fmt.Sprintf("STORE %d:%d %s (%s)", 1+rng.IntN(exists), exists, op, flags[rng.IntN(len(flags))])
		case k < 6:
			cmd = "EXPUNGE"
		case k < 8:
			cmd = fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(m), m)
		case k < 9:
			exists = 0
			seen = map[string]uint64{}
			cmd = "SELECT INBOX (CONDSTORE)"
		default:
			cmd = "FETCH 1:* (FLAGS MODSEQ)"
			if exists == 0 {
				cmd = "NOOP"
			}
		}
		if err := run(tag, cmd); err != nil {
			return err
		}
	}
	return run("z", "LOGOUT")
}
