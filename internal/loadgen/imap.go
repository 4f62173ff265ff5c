package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// IMAP operations, in the order results list them.
const (
	OpFetch   = "fetch"   // FETCH one random message BODY.PEEK[]
	OpHeaders = "headers" // FETCH 50 messages (ENVELOPE FLAGS BODYSTRUCTURE)
	OpSearch  = "search"  // UID SEARCH by SUBJECT, FROM or UNSEEN
	OpAppend  = "append"  // APPEND one message to the append mailbox
)

var opNames = []string{OpFetch, OpHeaders, OpSearch, OpAppend}

// headersBatch is how many messages a headers operation fetches.
const headersBatch = 50

// Defaults of an IMAP load.
const (
	DefaultMix           = "fetch=4,headers=3,search=2,append=1"
	DefaultMailbox       = "INBOX"
	DefaultAppendMailbox = "bench"
)

// Mix weighs the IMAP operations: each operation is chosen with probability
// its weight over the sum of weights.
type Mix struct {
	Fetch, Headers, Search, Append int
}

// ParseMix reads "fetch=4,headers=3,search=2,append=1"; operations left
// out weigh 0.
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return Mix{}, fmt.Errorf("loadgen: mix %q: want name=weight", part)
		}
		w, err := strconv.Atoi(val)
		if err != nil || w < 0 {
			return Mix{}, fmt.Errorf("loadgen: mix %q: weight must be a whole number ≥ 0", part)
		}
		p := m.weight(name)
		if p == nil {
			return Mix{}, fmt.Errorf("loadgen: mix %q: unknown operation %q (known: %s)", part, name, strings.Join(opNames, ", "))
		}
		*p = w
	}
	if m.total() == 0 {
		return Mix{}, fmt.Errorf("loadgen: mix %q: no operation has a weight", s)
	}
	return m, nil
}

func (m *Mix) weight(op string) *int {
	switch op {
	case OpFetch:
		return &m.Fetch
	case OpHeaders:
		return &m.Headers
	case OpSearch:
		return &m.Search
	case OpAppend:
		return &m.Append
	}
	return nil
}

func (m Mix) total() int { return m.Fetch + m.Headers + m.Search + m.Append }

// String writes the mix as ParseMix reads it.
func (m Mix) String() string {
	var parts []string
	for _, op := range opNames {
		parts = append(parts, fmt.Sprintf("%s=%d", op, *m.weight(op)))
	}
	return strings.Join(parts, ",")
}

// pick draws an operation.
func (m Mix) pick(rng *rand.Rand) string {
	n := rng.IntN(m.total())
	for _, op := range opNames {
		w := *m.weight(op)
		if n < w {
			return op
		}
		n -= w
	}
	panic("unreachable")
}

// IMAPConfig describes an IMAP load. Zero fields take the Default* values.
type IMAPConfig struct {
	Conn // Timeout bounds connecting; imapclient has its own reply timeouts
	Limits
	// Sessions is the number of concurrent logged-in connections.
	Sessions int
	// User logs every session in when set; otherwise session i logs in
	// as Users.Name(i mod Users.Count).
	User     string
	Password string
	Users    Users
	// Mix weighs the operations; the zero Mix means DefaultMix.
	Mix Mix
	// MessageSize is the size of appended and preloaded messages.
	MessageSize int
	// Mailbox is selected and read; AppendMailbox receives APPENDs and is
	// created when missing.
	Mailbox       string
	AppendMailbox string
	// Preload, when positive, first appends to each user's Mailbox as many
	// messages as it lacks to hold Preload. Not measured as load.
	Preload int
}

func (c *IMAPConfig) setDefaults() {
	c.Conn.setDefaults()
	c.Limits.setDefaults()
	c.Users.setDefaults()
	if c.Sessions == 0 {
		c.Sessions = DefaultSessions
	}
	if c.Mix == (Mix{}) {
		c.Mix, _ = ParseMix(DefaultMix)
	}
	if c.MessageSize == 0 {
		c.MessageSize = DefaultMessageSize
	}
	if c.Mailbox == "" {
		c.Mailbox = DefaultMailbox
	}
	if c.AppendMailbox == "" {
		c.AppendMailbox = DefaultAppendMailbox
	}
}

