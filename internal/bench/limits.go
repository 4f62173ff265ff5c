package bench

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The limits a catch-up is compared with (the design asks for "catch-up speed
// against the disk and loopback limits"): how fast this machine's disk
// takes fsynced writes in the bench's directory, and how fast loopback
// carries a TLS stream, each measured for limitRun.
const (
	limitRun   = time.Second
	limitChunk = 1 << 20 // the size of a large log record
)

// diskSyncMBps writes limitChunk-byte chunks to a new file in dir, each
// followed by fsync, for limitRun, and returns the rate in MB/s.
func diskSyncMBps(dir string) (float64, error) {
	f, err := os.CreateTemp(dir, "disk-limit-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, limitChunk)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var n int64
	start := time.Now()
	for time.Since(start) < limitRun {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
		n += int64(len(buf))
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}

// loopbackTLSMBps streams to a TLS listener on 127.0.0.1 for limitRun,
// with the certificate made for the bench's first node (certDir), and
// returns the rate in MB/s.
func loopbackTLSMBps(certDir string) (float64, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "cert.pem"), filepath.Join(certDir, "key.pem"))
	if err != nil {
		return 0, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) // our own listener, just made
	if err != nil {
		return 0, err
	}
	buf := make([]byte, limitChunk)
	start := time.Now()
	for time.Since(start) < limitRun {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return 0, err
		}
	}
	c.CloseWrite()
	n := <-got
	c.Close()
	if n == 0 {
		return 0, fmt.Errorf("loopback: nothing arrived")
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}
