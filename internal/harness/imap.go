package harness

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// IMAPDial connects and logs in; the whole connection must be done
// within timeout.
func IMAPDial(ctx context.Context, addr, user, password string, timeout time.Duration) (*imapclient.Client, error) {
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c := imapclient.New(conn, nil)
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Login(user, password).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("LOGIN %s: %w", user, err)
	}
	return c, nil
}

// MessageIDs adds the Message-IDs in user's INBOX to found, counting
// each.
func MessageIDs(ctx context.Context, addr, user, password string, found map[string]int) error {
	c, err := IMAPDial(ctx, addr, user, password, 5*time.Minute)
	if err != nil {
		return err
	}
	defer c.Close()
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return fmt.Errorf("EXAMINE INBOX: %w", err)
	}
	if sel.NumMessages == 0 {
		return c.Logout().Wait()
	}
	msgs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil {
		return fmt.Errorf("FETCH 1:* ENVELOPE: %w", err)
	}
	if len(msgs) != int(sel.NumMessages) {
		return fmt.Errorf("FETCH 1:* returned %d messages, SELECT said %d", len(msgs), sel.NumMessages)
	}
	for _, m := range msgs {
		if m.Envelope == nil {
			return fmt.Errorf("message %d: no envelope", m.SeqNum)
		}
		found[strings.Trim(m.Envelope.MessageID, "<> ")]++
	}
	return c.Logout().Wait()
}
