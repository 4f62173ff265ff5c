package imap

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// Timeouts of a connection.
const (
	// preAuthTimeout is how long a client that has not logged in may take
	// to send a command.
	preAuthTimeout = time.Minute
	// idleTimeout is how long a logged-in client may be silent (RFC 3501
	// 5.4 asks for 30 minutes at least).
	idleTimeout = 31 * time.Minute
	// commandTimeout bounds reading the rest of a command once it began
	// (its literals).
	commandTimeout = 5 * time.Minute
	// writeTimeout bounds every write to the client: one that takes in no
	// bytes for this long is cut, so a dead client never holds a session
	// (or Shutdown) waiting.
	writeTimeout = time.Minute
)

// Session states (RFC 3501 section 3).
type connState int

const (
	stateNotAuth connState = iota
	stateAuth
	stateSelected
	stateLogout
)

// session is one IMAP connection.
type session struct {
	srv    *Server
	nc     net.Conn
	remote string
	tls    bool
	p      parser
	w      respWriter
	state  connState

	// ctx ends when the connection does.
	ctx    context.Context
	cancel context.CancelFunc

	// busy is held while a command runs and while updates are written
	// during IDLE, so that BYE waits for them.
	busy   sync.Mutex
	closed atomic.Bool

	user string
	// sel is the selected mailbox; set and read in the connection's
	// goroutine only.
	sel *selected
	// rw is set by the hub under the view's lock: the session has its
	// mailbox selected read-write (it may be given \Recent).
	rw bool

	// pmu guards pending, the updates the hub queued for the selected
	// mailbox.
	pmu     sync.Mutex
	pending []update
	// wake is signalled when updates were queued (IDLE).
	wake chan struct{}

	// condstore: CONDSTORE is enabled (RFC 7162 3.1): FETCH responses
	// carry MODSEQ, SELECT tells HIGHESTMODSEQ.
	condstore bool
	// qresync: QRESYNC is enabled (RFC 7162 3.2): expunges are told as
	// VANISHED.
	qresync bool
	// searchModSeq: the SEARCH being parsed has a MODSEQ key.
	searchModSeq bool
	// curTag is the running command's tag (ESEARCH quotes it).
	curTag string
	// done is the tagged OK's response code and text; commands set it.
	doneCode, doneText string
}

// selected is the state of the Selected state.
type selected struct {
	name     string
	view     *view
	readOnly bool
	// uids is the mailbox as the client knows it: uids[n-1] has sequence
	// number n.
	uids     []uint32
	recent   map[uint32]struct{}
	keywords []string
	// shown is, per UID, the mod-sequence of the flags the client was
	// last told: an update read before a newer FETCH but queued after it
	// is not sent (it would take the flags back).
	shown map[uint32]uint64
	// lastKnown is the highest UID the client can know of: UIDNEXT-1 at
	// SELECT, then every UID it was told EXISTS for.
	lastKnown   uint32
	uidValidity uint32
}

// update is a change the hub queued for a session.
type update struct {
	kind   updateKind
	uids   []uint32 // updExists: new; updExpunge: gone
	recent bool     // updExists: the new messages are recent here
	uid    uint32   // updFlags
	flags  []string // updFlags: the flags; updKeywords: every keyword
	modseq uint64   // updFlags
}

type updateKind int

const (
	updExists updateKind = iota
	updExpunge
	updFlags
	updKeywords
)

// queue adds an update; the hub calls it under the view's lock.
func (s *session) queue(u update) {
	s.pmu.Lock()
	s.pending = append(s.pending, u)
	s.pmu.Unlock()
}

// deadlineConn gives every write to the client writeTimeout to make
// progress.
type deadlineConn struct{ net.Conn }

func (c deadlineConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.Conn.Write(b)
}

