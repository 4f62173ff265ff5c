package users

import "context"

// Directory is a passwd-file and its login guard as the mail protocols use
// them (protocols.Users). Before refusing a user it does not know, it
// re-reads the file (a stat when unchanged), so that a user added a moment
// ago by `twinbox user add` is known at once, not only at the next poll.
type Directory struct {
	File  *File
	Guard *Guard
}

// Lookup reports whether user exists.
func (d Directory) Lookup(user string) bool {
	if d.File.Lookup(user) {
		return true
	}
	d.File.Reload()
	return d.File.Lookup(user)
}

// Check verifies a password through the guard, which slows and counts
// failures. ctx must be cancelled when the client disconnects (see
// Guard.Check): a login whose client has gone is not checked.
func (d Directory) Check(ctx context.Context, user, password, remote string) error {
	if !d.File.Lookup(user) {
		d.File.Reload()
	}
	return d.Guard.Check(ctx, user, password, remote)
}
