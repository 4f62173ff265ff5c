// Package users holds the users a node serves, read from a passwd-file in
// Dovecot's passwd-file format, so that an existing Dovecot user list works
// as it is (docs/architecture.md, protocols/).
//
// # File format
//
// One user a line:
//
//	user:{BLF-CRYPT}$2y$10$...:uid:gid:gecos:home:shell:extra_fields
//
// Only the user and the password fields are used; the fields after the
// password are optional, kept as they are, and never interpreted. Blank
// lines and lines whose first non-blank character is '#' are comments. A
// user name must satisfy store.ValidUser (no ':', '/', white space or
// control characters). The password must carry the {BLF-CRYPT} scheme with a
// bcrypt hash ($2y$, $2b$ or $2a$, as `doveadm pw -s BLF-CRYPT` writes), or
// {CRYPT} with such a hash; any other scheme is refused with an error naming
// the file, the line and the scheme. A malformed line or a user named twice
// is an error naming the line (*ParseError). The file may be at most
// MaxFileSize bytes.
//
// # Reading: File
//
// Open reads the file once; a missing file means no users yet. Reload
// re-reads it when its size, modification time or inode changed; Watch
// polls Reload at an interval. When the new content does not parse, the
// previous good content keeps being served and Reload returns the error: a
// typo in the file never locks every user out. A file that disappears means
// no users. A File is safe for concurrent use: Authenticate, Lookup and
// Users may run while a reload swaps the content in.
//
// Authenticate spends one bcrypt comparison whether or not the user exists
// (an unknown user is compared against a dummy hash at the file's highest
// cost), so its timing does not tell which user names are valid. Guard adds
// a growing delay after failures, and counters, in front of it for the
// protocols; its failure counts are bounded in number (oldest dropped).
//
// # Editing
//
// Add, Delete and SetPassword edit the file for the command line: under an
// exclusive flock on path+".lock", they read the file, refuse to touch it if
// it does not parse, change the one line concerned (comments and every other
// line stay byte for byte), write a temporary file in the same directory,
// fsync it, rename it over the file and fsync the directory. A reader
// therefore sees the old file or the new one, never a mix. A new file gets
// mode 0600; an existing file keeps its mode and owner.
package users
