package imap_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twinbox/twinbox/protocols/imap"
	"github.com/twinbox/twinbox/protocols/internal/prototest"
	"github.com/twinbox/twinbox/protocols/users"
)

// tlsServer starts a second IMAP server with TLS over e's node, and
// returns its plain address and a listener address with implicit TLS.
func tlsServer(t *testing.T, e *prototest.Env) (plain, implicit string) {
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
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	pw, err := users.Open(e.Passwd, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := imap.New(&imap.Options{Reader: e.Node, Writer: e.Node, Users: users.Directory{File: pw, Guard: e.Guard},
		TLSConfig: cfg, LocalDomains: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { srv.Serve(ln1); done <- struct{}{} }()
	go func() { srv.Serve(tls.NewListener(ln2, cfg)); done <- struct{}{} }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
		<-done
	})
	return ln1.Addr().String(), ln2.Addr().String()
}

// TestStartTLSAndImplicitTLS: STARTTLS is offered before TLS and not
// after; a session logs in over it and over implicit TLS; commands sent
// in the clear behind STARTTLS are never run inside TLS (CVE-2011-0411).
func TestStartTLSAndImplicitTLS(t *testing.T) {
	e := prototest.Start(t, nil)
	plain, implicit := tlsServer(t, e)
	clientCfg := &tls.Config{InsecureSkipVerify: true}

	conn, err := net.Dial("tcp", plain)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if l, _ := r.ReadString('\n'); !strings.Contains(l, "STARTTLS") {
		t.Fatalf("greeting without STARTTLS: %q", l)
	}
	fmt.Fprintf(conn, "t1 STARTTLS\r\n")
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "t1 OK") {
		t.Fatalf("STARTTLS: %q", l)
	}
	tc := tls.Client(conn, clientCfg)
	tr := bufio.NewReader(tc)
	fmt.Fprintf(tc, "t2 CAPABILITY\r\nt3 LOGIN alice %s\r\n", prototest.Password)
	var lines []string
	for {
		l, err := tr.ReadString('\n')
		if err != nil {
			t.Fatalf("after STARTTLS: %v (%q)", err, lines)
		}
		lines = append(lines, l)
		if strings.HasPrefix(l, "t3 ") {
			break
		}
	}
	if strings.Contains(strings.Join(lines, ""), "STARTTLS") || !strings.HasPrefix(lines[len(lines)-1], "t3 OK") {
		t.Errorf("CAPABILITY and LOGIN inside TLS: %q", lines)
	}

	// Implicit TLS.
	ic, err := tls.Dial("tcp", implicit, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	ir := bufio.NewReader(ic)
	if l, _ := ir.ReadString('\n'); !strings.HasPrefix(l, "* OK") || strings.Contains(l, "STARTTLS") {
		t.Errorf("implicit TLS greeting: %q", l)
	}
	fmt.Fprintf(ic, "t1 LOGIN alice %s\r\n", prototest.Password)
	if l, _ := ir.ReadString('\n'); !strings.HasPrefix(l, "t1 OK") {
		t.Errorf("LOGIN over implicit TLS: %q", l)
	}

	// A command pipelined behind STARTTLS in the clear ends the session.
	inj, err := net.Dial("tcp", plain)
	if err != nil {
		t.Fatal(err)
	}
	defer inj.Close()
	inj.SetDeadline(time.Now().Add(10 * time.Second))
	jr := bufio.NewReader(inj)
	jr.ReadString('\n')
	fmt.Fprintf(inj, "t1 STARTTLS\r\nt2 LOGIN alice %s\r\n", prototest.Password)
	if l, _ := jr.ReadString('\n'); !strings.HasPrefix(l, "* BYE") {
		t.Errorf("STARTTLS with a command behind it: %q", l)
	}
}
