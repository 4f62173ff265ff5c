package smtp

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/twinbox/twinbox/protocols"
	"github.com/twinbox/twinbox/store"
)

// TestReplyForAFullDisk (issue 14 D3): a write that failed for want of
// space is 452 4.3.1, temporary; other failures of the write path 451.
func TestReplyForAFullDisk(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, c := range []struct {
		err  error
		code int
		enh  gosmtp.EnhancedCode
	}{
		{fmt.Errorf("%w: %w", protocols.ErrUnavailable, fmt.Errorf("store: fsync: %w", syscall.ENOSPC)), 452, gosmtp.EnhancedCode{4, 3, 1}},
		{fmt.Errorf("%w: %w", protocols.ErrUnavailable, store.ErrDiskFault), 452, gosmtp.EnhancedCode{4, 3, 1}},
		{fmt.Errorf("%w: %w", protocols.ErrUnavailable, syscall.EIO), 451, gosmtp.EnhancedCode{4, 3, 0}},
		{errors.New("anything"), 451, gosmtp.EnhancedCode{4, 3, 0}},
	} {
		var se *gosmtp.SMTPError
		if !errors.As(s.replyFor(c.err), &se) || se.Code != c.code || se.EnhancedCode != c.enh {
			t.Errorf("%v: %+v, want %d %v", c.err, se, c.code, c.enh)
		}
	}
}
