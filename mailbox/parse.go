package mailbox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/dibs-backup/dibs/queue"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

// errNotOurs means a mail lacks the dibs mark or is addressed to another key.
var errNotOurs = errors.New("not a dibs mail for this key")

// badMail says why a mail with the dibs mark cannot be used. It wraps ErrBadMail.
type badMail struct {
	reason string
	header bool // the header itself is unreadable: whether the mail is ours is unknown
}

func (e *badMail) Error() string { return e.reason }
func (e *badMail) Unwrap() error { return ErrBadMail }

func bad(format string, args ...any) error { return &badMail{reason: fmt.Sprintf(format, args...)} }

// badMails collects the unusable mails of one poll or import.
type badMails struct {
	n     int
	first string
}

func (b *badMails) add(id string, err error) {
	if b.n == 0 {
		b.first = id + ": " + err.Error()
	}
	b.n++
}

// err is the error a poll reports for the bad mails it met, or nil.
func (b *badMails) err(what string) error {
	if b.n == 0 {
		return nil
	}
	mails := "dibs mails"
	if b.n == 1 {
		mails = "dibs mail" // mailbox imports no agent, whose Count says this elsewhere
	}
	return queue.Permanent(fmt.Errorf("%w: %d %s %s (first: %s)", ErrBadMail, b.n, mails, what, b.first))
}

// openMail reads the header of the mail r and finds its attachment. It returns errNotOurs
// for a mail without the dibs mark or for another key (key == "" accepts any key), a
// badMail error for a marked mail that cannot be used (or whose header cannot be read at
// all; then badMail.header is set), or the spool name and a reader of
// the attachment's bytes. That reader fails rather than end early: at EOF its byte count
// must match X-Dibs-Size, and it never gives more than max bytes (0: no limit).
// fallbackID names the mail where it has no Message-ID (the Maildir file, the IMAP UID).
func openMail(r io.Reader, key string, max int64, fallbackID string) (string, io.Reader, error) {
	e, err := message.ReadWithOptions(r, &message.ReadOptions{MaxHeaderBytes: 256 << 10})
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return "", nil, &badMail{reason: "header: " + err.Error(), header: true}
	}
	h := mail.Header{Header: e.Header}
	if !h.Has(HeaderMessage) {
		return "", nil, errNotOurs
	}
	if key != "" && !strings.EqualFold(strings.TrimSpace(h.Get(HeaderKey)), key) {
		return "", nil, errNotOurs
	}
	want := int64(-1)
	if v := h.Get(HeaderSize); v != "" {
		if want, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil || want < 0 {
			return "", nil, bad("bad %s %q", HeaderSize, v)
		}
		if max > 0 && want > max {
			return "", nil, bad("attachment of %d bytes is over the limit of %d", want, max)
		}
	}

	mr := mail.NewReader(e)
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return "", nil, bad("no attachment")
		}
		if err != nil {
			return "", nil, bad("MIME structure: %v", err)
		}
		ah, ok := p.Header.(*mail.AttachmentHeader)
		if !ok {
			continue
		}
		name := spoolName(ah, h, fallbackID)
		return name, &checkedReader{r: p.Body, want: want, max: max}, nil
	}
}

// spoolName picks a safe spool name: the attachment's file name, else the X-Dibs-Message
// field, else one derived from the Message-ID (or fallbackID) so that a redelivered copy
// of the same mail gets the same name.
func spoolName(ah *mail.AttachmentHeader, h mail.Header, fallbackID string) string {
	if n, err := ah.Filename(); err == nil && queue.ValidName(n) {
		return n
	}
	if n := strings.TrimSpace(h.Get(HeaderMessage)); queue.ValidName(n) {
		return n
	}
	id := strings.TrimSpace(h.Get("Message-Id"))
	if id == "" {
		id = fallbackID
	}
	sum := sha256.Sum256([]byte(id))
	return "mail-" + hex.EncodeToString(sum[:16])
}

// checkedReader turns a short or overlong attachment into an error instead of an EOF, so
// that a Sink never commits part of a file as if it were whole.
type checkedReader struct {
	r    io.Reader
	n    int64
	want int64 // -1: unknown
	max  int64 // 0: unlimited
	err  error // the first error, kept: a bad mail is flagged only for its own faults
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	switch {
	case c.max > 0 && c.n > c.max:
		err = bad("attachment is over the limit of %d bytes", c.max)
	case c.want >= 0 && c.n > c.want:
		err = bad("attachment is longer than its %s of %d bytes", HeaderSize, c.want)
	case err == io.EOF && c.want >= 0 && c.n != c.want:
		err = bad("attachment is %d bytes, not the %d of its %s", c.n, c.want, HeaderSize)
	case err != nil && err != io.EOF:
		// base64 and MIME errors surface here; transport errors are told apart by the
		// caller, which knows whether the raw mail was read whole.
		err = fmt.Errorf("attachment: %w", err)
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}
