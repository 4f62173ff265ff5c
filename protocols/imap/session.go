package imap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/twinbox/twinbox/dedupe"
	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// session is one IMAP connection.
type session struct {
	srv    *Server
	conn   *imapserver.Conn
	remote string
	tls    bool

	// busy is held while a command runs (not while idling), so that
	// Shutdown's BYE waits for it.
	busy sync.Mutex

	user string
	// sel is the selected mailbox. It changes only in the connection's
	// goroutine, but go-imap runs Idle in a goroutine of its own that can
	// still be reading it when Close runs: selMu orders those two.
	selMu sync.Mutex
	sel   *selected
	// wake is signalled by the hub when updates were queued for the
	// selected mailbox (IDLE).
	wake chan struct{}
}

// selected is the state of the Selected state.
type selected struct {
	name     string
	view     *view
	tracker  *imapserver.SessionTracker
	readOnly bool
}

var (
	_ imapserver.Session            = (*session)(nil)
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

// begin marks a command as running; the returned func ends it and reports
// its duration.
func (s *session) begin(cmd string) func(*error) {
	s.busy.Lock()
	start := time.Now()
	return func(errp *error) {
		s.busy.Unlock()
		if obs := s.srv.opts.Observe; obs != nil {
			obs(cmd, time.Since(start), *errp)
		}
	}
}

// bye tells the client BYE with text and closes the connection, once the
// command in progress (if any) has ended or ctx has. It reports whether
// no command had to be cut.
func (s *session) bye(ctx context.Context, text string) bool {
	done := make(chan struct{})
	go func() {
		s.busy.Lock()
		close(done)
	}()
	select {
	case <-done:
		_ = s.conn.Bye(text)
		s.busy.Unlock()
		return true
	case <-ctx.Done():
		_ = s.conn.Bye(text)
		go func() { <-done; s.busy.Unlock() }()
		return false
	}
}

func (s *session) Close() error {
	s.selMu.Lock()
	sel := s.sel
	s.sel = nil
	s.selMu.Unlock()
	if sel != nil {
		s.srv.hub.close(sel.view, s, sel.tracker)
	}
	s.srv.dropSession(s)
	return nil
}

func (s *session) ctx() context.Context { return context.Background() }

// write commits op; its origin tells Notify which session made it.
func (s *session) write(op store.Op, own []uint32) (store.Result, error) {
	if err := s.srv.refuseWrites(); err != nil {
		return store.Result{}, err
	}
	var from protocols.Origin
	if s.sel != nil {
		from = &origin{tracker: s.sel.tracker, uids: own}
	}
	res, err := s.srv.opts.Writer.Write(s.ctx(), op, from)
	if errors.Is(err, protocols.ErrReadOnly) {
		// The node turned read-only before this server was told.
		return res, readOnlyError(s.srv.ro.Load().hint)
	}
	if err == nil {
		err = res.Err
	}
	return res, err
}

// Login checks the password. Plain-text passwords need TLS, except from
// loopback or when InsecureAuth allows it.
func (s *session) Login(username, password string) (err error) {
	defer s.begin("LOGIN")(&err)
	if !s.tls && !s.srv.opts.InsecureAuth && !isLoopback(s.remote) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired,
			Text: "Use STARTTLS or the implicit-TLS port before logging in"}
	}
	user := s.localUser(username)
	if err := s.srv.opts.Users.Check(s.ctx(), user, password, s.remote); err != nil {
		return imapserver.ErrAuthFailed
	}
	if err := s.provision(user); err != nil {
		s.srv.log.Error("provision user", "user", user, "err", err)
		return mapError(err)
	}
	s.user = user
	return nil
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
	if s.srv.isReadOnly() {
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
	return nil
}

// uidValidityNow proposes a UIDVALIDITY; the store raises it above the
// user's last one if needed, so it is unique per user even if clocks step.
func uidValidityNow() uint32 { return uint32(time.Now().Unix()) }