func (s *Server) serveConn(nc net.Conn) {
	sess := &session{srv: s, nc: nc, remote: nc.RemoteAddr().String(), wake: make(chan struct{}, 1)}
	sess.ctx, sess.cancel = context.WithCancel(context.Background())
	defer sess.cancel()
	if _, ok := nc.(*tls.Conn); ok {
		sess.tls = true
	}
	sess.setConn(nc)
	defer nc.Close()

	if why := s.unavailable.Load(); why != nil {
		sess.w.raw("* BYE [UNAVAILABLE] This node does not serve mail yet: " + *why).crlf()
		sess.w.bw.Flush()
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		sess.w.raw("* BYE Server shutting down").crlf()
		sess.w.bw.Flush()
		return
	}
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	defer func() {
		sess.unselect()
		s.dropSession(sess)
	}()

	sess.busy.Lock()
	sess.w.raw("* OK [CAPABILITY ").raw(strings.Join(sess.caps(), " ")).raw("] Twinbox ready").crlf()
	err := sess.flush()
	sess.busy.Unlock()
	if err != nil {
		return
	}
	for sess.state != stateLogout && !sess.closed.Load() {
		if !sess.command() {
			return
		}
	}
}

// setConn (re)makes the reader and writer over nc (after STARTTLS).
func (s *session) setConn(nc net.Conn) {
	s.nc = nc
	s.p = parser{br: bufio.NewReaderSize(nc, 16<<10), accept: s.acceptLiteral}
	s.w = respWriter{bw: bufio.NewWriterSize(deadlineConn{nc}, 16<<10)}
}

func (s *session) flush() error {
	if s.w.err == nil {
		s.w.err = s.w.bw.Flush()
	}
	return s.w.err
}

// acceptLiteral is the literal policy: a literal above limit is refused
// (NO [TOOBIG] for a synchronizing one, which the client then does not
// send; the session is closed for a non-synchronizing one, which is
// already on its way); a synchronizing literal is invited with "+".
func (s *session) acceptLiteral(size int64, nonSync bool, limit int64) error {
	if size > limit {
		if nonSync {
			return errLiteralTooBig
		}
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig,
			Text: fmt.Sprintf("Literal of %d bytes is larger than the %d allowed here", size, limit)}
	}
	s.nc.SetReadDeadline(time.Now().Add(commandTimeout))
	if nonSync {
		return nil
	}
	s.w.raw("+ Ready for literal data").crlf()
	return s.flush()
}

