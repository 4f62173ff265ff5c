package store

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// ErrUIDValidity refuses an import whose UIDs belong to another numbering
// than the target mailbox's: the mailbox holds messages under a different
// UIDVALIDITY.
var ErrUIDValidity = errors.New("store: mailbox is numbered under another UIDVALIDITY")

// ImportMailbox makes a mailbox take a source server's UIDVALIDITY, so
// that the UIDs imported into it (Import) are the ones clients cached. The
// mailbox (and missing parents) is created when absent; an existing mailbox
// takes UIDValidity only when no UID was ever given in it (UIDNEXT 1, as a
// new user's INBOX), since otherwise a client may hold UIDs of it. A
// mailbox that already has UIDValidity is left as it is (an import that
// runs again). Any other mailbox is refused with ErrUIDValidity: import
// into it with new UIDs instead (Deliver). The user's record of the
// UIDVALIDITY values it used is raised to UIDValidity.
type ImportMailbox struct {
	User        string   `cbor:"1,keyasint"`
	Name        string   `cbor:"2,keyasint"`
	UIDValidity uint32   `cbor:"3,keyasint"`
	SpecialUse  []string `cbor:"4,keyasint,omitempty"`
	Subscribe   bool     `cbor:"5,keyasint,omitempty"`
}

// Import places messages at the UIDs a source server gave them, in a
// mailbox numbered under UIDValidity (see ImportMailbox); the whole
// operation is refused with ErrUIDValidity if the mailbox's UIDVALIDITY is
// another. Messages are in ascending UID order. A message whose UID is at
// or above the mailbox's UIDNEXT is placed there (UIDNEXT moves past it);
// one below it is not placed again: it is reported in Result.Present when
// the mailbox holds that UID (the import ran before, perhaps interrupted)
// and in Result.Gone when it does not (expunged since). So running an
// import twice stores nothing twice, and no UID is ever reused.
type Import struct {
	User        string            `cbor:"1,keyasint"`
	Mailbox     string            `cbor:"2,keyasint"`
	UIDValidity uint32            `cbor:"3,keyasint"`
	Messages    []ImportedMessage `cbor:"4,keyasint"`
}

// ImportedMessage is one message of an Import.
type ImportedMessage struct {
	UID          uint32   `cbor:"1,keyasint"`
	Body         Body     `cbor:"2,keyasint"`
	Flags        []string `cbor:"3,keyasint,omitempty"`
	InternalDate int64    `cbor:"4,keyasint"` // Unix nanoseconds
}

func (o *ImportMailbox) check() error {
	if err := checkUserMailbox(o.User, o.Name); err != nil {
		return err
	}
	if o.UIDValidity == 0 {
		return fmt.Errorf("%w: UIDVALIDITY 0", ErrInvalidOp)
	}
	return checkSpecialUse(o.SpecialUse)
}

func (o *Import) check() error {
	if err := checkUserMailbox(o.User, o.Mailbox); err != nil {
		return err
	}
	if o.UIDValidity == 0 {
		return fmt.Errorf("%w: UIDVALIDITY 0", ErrInvalidOp)
	}
	if len(o.Messages) == 0 {
		return fmt.Errorf("%w: import of no messages", ErrInvalidOp)
	}
	for i := range o.Messages {
		m := &o.Messages[i]
		if m.UID == 0 || m.UID == math.MaxUint32 || (i > 0 && m.UID <= o.Messages[i-1].UID) {
			return fmt.Errorf("%w: imported UIDs must be non-zero, below 2^32-1 and strictly ascending", ErrInvalidOp)
		}
		if m.Body.Stored {
			return fmt.Errorf("%w: imported UID %d: a body reference", ErrInvalidOp, m.UID)
		}
		if _, err := CanonicalFlags(m.Flags); err != nil {
			return err
		}
		if err := m.Body.checkFields(); err != nil {
			return err
		}
	}
	return nil
}

// checkBodies re-hashes the bodies an operation carries (see
// Body.checkContent).
func checkBodies(op Op) error {
	switch o := op.(type) {
	case *Deliver:
		return o.Body.checkContent()
	case *Import:
		for i := range o.Messages {
			if err := o.Messages[i].Body.checkContent(); err != nil {
				return err
			}
		}
	}
	return nil
}

// importMailbox applies an ImportMailbox and returns the mailbox's
// UIDVALIDITY afterwards.
func (t *txn) importMailbox(op *ImportMailbox) (uint32, error) {
	u, err := t.user(op.User)
	if err != nil {
		return 0, err
	}
	var m mailboxRec
	ok, err := t.getRec(mboxKey(op.User, op.Name), &m)
	if err != nil {
		return 0, err
	}
	switch {
	case ok && m.UIDValidity == op.UIDValidity:
		return m.UIDValidity, nil
	case ok && m.UIDNext != 1:
		return 0, fmt.Errorf("%w: %q of user %q has UIDVALIDITY %d and UIDNEXT %d, the source %d",
			ErrUIDValidity, op.Name, op.User, m.UIDValidity, m.UIDNext, op.UIDValidity)
	case !ok:
		if err := t.createMailbox(op.User, op.Name, 0, op.SpecialUse, op.Subscribe); err != nil {
			return 0, err
		}
		if _, err := t.getRec(mboxKey(op.User, op.Name), &m); err != nil {
			return 0, err
		}
		if u, err = t.user(op.User); err != nil {
			return 0, err
		}
	}
	m.UIDValidity = op.UIDValidity
	if len(op.SpecialUse) > 0 {
		m.SpecialUse = slices.Clone(op.SpecialUse)
		slices.Sort(m.SpecialUse)
	}
	m.Subscribed = m.Subscribed || op.Subscribe
	if op.UIDValidity > u.LastUIDValidity {
		u.LastUIDValidity = op.UIDValidity
		if err := t.put(userKey(op.User), u); err != nil {
			return 0, err
		}
	}
	return m.UIDValidity, t.put(mboxKey(op.User, op.Name), m)
}

// importMessages applies an Import.
func (t *txn) importMessages(op *Import, res *Result) error {
	m, err := t.mailbox(op.User, op.Mailbox)
	if err != nil {
		return err
	}
	if m.UIDValidity != op.UIDValidity {
		return fmt.Errorf("%w: %q of user %q has UIDVALIDITY %d, the import %d",
			ErrUIDValidity, op.Mailbox, op.User, m.UIDValidity, op.UIDValidity)
	}
	res.UIDValidity = m.UIDValidity
	for i := range op.Messages {
		im := &op.Messages[i]
		if im.UID < m.UIDNext {
			if _, ok, err := t.getRaw(msgKey(m.ID, im.UID)); err != nil {
				return err
			} else if ok {
				res.Present = append(res.Present, im.UID)
			} else {
				res.Gone = append(res.Gone, im.UID)
			}
			continue
		}
		flags, _ := CanonicalFlags(im.Flags) // checked by op.check
		rec := msgRec{Body: im.Body.ID, Flags: flags, Date: im.InternalDate, Size: im.Body.Size}
		m.UIDNext = im.UID
		if _, err := t.addMessage(&m, rec); err != nil {
			return err
		}
		if err := t.linkBody(&im.Body, 1); err != nil {
			return err
		}
		res.Imported = append(res.Imported, im.UID)
	}
	return t.put(mboxKey(op.User, op.Mailbox), m)
}
