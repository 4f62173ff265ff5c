package protocols

import (
	"context"
	"errors"

	"github.com/twinbox/twinbox/store"
)

// Errors a Writer returns for conditions that are not the store's.
var (
	// ErrUnavailable: the change could not be made durable as promised (the
	// peer did not confirm in time, the node is shutting down). Temporary.
	ErrUnavailable = errors.New("protocols: temporarily unavailable")
	// ErrReadOnly: this node serves reads only.
	ErrReadOnly = errors.New("protocols: read-only node")
)

// Writer makes changes. Write admits op (field checks and this node's
// limits), commits it and returns its result once the change is durable as
// docs/architecture.md promises an acknowledgement is; only then may a client be told
// OK. An error that wraps ErrUnavailable is temporary.
//
// A Result's Err (the operation was refused by the store's state, such as a
// missing mailbox) is returned as the error, so callers check one value.
//
// origin says who made the change, for the change's notification
// (Change.Origin): a session passes a value of its own so that it can tell
// its own writes from others'; nil is nobody in particular. The node does
// not look inside it.
type Writer interface {
	Write(ctx context.Context, op store.Op, origin Origin) (store.Result, error)
}

// Origin is who made a write, opaque to the node (see Writer).
type Origin any

// Change is one applied operation as a node tells its frontends: every
// change, whoever made it (this node's writers, or the log on a passive),
// in log order, once it is visible to reads.
type Change struct {
	Op     store.Op
	Result *store.Result
	// Origin is the writer's origin on the node that wrote it; nil for
	// changes that came from elsewhere (the log, on a passive).
	Origin Origin
}

// Notifier is told of changes (the IMAP server: IDLE and unsolicited
// updates). Notify must not block for long: it runs in the node's
// notification path.
type Notifier interface {
	Notify(c Change)
}

// Reader is what the protocols read: the store's reads, with bodies and
// metadata served through the read cache.
type Reader interface {
	HasUser(user string) (bool, error)
	Mailboxes(user string) ([]store.MailboxInfo, error)
	Mailbox(user, name string) (store.MailboxInfo, error)
	UIDs(user, name string) (store.UIDList, error)
	// UIDsAfter is the mailbox and its UIDs above after, from one
	// snapshot.
	UIDsAfter(user, name string, after uint32) (store.MailboxInfo, store.UIDList, error)
	Messages(user, name string, uids []uint32) ([]store.Message, error)
	Search(user, name string, c *store.Criteria) ([]uint32, error)
	Body(ctx context.Context, id store.BlobID) ([]byte, error)
	Meta(ctx context.Context, id store.BlobID) (*store.Meta, error)
	MaxMessageSize() int64
}

// Users is the node's user list and its password check.
type Users interface {
	// Lookup reports whether user exists.
	Lookup(user string) bool
	// Check verifies a password; remote is the client's address, so that
	// failures can be slowed per address. It returns a non-nil error for a
	// wrong password or unknown user.
	//
	// ctx must be cancelled when the client disconnects (derive it from
	// the connection's lifetime, not context.Background): after failures
	// Check waits before it verifies, and a cancelled ctx makes it return
	// at once with an error, without verifying the password, so that a
	// client that hangs up learns nothing and leaves no session waiting.
	Check(ctx context.Context, user, password, remote string) error
}

// MailboxRef names one mailbox of one user.
type MailboxRef struct{ User, Mailbox string }

// Affected lists the mailboxes an operation changes, for change
// notifications (IMAP IDLE and unsolicited updates). A DeleteUser or
// Collect has none that a session could have selected beyond the user's,
// which the caller handles by user.
func Affected(op store.Op) []MailboxRef {
	switch o := op.(type) {
	case *store.Deliver:
		refs := make([]MailboxRef, 0, len(o.Targets))
		for _, t := range o.Targets {
			refs = append(refs, MailboxRef{t.User, t.Mailbox})
		}
		return refs
	case *store.Copy:
		return []MailboxRef{{o.User, o.To}}
	case *store.Move:
		return []MailboxRef{{o.User, o.From}, {o.User, o.To}}
	case *store.StoreFlags:
		return []MailboxRef{{o.User, o.Mailbox}}
	case *store.Expunge:
		return []MailboxRef{{o.User, o.Mailbox}}
	case *store.DeleteMailbox:
		return []MailboxRef{{o.User, o.Name}}
	case *store.RenameMailbox:
		return []MailboxRef{{o.User, o.From}, {o.User, o.To}}
	case *store.CreateMailbox:
		return []MailboxRef{{o.User, o.Name}}
	case *store.ImportMailbox:
		return []MailboxRef{{o.User, o.Name}}
	case *store.Import:
		return []MailboxRef{{o.User, o.Mailbox}}
	}
	return nil
}
