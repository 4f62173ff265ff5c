package imap

import (
	"sync"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// keywordMemory keeps, per mailbox, the keywords used in it, across the
// views that come and go as sessions select and leave it: reading every
// message's flags at each first SELECT cost a scan of the mailbox (a
// third of imaptest's stress profile). It is kept up to date from change
// notifications; an operation whose keywords it cannot tell (a COPY from
// a mailbox it does not know, a RENAME) makes it forget the mailbox,
// which is then read again when next selected. It may list a keyword no
// message has any more: FLAGS may name keywords not in use.
type keywordMemory struct {
	mu    sync.Mutex
	boxes map[protocols.MailboxRef]*keywordSet
}

type keywordSet struct {
	uidValidity uint32
	set         map[string]struct{}
}

// maxKeywordSets bounds the mailboxes remembered.
const maxKeywordSets = 10000

// get returns the keywords of a mailbox, reading its messages with read
// if they are not known.
func (m *keywordMemory) get(ref protocols.MailboxRef, uidValidity uint32, read func() ([]store.Message, error)) ([]string, error) {
	m.mu.Lock()
	if e := m.boxes[ref]; e != nil && e.uidValidity == uidValidity {
		out := sortedKeys(e.set)
		m.mu.Unlock()
		return out, nil
	}
	m.mu.Unlock()
	msgs, err := read()
	if err != nil {
		return nil, err
	}
	e := &keywordSet{uidValidity: uidValidity, set: map[string]struct{}{}}
	for _, msg := range msgs {
		for _, f := range msg.Flags {
			if isKeyword(f) {
				e.set[f] = struct{}{}
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.boxes == nil {
		m.boxes = make(map[protocols.MailboxRef]*keywordSet)
	}
	if len(m.boxes) >= maxKeywordSets {
		for k := range m.boxes {
			delete(m.boxes, k)
			break
		}
	}
	m.boxes[ref] = e
	return sortedKeys(e.set), nil
}

// note takes an applied operation into account.
func (m *keywordMemory) note(op store.Op) {
	m.mu.Lock()
	defer m.mu.Unlock()
	add := func(ref protocols.MailboxRef, flags []string) {
		if name, err := store.CanonicalMailbox(ref.Mailbox); err == nil {
			ref.Mailbox = name
		}
		if e := m.boxes[ref]; e != nil {
			for _, f := range flags {
				if isKeyword(f) {
					e.set[f] = struct{}{}
				}
			}
		}
	}
	forgetUser := func(user string) {
		for ref := range m.boxes {
			if ref.User == user {
				delete(m.boxes, ref)
			}
		}
	}
	switch o := op.(type) {
	case *store.StoreFlags:
		if o.Action != store.FlagsRemove {
			add(protocols.MailboxRef{User: o.User, Mailbox: o.Mailbox}, o.Flags)
		}
	case *store.Deliver:
		for _, t := range o.Targets {
			add(protocols.MailboxRef{User: t.User, Mailbox: t.Mailbox}, t.Flags)
		}
	case *store.Copy, *store.Move:
		// The copies keep their keywords; which they are is not in the
		// operation.
		var user, to string
		if c, ok := o.(*store.Copy); ok {
			user, to = c.User, c.To
		} else {
			mv := o.(*store.Move)
			user, to = mv.User, mv.To
		}
		if name, err := store.CanonicalMailbox(to); err == nil {
			to = name
		}
		delete(m.boxes, protocols.MailboxRef{User: user, Mailbox: to})
	case *store.RenameMailbox:
		forgetUser(o.User)
	case *store.DeleteMailbox:
		forgetUser(o.User)
	case *store.DeleteUser:
		forgetUser(o.User)
	}
}