func (s *session) Select(mailbox string, options *imap.SelectOptions) (_ *imap.SelectData, err error) {
	defer s.begin("SELECT")(&err)
	if s.sel != nil {
		s.unselect()
	}
	name, err := store.CanonicalMailbox(mailbox)
	if err != nil {
		return nil, mapError(err)
	}
	v, st, info, err := s.srv.hub.open(protocols.MailboxRef{User: s.user, Mailbox: name}, s)
	if err != nil {
		return nil, mapError(err)
	}
	ro := s.srv.isReadOnly() || (options != nil && options.ReadOnly)
	s.selMu.Lock()
	s.sel = &selected{name: name, view: v, tracker: st, readOnly: ro}
	s.selMu.Unlock()
	data := &imap.SelectData{
		Flags:       []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft},
		NumMessages: info.Messages,
		UIDNext:     imap.UID(info.UIDNext),
		UIDValidity: info.UIDValidity,
	}
	if !ro {
		data.PermanentFlags = append(slices.Clone(data.Flags), imap.FlagWildcard)
	}
	if options != nil && options.CondStore {
		data.HighestModSeq = info.HighestModSeq
	}
	return data, nil
}

func (s *session) unselect() {
	s.selMu.Lock()
	sel := s.sel
	s.sel = nil
	s.selMu.Unlock()
	s.srv.hub.close(sel.view, s, sel.tracker)
}

func (s *session) Unselect() (err error) {
	defer s.begin("UNSELECT")(&err)
	if s.sel != nil {
		s.unselect()
	}
	return nil
}

func (s *session) Create(mailbox string, options *imap.CreateOptions) (err error) {
	defer s.begin("CREATE")(&err)
	name, err := store.CanonicalMailbox(strings.TrimSuffix(mailbox, string(store.Delimiter)))
	if err != nil {
		return mapError(err)
	}
	op := &store.CreateMailbox{User: s.user, Name: name, UIDValidity: uidValidityNow()}
	if options != nil {
		for _, a := range options.SpecialUse {
			op.SpecialUse = append(op.SpecialUse, string(a))
		}
	}
	_, err = s.write(op, nil)
	return mapError(err)
}

func (s *session) Delete(mailbox string) (err error) {
	defer s.begin("DELETE")(&err)
	name, err := store.CanonicalMailbox(mailbox)
	if err != nil {
		return mapError(err)
	}
	_, err = s.write(&store.DeleteMailbox{User: s.user, Name: name}, nil)
	return mapError(err)
}

func (s *session) Rename(mailbox, newName string, _ *imap.RenameOptions) (err error) {
	defer s.begin("RENAME")(&err)
	from, err := store.CanonicalMailbox(mailbox)
	if err != nil {
		return mapError(err)
	}
	to, err := store.CanonicalMailbox(newName)
	if err != nil {
		return mapError(err)
	}
	_, err = s.write(&store.RenameMailbox{User: s.user, From: from, To: to, UIDValidity: uidValidityNow()}, nil)
	return mapError(err)
}

func (s *session) Subscribe(mailbox string) (err error) {
	defer s.begin("SUBSCRIBE")(&err)
	return s.subscribe(mailbox, true)
}

func (s *session) Unsubscribe(mailbox string) (err error) {
	defer s.begin("UNSUBSCRIBE")(&err)
	return s.subscribe(mailbox, false)
}

func (s *session) subscribe(mailbox string, on bool) error {
	name, err := store.CanonicalMailbox(mailbox)
	if err != nil {
		return mapError(err)
	}
	_, err = s.write(&store.Subscribe{User: s.user, Name: name, Subscribed: on}, nil)
	return mapError(err)
}

func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{
		Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: store.Delimiter}},
	}, nil
}

