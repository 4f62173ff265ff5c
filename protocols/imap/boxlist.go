package imap

import (
	"slices"
	"sync"

	"github.com/twinbox/twinbox/store"
)

// boxLists caches each user's mailbox list for LIST and LSUB: names,
// special-use and subscription, which only CREATE, DELETE, RENAME and
// (UN)SUBSCRIBE change. The store's listing walks every version of the
// mailbox records (rewritten at each delivery and flag change) until its
// memtable is flushed: under imaptest's stress it was 85% of the CPU and
// made each run slower than the last. Counts in the cached records are
// not used (LIST's STATUS reads the mailbox anew).
//
// An entry is dropped when a change is written through this server
// (before the OK) and when a change is notified (from elsewhere); a
// generation number keeps a listing read before a drop from being cached
// after it.
type boxLists struct {
	mu    sync.Mutex
	gen   map[string]uint64
	lists map[string]boxList
}

type boxList struct {
	gen   uint64
	boxes []store.MailboxInfo
}

// maxBoxLists bounds the users whose list is kept.
const maxBoxLists = 10000

// get returns user's mailboxes, from the cache or read.
func (c *boxLists) get(user string, read func() ([]store.MailboxInfo, error)) ([]store.MailboxInfo, error) {
	c.mu.Lock()
	if c.lists == nil {
		c.lists, c.gen = make(map[string]boxList), make(map[string]uint64)
	}
	gen := c.gen[user]
	if l, ok := c.lists[user]; ok && l.gen == gen {
		c.mu.Unlock()
		return slices.Clone(l.boxes), nil
	}
	c.mu.Unlock()
	boxes, err := read()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen[user] == gen {
		if len(c.lists) >= maxBoxLists {
			clear(c.lists)
		}
		c.lists[user] = boxList{gen: gen, boxes: slices.Clone(boxes)}
	}
	return boxes, nil
}

// drop forgets user's list.
func (c *boxLists) drop(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lists == nil {
		c.lists, c.gen = make(map[string]boxList), make(map[string]uint64)
	}
	c.gen[user]++
	if len(c.gen) > 4*maxBoxLists {
		// Generations only need to differ while a read is in flight.
		clear(c.gen)
		clear(c.lists)
	}
	delete(c.lists, user)
}

// changesList reports whether op can change a user's mailbox list, and
// whose.
func changesList(op store.Op) (string, bool) {
	switch o := op.(type) {
	case *store.CreateMailbox:
		return o.User, true
	case *store.DeleteMailbox:
		return o.User, true
	case *store.RenameMailbox:
		return o.User, true
	case *store.Subscribe:
		return o.User, true
	case *store.CreateUser:
		return o.User, true
	case *store.DeleteUser:
		return o.User, true
	}
	return "", false
}
