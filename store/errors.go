package store

import "errors"

// Sentinel errors. Wrapped errors name the user, mailbox or blob involved;
// compare with errors.Is.
var (
	ErrCorrupt        = errors.New("store: corrupt data")
	ErrNoUser         = errors.New("store: user not found")
	ErrUserExists     = errors.New("store: user already exists")
	ErrNoMailbox      = errors.New("store: mailbox not found")
	ErrMailboxExists  = errors.New("store: mailbox already exists")
	ErrNoMessage      = errors.New("store: message not found")
	ErrMissingBlob    = errors.New("store: blob not found")
	ErrInvalidName    = errors.New("store: invalid name")
	ErrInvalidFlag    = errors.New("store: invalid flag")
	ErrInvalidOp      = errors.New("store: invalid operation")
	ErrTooLarge       = errors.New("store: message too large")
	ErrUnknownVersion = errors.New("store: unknown encoding version")
	ErrClosed         = errors.New("store: closed")
	// ErrDiskFault: the database was closed after a failed fsync (a full
	// disk, an I/O error) and is not open again yet; temporary.
	ErrDiskFault       = errors.New("store: closed after a failed fsync; opened again once the disk takes writes")
	ErrSeqOutOfOrder   = errors.New("store: log sequence out of order")
	ErrInboxNotDeleted = errors.New("store: INBOX cannot be deleted")
)
