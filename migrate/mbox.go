package migrate

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// ReadMbox lists the messages of an mbox file as folder name. Messages
// start at "From " lines; ">From " quoting is undone (mboxrd). The status
// headers Dovecot and other mbox servers write become flags: Status (R:
// \Seen), X-Status (A: \Answered, F: \Flagged, T: \Draft, D: \Deleted) and
// X-Keywords. When the first message has X-IMAPbase (UIDVALIDITY, next UID)
// and every message an X-UID, as Dovecot writes them, the UIDs are kept;
// otherwise the messages are appended with new UIDs. These headers are
// removed from the stored message, as the old server hid them. The
// internal date is the "From " line's date.
func ReadMbox(path, name string) (Folder, error) {
	f, err := os.Open(path)
	if err != nil {
		return Folder{}, err
	}
	defer f.Close()
	folder := Folder{Name: name}
	r := bufio.NewReaderSize(f, 64<<10)
	var (
		off     int64
		cur     *Message
		inHead  bool
		allUIDs = true
	)
	finish := func(end int64) {
		if cur == nil {
			return
		}
		cur.Length = end - cur.Offset
		cur.Size = cur.Length
		if cur.UID == 0 {
			allUIDs = false
		}
		folder.Messages = append(folder.Messages, *cur)
		cur = nil
	}
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line: read the rest of it; it is no "From " line
			// nor a header that matters here.
			rest, err2 := r.ReadBytes('\n')
			off += int64(len(line) + len(rest))
			if err2 == io.EOF {
				break
			}
			if err2 != nil {
				return Folder{}, err2
			}
			continue
		}
		if len(line) == 0 && err == io.EOF {
			break
		}
		if err != nil && err != io.EOF {
			return Folder{}, err
		}
		start := off
		off += int64(len(line))
		if bytes.HasPrefix(line, []byte("From ")) {
			end := start
			// The blank line before "From " belongs to the separator.
			finish(end)
			cur = &Message{Path: path, Offset: off, mbox: true, Date: fromLineDate(string(line))}
			inHead = true
			if err == io.EOF {
				break
			}
			continue
		}
		if cur != nil && inHead {
			h := strings.TrimRight(string(line), "\r\n")
			if h == "" {
				inHead = false
			} else {
				statusHeader(h, cur, &folder)
			}
		}
		if err == io.EOF {
			break
		}
	}
	finish(off)
	// Drop the separator's blank line at the end of each message.
	for i := range folder.Messages {
		m := &folder.Messages[i]
		if m.Length > 0 {
			if b, err := readAt(f, m.Offset+m.Length-1, 1); err == nil && b[0] == '\n' && i < len(folder.Messages)-1 {
				m.Length--
				if b, err := readAt(f, m.Offset+m.Length-1, 1); err == nil && b[0] == '\r' {
					m.Length--
				}
				m.Size = m.Length
			}
		}
	}
	if !allUIDs || folder.UIDValidity == 0 {
		folder.UIDValidity, folder.UIDNext = 0, 0
		for i := range folder.Messages {
			folder.Messages[i].UID = 0
		}
	} else {
		for i := 1; i < len(folder.Messages); i++ {
			if folder.Messages[i].UID <= folder.Messages[i-1].UID {
				return Folder{}, fmt.Errorf("%s: X-UID %d after %d", path, folder.Messages[i].UID, folder.Messages[i-1].UID)
			}
		}
	}
	return folder, nil
}

func readAt(f *os.File, off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := f.ReadAt(b, off)
	return b, err
}

// fromLineDate reads the date of a "From sender date" line; the zero time
// when there is none that parses.
func fromLineDate(line string) time.Time {
	fields := strings.Fields(line)
	if len(fields) < 3 {
		return time.Time{}
	}
	s := strings.Join(fields[2:], " ")
	for _, layout := range []string{time.ANSIC, "Mon Jan _2 15:04:05 2006 -0700", time.UnixDate} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// statusHeader reads one header line of an mbox message for what the old
// server kept there.
func statusHeader(h string, m *Message, folder *Folder) {
	name, val, ok := strings.Cut(h, ":")
	if !ok {
		return
	}
	val = strings.TrimSpace(val)
	switch strings.ToLower(name) {
	case "status":
		if strings.ContainsRune(val, 'R') {
			m.Flags = append(m.Flags, `\Seen`)
		}
	case "x-status":
		for _, c := range val {
			if fl, ok := map[rune]string{'A': `\Answered`, 'F': `\Flagged`, 'T': `\Draft`, 'D': `\Deleted`}[c]; ok {
				m.Flags = append(m.Flags, fl)
			}
		}
	case "x-keywords":
		m.Flags = append(m.Flags, strings.FieldsFunc(val, func(r rune) bool { return r == ' ' || r == ',' })...)
	case "x-uid":
		if n, err := strconv.ParseUint(val, 10, 32); err == nil {
			m.UID = uint32(n)
		}
	case "x-imapbase":
		if len(folder.Messages) == 0 {
			f := strings.Fields(val)
			if len(f) >= 2 {
				v, err1 := strconv.ParseUint(f[0], 10, 32)
				n, err2 := strconv.ParseUint(f[1], 10, 32)
				if err1 == nil && err2 == nil {
					folder.UIDValidity, folder.UIDNext = uint32(v), uint32(n)
				}
			}
		}
	}
}

// mboxHeaders are the headers an mbox server keeps its state in and hides
// from clients.
var mboxHeaders = []string{"status", "x-status", "x-keywords", "x-uid", "x-imapbase", "x-imap", "content-length"}

// stripMboxHeaders removes the old server's state headers (and their
// continuation lines) from a message's header.
func stripMboxHeaders(raw []byte) []byte {
	end := bytes.Index(raw, []byte("\n\n"))
	if e2 := bytes.Index(raw, []byte("\r\n\r\n")); e2 >= 0 && (end < 0 || e2 < end) {
		end = e2
	}
	if end < 0 {
		end = len(raw)
	}
	out := make([]byte, 0, len(raw))
	skipping := false
	rest := raw[:end]
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		line := rest
		if i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		if line[0] == ' ' || line[0] == '\t' {
			if !skipping {
				out = append(out, line...)
			}
			continue
		}
		skipping = false
		if name, _, ok := bytes.Cut(line, []byte(":")); ok {
			for _, h := range mboxHeaders {
				if strings.EqualFold(string(bytes.TrimSpace(name)), h) {
					skipping = true
					break
				}
			}
		}
		if !skipping {
			out = append(out, line...)
		}
	}
	return append(out, raw[end:]...)
}

// unquoteMbox undoes mboxrd quoting: one '>' is removed from each line
// that is '>'s followed by "From ".
func unquoteMbox(raw []byte) []byte {
	if !bytes.Contains(raw, []byte(">From ")) {
		return raw
	}
	out := make([]byte, 0, len(raw))
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		line := raw
		if i >= 0 {
			line = raw[:i+1]
		}
		raw = raw[len(line):]
		j := 0
		for j < len(line) && line[j] == '>' {
			j++
		}
		if j > 0 && bytes.HasPrefix(line[j:], []byte("From ")) {
			line = line[1:]
		}
		out = append(out, line...)
	}
	return out
}
