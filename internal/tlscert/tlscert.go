// Package tlscert loads a node's TLS certificate, or makes a self-signed
// one on first start.
package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/twinbox/twinbox/internal/fsutil"
)

// Load loads the certificate and key PEM files, or when certFile is
// empty makes a self-signed certificate for host in dir on first use (and
// reuses it afterwards), so that STARTTLS and the implicit-TLS ports work
// out of the box.
func Load(certFile, keyFile, dir, host string, log *slog.Logger) (*tls.Config, error) {
	cert, key := certFile, keyFile
	if cert == "" {
		cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if _, err := os.Stat(cert); errors.Is(err, os.ErrNotExist) {
			if err := SelfSigned(dir, cert, key, host); err != nil {
				return nil, fmt.Errorf("make a self-signed certificate: %w", err)
			}
			log.Info("made a self-signed certificate; set tls_cert and tls_key for a real one", "cert", cert)
		}
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s: %w", cert, err)
	}
	sum := sha256.Sum256(pair.Certificate[0])
	log.Info("TLS certificate", "file", cert, "sha256", hex.EncodeToString(sum[:]))
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// SelfSigned makes a self-signed certificate for host (and localhost,
// 127.0.0.1, ::1) in certFile and keyFile, creating dir.
func SelfSigned(dir, certFile, keyFile, host string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"Twinbox self-signed"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(825 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{host, "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
