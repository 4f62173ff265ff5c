package smtp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/internal/poll"
	"github.com/twinbox/twinbox/protocols/internal/prototest"
	"github.com/twinbox/twinbox/protocols/smtp"
	"github.com/twinbox/twinbox/protocols/users"
)

// testTLSConfig is a server configuration with a fresh self-signed
// certificate for 127.0.0.1.
func testTLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestTLSListenerIsCountedBeneathTLS: a listener made by tls.NewListener
// is served with the server's limits, and go-smtp still sees TLS (the
// Received field says ESMTPS).
func TestTLSListenerIsCountedBeneathTLS(t *testing.T) {
	e := prototest.Start(t, nil)
	cfg := testTLSConfig(t)
	pw, err := users.Open(e.Passwd, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := smtp.New(&smtp.Options{Reader: e.Node, Writer: e.Node, Users: users.Directory{File: pw, Guard: e.Guard},
		Hostname: "mx.test", LocalDomains: []string{"localhost"}, TLSConfig: cfg,
		MaxConnections: 1})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	dialTLS := func() (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: stepBound}, "tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	}
	conn, err := dialTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := gosmtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections counted, want 1", n)
	}
	// The only slot is taken: a second TLS client is turned away.
	second, err := dialTLS()
	if err != nil {
		t.Fatalf("second connection: %v", err)
	}
	second.SetDeadline(time.Now().Add(stepBound))
	buf := make([]byte, 64)
	n, _ := second.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "421 4.7.0 ") {
		t.Errorf("second connection: %q, want 421 4.7.0", buf[:n])
	}
	second.Close()
	if err := c.SendMail("a@example.org", []string{"alice@localhost"}, strings.NewReader(message)); err != nil {
		t.Fatal(err)
	}
	if got := inbox(t, e, "alice"); len(got) != 1 || !strings.Contains(string(got[0]), "with ESMTPS") {
		t.Errorf("the delivery over TLS: %q", got)
	}
	c.Quit()
	poll.Eventually(t, 10*time.Second, "the closed connection to be released", func() bool { return srv.Connections() == 0 })
}