// Validate reports every problem of a config whose defaults are filled.
func (c *IMAPConfig) Validate() error {
	errs := c.Conn.validate()
	errs = append(errs, c.Limits.validate()...)
	if c.Sessions < 1 {
		errs = append(errs, invalid("IMAPConfig.Sessions", c.Sessions, "want at least 1"))
	}
	if c.User == "" && c.Users.Count < 1 {
		errs = append(errs, invalid("IMAPConfig.Users.Count", c.Users.Count, "want at least 1"))
	}
	if c.Password == "" {
		errs = append(errs, invalid("IMAPConfig.Password", "", "empty"))
	}
	if c.Mix.Fetch < 0 || c.Mix.Headers < 0 || c.Mix.Search < 0 || c.Mix.Append < 0 || c.Mix.total() == 0 {
		errs = append(errs, invalid("IMAPConfig.Mix", c.Mix, "weights must be ≥ 0 and one above 0"))
	}
	if c.MessageSize < 1 {
		errs = append(errs, invalid("IMAPConfig.MessageSize", c.MessageSize, "want at least 1"))
	}
	if c.Preload < 0 {
		errs = append(errs, invalid("IMAPConfig.Preload", c.Preload, "must not be negative"))
	}
	return errors.Join(errs...)
}

// login returns the user session i logs in as.
func (c *IMAPConfig) login(i int) string {
	if c.User != "" {
		return c.User
	}
	return c.Users.Name(i % c.Users.Count)
}

// logins returns the distinct users the sessions log in as.
func (c *IMAPConfig) logins() []string {
	n := 1
	if c.User == "" {
		n = min(c.Sessions, c.Users.Count)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = c.login(i)
	}
	return out
}

// OpResult is what one kind of IMAP operation measured.
type OpResult struct {
	Name string `json:"name"`
	// Count of operations that ended in OK; Failed of those that did not.
	Count  int64 `json:"count"`
	Failed int64 `json:"failed"`
	// Failures by response ("NO", "BAD", "NO [TRYCREATE]"), "network" for
	// a broken connection, "short" for a FETCH that returned fewer
	// messages than asked.
	Failures  tally   `json:"failures"`
	PerSec    float64 `json:"ops_per_s"`
	Latency   Latency `json:"latency"`
	latencies []time.Duration
}

// IMAPResult is what an IMAP run measured.
type IMAPResult struct {
	Target   string `json:"target"`
	Sessions int    `json:"sessions"`
	Logins   int    `json:"logins"` // distinct users logged in
	Mailbox  string `json:"mailbox"`
	Mix      string `json:"mix"`
	// MailboxMessages is the smallest message count a session saw in
	// Mailbox when the clock started.
	MailboxMessages uint32 `json:"mailbox_messages"`
	// Preloaded messages appended before the measured phase, and how long
	// that took.
	Preloaded      int64         `json:"preloaded"`
	PreloadElapsed time.Duration `json:"-"`
	PreloadSec     float64       `json:"preload_s"`
	Elapsed        time.Duration `json:"-"`
	ElapsedSec     float64       `json:"elapsed_s"`
	// Ops lists the operations with a weight, in the order fetch, headers,
	// search, append; Total adds them up.
	Ops         []*OpResult `json:"ops"`
	Total       *OpResult   `json:"total"`
	Reconnects  int64       `json:"reconnects"`
	Interrupted bool        `json:"interrupted"`
}