// caps are the capabilities in the current state.
func (s *session) caps() []string {
	caps := []string{"IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT",
		"UIDPLUS", "MOVE", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE",
		"ESEARCH", "STATUS=SIZE", "CONDSTORE", "QRESYNC", "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "APPENDLIMIT=" + strconv.FormatUint(uint64(s.appendLimit()), 10)}
	if s.state == stateNotAuth {
		if s.srv.opts.TLSConfig != nil && !s.tls {
			caps = append(caps, "STARTTLS")
		}
		if s.canPlain() {
			caps = append(caps, "AUTH=PLAIN")
		} else {
			caps = append(caps, "LOGINDISABLED")
		}
	}
	return caps
}

// appendLimit is the largest message APPEND takes: the store's limit.
func (s *session) appendLimit() uint32 {
	n := s.srv.opts.Reader.MaxMessageSize()
	if n > 1<<32-1 || n <= 0 {
		return 1<<32 - 1
	}
	return uint32(n)
}

// canPlain: plain-text passwords need TLS, except from loopback or when
// InsecureAuth allows it.
func (s *session) canPlain() bool {
	return s.tls || s.srv.opts.InsecureAuth || isLoopback(s.remote)
}

// command reads and runs one command. It returns false when the session
// must end.
func (s *session) command() bool {
	timeout := idleTimeout
	if s.state == stateNotAuth {
		timeout = preAuthTimeout
	}
	s.nc.SetReadDeadline(time.Now().Add(timeout))
	p := &s.p
	p.litLimit = maxLiteral
	if err := p.readLine(); err != nil {
		var be *badError
		if !errors.As(err, &be) {
			var fe *fatalError
			if errors.As(err, &fe) {
				s.busy.Lock()
				defer s.busy.Unlock()
				s.w.raw("* BYE ").raw(fe.bye).crlf()
				s.flush()
			}
			return false
		}
		// The line's start was kept: answer with its tag if it has one.
		s.busy.Lock()
		defer s.busy.Unlock()
		tag, terr := p.tag()
		if terr != nil {
			tag = "*"
		}
		p.pos = len(p.line)
		s.w.raw(tag).raw(" BAD [TOOBIG] ").raw(be.text).crlf()
		return s.flush() == nil
	}
	if len(p.line) == 0 {
		return true // an empty line is no command
	}
	s.nc.SetReadDeadline(time.Now().Add(commandTimeout))
	tag, err := p.tag()
	name := ""
	if err == nil {
		if err = p.sp(); err == nil {
			name, err = p.atom()
			name = strings.ToUpper(name)
		}
		if err == nil && name == "UID" {
			var sub string
			if err = p.sp(); err == nil {
				sub, err = p.atom()
				name = "UID " + strings.ToUpper(sub)
			}
		}
	}
	if name == "IDLE" && err == nil {
		return s.idle(tag)
	}
	s.busy.Lock()
	defer s.busy.Unlock()
	if s.closed.Load() {
		return false
	}
	if err != nil {
		if tag == "" {
			tag = "*"
		}
		s.p.pos = len(s.p.line) // the line is not a command: skip it whole
		return s.finish(tag, name, err)
	}
	start := time.Now()
	s.curTag = tag
	s.doneCode, s.doneText = "", ""
	err = s.dispatch(tag, name)
	if obs := s.srv.opts.Observe; obs != nil && name != "" {
		obs(name, time.Since(start), err)
	}
	return s.finish(tag, name, err)
}

// finish writes a command's tagged response for err and flushes; it
// returns false when the session must end.
func (s *session) finish(tag, name string, err error) bool {
	var (
		fe *fatalError
		be *badError
		ie *imap.Error
	)
	switch {
	case errors.Is(err, errAnswered):
	case err == nil:
		if s.state != stateLogout { // nothing after BYE but the OK
			s.poll(allowsExpunge(name))
		}
		s.w.raw(tag).raw(" OK ")
		if s.doneCode != "" {
			s.w.raw("[").raw(s.doneCode).raw("] ")
		}
		text := s.doneText
		if text == "" {
			text = name + " completed"
		}
		s.w.raw(text).crlf()
	case errors.As(err, &fe):
		if fe.resp != "" {
			s.w.raw(tag).raw(" ").raw(fe.resp).crlf()
		}
		s.w.raw("* BYE ").raw(fe.bye).crlf()
		s.flush()
		return false
	case errors.As(err, &be):
		if serr := s.p.skip(); serr != nil {
			return s.finish(tag, name, serr)
		}
		s.w.raw(tag).raw(" BAD ").raw(be.text).crlf()
	case errors.As(err, &ie):
		if serr := s.p.skip(); serr != nil {
			return s.finish(tag, name, serr)
		}
		if ie.Type == imap.StatusResponseTypeBye {
			s.w.raw("* BYE ").raw(ie.Text).crlf()
			s.flush()
			return false
		}
		if ie.Type == imap.StatusResponseTypeNo {
			s.poll(allowsExpunge(name))
		}
		s.w.raw(tag).raw(" ").raw(string(ie.Type)).raw(" ")
		if ie.Code != "" {
			s.w.raw("[").raw(string(ie.Code)).raw("] ")
		}
		s.w.raw(ie.Text).crlf()
	case isConnError(err):
		return false
	default:
		// Not the client's doing: say so without the details, which go
		// to the log.
		s.srv.log.Error("command failed", "command", name, "user", s.user, "err", err)
		if serr := s.p.skip(); serr != nil {
			return s.finish(tag, name, serr)
		}
		s.w.raw(tag).raw(" NO [SERVERBUG] Internal error; try again later").crlf()
	}
	return s.flush() == nil
}

// isConnError tells a broken connection from a command's failure.
func isConnError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.As(err, &ne)
}

// allowsExpunge: EXPUNGE may not be sent while answering FETCH, STORE or
// SEARCH (RFC 3501 7.4.1); the UID forms allow it.
func allowsExpunge(name string) bool {
	switch name {
	case "FETCH", "STORE", "SEARCH", "SORT", "THREAD":
		return false
	}
	return true
}

