package mailbox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/dibs-backup/dibs/queue"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// FlagBad is the keyword a poll sets on a dibs mail it cannot use; later polls skip it.
const FlagBad imap.Flag = "$DibsBad"

// DefaultMaxMailSize caps a fetched mail when IMAPConfig.MaxMessageSize is 0.
const DefaultMaxMailSize = 256 << 20

// IMAPConfig says where our mail waits.
type IMAPConfig struct {
	// Server is host:port; without a port, 993 for tls and 143 otherwise.
	Server string
	// User and the first set of Password, PasswordFile (its first line) or PasswordEnv
	// (an environment variable's name) log us in.
	User, Password, PasswordFile, PasswordEnv string
	// Mailbox is where dibs mails arrive; default INBOX.
	Mailbox string
	// DoneMailbox, if set, receives the mails whose files were committed (created if
	// missing); otherwise they are expunged.
	DoneMailbox string
	// TLS is "none" (credentials only to loopback), "starttls" (the default) or "tls".
	TLS string
	// CAFile holds extra PEM certificates to trust; RootCAs replaces the system pool (tests).
	CAFile  string
	RootCAs *x509.CertPool
	// MaxMessageSize caps a fetched mail in bytes: a larger dibs mail is flagged bad and
	// never read. 0 means DefaultMaxMailSize, negative means no limit.
	MaxMessageSize int64
	// Timeout bounds dialing and any stretch of silence; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Poller fetches dibs mails from an IMAP mailbox.
type Poller struct {
	cfg      IMAPConfig
	host     string
	addr     string
	mode     string
	password string
	tls      *tls.Config
}

var _ queue.Poller = (*Poller)(nil)

// NewPoller checks cfg and reads its password. Sending credentials in clear text to a
// non-loopback server is refused here, with a permanent error.
func NewPoller(cfg IMAPConfig) (*Poller, error) {
	mode, err := checkTLSMode(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("mailbox: imap config: %w", err)
	}
	port := "143"
	if mode == TLSImplicit {
		port = "993"
	}
	host, addr, err := splitServer(cfg.Server, port)
	if err != nil {
		return nil, fmt.Errorf("mailbox: imap config: %w", err)
	}
	if err := checkCleartext(mode, host, cfg.User); err != nil {
		return nil, queue.Permanent(fmt.Errorf("mailbox: imap config: %w", err))
	}
	if cfg.User == "" {
		return nil, errors.New("mailbox: imap config: no user")
	}
	p := &Poller{cfg: cfg, host: host, addr: addr, mode: mode}
	if p.password, err = secret(cfg.Password, cfg.PasswordFile, cfg.PasswordEnv); err != nil {
		return nil, fmt.Errorf("mailbox: imap config: %w", err)
	}
	if mode != TLSNone {
		if p.tls, err = tlsConfig(host, cfg.RootCAs, cfg.CAFile); err != nil {
			return nil, fmt.Errorf("mailbox: imap config: %w", err)
		}
	}
	if p.cfg.Mailbox == "" {
		p.cfg.Mailbox = "INBOX"
	}
	if p.cfg.Timeout <= 0 {
		p.cfg.Timeout = DefaultTimeout
	}
	switch {
	case p.cfg.MaxMessageSize == 0:
		p.cfg.MaxMessageSize = DefaultMaxMailSize
	case p.cfg.MaxMessageSize < 0:
		p.cfg.MaxMessageSize = 0
	}
	return p, nil
}

// Poll hands the file of every dibs mail in the mailbox to sink, one mail at a time, and
// removes a mail (expunge, or move to DoneMailbox) only after sink returned nil for it.
// With src.Key set, only mails whose X-Dibs-Key is that key are taken. Outcomes:
//   - nil: every usable dibs mail was committed and removed;
//   - the first connection, protocol or sink error, which stops the poll: the mail being
//     fetched stays in the mailbox for the next poll, the ones before it are done;
//   - an error wrapping ErrBadMail when some marked mails could not be used: they were
//     flagged FlagBad and left in place, and the poll went on (see the package doc).
//
// Mail without the dibs mark, or for another key, is never fetched, flagged or moved.
func (p *Poller) Poll(ctx context.Context, src queue.Endpoint, sink queue.Sink) (int, error) {
	c, stop, err := p.connect(ctx)
	if err != nil {
		return 0, fmt.Errorf("mailbox: poll %s: %w", p.cfg.Mailbox, ctxErr(ctx, err))
	}
	defer stop()
	defer c.Close()
	n, err := p.poll(ctx, c, src.Key, sink)
	if err != nil {
		return n, fmt.Errorf("mailbox: poll %s: %w", p.cfg.Mailbox, ctxErr(ctx, err))
	}
	_ = c.Logout().Wait()
	return n, nil
}

func (p *Poller) connect(ctx context.Context) (*imapclient.Client, func() bool, error) {
	conn, stop, err := dial(ctx, p.addr, p.cfg.Timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	var c *imapclient.Client
	switch p.mode {
	case TLSImplicit:
		c = imapclient.New(tls.Client(conn, p.tls), nil)
	case TLSStartTLS:
		c, err = imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: p.tls})
	default:
		c = imapclient.New(conn, nil)
	}
	if err == nil {
		err = c.WaitGreeting()
	}
	if err != nil {
		stop()
		conn.Close()
		return nil, nil, fmt.Errorf("connect %s: %w", p.addr, err)
	}
	if err := c.Login(p.cfg.User, p.password).Wait(); err != nil {
		stop()
		c.Close()
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo {
			return nil, nil, queue.Permanent(fmt.Errorf("login as %s refused: %w", p.cfg.User, err))
		}
		return nil, nil, fmt.Errorf("login as %s: %w", p.cfg.User, err)
	}
	return c, stop, nil
}

