package harness

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
)

// FreeLoopback returns TCP and UDP loopback addresses nothing listens on
// now, all distinct, each held open until every one is picked. They lie
// below Linux's ephemeral range (32768 and up): a port the system hands
// out for ":0" (other listeners, clients) could otherwise be taken before
// the node binds it, as happened when a node's IMAPS listener took the
// port picked for its peer's NATS server. Use them for addresses that
// must be known before a node starts (a peer's, or one that must survive
// a restart); let the system pick the others with ":0".
func FreeLoopback(nTCP, nUDP int) (tcp, udp []string, err error) {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	pick := func(listen func(addr string) (io.Closer, error)) (string, error) {
		for range 500 {
			addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
			if c, err := listen(addr); err == nil {
				closers = append(closers, c)
				return addr, nil
			}
		}
		return "", errors.New("harness: no free loopback port between 20000 and 32000")
	}
	for range nTCP {
		a, err := pick(func(addr string) (io.Closer, error) { return net.Listen("tcp", addr) })
		if err != nil {
			return nil, nil, err
		}
		tcp = append(tcp, a)
	}
	for range nUDP {
		a, err := pick(func(addr string) (io.Closer, error) { return net.ListenPacket("udp", addr) })
		if err != nil {
			return nil, nil, err
		}
		udp = append(udp, a)
	}
	return tcp, udp, nil
}
