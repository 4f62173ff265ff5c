package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/twinbox/twinbox/internal/admin"
	"github.com/twinbox/twinbox/migrate"
	"github.com/twinbox/twinbox/pair"
	"github.com/twinbox/twinbox/store"
)

const importUsage = `usage: twinbox import maildir|mbox --user NAME [--admin SOCKET|HOST:PORT] PATH...
       twinbox import imap --user NAME [--from-user NAME] [--tls tls|starttls|none] HOST:PORT < PASSWORD

Imports existing mail into a running node, through its write path (on an
active, the passive gets every message too):

  maildir PATH   a Dovecot Maildir (Maildir++): PATH/cur, PATH/new and a
                 folder per PATH/.Name; dovecot-uidlist's UIDVALIDITY and
                 UIDs are kept, so clients download nothing again;
                 dovecot-keywords and the file names give flags and keywords
  mbox PATH...   mbox files, one folder each (named after the file, or
                 --folder); Dovecot's X-IMAPbase/X-UID keep UIDs
  imap HOST:PORT a running IMAP server (any): every folder, UIDVALIDITY and
                 UIDs kept, flags and keywords; examined read-only. The
                 password is TWINBOX_IMPORT_PASSWORD or the first line of
                 the standard input

UIDs are kept where the target mailbox is new, has never given a UID, or
was imported into from the same source before; elsewhere messages are
appended with new UIDs. Running an import again (after an interruption,
say) stores nothing twice.

Flags:`

// runImport is `twinbox import`.
func runImport(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := addAdminFlags(fs, "the node to import into")
	user := fs.String("user", "", "the user who receives the mail (created in the store if missing; add the login with 'twinbox user add')")
	folder := fs.String("folder", "", "mbox: the folder of a single file (default: the file's name; inbox and mbox: INBOX)")
	batch := fs.Int("batch", migrate.DefaultBatchMessages, "messages per request (one log entry each with UIDs kept)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	fromUser := fs.String("from-user", "", "imap: the login on the source server (default: --user)")
	tlsMode := fs.String("tls", "tls", "imap: tls (implicit), starttls, or none (plain text: loopback or a trusted network only)")
	insecure := fs.Bool("insecure-skip-verify", false, "imap: do not check the source server's certificate")
	fs.Usage = func() { fmt.Fprintln(stderr, importUsage); fs.PrintDefaults() }
	if len(args) == 0 || (args[0] != "maildir" && args[0] != "mbox" && args[0] != "imap") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, importUsage)
			fs.PrintDefaults()
			return nil
		}
		fs.Usage()
		return fmt.Errorf("%w: import takes maildir, mbox or imap", errUsage)
	}
	kind := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	paths := fs.Args()
	switch {
	case *user == "":
		return fmt.Errorf("%w: import needs --user", errUsage)
	case len(paths) == 0:
		return fmt.Errorf("%w: import %s needs a PATH", errUsage, kind)
	case kind == "maildir" && len(paths) != 1:
		return fmt.Errorf("%w: import maildir takes one PATH (one user's Maildir), got %d", errUsage, len(paths))
	case kind == "imap" && len(paths) != 1:
		return fmt.Errorf("%w: import imap takes one HOST:PORT, got %d", errUsage, len(paths))
	case *folder != "" && len(paths) != 1:
		return fmt.Errorf("%w: --folder names the folder of one mbox file", errUsage)
	}
	if err := store.ValidUser(*user); err != nil {
		return fmt.Errorf("%w: --user: %v", errUsage, err)
	}
	var folders []migrate.Folder
	switch kind {
	case "imap":
		login := *fromUser
		if login == "" {
			login = *user
		}
		pw, ok := os.LookupEnv("TWINBOX_IMPORT_PASSWORD")
		if !ok {
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && line == "" {
				return fmt.Errorf("%w: import imap reads the source password from TWINBOX_IMPORT_PASSWORD or the standard input", errUsage)
			}
			pw = strings.TrimRight(line, "\r\n")
		}
		f, src, err := migrate.ReadIMAP(paths[0], login, pw, &migrate.IMAPOptions{TLS: *tlsMode,
			TLSConfig: &tls.Config{InsecureSkipVerify: *insecure}})
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer src.Close()
		folders = f
	case "maildir":
		f, err := migrate.ReadMaildir(paths[0])
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		folders = f
	default:
		for _, p := range paths {
			name := *folder
			if name == "" {
				name = strings.TrimSuffix(filepath.Base(p), ".mbox")
				if l := strings.ToLower(name); l == "inbox" || l == "mbox" {
					name = store.Inbox
				}
			}
			f, err := migrate.ReadMbox(p, name)
			if err != nil {
				return fmt.Errorf("import: %w", err)
			}
			folders = append(folders, f)
		}
	}
	ac, err := af.client(*af.addr, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	o := migrate.Options{HTTP: adminDoer{ac}, User: *user, BatchMessages: *batch}
	var bar *progressbar.ProgressBar
	if f, ok := stderr.(*os.File); ok && !*quiet && term.IsTerminal(int(f.Fd())) {
		var total int64
		for i := range folders {
			total += folders[i].Bytes()
		}
		bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(stderr), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("import"), progressbar.OptionThrottle(100_000_000), progressbar.OptionClearOnFinish())
		o.Progress = func(p migrate.Progress) {
			bar.Describe(fmt.Sprintf("%s %d/%d", p.Folder, p.Messages, p.Of))
			bar.Set64(p.Bytes)
		}
	}
	sum, err := migrate.Run(ctx, folders, o)
	if bar != nil {
		bar.Finish()
	}
	fmt.Fprint(stdout, sum.String())
	if err != nil {
		return fmt.Errorf("import (run it again to continue; nothing is stored twice): %w", err)
	}
	return nil
}

// adminDoer sends import requests through the admin client (its socket,
// or its address with the token).
type adminDoer struct{ c *admin.Client }

func (d adminDoer) Do(req *http.Request) (*http.Response, error) { return d.c.Send(req) }

// importWriter is the node's write path for package migrate.
type importWriter struct{ p *pair.Pair }

func (w importWriter) Write(ctx context.Context, op store.Op) (store.Result, error) {
	return w.p.Write(ctx, op, nil)
}
