package mailbox

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/queue"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPConfig says how to submit mail.
type SMTPConfig struct {
	// Server is host or host:port; the default port is 587 for starttls, 465 for tls and
	// 25 for none.
	Server string
	// User and the first set of Password, PasswordFile (its first line) or PasswordEnv
	// (an environment variable's name) authenticate us; no User means no AUTH.
	User, Password, PasswordFile, PasswordEnv string
	// TLS is "none" (credentials only to loopback), "starttls" (the default) or "tls".
	TLS string
	// From is our address, the envelope sender and the From field.
	From string
	// CAFile holds extra PEM certificates to trust; RootCAs replaces the system pool (tests).
	CAFile  string
	RootCAs *x509.CertPool
	// MaxMessageSize is a limit of our own on the whole mail in bytes. 0 means: only the
	// limit the server advertises (SIZE), if any.
	MaxMessageSize int64
	// Timeout bounds dialing and any stretch of silence; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Sender submits each file as one mail to the peer's address (Endpoint.Addr).
type Sender struct {
	cfg      SMTPConfig
	host     string
	addr     string
	mode     string
	password string
	tls      *tls.Config
	now      func() time.Time
}

var _ queue.Sender = (*Sender)(nil)

// NewSender checks cfg and reads its password. Sending credentials in clear text to a
// non-loopback server is refused here, with a permanent error.
func NewSender(cfg SMTPConfig) (*Sender, error) {
	mode, err := checkTLSMode(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("mailbox: smtp config: %w", err)
	}
	port := map[string]string{TLSNone: "25", TLSStartTLS: "587", TLSImplicit: "465"}[mode]
	host, addr, err := splitServer(cfg.Server, port)
	if err != nil {
		return nil, fmt.Errorf("mailbox: smtp config: %w", err)
	}
	if err := checkCleartext(mode, host, cfg.User); err != nil {
		return nil, queue.Permanent(fmt.Errorf("mailbox: smtp config: %w", err))
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("mailbox: smtp config: From %q: %w", cfg.From, err)
	}
	cfg.From = from.Address // "Name <addr>" would break MAIL FROM
	s := &Sender{cfg: cfg, host: host, addr: addr, mode: mode, now: time.Now}
	if cfg.User != "" {
		if s.password, err = secret(cfg.Password, cfg.PasswordFile, cfg.PasswordEnv); err != nil {
			return nil, fmt.Errorf("mailbox: smtp config: %w", err)
		}
	}
	if mode != TLSNone {
		if s.tls, err = tlsConfig(host, cfg.RootCAs, cfg.CAFile); err != nil {
			return nil, fmt.Errorf("mailbox: smtp config: %w", err)
		}
	}
	if s.cfg.Timeout <= 0 {
		s.cfg.Timeout = DefaultTimeout
	}
	return s, nil
}

var keyRE = regexp.MustCompile(`^[A-Za-z0-9]{1,128}$`)

// Send mails msg to dst.Addr with dst.Key in X-Dibs-Key. It returns nil once the server
// accepted the mail (250 after DATA), which for a submission server means it has queued
// it durably. Outcomes:
//   - a permanent error (queue.IsPermanent) when retrying cannot help: the mail is larger
//     than MaxMessageSize or the server's SIZE (the error says which and by how much), the
//     server answered 5xx, or it refused our credentials or offers no usable AUTH;
//   - a temporary error otherwise: connection and TLS failures, 4xx answers, ctx done, a
//     file that changed size while it was read. Nothing is delivered half: a failed DATA
//     never reaches the terminating dot.
func (s *Sender) Send(ctx context.Context, dst queue.Endpoint, msg queue.Message) error {
	op := "send " + msg.Name
	fail := func(err error) error { return fmt.Errorf("mailbox: %s: %w", op, err) }
	if !queue.ValidName(msg.Name) {
		return queue.Permanent(fail(fmt.Errorf("%w: %q", queue.ErrBadName, msg.Name)))
	}
	to, err := mail.ParseAddress(dst.Addr)
	if err != nil || to.Address != dst.Addr {
		return queue.Permanent(fail(fmt.Errorf("bad recipient address %q", dst.Addr)))
	}
	if dst.Key != "" && !keyRE.MatchString(dst.Key) {
		return queue.Permanent(fail(fmt.Errorf("bad recipient key %q", dst.Key)))
	}
	if msg.Size < 0 {
		return queue.Permanent(fail(fmt.Errorf("negative size %d", msg.Size)))
	}
	env, err := compose(s.cfg.From, dst.Addr, msg.Name, dst.Key, msg.Size, s.now())
	if err != nil {
		return fail(err)
	}
	size := env.mailLen()
	if lim := s.cfg.MaxMessageSize; lim > 0 && size > lim {
		return queue.Permanent(fail(fmt.Errorf("%w: mail of %d bytes exceeds the configured limit MaxMessageSize=%d by %d bytes",
			queue.ErrTooLarge, size, lim, size-lim)))
	}

	body, err := msg.Body()
	if err != nil {
		return fail(fmt.Errorf("open: %w", err))
	}
	defer body.Close()

	c, stop, err := s.connect(ctx)
	if err != nil {
		return fail(ctxErr(ctx, err))
	}
	defer stop()
	defer c.Close()

	if lim, ok := c.MaxMessageSize(); ok && lim > 0 && size > int64(lim) {
		return queue.Permanent(fail(fmt.Errorf("%w: mail of %d bytes exceeds the server's SIZE limit of %d by %d bytes",
			queue.ErrTooLarge, size, lim, size-int64(lim))))
	}
	if err := s.auth(c); err != nil {
		return fail(ctxErr(ctx, err))
	}
	if err := c.Mail(s.cfg.From, &smtp.MailOptions{Size: size}); err != nil {
		return fail(classify(ctx, "MAIL FROM", err))
	}
	if err := c.Rcpt(dst.Addr, nil); err != nil {
		return fail(classify(ctx, "RCPT TO", err))
	}
	w, err := c.Data()
	if err != nil {
		return fail(classify(ctx, "DATA", err))
	}
	if err := env.writeMail(w, body); err != nil {
		// Close the connection without the final dot: the server drops the mail.
		c.Close()
		return fail(ctxErr(ctx, fmt.Errorf("DATA: %w", err)))
	}
	if err := w.Close(); err != nil {
		return fail(classify(ctx, "DATA", err))
	}
	_ = c.Quit() // the mail is accepted; a failed QUIT changes nothing
	return nil
}

// connect dials, starts TLS as configured and greets.
func (s *Sender) connect(ctx context.Context) (*smtp.Client, func() bool, error) {
	conn, stop, err := dial(ctx, s.addr, s.cfg.Timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	var c *smtp.Client
	switch s.mode {
	case TLSImplicit:
		c = smtp.NewClient(tls.Client(conn, s.tls))
	case TLSStartTLS:
		c, err = smtp.NewClientStartTLS(conn, s.tls)
	default:
		c = smtp.NewClient(conn)
	}
	if err == nil {
		c.CommandTimeout, c.SubmissionTimeout = s.cfg.Timeout, s.cfg.Timeout
		err = c.Hello(helloName(s.cfg.From))
	}
	if err != nil {
		stop()
		conn.Close()
		return nil, nil, fmt.Errorf("connect %s: %w", s.addr, err)
	}
	if s.mode != TLSNone {
		if _, ok := c.TLSConnectionState(); !ok {
			stop()
			c.Close()
			return nil, nil, fmt.Errorf("connect %s: no TLS", s.addr)
		}
	}
	return c, stop, nil
}

// helloName is the EHLO name: the domain of our address, which at least is a name that
// resolves somewhere; servers that check it strictly want a FQDN rather than "localhost".
func helloName(from string) string {
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i+1 < len(from) {
		return from[i+1:]
	}
	return "localhost"
}

// auth logs in with PLAIN, or LOGIN if the server offers only that.
func (s *Sender) auth(c *smtp.Client) error {
	if s.cfg.User == "" {
		return nil
	}
	var a sasl.Client
	switch {
	case c.SupportsAuth(sasl.Plain):
		a = sasl.NewPlainClient("", s.cfg.User, s.password)
	case c.SupportsAuth(sasl.Login):
		a = sasl.NewLoginClient(s.cfg.User, s.password)
	default:
		return queue.Permanent(errors.New("AUTH: server offers neither PLAIN nor LOGIN"))
	}
	if err := c.Auth(a); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code >= 500 {
			return queue.Permanent(fmt.Errorf("AUTH as %s refused: %w", s.cfg.User, err))
		}
		return fmt.Errorf("AUTH as %s: %w", s.cfg.User, err)
	}
	return nil
}

// classify marks SMTP 5xx answers permanent; everything else stays temporary.
func classify(ctx context.Context, step string, err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 && se.Code < 600 {
		return queue.Permanent(fmt.Errorf("%s: %w", step, err))
	}
	return fmt.Errorf("%s: %w", step, ctxErr(ctx, err))
}

// SendText mails a short plain-text note (UTF-8, quoted-printable) to the address to:
// for the people behind the agents, such as error reports to a node's owner. Its
// outcomes are Send's, for a mail that is composed in memory.
func (s *Sender) SendText(ctx context.Context, to, subject, body string) error {
	fail := func(err error) error { return fmt.Errorf("mailbox: mail to %s: %w", to, err) }
	addr, err := mail.ParseAddress(to)
	if err != nil || addr.Address != to {
		return queue.Permanent(fail(fmt.Errorf("bad recipient address %q", to)))
	}
	var h mail.Header
	h.SetDate(s.now())
	h.SetAddressList("From", []*mail.Address{{Address: s.cfg.From}})
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	h.SetSubject(subject)
	if err := h.GenerateMessageIDWithHostname(helloName(s.cfg.From)); err != nil {
		return fail(err)
	}
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"}) // sent quoted-printable
	h.Set("MIME-Version", "1.0")
	var b bytes.Buffer
	w, err := mail.CreateSingleInlineWriter(&b, h)
	if err == nil {
		_, err = io.WriteString(w, body)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return fail(err)
	}
	c, stop, err := s.connect(ctx)
	if err != nil {
		return fail(ctxErr(ctx, err))
	}
	defer stop()
	defer c.Close()
	if err := s.auth(c); err != nil {
		return fail(ctxErr(ctx, err))
	}
	if err := c.SendMail(s.cfg.From, []string{to}, &b); err != nil {
		return fail(classify(ctx, "send", err))
	}
	_ = c.Quit()
	return nil
}
