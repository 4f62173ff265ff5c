package migrate

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"time"
)

// Folder is one mailbox of a source.
type Folder struct {
	// Name is the mailbox name on Twinbox ("INBOX", "Archive/2025").
	Name string
	// UIDValidity and UIDNext are the source's; UIDValidity 0 means the
	// source has no numbering to keep (messages are appended).
	UIDValidity, UIDNext uint32
	Subscribed           bool
	Messages             []Message
}

// Bytes is the sum of the folder's message sizes on the source.
func (f *Folder) Bytes() int64 {
	var n int64
	for _, m := range f.Messages {
		n += m.Size
	}
	return n
}

// Message is one message of a source folder; its bytes are read on demand.
type Message struct {
	UID   uint32 // the source's UID; 0 when it has none
	Flags []string
	Date  time.Time // internal date
	Size  int64     // bytes on the source
	// Path, Offset and Length locate the message's bytes (Length -1: to
	// the end of the file).
	Path           string
	Offset, Length int64
	// mbox: the bytes are mboxrd-escaped and carry the old server's
	// status headers.
	mbox bool
	// fetch, when set, reads the message from elsewhere (an IMAP server).
	fetch func() ([]byte, error)
}

// Read returns the message as Twinbox stores it: CRLF line ends, and for
// mbox without the ">From " quoting and the old server's status headers.
func (m *Message) Read() ([]byte, error) {
	if m.fetch != nil {
		raw, err := m.fetch()
		if err != nil {
			return nil, err
		}
		return crlf(raw), nil
	}
	f, err := os.Open(m.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var raw []byte
	if m.Length < 0 {
		if _, err := f.Seek(m.Offset, io.SeekStart); err != nil {
			return nil, err
		}
		raw, err = io.ReadAll(f)
	} else {
		raw = make([]byte, m.Length)
		_, err = f.ReadAt(raw, m.Offset)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", m.Path, err)
	}
	if m.mbox {
		raw = unquoteMbox(stripMboxHeaders(raw))
	}
	return crlf(raw), nil
}

// crlf turns bare LF line ends into CRLF, as IMAP needs them (Maildir and
// mbox files hold LF).
func crlf(b []byte) []byte {
	n := bytes.Count(b, []byte{'\n'}) - bytes.Count(b, []byte("\r\n"))
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
