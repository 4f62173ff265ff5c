package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"
)

// DeliveryConfig describes an SMTP or LMTP delivery load. Zero fields take
// the Default* values.
type DeliveryConfig struct {
	Conn
	Limits
	// LMTP speaks LMTP (LHLO, one reply per recipient after DATA) instead
	// of SMTP.
	LMTP bool
	// Sessions is the number of concurrent connections.
	Sessions int
	// MessageSize is the size of each message in bytes, headers included.
	MessageSize int
	// Recipients per message, distinct users drawn at random from Users.
	Recipients int
	// Users receive the mail.
	Users Users
	// From is the envelope sender; bench@Users.Domain when empty.
	From string
}

func (c *DeliveryConfig) setDefaults() {
	c.Conn.setDefaults()
	c.Limits.setDefaults()
	c.Users.setDefaults()
	if c.Sessions == 0 {
		c.Sessions = DefaultSessions
	}
	if c.MessageSize == 0 {
		c.MessageSize = DefaultMessageSize
	}
	if c.Recipients == 0 {
		c.Recipients = DefaultRecipients
	}
	if c.From == "" {
		c.From = "bench@" + c.Users.Domain
	}
}

// Validate reports every problem of a config whose defaults are filled.
func (c *DeliveryConfig) Validate() error {
	errs := c.Conn.validate()
	errs = append(errs, c.Limits.validate()...)
	if c.Sessions < 1 {
		errs = append(errs, invalid("DeliveryConfig.Sessions", c.Sessions, "want at least 1"))
	}
	if c.MessageSize < 1 {
		errs = append(errs, invalid("DeliveryConfig.MessageSize", c.MessageSize, "want at least 1"))
	}
	if c.Users.Count < 1 {
		errs = append(errs, invalid("DeliveryConfig.Users.Count", c.Users.Count, "want at least 1"))
	}
	if c.Recipients < 1 || c.Recipients > c.Users.Count {
		errs = append(errs, invalid("DeliveryConfig.Recipients", c.Recipients, fmt.Sprintf("want 1 to Users.Count (%d): each recipient is a distinct user", c.Users.Count)))
	}
	if c.LMTP && c.TLS == TLSStartTLS {
		errs = append(errs, invalid("DeliveryConfig.TLS", c.TLS, "STARTTLS is not available with LMTP (go-smtp has no LMTP STARTTLS); use implicit TLS"))
	}
	return errors.Join(errs...)
}

// DeliveryResult is what a delivery run measured.
type DeliveryResult struct {
	Protocol    string        `json:"protocol"` // "smtp" or "lmtp"
	Target      string        `json:"target"`
	Sessions    int           `json:"sessions"`
	MessageSize int           `json:"message_size"`
	Recipients  int           `json:"recipients_per_message"`
	Elapsed     time.Duration `json:"-"`
	// Delivered counts messages every recipient of which got a 250.
	Delivered int64 `json:"delivered"`
	// Failed counts messages at least one recipient of which did not.
	Failed int64 `json:"failed"`
	// RecipientsDelivered and RecipientsFailed count per recipient.
	RecipientsDelivered int64 `json:"recipients_delivered"`
	RecipientsFailed    int64 `json:"recipients_failed"`
	// Failures counts failed messages by the first failing reply code, or
	// "network" for a broken connection.
	Failures tally `json:"failures"`
	// Reconnects counts connections opened again after one broke.
	Reconnects int64 `json:"reconnects"`
	// Bytes counts the bytes of delivered messages, each message once.
	Bytes int64 `json:"bytes"`
	// Latency of delivered messages, from MAIL to the last final reply.
	Latency Latency `json:"latency"`
	// Interrupted is set when the context ended the run.
	Interrupted bool `json:"interrupted"`

	// Rates over Elapsed: delivered messages, delivered recipients and
	// delivered message bytes (each message once) per second.
	ElapsedSec       float64 `json:"elapsed_s"`
	MessagesPerSec   float64 `json:"messages_per_s"`
	RecipientsPerSec float64 `json:"recipients_per_s"`
	BytesPerSec      float64 `json:"bytes_per_s"`
}