func (p *Poller) poll(ctx context.Context, c *imapclient.Client, key string, sink queue.Sink) (int, error) {
	if p.cfg.DoneMailbox != "" {
		if err := ensureMailbox(c, p.cfg.DoneMailbox); err != nil {
			return 0, err
		}
	}
	if _, err := c.Select(p.cfg.Mailbox, nil).Wait(); err != nil {
		return 0, fmt.Errorf("select: %w", err)
	}
	crit := &imap.SearchCriteria{
		// An empty value matches every mail that has the field (RFC 3501 6.4.4).
		Header:  []imap.SearchCriteriaHeaderField{{Key: HeaderMessage, Value: ""}},
		NotFlag: []imap.Flag{imap.FlagDeleted, FlagBad},
	}
	if key != "" {
		// A substring match on the server; openMail checks the exact key.
		crit.Header = append(crit.Header, imap.SearchCriteriaHeaderField{Key: HeaderKey, Value: key})
	}
	sd, err := c.UIDSearch(crit, nil).Wait()
	if err != nil {
		return 0, fmt.Errorf("search: %w", err)
	}
	uids := sd.AllUIDs()
	if len(uids) == 0 {
		// Never send an empty UID set: the command comes out malformed (LIBRARIES.md §2.1).
		return 0, nil
	}
	var bads badMails
	if max := p.cfg.MaxMessageSize; max > 0 {
		if uids, err = p.dropOversized(c, uids, &bads); err != nil {
			return 0, err
		}
	}
	n := 0
	for _, uid := range uids {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		done, err := p.take(c, uid, key, sink)
		var bm *badMail
		switch {
		case errors.As(err, &bm):
			bads.add("UID "+strconv.FormatUint(uint64(uid), 10), err)
			if err := flagBad(c, uid); err != nil {
				return n, err
			}
			continue
		case err != nil:
			return n, err
		case !done:
			continue
		}
		n++
		if err := p.finish(c, uid); err != nil {
			return n, err
		}
	}
	return n, bads.err("flagged " + string(FlagBad) + " and left in place")
}

// dropOversized flags the mails larger than the cap as bad without fetching them and
// returns the others.
func (p *Poller) dropOversized(c *imapclient.Client, uids []imap.UID, bads *badMails) ([]imap.UID, error) {
	msgs, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, RFC822Size: true}).Collect()
	if err != nil {
		return nil, fmt.Errorf("fetch sizes: %w", err)
	}
	big := map[imap.UID]int64{}
	for _, m := range msgs {
		if m.RFC822Size > p.cfg.MaxMessageSize {
			big[m.UID] = m.RFC822Size
		}
	}
	keep := uids[:0:0]
	for _, uid := range uids {
		size, ok := big[uid]
		if !ok {
			keep = append(keep, uid)
			continue
		}
		bads.add("UID "+strconv.FormatUint(uint64(uid), 10),
			bad("mail of %d bytes is over MaxMessageSize=%d by %d bytes", size, p.cfg.MaxMessageSize, size-p.cfg.MaxMessageSize))
		if err := flagBad(c, uid); err != nil {
			return nil, err
		}
	}
	return keep, nil
}