// dispatch runs a command whose name was read.
func (s *session) dispatch(tag, name string) error {
	p := &s.p
	// Commands valid in any state.
	switch name {
	case "CAPABILITY":
		if err := p.end(); err != nil {
			return err
		}
		s.w.raw("* CAPABILITY ").raw(strings.Join(s.caps(), " ")).crlf()
		return nil
	case "NOOP":
		return p.end()
	case "LOGOUT":
		if err := p.end(); err != nil {
			return err
		}
		s.w.raw("* BYE Logging out").crlf()
		s.state = stateLogout
		return nil
	case "ID":
		return s.cmdID()
	}
	switch s.state {
	case stateNotAuth:
		switch name {
		case "LOGIN":
			return s.cmdLogin()
		case "AUTHENTICATE":
			return s.cmdAuthenticate()
		case "STARTTLS":
			return s.cmdStartTLS(tag)
		}
	case stateAuth, stateSelected:
		if h, ok := authCommands[name]; ok {
			return h(s)
		}
		if h, ok := selectedCommands[name]; ok {
			if s.state != stateSelected {
				return bad("%s needs a selected mailbox", name)
			}
			return h(s, strings.HasPrefix(name, "UID "))
		}
	}
	if isKnown(name) {
		return bad("%s is not valid in this state", name)
	}
	return bad("Unknown command")
}

// authCommands are the commands of the Authenticated state (also valid
// when a mailbox is selected).
var authCommands map[string]func(*session) error

// selectedCommands are the commands of the Selected state; uid says the
// UID form was used.
var selectedCommands map[string]func(s *session, uid bool) error

func init() {
	authCommands = map[string]func(*session) error{
		"SELECT":      func(s *session) error { return s.cmdSelect(false) },
		"EXAMINE":     func(s *session) error { return s.cmdSelect(true) },
		"CREATE":      (*session).cmdCreate,
		"DELETE":      (*session).cmdDelete,
		"RENAME":      (*session).cmdRename,
		"SUBSCRIBE":   func(s *session) error { return s.cmdSubscribe(true) },
		"UNSUBSCRIBE": func(s *session) error { return s.cmdSubscribe(false) },
		"LIST":        func(s *session) error { return s.cmdList(false) },
		"LSUB":        func(s *session) error { return s.cmdList(true) },
		"NAMESPACE":   (*session).cmdNamespace,
		"STATUS":      (*session).cmdStatus,
		"APPEND":      (*session).cmdAppend,
		"ENABLE":      (*session).cmdEnable,
	}
	selectedCommands = map[string]func(*session, bool) error{
		"CHECK":       func(s *session, _ bool) error { return s.p.end() },
		"CLOSE":       func(s *session, _ bool) error { return s.cmdClose(true) },
		"UNSELECT":    func(s *session, _ bool) error { return s.cmdClose(false) },
		"EXPUNGE":     (*session).cmdExpunge,
		"UID EXPUNGE": (*session).cmdExpunge,
		"SEARCH":      (*session).cmdSearch,
		"UID SEARCH":  (*session).cmdSearch,
		"SORT":        (*session).cmdSort,
		"UID SORT":    (*session).cmdSort,
		"THREAD":      (*session).cmdThread,
		"UID THREAD":  (*session).cmdThread,
		"FETCH":       (*session).cmdFetch,
		"UID FETCH":   (*session).cmdFetch,
		"STORE":       (*session).cmdStore,
		"UID STORE":   (*session).cmdStore,
		"COPY":        func(s *session, uid bool) error { return s.cmdCopy(uid, false) },
		"UID COPY":    func(s *session, uid bool) error { return s.cmdCopy(uid, false) },
		"MOVE":        func(s *session, uid bool) error { return s.cmdCopy(uid, true) },
		"UID MOVE":    func(s *session, uid bool) error { return s.cmdCopy(uid, true) },
	}
}

func isKnown(name string) bool {
	switch name {
	case "LOGIN", "AUTHENTICATE", "STARTTLS", "UID", "IDLE":
		return true
	}
	_, a := authCommands[name]
	_, b := selectedCommands[name]
	return a || b
}