// RunDelivery runs an SMTP or LMTP delivery load against cfg.Target. It
// returns an error, and no result, when the config is invalid or a session
// cannot make its first connection; later failures are counted in the
// result.
func RunDelivery(ctx context.Context, cfg DeliveryConfig) (*DeliveryResult, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seed := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	r := &deliveryRun{
		cfg:      cfg,
		gen:      newMessageGen(cfg.MessageSize, cfg.Users.Domain, seed),
		sessions: make([]*deliverySession, cfg.Sessions),
	}
	for i := range r.sessions {
		r.sessions[i] = &deliverySession{
			run:      r,
			id:       i,
			rng:      rand.New(rand.NewPCG(seed.Uint64(), seed.Uint64())),
			failures: tally{},
		}
	}
	elapsed, err := runSessions(ctx, cfg.Sessions, &r.gate, cfg.Limits,
		func(ctx context.Context, i int) error { return r.sessions[i].connect(ctx) },
		func(ctx context.Context, i int) { r.sessions[i].loop(ctx) },
	)
	for _, s := range r.sessions {
		s.close()
	}
	if err != nil {
		return nil, fmt.Errorf("loadgen: %s %s: %w", r.protocol(), cfg.Target, err)
	}
	res := &DeliveryResult{
		Protocol:    r.protocol(),
		Target:      cfg.Target,
		Sessions:    cfg.Sessions,
		MessageSize: cfg.MessageSize,
		Recipients:  cfg.Recipients,
		Elapsed:     elapsed,
		Failures:    tally{},
		Interrupted: ctx.Err() != nil,
	}
	var lat []time.Duration
	for _, s := range r.sessions {
		res.Delivered += s.delivered
		res.Failed += s.failed
		res.RecipientsDelivered += s.rcptOK
		res.RecipientsFailed += s.rcptFailed
		res.Reconnects += s.reconnects
		res.Bytes += s.bytes
		res.Failures.add(s.failures)
		lat = append(lat, s.latencies...)
	}
	res.Latency = summarize(lat)
	res.ElapsedSec = elapsed.Seconds()
	res.MessagesPerSec = perSecond(res.Delivered, elapsed)
	res.RecipientsPerSec = perSecond(res.RecipientsDelivered, elapsed)
	res.BytesPerSec = perSecond(res.Bytes, elapsed)
	return res, nil
}

type deliveryRun struct {
	cfg      DeliveryConfig
	gen      *messageGen
	gate     gate
	sessions []*deliverySession
}

func (r *deliveryRun) protocol() string {
	if r.cfg.LMTP {
		return "lmtp"
	}
	return "smtp"
}

// deliverySession is one connection's worth of work. Only its own goroutine
// touches it until runSessions has returned.
type deliverySession struct {
	run *deliveryRun
	id  int
	rng *rand.Rand
	buf bytes.Buffer
	seq uint64

	c         *smtp.Client // nil while disconnected
	stopClose func() bool  // stops closing c when the run's context ends

	delivered, failed  int64
	rcptOK, rcptFailed int64
	reconnects, bytes  int64
	failures           tally
	latencies          []time.Duration
}

