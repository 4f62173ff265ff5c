package replog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoLog: a directory holds no Twinbox log.
var ErrNoLog = errors.New("replog: no log here")

// OpenOffline opens the log of a stopped node whose NATS directory is dir:
// it starts a private NATS server on it (loopback, with a user and
// password made for this run and never shown) and opens the log stream,
// without creating one where there is none (ErrNoLog). close stops the
// server.
func OpenOffline(ctx context.Context, dir string) (_ *Log, close func(), err error) {
	var pw [16]byte
	rand.Read(pw[:])
	user, pass := "offline", hex.EncodeToString(pw[:])
	srv, err := StartServer(ServerOptions{Name: "twinbox-offline", Dir: dir, Addr: "127.0.0.1:0", User: user, Password: pass})
	if err != nil {
		return nil, nil, fmt.Errorf("replog: start a NATS server on %s: %w", dir, err)
	}
	nc, err := Connect(srv, user, pass, "twinbox-offline")
	close = func() {
		if nc != nil {
			nc.Close()
		}
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	defer func() {
		if err != nil {
			close()
		}
	}()
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.Stream(ctx, StreamName)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil, fmt.Errorf("%w: %s holds no Twinbox log (stream %s)", ErrNoLog, dir, StreamName)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("replog: log in %s: %w", dir, err)
	}
	l, err := OpenLog(ctx, nc, nil)
	if err != nil {
		return nil, nil, err
	}
	return l, close, nil
}

// HasLog reports whether dir (a node's NATS directory) holds JetStream's
// files, where a log would be.
func HasLog(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, server.JetStreamStoreDir))
	return err == nil && fi.IsDir()
}
