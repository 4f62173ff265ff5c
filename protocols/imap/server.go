// Package imap serves IMAP4rev1 (with the extensions docs/imap.md lists)
// over a Twinbox store. The protocol layer is the package's own: the wire
// parser (wire.go), the command dispatch and session states (conn.go) and
// the commands; go-imap's public imap types name flags and mailbox
// attributes, and its imapserver package lends three pure helpers (LIST
// pattern matching, body section extraction).
//
// Sessions read through protocols.Reader and change the store only through
// protocols.Writer; every OK to a write is sent after the Writer returned,
// that is after the change is durable as the node promises. Changes made by
// anyone (SMTP deliveries, other sessions, the replication log) reach the
// sessions that have a mailbox selected through Notify, which the node
// calls after each applied operation: IDLE is pushed, never polled.
//
// A node's role can change while clients are connected: SetReadOnly turns
// writes off and on at once for every session, and Kick sends every
// session BYE (a demoted node's clients reconnect to the new active) while
// the server keeps accepting.
//
// A Server is safe for concurrent use.
package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// Options configure a Server. Reader, Writer and Users are required.
type Options struct {
	Reader protocols.Reader
	Writer protocols.Writer
	Users  protocols.Users

	// TLSConfig enables STARTTLS (and is used by ServeTLS).
	TLSConfig *tls.Config
	// InsecureAuth allows plain-text login without TLS from any address.
	// Without it, plain-text login without TLS is allowed from loopback
	// only.
	InsecureAuth bool
	// ReadOnly serves a replica: SELECT acts as EXAMINE and every write
	// answers NO. ReadOnlyHint is added to those answers (where the
	// writable node is). They are the initial state: Server.SetReadOnly
	// changes it while serving.
	ReadOnly     bool
	ReadOnlyHint string
	// LocalDomains lets users log in as user@domain.
	LocalDomains []string
	// SpecialUse lists the folders created on a user's first login.
	// Nil means DefaultSpecialUse.
	SpecialUse map[string]imap.MailboxAttr
	// Observe, if set, is told each command's duration and outcome.
	Observe func(cmd string, d time.Duration, err error)

	Logger *slog.Logger
}

// DefaultSpecialUse are the folders a user gets on first login (RFC 6154).
var DefaultSpecialUse = map[string]imap.MailboxAttr{
	"Sent":    imap.MailboxAttrSent,
	"Drafts":  imap.MailboxAttrDrafts,
	"Trash":   imap.MailboxAttrTrash,
	"Junk":    imap.MailboxAttrJunk,
	"Archive": imap.MailboxAttrArchive,
}

// Server is an IMAP server over a store.
type Server struct {
	opts Options
	log  *slog.Logger
	hub  *hub
	// gone remembers recent expunges for QRESYNC.
	gone expunges
	// provisioned are users whose special-use folders were made since
	// the server started (LOGIN need not list their mailboxes again).
	provMu      sync.Mutex
	provisioned map[string]struct{}
	ro          atomic.Pointer[writeMode]
	// unavailable, when set, says why no session is served now.
	unavailable atomic.Pointer[string]

	mu        sync.Mutex
	sessions  map[*session]struct{}
	listeners map[net.Listener]struct{}
	closing   bool
	conns     sync.WaitGroup
}

// New returns a Server.
func New(opts *Options) (*Server, error) {
	if opts == nil || opts.Reader == nil || opts.Writer == nil || opts.Users == nil {
		return nil, errors.New("imap: Reader, Writer and Users are required")
	}
	s := &Server{opts: *opts, sessions: make(map[*session]struct{}), listeners: make(map[net.Listener]struct{})}
	if s.opts.SpecialUse == nil {
		s.opts.SpecialUse = DefaultSpecialUse
	}
	s.log = s.opts.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "imap")
	s.hub = newHub(s.opts.Reader)
	s.SetReadOnly(s.opts.ReadOnly, s.opts.ReadOnlyHint)
	return s, nil
}

// Serve accepts connections on ln until Shutdown. Connections that ln
// gives as *tls.Conn are implicit TLS (IMAPS).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay) // out of file descriptors, say: back off
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.conns.Done()
			s.serveConn(nc)
		}()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Sessions is the number of open connections.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// SetAvailable turns serving on or off: while not available (a node that
// does not know yet that its data is current), new connections get
// "* BYE [UNAVAILABLE] why" and are closed. Sessions already open are the
// node's to end (Kick).
func (s *Server) SetAvailable(ok bool, why string) {
	if ok {
		s.unavailable.Store(nil)
		return
	}
	s.unavailable.Store(&why)
}

// writeMode is the server's read-only mode at one moment.
type writeMode struct {
	on   bool
	hint string
}

// SetReadOnly turns the server's read-only mode on or off while it
// serves; hint says where the writable node is (see Options.ReadOnlyHint).
// Commands that start afterwards see the new mode at once. Mailboxes
// already selected keep what SELECT or EXAMINE gave them (a mailbox
// selected while read-only stays read-only until selected again), but no
// session writes while the server is read-only.
func (s *Server) SetReadOnly(readOnly bool, hint string) {
	s.ro.Store(&writeMode{on: readOnly, hint: hint})
}