// cmdID answers ID (RFC 2971) with the server's name; the client's
// fields are read and not kept.
func (s *session) cmdID() error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	if !p.maybeNIL() {
		n := 0
		err := p.list(func() error {
			n++
			if n > 60 {
				return bad("Too many ID fields")
			}
			if _, err := p.nstring(); err != nil {
				return err
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n%2 != 0 {
			return bad("ID takes field and value pairs")
		}
	}
	if err := p.end(); err != nil {
		return err
	}
	s.w.raw(`* ID ("name" "Twinbox")`).crlf()
	return nil
}

// cmdEnable takes ENABLE (RFC 5161): CONDSTORE is the one extension
// that can be enabled; others are ignored, as the RFC asks.
func (s *session) cmdEnable() error {
	p := &s.p
	var enabled []string
	if p.atEnd() {
		return bad("ENABLE needs a capability")
	}
	for !p.atEnd() {
		if err := p.sp(); err != nil {
			return err
		}
		c, err := p.atom()
		if err != nil {
			return err
		}
		switch {
		case strings.EqualFold(c, "CONDSTORE") && !slices.Contains(enabled, "CONDSTORE"):
			s.enableCondStore()
			enabled = append(enabled, "CONDSTORE")
		case strings.EqualFold(c, "QRESYNC") && !slices.Contains(enabled, "QRESYNC"):
			s.enableCondStore() // QRESYNC implies CONDSTORE
			s.qresync = true
			enabled = append(enabled, "QRESYNC")
		}
	}
	s.w.raw("* ENABLED")
	for _, c := range enabled {
		s.w.raw(" ").raw(c)
	}
	s.w.crlf()
	return nil
}

// enableCondStore turns CONDSTORE on; a mailbox already selected gets
// its HIGHESTMODSEQ told (RFC 7162 3.1).
func (s *session) enableCondStore() {
	if s.condstore {
		return
	}
	s.condstore = true
	if s.sel != nil {
		if info, err := s.srv.opts.Reader.Mailbox(s.user, s.sel.name); err == nil {
			s.w.raw("* OK [HIGHESTMODSEQ ").num64(info.HighestModSeq).raw("] Highest").crlf()
		}
	}
}

func (s *session) cmdLogin() error {
	p := &s.p
	var user, pass string
	err := p.sp()
	if err == nil {
		user, err = p.astring()
	}
	if err == nil {
		err = p.sp()
	}
	if err == nil {
		pass, err = p.astring()
	}
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return err
	}
	return s.login(user, pass)
}

// login checks a password and enters the Authenticated state.
func (s *session) login(login, password string) error {
	if !s.canPlain() {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired,
			Text: "Use STARTTLS or the implicit-TLS port before logging in"}
	}
	user := s.localUser(login)
	if err := s.srv.opts.Users.Check(s.ctx, user, password, s.remote); err != nil {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed,
			Text: "Authentication failed"}
	}
	if err := s.provision(user); err != nil {
		s.srv.log.Error("provision user", "user", user, "err", err)
		return mapError(err)
	}
	s.user = user
	s.state = stateAuth
	s.doneCode = "CAPABILITY " + strings.Join(s.caps(), " ")
	s.doneText = "Logged in"
	return nil
}

// cmdAuthenticate takes AUTHENTICATE PLAIN (RFC 4616), with an initial
// response (SASL-IR) or after a "+".
func (s *session) cmdAuthenticate() error {
	p := &s.p
	if err := p.sp(); err != nil {
		return err
	}
	mech, err := p.atom()
	if err != nil {
		return err
	}
	if !strings.EqualFold(mech, "PLAIN") {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Only PLAIN is offered"}
	}
	var resp string
	if p.maybe(' ') {
		if resp, err = p.atom(); err != nil {
			return err
		}
		if err := p.end(); err != nil {
			return err
		}
		if resp == "=" {
			resp = ""
		}
	} else {
		if err := p.end(); err != nil {
			return err
		}
		s.w.raw("+ ").crlf()
		if err := s.flush(); err != nil {
			return err
		}
		if err := p.readLine(); err != nil {
			return err
		}
		resp = string(p.line)
		p.pos = len(p.line)
	}
	if resp == "*" {
		return bad("Authentication cancelled")
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		return bad("Invalid base64")
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 {
		return bad("Invalid PLAIN response")
	}
	if parts[0] != "" && parts[0] != parts[1] {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthorizationFailed,
			Text: "Logging in as another user is not allowed"}
	}
	return s.login(parts[1], parts[2])
}

