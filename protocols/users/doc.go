// Package users holds the users a node serves, read from a passwd-file in
// Dovecot's passwd-file format, so that an existing Dovecot user list works
// as it is (docs/architecture.md, protocols/).
//
// # File format
//
// One user a line:
//
//	user:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields
//
// Only the user and the password fields are used; the fields after the
// password are optional, kept as they are, and never interpreted. Blank
// lines and lines whose first non-blank character is '#' are comments. A
// user name must satisfy store.ValidUser (no ':', '/', white space or
// control characters). The file may be at most MaxFileSize bytes.
//
// # Password schemes
//
// Every scheme `doveadm pw` writes that an operator meets is read, by
// Dovecot's names, case-insensitively: BLF-CRYPT, SHA512-CRYPT,
// SHA256-CRYPT, MD5-CRYPT, MD5, CRYPT (bcrypt, SHA-crypt, MD5-crypt and
// yescrypt hashes, as the C library's crypt(3) reads them), SSHA512,
// SSHA256, SSHA, SMD5, SHA512, SHA256, SHA (SHA1), PLAIN-MD5, LDAP-MD5,
// PLAIN, CLEAR (CLEARTEXT), CRAM-MD5 (HMAC-MD5), ARGON2I, ARGON2ID and
// PBKDF2, with Dovecot's .b64/.base64 and .hex encodings after the name
// ({SSHA512.HEX}, {PLAIN.B64}). A field without {SCHEME} is {CRYPT}, as
// passwd-file's default_pass_scheme is. CRAM-MD5 stores HMAC-MD5's keyed
// state, not a hash: it is verified by computing that state from the
// offered password (twinbox offers no CRAM-MD5 mechanism). Traditional DES
// crypt ({DES-CRYPT}, a 13-character {CRYPT}) is read by a small
// implementation here (descrypt.go; no maintained Go module has one),
// checked against doveadm's and glibc's hashes; BSDi's extended "_" form
// is not. Digests are compared in constant time, and
// plaintext by digest so that the time tells not even its length.
//
// # Lines that cannot be read
//
// A line that cannot be read never stops the file from being served. When
// its user name can be read, that user is disabled: still a user (Lookup,
// Users: mail for them is delivered), but no password logs them in
// (Authenticate returns an error wrapping ErrAuthFailed and ErrDisabled).
// A user named on two lines is disabled too, both lines named. Otherwise
// the line is ignored. Each such line is logged as a warning naming the
// file, the line number and the user, and is listed by Problems as a
// *ParseError. `twinbox user passwd NAME` (SetPassword) repairs the line.
//
// # Reading: File
//
// Open reads the file once; a missing file means no users yet. Reload
// re-reads it when its size, modification time or inode changed; Watch
// polls Reload at an interval. When the file as a whole cannot be read
// (not a regular file, too large, an I/O error), the previous content
// keeps being served and Reload returns the error. A file that disappears
// means no users. A File is safe for concurrent use: Authenticate, Lookup
// and Users may run while a reload swaps the content in.
//
// Authenticate spends, for an unknown or disabled user, the hash work
// most users' logins cost (it verifies the password against the hash of a
// user of the most common scheme and cost and ignores the answer), so that
// its timing does not tell which user names exist, as far as a file of
// mixed schemes allows. A verified login is remembered (Options.CacheSize,
// CacheTTL), as Dovecot's auth_cache does: keyed on the user, the password
// line it was verified against and an HMAC of the password under a key
// that lives in memory only, never the password itself. The next login
// with the same password costs a keyed hash instead of bcrypt; a changed
// or removed line misses at once, and its entry is dropped when the file
// is re-read.
//
// # Logins: Guard
//
// Guard, in front of a File for the protocols, limits the guessing rate
// per remote address (IPv6 by /64) and per user. After failures, a login
// waits for its turn before the password is checked: checks for the same
// address or user start at least the current delay apart (BaseDelay
// doubling with each consecutive failure, up to MaxDelay), so parallel
// guesses queue instead of running side by side, and one whose turn is
// further than MaxDelay away is refused unchecked (ErrThrottled). The right
// password after failures waits exactly as a wrong one would, so no answer
// comes sooner for being right. The ctx given to Check must end when the
// client goes: a login whose client has gone is never checked
// (ErrAbandoned) and its wait ends at once, so no session outlives its
// client. A failed answer is also held back by the next delay, as
// Dovecot's auth_failure_delay does. A success resets both counts. The
// counts are bounded in number (oldest dropped) and forgotten after
// ForgetAfter; time and the wait are injectable for tests.
//
// # Editing
//
// Add, Delete and SetPassword edit the file for the command line: under an
// exclusive flock on path+".lock", they read the file, change the one line
// concerned (comments, lines that cannot be read and every other line stay
// byte for byte), write a temporary file in the same directory,
// fsync it, rename it over the file and fsync the directory. A reader
// therefore sees the old file or the new one, never a mix. A new file gets
// mode 0600; an existing file keeps its mode and owner. New hashes are
// written in DefaultScheme (BLF-CRYPT, cost 10) unless EditOptions names
// SHA512-CRYPT, SHA256-CRYPT or ARGON2ID; weaker schemes are read, never
// written.
package users