// connect opens the session's connection and says hello. Cancelling ctx
// closes the connection.
func (s *deliverySession) connect(ctx context.Context) error {
	cfg := &s.run.cfg
	conn, err := cfg.dial(ctx)
	if err != nil {
		return err
	}
	var c *smtp.Client
	switch {
	case cfg.LMTP:
		c = smtp.NewClientLMTP(conn)
	case cfg.TLS == TLSStartTLS:
		c, err = smtp.NewClientStartTLS(conn, cfg.tlsConfig())
		if err != nil {
			conn.Close()
			return err
		}
	default:
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = cfg.Timeout
	c.SubmissionTimeout = cfg.Timeout
	stop := context.AfterFunc(ctx, func() { c.Close() })
	if err := c.Hello("bench.localhost"); err != nil {
		stop()
		c.Close()
		return err
	}
	s.c, s.stopClose = c, stop
	return nil
}

// close drops the connection, saying QUIT if it is still usable.
func (s *deliverySession) close() {
	c, stop := s.c, s.stopClose
	s.c, s.stopClose = nil, nil
	if c == nil {
		return
	}
	stop()
	c.Quit()
	c.Close()
}

// drop closes a broken connection.
func (s *deliverySession) drop() {
	c, stop := s.c, s.stopClose
	s.c, s.stopClose = nil, nil
	if c != nil {
		stop()
		c.Close()
	}
}

func (s *deliverySession) loop(ctx context.Context) {
	cfg := &s.run.cfg
	rcpts := make([]string, cfg.Recipients)
	perm := make([]int, cfg.Users.Count)
	for i := range perm {
		perm[i] = i
	}
	attempts := 0
	for s.run.gate.next(ctx) {
		if s.c == nil {
			if err := s.connect(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.failed++
				s.rcptFailed += int64(cfg.Recipients)
				s.failures["network"]++
				if !backoff(ctx, attempts) {
					return
				}
				attempts++
				continue
			}
			s.reconnects++
			attempts = 0
		}
		// A random set of distinct users: a partial Fisher-Yates shuffle.
		for i := range rcpts {
			j := i + s.rng.IntN(len(perm)-i)
			perm[i], perm[j] = perm[j], perm[i]
			rcpts[i] = cfg.Users.Address(perm[i])
		}
		s.seq++
		msg := s.run.gen.build(&s.buf, s.rng, s.id, s.seq, rcpts[0])
		start := time.Now()
		out := s.transaction(rcpts, msg)
		took := time.Since(start)
		if ctx.Err() != nil {
			return // cut short by the caller: counted nowhere
		}
		s.rcptOK += int64(out.ok)
		s.rcptFailed += int64(len(rcpts) - out.ok)
		if out.ok == len(rcpts) {
			s.delivered++
			s.bytes += int64(len(msg))
			s.latencies = append(s.latencies, took)
		} else {
			s.failed++
			s.failures[out.code]++
		}
		if out.broken {
			s.drop()
		}
	}
}

// txOutcome is what one transaction came to.
type txOutcome struct {
	ok     int    // recipients that got a final 250
	code   string // first failing reply code, or "network"
	broken bool   // the connection cannot be used again
}

func (o *txOutcome) fail(err error) {
	code, broken := classify(err)
	if o.code == "" {
		o.code = code
	}
	o.broken = o.broken || broken
}

// classify returns the reply code of a failed command, or "network", and
// whether the connection is still usable.
func classify(err error) (code string, broken bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return strconv.Itoa(se.Code), se.Code == 421
	}
	return "network", true
}

// transaction sends one message: MAIL, RCPT per recipient, DATA, and for
// LMTP one reply per accepted recipient.
func (s *deliverySession) transaction(rcpts []string, msg []byte) (out txOutcome) {
	c := s.c
	defer func() {
		// A transaction left open by a refusal is reset so the next
		// MAIL starts clean.
		if out.code != "" && !out.broken {
			if err := c.Reset(); err != nil {
				out.broken = true
			}
		}
	}()
	if err := c.Mail(s.run.cfg.From, &smtp.MailOptions{Size: int64(len(msg))}); err != nil {
		out.fail(err)
		return out
	}
	accepted := 0
	for _, to := range rcpts {
		if err := c.Rcpt(to, nil); err != nil {
			out.fail(err)
			if out.broken {
				return out
			}
			continue
		}
		accepted++
	}
	if accepted == 0 {
		return out
	}
	w, err := c.Data()
	if err != nil {
		out.fail(err)
		return out
	}
	if _, err := w.Write(msg); err != nil {
		out.fail(err)
		return out
	}
	if !s.run.cfg.LMTP {
		if _, err := w.CloseWithResponse(); err != nil {
			out.fail(err)
			return out
		}
		out.ok = accepted
		return out
	}
	resp, err := w.CloseWithLMTPResponse()
	out.ok = len(resp)
	if err != nil {
		var lerr smtp.LMTPDataError
		if errors.As(err, &lerr) {
			for _, to := range rcpts {
				if se, ok := lerr[to]; ok {
					out.fail(se)
				}
			}
		}
		if len(resp)+len(lerr) < accepted {
			// The connection broke before every reply came.
			out.broken = true
			if out.code == "" {
				out.code = "network"
			}
		}
	}
	return out
}