// cmdStartTLS answers OK and starts TLS. Bytes the client sent after the
// command, before the handshake, would be read as if protected; they end
// the session (CVE-2011-0411's lesson).
func (s *session) cmdStartTLS(tag string) error {
	if err := s.p.end(); err != nil {
		return err
	}
	if s.srv.opts.TLSConfig == nil || s.tls {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "STARTTLS is not available"}
	}
	if s.p.br.Buffered() > 0 {
		return &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Commands sent after STARTTLS before the handshake"}
	}
	s.w.raw(tag).raw(" OK Begin TLS negotiation now").crlf()
	if err := s.flush(); err != nil {
		return err
	}
	tc := tls.Server(s.nc, s.srv.opts.TLSConfig)
	s.nc.SetDeadline(time.Now().Add(commandTimeout))
	if err := tc.Handshake(); err != nil {
		return &imap.Error{Type: imap.StatusResponseTypeBye, Text: "TLS handshake failed"}
	}
	s.nc.SetDeadline(time.Time{})
	s.setConn(tc)
	s.tls = true
	return errAnswered
}

// errAnswered: the command wrote its tagged response itself.
var errAnswered = errors.New("imap: answered")

// idle runs IDLE (RFC 2177): updates are written as they come until the
// client says DONE.
func (s *session) idle(tag string) bool {
	s.busy.Lock()
	if err := s.p.end(); err != nil {
		ok := s.finish(tag, "IDLE", err)
		s.busy.Unlock()
		return ok
	}
	if s.state != stateAuth && s.state != stateSelected {
		ok := s.finish(tag, "IDLE", bad("IDLE needs a login"))
		s.busy.Unlock()
		return ok
	}
	s.w.raw("+ idling").crlf()
	s.poll(true)
	err := s.flush()
	s.busy.Unlock()
	if err != nil {
		return false
	}
	s.nc.SetReadDeadline(time.Now().Add(idleTimeout))
	done := make(chan error, 1)
	go func() { done <- s.p.readLine() }()
	for {
		select {
		case <-s.wake:
			s.busy.Lock()
			s.poll(true)
			err := s.flush()
			s.busy.Unlock()
			if err != nil {
				<-done
				return false
			}
		case err := <-done:
			s.busy.Lock()
			defer s.busy.Unlock()
			if err != nil {
				var be *badError
				if errors.As(err, &be) {
					return s.finish(tag, "IDLE", be)
				}
				return false
			}
			if !strings.EqualFold(string(s.p.line), "DONE") {
				s.p.pos = len(s.p.line)
				return s.finish(tag, "IDLE", bad("Expected DONE"))
			}
			s.p.pos = len(s.p.line)
			return s.finish(tag, "IDLE", nil)
		}
	}
}

// bye tells the client BYE with text and closes the connection, once the
// command in progress (if any) has ended or ctx has. It reports whether
// no command had to be cut. A command that is cut is cut by closing the
// connection under it: its writes fail at once.
func (s *session) bye(ctx context.Context, text string) bool {
	done := make(chan struct{})
	go func() {
		s.busy.Lock()
		close(done)
	}()
	select {
	case <-done:
		if !s.closed.Swap(true) {
			s.w.raw("* BYE ").raw(text).crlf()
			s.flush()
		}
		s.nc.Close()
		s.cancel()
		s.busy.Unlock()
		return true
	case <-ctx.Done():
		s.closed.Store(true)
		s.nc.Close()
		s.cancel()
		go func() { <-done; s.busy.Unlock() }()
		return false
	}
}

