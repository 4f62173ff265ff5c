package migrate

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ReadMaildir lists the folders of a Dovecot Maildir in the Maildir++
// layout: root holds INBOX (cur/, new/) and each other folder as a
// directory ".Name.Sub" (Twinbox's "Name/Sub"). From dovecot-uidlist it
// takes UIDVALIDITY, the next UID and each message's UID (a message file
// the list does not know yet gets the next free UID, as Dovecot would
// give it); from dovecot-keywords the names of the keyword letters a-z;
// from the file name's ":2," info the flags; the internal date is the
// file's modification time, as Dovecot's. Folder names on disk are in
// IMAP's modified UTF-7, as Dovecot writes them; they are decoded.
func ReadMaildir(root string) ([]Folder, error) {
	subs := readSubscriptions(filepath.Join(root, "subscriptions"))
	inbox, err := readMaildirFolder(filepath.Join(root), "INBOX")
	if err != nil {
		return nil, err
	}
	inbox.Subscribed = true
	folders := []Folder{inbox}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || len(n) < 2 || n[0] != '.' || n == ".." {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, n, "cur")); err != nil {
			continue // not a folder
		}
		name := decodeMUTF7(strings.ReplaceAll(n[1:], ".", "/"))
		f, err := readMaildirFolder(filepath.Join(root, n), name)
		if err != nil {
			return nil, err
		}
		f.Subscribed = subs[name] || subs[strings.ReplaceAll(n[1:], ".", "/")] || subs[n[1:]]
		folders = append(folders, f)
	}
	return folders, nil
}

// readSubscriptions reads Dovecot's Maildir subscriptions file (one name
// a line, after a version line in newer versions).
func readSubscriptions(path string) map[string]bool {
	subs := map[string]bool{}
	b, err := os.ReadFile(path)
	if err != nil {
		return subs
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			subs[strings.ReplaceAll(l, "\t", "/")] = true
		}
	}
	return subs
}

// uidlist is what dovecot-uidlist says about a folder.
type uidlist struct {
	validity, next uint32
	uids           map[string]uint32 // file base name → UID
}

// readUIDList parses dovecot-uidlist (version 3; version 1's header
// "1 VALIDITY NEXT" too). A missing file gives an empty list.
func readUIDList(path string) (uidlist, error) {
	l := uidlist{uids: map[string]uint32{}}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return l, nil
	}
	if err != nil {
		return l, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return l, sc.Err()
	}
	hdr := strings.Fields(sc.Text())
	if len(hdr) == 0 {
		return l, fmt.Errorf("%s: empty header line", path)
	}
	switch hdr[0] {
	case "1":
		if len(hdr) < 3 {
			return l, fmt.Errorf("%s: header %q", path, sc.Text())
		}
		v, err1 := strconv.ParseUint(hdr[1], 10, 32)
		n, err2 := strconv.ParseUint(hdr[2], 10, 32)
		if err1 != nil || err2 != nil {
			return l, fmt.Errorf("%s: header %q", path, sc.Text())
		}
		l.validity, l.next = uint32(v), uint32(n)
	case "2", "3":
		for _, f := range hdr[1:] {
			if len(f) < 2 {
				continue
			}
			n, err := strconv.ParseUint(f[1:], 10, 32)
			switch {
			case f[0] == 'V' && err == nil:
				l.validity = uint32(n)
			case f[0] == 'N' && err == nil:
				l.next = uint32(n)
			}
		}
	default:
		return l, fmt.Errorf("%s: uidlist version %q, this reads 1 to 3", path, hdr[0])
	}
	for line := 2; sc.Scan(); line++ {
		t := sc.Text()
		if t == "" {
			continue
		}
		sp := strings.IndexByte(t, ' ')
		if sp < 0 {
			return l, fmt.Errorf("%s:%d: %q", path, line, t)
		}
		uid, err := strconv.ParseUint(t[:sp], 10, 32)
		if err != nil || uid == 0 {
			return l, fmt.Errorf("%s:%d: UID %q", path, line, t[:sp])
		}
		rest := t[sp+1:]
		// Version 3: extension fields, then ":" and the file's base name;
		// version 1: the name alone.
		if i := strings.Index(rest, ":"); i >= 0 && (i == 0 || rest[i-1] == ' ') {
			rest = rest[i+1:]
		} else if j := strings.LastIndexByte(rest, ' '); j >= 0 {
			rest = rest[j+1:]
		}
		l.uids[rest] = uint32(uid)
		if i := strings.IndexByte(rest, ','); i > 0 {
			// Dovecot matches a file by the part before its ",S=" fields.
			l.uids[rest[:i]] = uint32(uid)
		}
	}
	return l, sc.Err()
}