// RunIMAP runs an IMAP load against cfg.Target. It returns an error, and no
// result, when the config is invalid, the preload fails, or a session cannot
// log in and select; later failures are counted in the result.
func RunIMAP(ctx context.Context, cfg IMAPConfig) (*IMAPResult, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seed := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	r := &imapRun{
		cfg: cfg,
		gen: newMessageGen(cfg.MessageSize, cfg.Users.Domain, seed),
	}
	res := &IMAPResult{
		Target:   cfg.Target,
		Sessions: cfg.Sessions,
		Logins:   len(cfg.logins()),
		Mailbox:  cfg.Mailbox,
		Mix:      cfg.Mix.String(),
	}
	if cfg.Preload > 0 {
		start := time.Now()
		n, err := r.preload(ctx, seed)
		if err != nil {
			return nil, fmt.Errorf("loadgen: imap %s: preload: %w", cfg.Target, err)
		}
		res.Preloaded = n
		res.PreloadElapsed = time.Since(start)
		res.PreloadSec = res.PreloadElapsed.Seconds()
	}
	r.sessions = make([]*imapSession, cfg.Sessions)
	for i := range r.sessions {
		r.sessions[i] = &imapSession{
			run:  r,
			id:   i,
			user: cfg.login(i),
			rng:  rand.New(rand.NewPCG(seed.Uint64(), seed.Uint64())),
			ops:  map[string]*OpResult{},
		}
		for _, op := range opNames {
			r.sessions[i].ops[op] = &OpResult{Name: op, Failures: tally{}}
		}
	}
	elapsed, err := runSessions(ctx, cfg.Sessions, &r.gate, cfg.Limits,
		func(ctx context.Context, i int) error { return r.sessions[i].connect(ctx, true) },
		func(ctx context.Context, i int) { r.sessions[i].loop(ctx) },
	)
	for _, s := range r.sessions {
		s.close()
	}
	if err != nil {
		return nil, fmt.Errorf("loadgen: imap %s: %w", cfg.Target, err)
	}
	res.Elapsed = elapsed
	res.ElapsedSec = elapsed.Seconds()
	res.Interrupted = ctx.Err() != nil
	res.Total = &OpResult{Name: "total", Failures: tally{}}
	res.MailboxMessages = r.sessions[0].startMessages
	for _, op := range opNames {
		if *cfg.Mix.weight(op) == 0 {
			continue
		}
		o := &OpResult{Name: op, Failures: tally{}}
		for _, s := range r.sessions {
			so := s.ops[op]
			o.Count += so.Count
			o.Failed += so.Failed
			o.Failures.add(so.Failures)
			o.latencies = append(o.latencies, so.latencies...)
		}
		res.Total.Count += o.Count
		res.Total.Failed += o.Failed
		res.Total.Failures.add(o.Failures)
		res.Total.latencies = append(res.Total.latencies, o.latencies...)
		o.PerSec = perSecond(o.Count, elapsed)
		o.Latency = summarize(o.latencies)
		res.Ops = append(res.Ops, o)
	}
	res.Total.PerSec = perSecond(res.Total.Count, elapsed)
	res.Total.Latency = summarize(res.Total.latencies)
	for _, s := range r.sessions {
		res.Reconnects += s.reconnects
		res.MailboxMessages = min(res.MailboxMessages, s.startMessages)
	}
	return res, nil
}

type imapRun struct {
	cfg      IMAPConfig
	gen      *messageGen
	gate     gate
	sessions []*imapSession
}