func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) (err error) {
	defer s.begin("LIST")(&err)
	if options == nil {
		options = &imap.ListOptions{}
	}
	if len(patterns) == 1 && patterns[0] == "" {
		// The hierarchy delimiter and root (RFC 3501 6.3.8).
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: store.Delimiter})
	}
	boxes, err := s.srv.opts.Reader.Mailboxes(s.user)
	if err != nil {
		return mapError(err)
	}
	names := make(map[string]bool, len(boxes))
	for _, b := range boxes {
		names[b.Name] = true
	}
	// Levels above a mailbox that are not mailboxes themselves (a parent
	// deleted after its child was made) are listed as \Noselect when a
	// pattern matches them but none of their children, so that a client
	// walking the tree level by level with "%" still finds the children
	// (RFC 3501 6.3.4's example: "*" lists foo/bar alone, "%" lists foo).
	if !options.SelectSubscribed && !options.SelectSpecialUse {
		seen := map[string]bool{}
		for _, b := range boxes {
			for i := range b.Name {
				if b.Name[i] != store.Delimiter {
					continue
				}
				parent := b.Name[:i]
				if names[parent] || seen[parent] {
					continue
				}
				seen[parent] = true
				if !parentNeeded(parent, ref, patterns, boxes) {
					continue
				}
				if err := w.WriteList(&imap.ListData{Delim: store.Delimiter, Mailbox: parent,
					Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect, imap.MailboxAttrHasChildren}}); err != nil {
					return err
				}
			}
		}
	}
	for _, b := range boxes {
		if !matchAny(b.Name, ref, patterns) {
			continue
		}
		if options.SelectSubscribed && !b.Subscribed {
			continue
		}
		if options.SelectSpecialUse && len(b.SpecialUse) == 0 {
			continue
		}
		data := &imap.ListData{Delim: store.Delimiter, Mailbox: b.Name}
		if hasChildren(names, b.Name) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		for _, u := range b.SpecialUse {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(u))
		}
		if b.Subscribed && (options.ReturnSubscribed || options.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if options.ReturnStatus != nil {
			data.Status = statusData(b, options.ReturnStatus)
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// parentNeeded reports whether a pattern matches parent and no mailbox
// below it.
func parentNeeded(parent, ref string, patterns []string, boxes []store.MailboxInfo) bool {
	prefix := parent + string(store.Delimiter)
	for _, p := range patterns {
		if !imapserver.MatchList(parent, store.Delimiter, ref, p) {
			continue
		}
		below := false
		for _, b := range boxes {
			if strings.HasPrefix(b.Name, prefix) && imapserver.MatchList(b.Name, store.Delimiter, ref, p) {
				below = true
				break
			}
		}
		if !below {
			return true
		}
	}
	return false
}

func matchAny(name, ref string, patterns []string) bool {
	for _, p := range patterns {
		if imapserver.MatchList(name, store.Delimiter, ref, p) {
			return true
		}
	}
	return false
}

func hasChildren(names map[string]bool, name string) bool {
	prefix := name + string(store.Delimiter)
	for n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

func (s *session) Status(mailbox string, options *imap.StatusOptions) (_ *imap.StatusData, err error) {
	defer s.begin("STATUS")(&err)
	name, err := store.CanonicalMailbox(mailbox)
	if err != nil {
		return nil, mapError(err)
	}
	info, err := s.srv.opts.Reader.Mailbox(s.user, name)
	if err != nil {
		return nil, mapError(err)
	}
	return statusData(info, options), nil
}

func statusData(info store.MailboxInfo, o *imap.StatusOptions) *imap.StatusData {
	d := &imap.StatusData{Mailbox: info.Name}
	if o.NumMessages {
		d.NumMessages = ptr(info.Messages)
	}
	if o.NumRecent {
		d.NumRecent = ptr(uint32(0))
	}
	if o.UIDNext {
		d.UIDNext = imap.UID(info.UIDNext)
	}
	if o.UIDValidity {
		d.UIDValidity = info.UIDValidity
	}
	if o.NumUnseen {
		d.NumUnseen = ptr(info.Unseen)
	}
	if o.NumDeleted {
		d.NumDeleted = ptr(info.Deleted)
	}
	if o.Size {
		d.Size = ptr(info.Size)
	}
	if o.HighestModSeq {
		d.HighestModSeq = info.HighestModSeq
	}
	return d
}

func ptr[T any](v T) *T { return &v }

// AppendLimit is the largest message APPEND takes: the store's limit.
func (s *session) AppendLimit() uint32 {
	n := s.srv.opts.Reader.MaxMessageSize()
	if n > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(n)
}

func (s *session) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (_ *imap.AppendData, err error) {
	defer s.begin("APPEND")(&err)
	name, err := store.CanonicalMailbox(mailbox)
	if err != nil {
		return nil, mapError(err)
	}
	if r.Size() > s.srv.opts.Reader.MaxMessageSize() {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too large"}
	}
	raw := make([]byte, r.Size())
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, err
	}
	var flags []string
	if options != nil {
		for _, f := range options.Flags {
			flags = append(flags, string(f))
		}
	}
	date := time.Now()
	if options != nil && !options.Time.IsZero() {
		date = options.Time
	}
	op := &store.Deliver{
		Body:         *dedupe.Prepare(raw, nil),
		Targets:      []store.Target{{User: s.user, Mailbox: name, Flags: flags}},
		InternalDate: date.UnixNano(),
	}
	res, err := s.write(op, nil)
	if err != nil {
		if errors.Is(err, store.ErrNoMailbox) {
			return nil, tryCreate()
		}
		return nil, mapError(err)
	}
	if len(res.Placed) != 1 {
		return nil, fmt.Errorf("imap: append placed %d messages", len(res.Placed))
	}
	return &imap.AppendData{UID: imap.UID(res.Placed[0].UID), UIDValidity: res.Placed[0].UIDValidity}, nil
}

func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	return s.sel.tracker.Poll(w, allowExpunge)
}

func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	s.selMu.Lock()
	sel := s.sel
	s.selMu.Unlock()
	if sel == nil {
		<-stop
		return nil
	}
	// Not SessionTracker.Idle: it waits for the next update without
	// flushing those queued before it started, so a delivery landing
	// between the last poll and IDLE waited for the one after it. The hub
	// wakes the session after queueing (s.wake holds one wake-up, so none
	// is lost), and every round starts with a poll.
	for {
		if err := sel.tracker.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-s.wake:
		case <-stop:
			return nil
		}
	}
}