// refuseWrites is the answer to a write while the server is read-only,
// or nil.
func (s *Server) refuseWrites() error {
	if ro := s.ro.Load(); ro.on {
		return readOnlyError(ro.hint)
	}
	return nil
}

func (s *Server) isReadOnly() bool { return s.ro.Load().on }

// Kick tells every session BYE with reason and closes it, as Shutdown
// does, but the listeners keep serving: clients that connect afterwards
// are served as usual (a demoted node's clients reconnect, and reach the
// new active through the service address). A command in progress is let
// finish first, within ctx; when ctx ends the remaining sessions get BYE
// at once and Kick returns ctx's error. reason may begin with a response
// code, such as "[UNAVAILABLE] this node is no longer the active;
// reconnect".
func (s *Server) Kick(ctx context.Context, reason string) error {
	return s.byeAll(ctx, reason)
}

// Shutdown stops accepting, tells every session BYE and closes them.
// Commands in progress finish first, within ctx: a write a session has
// begun is acknowledged or not, never cut in half (the store's operations
// are atomic either way).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	err := s.byeAll(ctx, "Server shutting down")
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// byeAll tells every open session BYE with text and closes it, each once
// its command in progress has ended or ctx has. It returns ctx's error if
// some command had to be cut.
func (s *Server) byeAll(ctx context.Context, text string) error {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	var (
		wg  sync.WaitGroup
		cut atomic.Int64
	)
	for _, sess := range sessions {
		wg.Go(func() {
			if !sess.bye(ctx, text) {
				cut.Add(1)
			}
		})
	}
	wg.Wait()
	if n := cut.Load(); n > 0 {
		return fmt.Errorf("imap: %d sessions closed in a command: %w", n, ctx.Err())
	}
	return nil
}

// Notify tells the server that op was applied: sessions that have an
// affected mailbox selected get their updates (IDLE pushes them at once).
// The node calls it after every applied operation, whoever made it; a
// change this server's session made carries that session's origin.
func (s *Server) Notify(c protocols.Change) {
	op, res := c.Op, c.Result
	var source *session
	var own []uint32
	if o, ok := c.Origin.(*origin); ok {
		source, own = o.session, o.uids
	}
	s.hub.kw.note(op)
	if du, ok := op.(*store.DeleteUser); ok {
		s.forgetProvisioned(du.User)
		s.hub.changedUser(du.User)
		return
	}
	for _, ref := range protocols.Affected(op) {
		if name, err := store.CanonicalMailbox(ref.Mailbox); err == nil {
			ref.Mailbox = name
		}
		c := changeOf(op, res, ref)
		if len(c.expunged) > 0 {
			if info, err := s.opts.Reader.Mailbox(ref.User, ref.Mailbox); err == nil {
				s.gone.record(ref, info.UIDValidity, info.HighestModSeq, c.expunged)
			}
		}
		s.hub.changed(ref, c, source, own)
	}
}

// nonNil makes "none" an empty list, which a change tells from "unknown".
func nonNil(uids []uint32) []uint32 {
	if uids == nil {
		return []uint32{}
	}
	return uids
}

// changeOf is what op, applied with result res (nil: unknown), can have
// done to ref, one of the mailboxes it affects.
func changeOf(op store.Op, res *store.Result, ref protocols.MailboxRef) change {
	switch o := op.(type) {
	case *store.Deliver, *store.Copy:
		return change{added: true}
	case *store.Move:
		from, ferr := store.CanonicalMailbox(o.From)
		to, terr := store.CanonicalMailbox(o.To)
		if ferr != nil || terr != nil || from == to {
			return anyChange
		}
		if ref.Mailbox == to {
			return change{added: true}
		}
		if res != nil {
			return change{expunged: nonNil(res.Expunged)}
		}
	case *store.Expunge:
		if res != nil {
			return change{expunged: nonNil(res.Expunged)}
		}
	case *store.StoreFlags:
		if len(o.UIDs) > 0 {
			return change{flags: o.UIDs}
		}
	}
	return anyChange
}

// origin is a session's write origin (protocols.Origin), so that Notify
// does not echo a STORE's flag changes back to the session that made them.
type origin struct {
	session *session
	uids    []uint32
}

// isProvisioned reports whether user was provisioned since start.
func (s *Server) isProvisioned(user string) bool {
	s.provMu.Lock()
	defer s.provMu.Unlock()
	_, ok := s.provisioned[user]
	return ok
}

// setProvisioned remembers that user's folders exist (bounded: a full
// set is emptied, which costs each user one more listing).
func (s *Server) setProvisioned(user string) {
	s.provMu.Lock()
	defer s.provMu.Unlock()
	if s.provisioned == nil || len(s.provisioned) >= 100000 {
		s.provisioned = make(map[string]struct{})
	}
	s.provisioned[user] = struct{}{}
}

func (s *Server) forgetProvisioned(user string) {
	s.provMu.Lock()
	defer s.provMu.Unlock()
	delete(s.provisioned, user)
}

func (s *Server) dropSession(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}