// poll writes the updates queued for the selected mailbox: EXPUNGE
// (unless the command forbids it; those stay queued, and so do all
// updates after them), EXISTS, RECENT, FLAGS, FETCH FLAGS.
func (s *session) poll(allowExpunge bool) {
	sel := s.sel
	if sel == nil {
		return
	}
	s.pmu.Lock()
	pending := s.pending
	s.pending = nil
	s.pmu.Unlock()
	if len(pending) == 0 {
		return
	}
	before := len(sel.uids)
	grew, recent := false, false
	for i, u := range pending {
		switch u.kind {
		case updExpunge:
			if !allowExpunge {
				// Keep this and everything after it for later, in order.
				s.pmu.Lock()
				s.pending = append(slices.Clone(pending[i:]), s.pending...)
				s.pmu.Unlock()
				s.writeExists(sel, before, grew, recent)
				return
			}
			s.writeExists(sel, before, grew, recent)
			grew, recent = false, false
			// Highest first: each number is still the one the client
			// knows when it reads it. With QRESYNC, one VANISHED.
			var vanished []uint32
			for _, uid := range slices.Backward(sortedCopy(u.uids)) {
				if k, ok := slices.BinarySearch(sel.uids, uid); ok {
					sel.uids = slices.Delete(sel.uids, k, k+1)
					delete(sel.recent, uid)
					delete(sel.shown, uid)
					if s.qresync {
						vanished = append(vanished, uid)
					} else {
						s.w.raw("* ").num(uint32(k + 1)).raw(" EXPUNGE").crlf()
					}
				}
			}
			if len(vanished) > 0 {
				slices.Reverse(vanished)
				s.w.raw("* VANISHED ").raw(uidSetString(vanished)).crlf()
			}
			before = len(sel.uids)
		case updExists:
			sel.uids = append(sel.uids, u.uids...)
			if n := len(u.uids); n > 0 {
				sel.lastKnown = max(sel.lastKnown, u.uids[n-1])
			}
			grew = true
			if u.recent && !sel.readOnly {
				for _, uid := range u.uids {
					sel.recent[uid] = struct{}{}
				}
				recent = true
			}
		case updKeywords:
			if len(u.flags) > len(sel.keywords) {
				sel.keywords = u.flags
				s.writeFlags(sel)
			}
		case updFlags:
			// EXISTS before a FETCH of a message it announces.
			s.writeExists(sel, before, grew, recent)
			before, grew, recent = len(sel.uids), false, false
			if u.modseq != 0 && u.modseq <= sel.shown[u.uid] {
				continue
			}
			if k, ok := slices.BinarySearch(sel.uids, u.uid); ok {
				sel.shown[u.uid] = u.modseq
				s.w.raw("* ").num(uint32(k + 1)).raw(" FETCH (UID ").num(u.uid).raw(" FLAGS ")
				s.writeFlagList(u.flags, u.uid)
				if s.condstore {
					s.w.raw(" MODSEQ (").num64(u.modseq).raw(")")
				}
				s.w.raw(")").crlf()
			}
		}
	}
	s.writeExists(sel, before, grew, recent)
}

// ensureKeywords announces (FLAGS) keywords of flags the client was not
// told of yet: a message read from the store can carry a keyword whose
// announcement is still queued.
func (s *session) ensureKeywords(flags []string) {
	sel := s.sel
	grew := false
	for _, f := range flags {
		if isKeyword(f) && !slices.Contains(sel.keywords, f) {
			sel.keywords = append(slices.Clone(sel.keywords), f)
			grew = true
		}
	}
	if grew {
		slices.Sort(sel.keywords)
		s.writeFlags(sel)
	}
}

// dropStaleFlags records that the client was just told uid's flags as of
// modseq, and forgets queued updates that are not newer: sent after, they
// would take the flags back.
func (s *session) dropStaleFlags(uid uint32, modseq uint64) {
	s.sel.shown[uid] = max(s.sel.shown[uid], modseq)
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if len(s.pending) == 0 {
		return
	}
	s.pending = slices.DeleteFunc(s.pending, func(u update) bool {
		return u.kind == updFlags && u.uid == uid && u.modseq <= modseq
	})
}