func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) (err error) {
	defer s.begin("EXPUNGE")(&err)
	// CLOSE expunges through a writer with no connection; on a mailbox
	// selected read-only it just closes (RFC 3501 6.4.2).
	closing := w == nil || *w == (imapserver.ExpungeWriter{})
	if err := s.writable(); err != nil {
		if closing {
			return nil
		}
		return err
	}
	op := &store.Expunge{User: s.user, Mailbox: s.sel.name, All: uids == nil}
	if uids != nil {
		refs := s.resolve(*uids)
		if len(refs) == 0 {
			return nil
		}
		op.UIDs = refUIDs(refs)
	}
	// The EXPUNGE responses reach this session through its tracker, which
	// the poll after the command flushes.
	_, err = s.write(op, nil)
	return mapError(err)
}

func (s *session) writable() error {
	if err := s.srv.refuseWrites(); err != nil {
		return err
	}
	if s.sel.readOnly {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "Mailbox is selected read-only (EXAMINE)"}
	}
	return nil
}

func (s *session) Copy(numSet imap.NumSet, dest string) (_ *imap.CopyData, err error) {
	defer s.begin("COPY")(&err)
	res, err := s.copy(numSet, dest, false)
	if err != nil || res == nil {
		return nil, err
	}
	return copyData(res), nil
}

func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) (err error) {
	defer s.begin("MOVE")(&err)
	if err := s.writable(); err != nil {
		return err
	}
	res, err := s.copy(numSet, dest, true)
	if err != nil || res == nil {
		return err
	}
	// COPYUID first; the EXPUNGEs follow from the tracker in the poll that
	// ends the command.
	return w.WriteCopyData(copyData(res))
}

