package maildoor

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/mailbox"
	"github.com/dibs-backup/dibs/mailbox/saslogin"
	"github.com/dibs-backup/dibs/relay"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options configure the doors.
type Options struct {
	// Store is where files are deposited and collected.
	Store relay.Store
	// Users are who may log in, and who has an address.
	Users *Users
	// MaxFileSize is the largest file taken; 0 means relay.DefaultMaxFileSize. The SMTP
	// door takes mails up to mailbox.MailSize of it.
	MaxFileSize int64
	// TLS, if set, is offered with STARTTLS on SMTP. (The IMAP door's listener does TLS
	// itself.) Without TLS, only loopback clients may log in.
	TLS *tls.Config
	// Hostname is the name the SMTP door greets with; "" means "localhost".
	Hostname string
	// Refused, if set, is told of each refusal by a door, with a short reason
	// ("unknown_recipient", "relay_denied", "not_encrypted", "over_quota", "too_large",
	// "bad_mail", "auth_failed", ...) and the error.
	Refused func(door, reason string, err error)
	// Timeout bounds each command and each stretch of silence; 0 means 5 minutes.
	Timeout time.Duration
}

func (o *Options) maxFileSize() int64 {
	if o.MaxFileSize > 0 {
		return o.MaxFileSize
	}
	return relay.DefaultMaxFileSize
}

func (o *Options) refuse(door, reason string, err error) {
	if o.Refused != nil {
		o.Refused(door, reason, err)
	}
}

// NewSMTP returns the SMTP door; serve it with its Serve method on a listener.
func NewSMTP(opts Options) *smtp.Server {
	s := smtp.NewServer(&smtpBackend{opts: &opts})
	s.Domain = opts.Hostname
	if s.Domain == "" {
		s.Domain = "localhost"
	}
	s.TLSConfig = opts.TLS
	// AUTH is offered and taken only over TLS or from loopback (smtpSession.allowAuth);
	// the server's own rule knows only TLS.
	s.AllowInsecureAuth = true
	s.MaxMessageBytes = mailbox.MailSize(opts.maxFileSize())
	// A dibs mail is for one recipient: the file is sealed to one key. Further RCPTs get
	// 452 4.5.3, which a sender answers by sending them again.
	s.MaxRecipients = 1
	s.ReadTimeout, s.WriteTimeout = opts.timeout(), opts.timeout()
	s.ErrorLog = nopLogger{}
	return s
}