func (s *session) writeExists(sel *selected, before int, grew, recent bool) {
	if !grew || len(sel.uids) == before {
		return
	}
	s.w.raw("* ").num(uint32(len(sel.uids))).raw(" EXISTS").crlf()
	if recent {
		s.w.raw("* ").num(uint32(len(sel.recent))).raw(" RECENT").crlf()
	}
}

// writeFlags writes FLAGS and PERMANENTFLAGS of the selected mailbox.
func (s *session) writeFlags(sel *selected) {
	s.w.raw(`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft`)
	for _, k := range sel.keywords {
		s.w.raw(" ").raw(k)
	}
	s.w.raw(")").crlf()
	if sel.readOnly {
		s.w.raw("* OK [PERMANENTFLAGS ()] Read-only mailbox").crlf()
		return
	}
	s.w.raw(`* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft`)
	for _, k := range sel.keywords {
		s.w.raw(" ").raw(k)
	}
	s.w.raw(` \*)] Flags permitted`).crlf()
}

// writeFlagList writes a message's flags, with \Recent if it is recent
// in this session.
func (s *session) writeFlagList(flags []string, uid uint32) {
	s.w.raw("(")
	for i, f := range flags {
		if i > 0 {
			s.w.raw(" ")
		}
		s.w.raw(f)
	}
	if _, ok := s.sel.recent[uid]; ok {
		if len(flags) > 0 {
			s.w.raw(" ")
		}
		s.w.raw(`\Recent`)
	}
	s.w.raw(")")
}

// write commits op; its origin tells Notify which session made it.
func (s *session) write(op store.Op, own []uint32) (store.Result, error) {
	if err := s.srv.refuseWrites(); err != nil {
		return store.Result{}, err
	}
	from := &origin{session: s, uids: own}
	res, err := s.srv.opts.Writer.Write(s.ctx, op, from)
	if errors.Is(err, protocols.ErrReadOnly) {
		// The node turned read-only before this server was told.
		return res, readOnlyError(s.srv.ro.Load().hint)
	}
	if err == nil {
		err = res.Err
	}
	return res, err
}

// localUser maps user@localdomain to user.
func (s *session) localUser(login string) string {
	at := strings.LastIndexByte(login, '@')
	if at < 0 {
		return login
	}
	for _, d := range s.srv.opts.LocalDomains {
		if strings.EqualFold(login[at+1:], d) {
			return login[:at]
		}
	}
	return login
}

// provision creates the user in the store and the special-use folders on
// first login. A replica has them from the log.
func (s *session) provision(user string) error {
	if s.srv.isReadOnly() || s.srv.isProvisioned(user) {
		return nil
	}
	ok, err := s.srv.opts.Reader.HasUser(user)
	if err != nil {
		return err
	}
	if !ok {
		_, err := s.write(&store.CreateUser{User: user, UIDValidity: uidValidityNow()}, nil)
		if err != nil && !errors.Is(err, store.ErrUserExists) {
			return err
		}
	}
	boxes, err := s.srv.opts.Reader.Mailboxes(user)
	if err != nil {
		return err
	}
	have := make(map[string]bool, len(boxes))
	for _, b := range boxes {
		have[b.Name] = true
	}
	for _, name := range sortedKeys(s.srv.opts.SpecialUse) {
		if have[name] {
			continue
		}
		op := &store.CreateMailbox{User: user, Name: name, UIDValidity: uidValidityNow(),
			SpecialUse: []string{string(s.srv.opts.SpecialUse[name])}, Subscribe: true}
		if _, err := s.write(op, nil); err != nil && !errors.Is(err, store.ErrMailboxExists) {
			return err
		}
	}
	s.srv.setProvisioned(user)
	return nil
}

// uidValidityNow proposes a UIDVALIDITY; the store raises it above the
// user's last one if needed, so it is unique per user even if clocks step.
func uidValidityNow() uint32 { return uint32(time.Now().Unix()) }

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func sortedCopy(uids []uint32) []uint32 {
	out := slices.Clone(uids)
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
