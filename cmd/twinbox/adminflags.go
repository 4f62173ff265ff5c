package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/twinbox/twinbox/internal/admin"
)

// adminFlags are the flags of the subcommands that talk to a running
// node's admin API: its address (the node's socket by default) and, for
// an address over TCP, the token file.
type adminFlags struct {
	addr, tokenFile *string
}

// addAdminFlags defines --admin and --admin-token-file on fs. The default
// address is the socket of the node whose data directory is TWINBOX_DATA
// (./twinbox-data), unless TWINBOX_ADMIN_ADDR names a TCP address.
func addAdminFlags(fs *flag.FlagSet, what string) adminFlags {
	def := envDefault("TWINBOX_ADMIN_ADDR", "")
	if def == "" {
		def = filepath.Join(envDefault("TWINBOX_DATA", DefaultDataDir), admin.SocketName)
	}
	return adminFlags{
		addr: fs.String("admin", def, what+": the node's admin socket (DATA/admin.sock), or its admin_addr host:port with --admin-token-file (env TWINBOX_ADMIN_ADDR, else TWINBOX_DATA/admin.sock)"),
		tokenFile: fs.String("admin-token-file", envDefault("TWINBOX_ADMIN_TOKEN_FILE", ""),
			"file holding the node's admin token, for an --admin host:port (env TWINBOX_ADMIN_TOKEN_FILE)"),
	}
}

// client returns a client of addr (the --admin address, or another
// node's, such as verify's --peer) with the token file's token.
func (f adminFlags) client(addr string, timeout time.Duration) (*admin.Client, error) {
	var token string
	if *f.tokenFile != "" {
		t, err := admin.ReadToken(*f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-token-file: %w", err)
		}
		token = string(t)
	}
	return admin.NewClient(addr, token, timeout), nil
}
