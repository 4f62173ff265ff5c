package imap

// SetMaxPending sets the bound on a session's unread updates and returns
// a func that restores it.
func SetMaxPending(n int) func() {
	old := maxPending
	maxPending = n
	return func() { maxPending = old }
}
