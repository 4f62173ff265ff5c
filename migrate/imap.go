package migrate

import (
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// IMAPOptions say how to reach the source server.
type IMAPOptions struct {
	// TLS is "tls" (implicit, port 993), "starttls" or "none" (plain
	// text: a server on loopback or a trusted network only).
	TLS string
	// TLSConfig, when set, is used for "tls" and "starttls" (a private CA,
	// say); nil: the system's roots.
	TLSConfig *tls.Config
}

// IMAPSource is a live IMAP server read as a source: its folders are
// listed by ReadIMAP, and their messages' bytes are fetched as Run reads
// them, a window of UIDs at a time. Close logs out.
type IMAPSource struct {
	c       *imapclient.Client
	current string // the mailbox selected (read-only)
	cache   map[uint32][]byte
}

// fetchWindow is how many messages one UID FETCH brings.
const fetchWindow = 64

// ReadIMAP logs in to an IMAP server as user and lists its folders with
// their UIDVALIDITY, UIDNEXT, and each message's UID, flags, internal date
// and size (\Recent is dropped). Mailboxes are examined read-only: the
// source is not changed (no \Seen set). Folder names use "/" whatever the
// server's delimiter.
func ReadIMAP(addr, user, password string, o *IMAPOptions) ([]Folder, *IMAPSource, error) {
	if o == nil {
		o = &IMAPOptions{TLS: "tls"}
	}
	var (
		c   *imapclient.Client
		err error
	)
	copts := &imapclient.Options{TLSConfig: o.TLSConfig}
	switch o.TLS {
	case "tls", "":
		c, err = imapclient.DialTLS(addr, copts)
	case "starttls":
		c, err = imapclient.DialStartTLS(addr, copts)
	case "none":
		c, err = imapclient.DialInsecure(addr, copts)
	default:
		return nil, nil, fmt.Errorf("imap source: TLS %q is not tls, starttls or none", o.TLS)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("imap source %s: %w", addr, err)
	}
	src := &IMAPSource{c: c, cache: map[uint32][]byte{}}
	if err := c.Login(user, password).Wait(); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("imap source %s: LOGIN %s: %w", addr, user, err)
	}
	var lo *imap.ListOptions
	if c.Caps().Has(imap.CapListExtended) {
		lo = &imap.ListOptions{ReturnSubscribed: true}
	}
	list, err := c.List("", "*", lo).Collect()
	if err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("imap source: LIST: %w", err)
	}
	var folders []Folder
	for _, mb := range list {
		if hasAttr(mb.Attrs, imap.MailboxAttrNoSelect) || hasAttr(mb.Attrs, imap.MailboxAttrNonExistent) {
			continue
		}
		f, err := src.folder(mb)
		if err != nil {
			src.Close()
			return nil, nil, err
		}
		folders = append(folders, f)
	}
	return folders, src, nil
}

func hasAttr(attrs []imap.MailboxAttr, a imap.MailboxAttr) bool {
	for _, x := range attrs {
		if strings.EqualFold(string(x), string(a)) {
			return true
		}
	}
	return false
}

// folder examines one mailbox and lists its messages.
func (s *IMAPSource) folder(mb *imap.ListData) (Folder, error) {
	sel, err := s.c.Select(mb.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return Folder{}, fmt.Errorf("imap source: EXAMINE %q: %w", mb.Mailbox, err)
	}
	s.current = mb.Mailbox
	clear(s.cache)
	name := mb.Mailbox
	if mb.Delim != 0 && mb.Delim != '/' {
		name = strings.ReplaceAll(name, string(mb.Delim), "/")
	}
	if strings.EqualFold(name, "INBOX") {
		name = "INBOX"
	}
	f := Folder{Name: name, UIDValidity: sel.UIDValidity, UIDNext: uint32(sel.UIDNext), Subscribed: hasAttr(mb.Attrs, imap.MailboxAttrSubscribed)}
	if sel.NumMessages == 0 {
		return f, nil
	}
	msgs, err := s.c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}},
		&imap.FetchOptions{UID: true, Flags: true, InternalDate: true, RFC822Size: true}).Collect()
	if err != nil {
		return Folder{}, fmt.Errorf("imap source: FETCH in %q: %w", mb.Mailbox, err)
	}
	box := mb.Mailbox
	for _, m := range msgs {
		msg := Message{UID: uint32(m.UID), Date: m.InternalDate, Size: m.RFC822Size}
		for _, fl := range m.Flags {
			if !strings.EqualFold(string(fl), `\Recent`) {
				msg.Flags = append(msg.Flags, string(fl))
			}
		}
		uid := m.UID
		msg.fetch = func() ([]byte, error) { return s.body(box, uid) }
		f.Messages = append(f.Messages, msg)
	}
	return f, nil
}

// body returns one message's bytes, fetching a window of UIDs from uid on
// when it is not cached.
func (s *IMAPSource) body(box string, uid imap.UID) ([]byte, error) {
	if s.current != box {
		if _, err := s.c.Select(box, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			return nil, fmt.Errorf("imap source: EXAMINE %q: %w", box, err)
		}
		s.current = box
		clear(s.cache)
	}
	if b, ok := s.cache[uint32(uid)]; ok {
		delete(s.cache, uint32(uid))
		return b, nil
	}
	clear(s.cache)
	peek := &imap.FetchItemBodySection{Peek: true}
	var set imap.UIDSet
	set.AddRange(uid, uid+fetchWindow-1)
	msgs, err := s.c.Fetch(set, &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{peek}}).Collect()
	if err != nil {
		return nil, fmt.Errorf("imap source: UID FETCH %d in %q: %w", uid, box, err)
	}
	for _, m := range msgs {
		s.cache[uint32(m.UID)] = m.FindBodySection(peek)
	}
	b, ok := s.cache[uint32(uid)]
	if !ok {
		return nil, fmt.Errorf("imap source: UID %d of %q is gone (expunged on the source since it was listed)", uid, box)
	}
	delete(s.cache, uint32(uid))
	return b, nil
}

// Close logs out and closes the connection.
func (s *IMAPSource) Close() error {
	err := s.c.Logout().Wait()
	if cerr := s.c.Close(); err == nil {
		err = cerr
	}
	return err
}