func (s *session) copy(numSet imap.NumSet, dest string, move bool) (*store.Result, error) {
	if err := s.srv.refuseWrites(); err != nil {
		return nil, err
	}
	to, err := store.CanonicalMailbox(dest)
	if err != nil {
		return nil, mapError(err)
	}
	if ok, err := s.mailboxExists(to); err != nil {
		return nil, mapError(err)
	} else if !ok {
		return nil, tryCreate()
	}
	refs := s.resolve(numSet)
	if len(refs) == 0 {
		return nil, nil
	}
	cp := store.Copy{User: s.user, From: s.sel.name, To: to, UIDs: refUIDs(refs)}
	var op store.Op = &cp
	if move {
		op = (*store.Move)(&cp)
	}
	res, err := s.write(op, nil)
	if err != nil {
		if errors.Is(err, store.ErrNoMailbox) {
			return nil, tryCreate()
		}
		return nil, mapError(err)
	}
	return &res, nil
}

func (s *session) mailboxExists(name string) (bool, error) {
	_, err := s.srv.opts.Reader.Mailbox(s.user, name)
	if errors.Is(err, store.ErrNoMailbox) {
		return false, nil
	}
	return err == nil, err
}

func copyData(res *store.Result) *imap.CopyData {
	d := &imap.CopyData{UIDValidity: res.UIDValidity}
	for _, u := range res.SrcUIDs {
		d.SourceUIDs.AddNum(imap.UID(u))
	}
	for _, u := range res.DstUIDs {
		d.DestUIDs.AddNum(imap.UID(u))
	}
	return d
}

func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) (err error) {
	defer s.begin("STORE")(&err)
	if err := s.writable(); err != nil {
		return err
	}
	refs := s.resolve(numSet)
	if len(refs) == 0 {
		return nil
	}
	op := &store.StoreFlags{User: s.user, Mailbox: s.sel.name, UIDs: refUIDs(refs)}
	switch flags.Op {
	case imap.StoreFlagsSet:
		op.Action = store.FlagsSet
	case imap.StoreFlagsAdd:
		op.Action = store.FlagsAdd
	case imap.StoreFlagsDel:
		op.Action = store.FlagsRemove
	default:
		return &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Unknown STORE action"}
	}
	for _, f := range flags.Flags {
		if f == "\\Recent" {
			continue // per session, never stored
		}
		op.Flags = append(op.Flags, string(f))
	}
	if options != nil {
		op.UnchangedSince = options.UnchangedSince
	}
	if _, err := s.write(op, op.UIDs); err != nil {
		return mapError(err)
	}
	if flags.Silent {
		return nil
	}
	_, isUID := numSet.(imap.UIDSet)
	return s.fetchRefs(w, refs, &imap.FetchOptions{Flags: true, UID: isUID})
}

func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (_ *imap.SearchData, err error) {
	defer s.begin("SEARCH")(&err)
	c, err := s.criteria(criteria)
	if err != nil {
		return nil, err
	}
	uids, err := s.srv.opts.Reader.Search(s.user, s.sel.name, c)
	if err != nil {
		return nil, mapError(err)
	}
	refs := s.resolveUIDs(uids)
	data := &imap.SearchData{}
	var nums []uint32
	for _, r := range refs {
		if kind == imapserver.NumKindUID {
			nums = append(nums, r.uid)
		} else {
			nums = append(nums, r.seq)
		}
	}
	if kind == imapserver.NumKindUID {
		var set imap.UIDSet
		for _, n := range nums {
			set.AddNum(imap.UID(n))
		}
		data.All = set
	} else {
		var set imap.SeqSet
		for _, n := range nums {
			set.AddNum(n)
		}
		data.All = set
	}
	if len(nums) > 0 {
		data.Min = slices.Min(nums)
		data.Max = slices.Max(nums)
	}
	data.Count = uint32(len(nums))
	return data, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
