package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/term"

	"github.com/twinbox/twinbox/protocols/users"
	"github.com/twinbox/twinbox/store"
)

const userUsage = `usage: twinbox user [flags] add NAME
       twinbox user [flags] del NAME
       twinbox user [flags] passwd NAME
       twinbox user [flags] list

Edits the passwd-file a node reads its users from (Dovecot's passwd-file
format, so Dovecot's own file works too: every scheme doveadm pw writes
is read). New hashes are {BLF-CRYPT} (bcrypt, cost 10) unless --scheme
says SHA512-CRYPT, SHA256-CRYPT or ARGON2ID. A running node picks a
change up within a second. add and passwd read the password from
standard input: typed twice without echo on a terminal, otherwise the
first line. add creates the file (mode 0600) and its directory. passwd
repairs a line the node cannot read (list names them). Flags may stand
before or after the verb and the name.

Flags:`

func runUser(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("user", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", envDefault("TWINBOX_DATA", DefaultDataDir), "node data directory (env TWINBOX_DATA)")
	passwd := fs.String("passwd", envDefault("TWINBOX_PASSWD", ""), "passwd-file (env TWINBOX_PASSWD; default: DATA/passwd)")
	scheme := fs.String("scheme", envDefault("TWINBOX_PASSWORD_SCHEME", users.DefaultScheme),
		"scheme of new password hashes: "+strings.Join(users.Schemes(), ", ")+" (env TWINBOX_PASSWORD_SCHEME)")
	cost := fs.Int("cost", 0, "cost of new password hashes: bcrypt's cost, SHA-crypt's rounds or Argon2id's passes; 0: the scheme's default (env TWINBOX_PASSWORD_COST, or TWINBOX_BCRYPT_COST)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, userUsage)
		fs.PrintDefaults()
	}
	for _, env := range []string{"TWINBOX_BCRYPT_COST", "TWINBOX_PASSWORD_COST"} {
		if v, ok := os.LookupEnv(env); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%w: %s=%q is not a number", errUsage, env, v)
			}
			*cost = n
		}
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(pos) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: user needs a verb: add, del, passwd or list", errUsage)
	}
	verb, names := pos[0], pos[1:]
	path := *passwd
	if path == "" {
		path = filepath.Join(*data, "passwd")
	}
	edit := &users.EditOptions{Scheme: *scheme, Cost: *cost}
	if err := edit.Validate(); err != nil {
		return fmt.Errorf("%w: --scheme/--cost: %w", errUsage, err)
	}

	if verb == "list" {
		if len(names) > 0 {
			return fmt.Errorf("%w: user list takes no name, got %q", errUsage, names)
		}
		return listUsers(path, stdout, stderr)
	}
	switch verb {
	case "add", "del", "passwd":
	default:
		fs.Usage()
		return fmt.Errorf("%w: unknown user verb %q (want add, del, passwd or list)", errUsage, verb)
	}
	if len(names) != 1 {
		return fmt.Errorf("%w: user %s takes one NAME, got %d", errUsage, verb, len(names))
	}
	name := names[0]
	if err := store.ValidUser(name); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}

	switch verb {
	case "add":
		// Refuse a known user before asking for a password.
		if f, err := openIfExists(path); err != nil {
			return fmt.Errorf("user add: %w", err)
		} else if f != nil && f.Lookup(name) {
			return fmt.Errorf("user add: %w: %q in %s", users.ErrExists, name, path)
		}
		pw, err := readPassword(stdin, stderr, name)
		if err != nil {
			return fmt.Errorf("user add: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("user add: %w", err)
		}
		if err := users.Add(path, name, pw, edit); err != nil {
			return fmt.Errorf("user add: %w", err)
		}
		fmt.Fprintf(stdout, "added %s to %s\n", name, path)
	case "del":
		if err := users.Delete(path, name); err != nil {
			return fmt.Errorf("user del: %w", err)
		}
		fmt.Fprintf(stdout, "deleted %s from %s (the mailboxes stay in the store)\n", name, path)
	case "passwd":
		// Refuse an unknown user before asking for a password.
		if f, err := openIfExists(path); err != nil {
			return fmt.Errorf("user passwd: %w", err)
		} else if f == nil || !f.Lookup(name) {
			return fmt.Errorf("user passwd: %w: %q in %s", users.ErrNotFound, name, path)
		}
		pw, err := readPassword(stdin, stderr, name)
		if err != nil {
			return fmt.Errorf("user passwd: %w", err)
		}
		if err := users.SetPassword(path, name, pw, edit); err != nil {
			return fmt.Errorf("user passwd: %w", err)
		}
		fmt.Fprintf(stdout, "changed the password of %s in %s\n", name, path)
	}
	return nil
}

// parseInterleaved parses flags wherever they stand among the positional
// arguments, which it returns in order. After "--" everything is
// positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func listUsers(path string, stdout, stderr io.Writer) error {
	f, err := openIfExists(path)
	if err != nil {
		return fmt.Errorf("user list: %w", err)
	}
	if f == nil {
		fmt.Fprintf(stderr, "no passwd-file at %s yet: no users\n", path)
		return nil
	}
	for _, u := range f.Users() {
		fmt.Fprintln(stdout, u)
	}
	for _, p := range f.Problems() {
		if p.User != "" {
			fmt.Fprintf(stderr, "warning: %v\n  %s cannot log in until the line is fixed: twinbox user passwd %s\n", p, p.User, p.User)
		} else {
			fmt.Fprintf(stderr, "warning: %v\n  the line is ignored\n", p)
		}
	}
	return nil
}

// openIfExists reads the passwd-file at path, or returns nil if there is
// none.
func openIfExists(path string) (*users.File, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return users.Open(path, nil)
}

// maxPasswordLine bounds what is read of standard input for a password.
const maxPasswordLine = 1024

// readPassword reads a new password for user: from a terminal, typed twice
// without echo; otherwise the first line of stdin, without its line ending.
func readPassword(stdin io.Reader, stderr io.Writer, user string) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return promptPassword(int(f.Fd()), stderr, user)
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, maxPasswordLine)).ReadString('\n')
	switch {
	case err == io.EOF && line == "":
		return "", errors.New("no password on standard input (give it as the first line)")
	case err == io.EOF && len(line) == maxPasswordLine:
		return "", fmt.Errorf("the first line of standard input is longer than %d bytes", maxPasswordLine)
	case err != nil && err != io.EOF:
		return "", fmt.Errorf("read the password: %w", err)
	}
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	return line, users.CheckPassword(line)
}

func promptPassword(fd int, stderr io.Writer, user string) (string, error) {
	ask := func(prompt string) (string, error) {
		fmt.Fprint(stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		return string(b), nil
	}
	pw, err := ask(fmt.Sprintf("New password for %s: ", user))
	if err != nil {
		return "", err
	}
	if err := users.CheckPassword(pw); err != nil {
		return "", err
	}
	again, err := ask("Retype it: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", errors.New("the two passwords differ; nothing changed")
	}
	return pw, nil
}