// readKeywords parses dovecot-keywords: "INDEX NAME" lines; index 0 is
// the letter a.
func readKeywords(path string) map[byte]string {
	kw := map[byte]string{}
	b, err := os.ReadFile(path)
	if err != nil {
		return kw
	}
	for _, l := range strings.Split(string(b), "\n") {
		i, name, ok := strings.Cut(strings.TrimSpace(l), " ")
		n, err := strconv.Atoi(i)
		if ok && err == nil && n >= 0 && n < 26 && name != "" {
			kw[byte('a'+n)] = name
		}
	}
	return kw
}

// maildirFlags maps the standard info letters to IMAP flags.
var maildirFlags = map[byte]string{
	'D': `\Draft`, 'F': `\Flagged`, 'P': "$Forwarded", 'R': `\Answered`, 'S': `\Seen`, 'T': `\Deleted`,
}

// baseName is a Maildir file name without its info (":2,..." or Dovecot's
// ",S=..." size fields stay: dovecot-uidlist names files without info only).
func baseName(name string) (base, info string) {
	if i := strings.Index(name, ":2,"); i >= 0 {
		return name[:i], name[i+3:]
	}
	return name, ""
}

func readMaildirFolder(dir, name string) (Folder, error) {
	l, err := readUIDList(filepath.Join(dir, "dovecot-uidlist"))
	if err != nil {
		return Folder{}, err
	}
	kw := readKeywords(filepath.Join(dir, "dovecot-keywords"))
	f := Folder{Name: name, UIDValidity: l.validity, UIDNext: l.next}
	var unknown []Message
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return Folder{}, err
		}
		for _, e := range ents {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // gone meanwhile (the old server expunged it)
			}
			base, info := baseName(e.Name())
			m := Message{Path: filepath.Join(dir, sub, e.Name()), Length: -1, Size: fi.Size(), Date: fi.ModTime()}
			for i := 0; i < len(info); i++ {
				c := info[i]
				if fl, ok := maildirFlags[c]; ok {
					m.Flags = append(m.Flags, fl)
				} else if k, ok := kw[c]; ok {
					m.Flags = append(m.Flags, k)
				}
			}
			uid, ok := l.uids[base]
			if i := strings.IndexByte(base, ','); !ok && i > 0 {
				uid, ok = l.uids[base[:i]]
			}
			if ok && f.UIDValidity != 0 {
				m.UID = uid
				f.Messages = append(f.Messages, m)
			} else {
				m.UID = 0
				unknown = append(unknown, m)
			}
		}
	}
	sort.Slice(f.Messages, func(i, j int) bool { return f.Messages[i].UID < f.Messages[j].UID })
	// Files the list does not know: numbered after it, in name order
	// (Maildir names start with the delivery time).
	sort.Slice(unknown, func(i, j int) bool { return unknown[i].Path < unknown[j].Path })
	next := f.UIDNext
	if n := len(f.Messages); n > 0 && f.Messages[n-1].UID >= next {
		next = f.Messages[n-1].UID + 1
	}
	if f.UIDValidity != 0 {
		for i := range unknown {
			unknown[i].UID = next
			next++
		}
		f.UIDNext = next
	}
	f.Messages = append(f.Messages, unknown...)
	return f, nil
}