func (o *Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 5 * time.Minute
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

type smtpBackend struct{ opts *Options }

func (b *smtpBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &smtpSession{opts: b.opts, conn: c}, nil
}

type smtpSession struct {
	opts   *Options
	conn   *smtp.Conn
	authed *User // the user logged in with AUTH, or nil

	// the mail transaction
	from   *User // the depositor
	to     *User
	keyIDs []uint64 // the recipient's encryption key ids
}

var _ smtp.AuthSession = (*smtpSession)(nil)

// secure reports whether credentials may cross conn: it is TLS, or from loopback.
func secure(conn net.Conn, tlsOn bool) bool {
	if tlsOn {
		return true
	}
	if _, ok := conn.(*tls.Conn); ok {
		return true
	}
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (x *smtpSession) allowAuth() bool {
	_, tlsOn := x.conn.TLSConnectionState()
	return secure(x.conn.Conn(), tlsOn)
}

func (x *smtpSession) AuthMechanisms() []string {
	if !x.allowAuth() {
		return nil // not even offered: a client would send its password in clear
	}
	return []string{sasl.Plain, sasl.Login}
}

func (x *smtpSession) Auth(mech string) (sasl.Server, error) {
	if !x.allowAuth() {
		return nil, smtpErr(538, 5, 7, 11, "encryption required to authenticate")
	}
	check := func(login, pass string) error {
		u, ok := x.opts.Users.Login(login, pass)
		if !ok {
			x.opts.refuse("smtp", "auth_failed", fmt.Errorf("AUTH as %q refused", login))
			return smtp.ErrAuthFailed
		}
		x.authed = u
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return smtp.ErrAuthFailed
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return saslogin.NewServer(check), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func smtpErr(code, a, b, c int, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{a, b, c}, Message: msg}
}

// refuse reports a refusal and returns its SMTP answer.
func (x *smtpSession) refuse(reason string, e *smtp.SMTPError, cause error) error {
	if cause == nil {
		cause = errors.New(e.Message)
	}
	x.opts.refuse("smtp", reason, cause)
	return e
}

// Mail takes the envelope sender. With AUTH, the authenticated user is the depositor,
// whatever the sender; without, it is the user whose address the sender is.
func (x *smtpSession) Mail(from string, opts *smtp.MailOptions) error {
	x.from, x.to, x.keyIDs = nil, nil, nil
	if x.authed != nil {
		x.from = x.authed
		return nil
	}
	u, ok := x.opts.Users.ByMail(from)
	if !ok {
		return x.refuse("unknown_sender", smtpErr(550, 5, 7, 1,
			fmt.Sprintf("sender <%s> is not a user of this relay (or authenticate)", from)), nil)
	}
	x.from = u
	return nil
}

// Rcpt takes the one recipient: a user of the relay, for whom the store takes files from
// the depositor. Any other address is refused; the relay passes no mail on.
func (x *smtpSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if x.from == nil {
		return smtpErr(503, 5, 5, 1, "MAIL first")
	}
	u, ok := x.opts.Users.ByMail(to)
	if !ok {
		_, domain, _ := strings.Cut(to, "@")
		if x.opts.Users.Local(domain) {
			return x.refuse("unknown_recipient", smtpErr(550, 5, 1, 1, fmt.Sprintf("no such user <%s>", to)), nil)
		}
		return x.refuse("relay_denied", smtpErr(550, 5, 7, 1,
			fmt.Sprintf("relaying denied: <%s> is not a user of this relay", to)), nil)
	}
	ids, err := x.opts.Store.Recipient(x.from.Key, u.Key)
	if err != nil {
		if errors.Is(err, relay.ErrForbidden) {
			return x.refuse("forbidden", smtpErr(550, 5, 7, 1, err.Error()), err)
		}
		return x.refuse("error", smtpErr(451, 4, 3, 0, "relay store unavailable, try again later"), err)
	}
	if ids == nil {
		if k, ok := x.opts.Store.Key(u.Key); ok {
			ids = k.EncryptionKeyIDs()
		}
	}
	if len(ids) == 0 {
		return x.refuse("forbidden", smtpErr(550, 5, 7, 1,
			fmt.Sprintf("the key of <%s> is not in the relay's allow file", to)), nil)
	}
	x.to, x.keyIDs = u, ids
	return nil
}

// Data reads the mail as it arrives: header and MIME framing, then the attachment,
// whose first bytes must be an OpenPGP message to the recipient's key, streamed into the
// store. 250 only once the store holds the file durably.
func (x *smtpSession) Data(r io.Reader) error {
	if x.to == nil {
		return smtpErr(503, 5, 5, 1, "RCPT first")
	}
	from, to := x.from, x.to
	max := x.opts.maxFileSize()
	name, size, file, err := mailbox.OpenMail(r, string(to.Key), 0)
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &se):
		return x.refuse(reasonOf(se), se, err)
	case errors.Is(err, mailbox.ErrNotOurs):
		return x.refuse("bad_mail", smtpErr(554, 5, 6, 0,
			fmt.Sprintf("not a dibs mail for key %s (X-Dibs-Message, X-Dibs-Key)", to.Key)), err)
	case err != nil:
		return x.refuse("bad_mail", smtpErr(554, 5, 6, 0, "unusable dibs mail: "+err.Error()), err)
	case size < 0:
		return x.refuse("bad_mail", smtpErr(554, 5, 6, 0, "dibs mail without "+mailbox.HeaderSize), nil)
	case size > max:
		return x.refuse("too_large", smtpErr(552, 5, 3, 4,
			fmt.Sprintf("file of %d bytes, this relay takes at most %d", size, max)), nil)
	}
	prefix := make([]byte, min(size, relay.FilterPrefix))
	if _, err := io.ReadFull(file, prefix); err != nil {
		return x.dataError(err)
	}
	if err := relay.CheckRecipients(prefix, x.keyIDs); err != nil {
		return x.refuse("not_encrypted", smtpErr(554, 5, 7, 1, err.Error()), err)
	}
	body := io.MultiReader(bytesReader(prefix), file)
	if err := x.opts.Store.Deposit(from.Key, to.Key, name, size, body); err != nil {
		return x.dataError(err)
	}
	return nil
}

// dataError is the SMTP answer to a deposit that failed once its body was being read.
func (x *smtpSession) dataError(err error) error {
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &se): // the mail is over the server's size limit, or the like
		return x.refuse(reasonOf(se), se, err)
	case errors.Is(err, mailbox.ErrBadMail):
		return x.refuse("bad_mail", smtpErr(554, 5, 6, 0, "unusable dibs mail: "+err.Error()), err)
	case errors.Is(err, relay.ErrOverQuota):
		return x.refuse("over_quota", smtpErr(452, 4, 2, 2, "the recipient's share of the relay is full, try again later"), err)
	case errors.Is(err, relay.ErrTooLarge):
		return x.refuse("too_large", smtpErr(552, 5, 3, 4, err.Error()), err)
	case errors.Is(err, relay.ErrBusy):
		return x.refuse("busy", smtpErr(451, 4, 3, 0, "the same file is being deposited right now, try again later"), err)
	case errors.Is(err, relay.ErrForbidden):
		return x.refuse("forbidden", smtpErr(550, 5, 7, 1, err.Error()), err)
	}
	return x.refuse("error", smtpErr(451, 4, 3, 0, "the relay could not store the file, try again later"), err)
}

func reasonOf(se *smtp.SMTPError) string {
	if se.Code == 552 {
		return "too_large"
	}
	return "bad_mail"
}

func (x *smtpSession) Reset()        { x.from, x.to, x.keyIDs = nil, nil, nil }
func (x *smtpSession) Logout() error { return nil }