// dial connects and logs in as user. Until stop is called, cancelling ctx
// closes the connection.
// Unilateral data, such as EXISTS for new mail, goes to h when set.
func (r *imapRun) dial(ctx context.Context, user string, h *imapclient.UnilateralDataHandler) (*imapclient.Client, func() bool, error) {
	cfg := &r.cfg
	conn, err := cfg.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	opts := &imapclient.Options{UnilateralDataHandler: h}
	var c *imapclient.Client
	if cfg.TLS == TLSStartTLS {
		opts.TLSConfig = cfg.tlsConfig()
		c, err = imapclient.NewStartTLS(conn, opts)
		if err != nil {
			return nil, nil, err
		}
	} else {
		c = imapclient.New(conn, opts)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	if err := c.WaitGreeting(); err != nil {
		stop()
		c.Close()
		return nil, nil, err
	}
	if err := c.Login(user, cfg.Password).Wait(); err != nil {
		stop()
		c.Close()
		return nil, nil, fmt.Errorf("login as %s: %w", user, err)
	}
	return c, stop, nil
}

// address is where mail for a login goes.
func (c *IMAPConfig) address(user string) string {
	if strings.Contains(user, "@") {
		return user
	}
	return user + "@" + c.Users.Domain
}

// preload appends to each user's mailbox the messages it lacks to hold
// cfg.Preload, spreading each user's share over the sessions logged in as
// that user. It returns how many it appended.
func (r *imapRun) preload(ctx context.Context, seed *rand.Rand) (int64, error) {
	cfg := &r.cfg
	users := cfg.logins()
	missing := make([]int, len(users))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for u, user := range users {
		wg.Go(func() {
			c, stop, err := r.dial(ctx, user, nil)
			if err != nil {
				fail(err)
				return
			}
			defer stop()
			defer c.Close()
			st, err := c.Status(cfg.Mailbox, &imap.StatusOptions{NumMessages: true}).Wait()
			if err != nil {
				fail(fmt.Errorf("STATUS %s as %s: %w", cfg.Mailbox, user, err))
				return
			}
			if st.NumMessages != nil && int(*st.NumMessages) < cfg.Preload {
				missing[u] = cfg.Preload - int(*st.NumMessages)
			}
			c.Logout().Wait()
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return 0, errors.Join(errs...)
	}
	// Session i appends for user i mod len(users) its share of that
	// user's missing messages. Their Message-IDs come from a generator of
	// their own, so they never repeat those of the measured appends.
	gen := newMessageGen(cfg.MessageSize, cfg.Users.Domain, seed)
	var appended int64
	for i := range cfg.Sessions {
		u := i % len(users)
		k := (cfg.Sessions - u + len(users) - 1) / len(users) // sessions of user u
		share := missing[u] / k
		if i/len(users) < missing[u]%k {
			share++
		}
		if share == 0 {
			continue
		}
		rng := rand.New(rand.NewPCG(seed.Uint64(), seed.Uint64()))
		wg.Go(func() {
			c, stop, err := r.dial(ctx, users[u], nil)
			if err != nil {
				fail(err)
				return
			}
			defer stop()
			defer c.Close()
			var buf bytes.Buffer
			for n := range share {
				msg := gen.build(&buf, rng, i, uint64(n+1), cfg.address(users[u]))
				if err := appendMessage(c, cfg.Mailbox, msg); err != nil {
					fail(fmt.Errorf("APPEND to %s as %s: %w", cfg.Mailbox, users[u], err))
					return
				}
				mu.Lock()
				appended++
				mu.Unlock()
			}
			c.Logout().Wait()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return appended, ctx.Err()
	}
	return appended, errors.Join(errs...)
}

func appendMessage(c *imapclient.Client, mailbox string, msg []byte) error {
	cmd := c.Append(mailbox, int64(len(msg)), nil)
	if _, err := cmd.Write(msg); err != nil {
		cmd.Close()
		return err
	}
	if err := cmd.Close(); err != nil {
		return err
	}
	_, err := cmd.Wait()
	return err
}

// imapSession is one logged-in connection's worth of work. Only its own
// goroutine touches it until runSessions has returned.
type imapSession struct {
	run  *imapRun
	id   int
	user string
	rng  *rand.Rand
	buf  bytes.Buffer
	seq  uint64

	c         *imapclient.Client // nil while disconnected
	stopClose func() bool
	messages  atomic.Uint32 // in the selected mailbox, set by the client's reader too

	startMessages uint32
	reconnects    int64
	ops           map[string]*OpResult
}

// connect logs in, makes sure the append mailbox exists and selects the
// mailbox. Cancelling ctx closes the connection.
func (s *imapSession) connect(ctx context.Context, first bool) error {
	cfg := &s.run.cfg
	// The selected mailbox's size is followed here rather than through
	// Client.Mailbox, which imapclient sets only after SELECT's Wait
	// has returned.
	c, stop, err := s.run.dial(ctx, s.user, &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				s.messages.Store(*d.NumMessages)
			}
		},
		Expunge: func(uint32) { s.messages.Add(^uint32(0)) },
	})
	if err != nil {
		return err
	}
	closeAll := func() {
		stop()
		c.Close()
	}
	if cfg.Mix.Append > 0 && first {
		err := c.Create(cfg.AppendMailbox, nil).Wait()
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Code == imap.ResponseCodeAlreadyExists {
			err = nil
		}
		if err != nil {
			// Perhaps it exists and the server did not say so with
			// ALREADYEXISTS; STATUS tells.
			if _, serr := c.Status(cfg.AppendMailbox, &imap.StatusOptions{NumMessages: true}).Wait(); serr != nil {
				closeAll()
				return fmt.Errorf("CREATE %s as %s: %w", cfg.AppendMailbox, s.user, err)
			}
		}
	}
	sel, err := c.Select(cfg.Mailbox, nil).Wait()
	if err != nil {
		closeAll()
		return fmt.Errorf("SELECT %s as %s: %w", cfg.Mailbox, s.user, err)
	}
	s.messages.Store(sel.NumMessages)
	if first {
		if sel.NumMessages == 0 && cfg.Mix.Fetch+cfg.Mix.Headers+cfg.Mix.Search > 0 {
			closeAll()
			return fmt.Errorf("%s of %s is empty: nothing to fetch or search (deliver mail first, or preload)", cfg.Mailbox, s.user)
		}
		s.startMessages = sel.NumMessages
	}
	s.c, s.stopClose = c, stop
	return nil
}

func (s *imapSession) close() {
	c, stop := s.c, s.stopClose
	s.c, s.stopClose = nil, nil
	if c == nil {
		return
	}
	stop()
	done := make(chan struct{})
	go func() {
		c.Logout().Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(s.run.cfg.Timeout):
	}
	c.Close()
}

func (s *imapSession) drop() {
	if s.c != nil {
		s.stopClose()
		s.c.Close()
		s.c, s.stopClose = nil, nil
	}
}

func (s *imapSession) loop(ctx context.Context) {
	mix := s.run.cfg.Mix
	attempts := 0
	for s.run.gate.next(ctx) {
		op := mix.pick(s.rng)
		res := s.ops[op]
		if s.c == nil {
			if err := s.connect(ctx, false); err != nil {
				if ctx.Err() != nil {
					return
				}
				res.Failed++
				res.Failures["network"]++
				if !backoff(ctx, attempts) {
					return
				}
				attempts++
				continue
			}
			s.reconnects++
			attempts = 0
		}
		start := time.Now()
		err := s.do(op)
		took := time.Since(start)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			res.Count++
			res.latencies = append(res.latencies, took)
			continue
		}
		res.Failed++
		var ie *imap.Error
		switch {
		case errors.As(err, &ie):
			code := string(ie.Type)
			if ie.Code != "" {
				code += " [" + string(ie.Code) + "]"
			}
			res.Failures[code]++
		case errors.Is(err, errShort):
			res.Failures["short"]++
		default:
			res.Failures["network"]++
			s.drop()
		}
	}
}

var errShort = errors.New("loadgen: FETCH returned fewer messages than asked")

func (s *imapSession) do(op string) error {
	c := s.c
	cfg := &s.run.cfg
	n := s.messages.Load()
	switch op {
	case OpFetch:
		if n == 0 {
			return errShort
		}
		seq := 1 + uint32(s.rng.IntN(int(n)))
		msgs, err := c.Fetch(imap.SeqSetNum(seq), &imap.FetchOptions{
			BodySection: []*imap.FetchItemBodySection{{Peek: true}},
		}).Collect()
		if err != nil {
			return err
		}
		if len(msgs) != 1 || len(msgs[0].BodySection) != 1 {
			return errShort
		}
		return nil
	case OpHeaders:
		if n == 0 {
			return errShort
		}
		first := uint32(1)
		if n > headersBatch {
			first += uint32(s.rng.IntN(int(n - headersBatch + 1)))
		}
		last := min(n, first+headersBatch-1)
		var set imap.SeqSet
		set.AddRange(first, last)
		msgs, err := c.Fetch(set, &imap.FetchOptions{
			Envelope:      true,
			Flags:         true,
			BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		}).Collect()
		if err != nil {
			return err
		}
		if len(msgs) != int(last-first+1) {
			return errShort
		}
		return nil
	case OpSearch:
		var crit imap.SearchCriteria
		switch s.rng.IntN(3) {
		case 0:
			crit.Header = []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subjectWords[s.rng.IntN(len(subjectWords))]}}
		case 1:
			crit.Header = []imap.SearchCriteriaHeaderField{{Key: "From", Value: fmt.Sprintf("sender%d@", 1+s.rng.IntN(senders))}}
		default:
			crit.NotFlag = []imap.Flag{imap.FlagSeen}
		}
		_, err := c.UIDSearch(&crit, nil).Wait()
		return err
	case OpAppend:
		s.seq++
		msg := s.run.gen.build(&s.buf, s.rng, s.id, s.seq, cfg.address(s.user))
		return appendMessage(c, cfg.AppendMailbox, msg)
	}
	return fmt.Errorf("loadgen: unknown operation %q", op)
}