// take fetches one mail and hands its file to sink. It returns done=true when sink
// committed it, done=false for a mail that turned out not to be ours, a *badMail error for
// a marked mail that cannot be used, or any other error for a failure of the connection,
// the server or sink.
func (p *Poller) take(c *imapclient.Client, uid imap.UID, key string, sink queue.Sink) (done bool, err error) {
	fc := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
		UID:         true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}, // BODY.PEEK[]: \Seen untouched
	})
	defer func() {
		// Close waits for the tagged response; it discards what was not read.
		if cerr := fc.Close(); cerr != nil && err == nil && !done {
			err = fmt.Errorf("fetch UID %d: %w", uid, cerr)
		}
	}()
	for msg := fc.Next(); msg != nil; msg = fc.Next() {
		for item := msg.Next(); item != nil; item = msg.Next() {
			body, ok := item.(imapclient.FetchItemDataBodySection)
			if !ok || body.Literal == nil {
				continue
			}
			return p.deliver(body.Literal, uid, key, sink)
		}
	}
	// The mail vanished between SEARCH and FETCH (another client took it).
	return false, nil
}

// deliver parses the raw mail and hands its attachment to sink.
func (p *Poller) deliver(lit io.Reader, uid imap.UID, key string, sink queue.Sink) (bool, error) {
	raw := &rawReader{r: lit, max: p.cfg.MaxMessageSize}
	name, att, err := openMail(raw, key, p.cfg.MaxMessageSize, "imap-uid-"+strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		if raw.err != nil && !errors.As(raw.err, new(*badMail)) {
			return false, fmt.Errorf("fetch UID %d: %w", uid, raw.err)
		}
		if errors.Is(err, errNotOurs) {
			return false, nil
		}
		return false, err
	}
	if err := sink(name, att); err != nil {
		cr := att.(*checkedReader)
		switch {
		case raw.err != nil && !errors.As(raw.err, new(*badMail)):
			return false, fmt.Errorf("fetch UID %d: %w", uid, raw.err)
		case errors.As(cr.err, new(*badMail)):
			return false, cr.err
		case cr.err != nil && raw.complete:
			// The whole mail arrived, yet its attachment does not decode.
			return false, bad("%v", cr.err)
		}
		return false, fmt.Errorf("deliver %s (UID %d): %w", name, uid, err)
	}
	return true, nil
}

// rawReader watches the raw mail: it caps it and remembers whether it was read whole.
type rawReader struct {
	r        io.Reader
	n, max   int64
	complete bool
	err      error
}

func (r *rawReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	if r.max > 0 && r.n > r.max {
		err = bad("mail is over the limit of %d bytes", r.max)
	}
	if err == io.EOF {
		r.complete = true
	} else if err != nil {
		r.err = err
	}
	return n, err
}

// finish removes a committed mail: moved to DoneMailbox, or flagged \Deleted and expunged
// by UID, so that no other mail marked \Deleted by a human is expunged with it. Without
// MOVE and UIDPLUS the flag is all we set; the search skips \Deleted mails.
func (p *Poller) finish(c *imapclient.Client, uid imap.UID) error {
	set := imap.UIDSetNum(uid)
	caps := c.Caps()
	if p.cfg.DoneMailbox != "" {
		if caps.Has(imap.CapMove) {
			if _, err := c.Move(set, p.cfg.DoneMailbox).Wait(); err != nil {
				return fmt.Errorf("move UID %d to %s: %w", uid, p.cfg.DoneMailbox, err)
			}
			return nil
		}
		if _, err := c.Copy(set, p.cfg.DoneMailbox).Wait(); err != nil {
			return fmt.Errorf("copy UID %d to %s: %w", uid, p.cfg.DoneMailbox, err)
		}
	}
	if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		return fmt.Errorf("flag UID %d deleted: %w", uid, err)
	}
	if caps.Has(imap.CapUIDPlus) {
		if err := c.UIDExpunge(set).Close(); err != nil {
			return fmt.Errorf("expunge UID %d: %w", uid, err)
		}
	}
	return nil
}

func flagBad(c *imapclient.Client, uid imap.UID) error {
	err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{FlagBad}}, nil).Close()
	if err != nil {
		return fmt.Errorf("flag UID %d %s: %w", uid, FlagBad, err)
	}
	return nil
}

// ensureMailbox creates name unless it exists.
func ensureMailbox(c *imapclient.Client, name string) error {
	l, err := c.List("", name, nil).Collect()
	if err != nil {
		return fmt.Errorf("list %s: %w", name, err)
	}
	if len(l) > 0 {
		return nil
	}
	if err := c.Create(name, nil).Wait(); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	return nil
}
