package mailbox

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// Header fields that mark a dibs mail.
const (
	HeaderMessage = "X-Dibs-Message"
	HeaderKey     = "X-Dibs-Key"
	HeaderSize    = "X-Dibs-Size"
)

// MailOverhead is what MailSize adds to the base64 body for headers and MIME framing: at most
// about 3 KiB of our own (long addresses and names included), the rest left for the trace
// fields (Received, Return-Path, ...) that servers add on the way and count against limits.
const MailOverhead = 8 << 10

// base64 lines: 57 payload bytes make 76 characters, lines joined by CRLF.
const (
	lineIn  = 57
	lineOut = 76
)

// encodedLen is the length of the base64 body of an n-byte file: 76-character lines, CRLF
// between them (the CRLF after the last line belongs to the MIME boundary).
func encodedLen(n int64) int64 {
	if n <= 0 {
		return 0
	}
	enc := (n + 2) / 3 * 4
	lines := (enc + lineOut - 1) / lineOut
	return enc + 2*(lines-1)
}

// MailSize is an upper bound of the size of the mail that carries a file of payload bytes,
// as mail servers count it against their limits.
func MailSize(payload int64) int64 {
	if payload < 0 {
		payload = 0
	}
	return encodedLen(payload) + MailOverhead
}

// MaxPayload is the largest file that fits in a mail of mailLimit bytes (MailSize(p) <=
// mailLimit), or 0 if none does. The backup engine sizes pieces with it.
func MaxPayload(mailLimit int64) int64 {
	if mailLimit < MailSize(0) {
		return 0
	}
	// MailSize is monotone: search the largest p in [0, mailLimit].
	lo, hi := int64(0), mailLimit
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if MailSize(mid) <= mailLimit {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// envelope is a composed mail around a file that is not read yet: prefix, then the file in
// base64 (encodedLen(size) bytes), then suffix.
type envelope struct {
	prefix, suffix []byte
	size           int64 // the file's size
	messageID      string
}

// mailLen is the exact length of the mail.
func (e *envelope) mailLen() int64 {
	return int64(len(e.prefix)) + encodedLen(e.size) + int64(len(e.suffix))
}

const humanNote = "This mail carries a message between dibs backup agents. " +
	"It is fetched and removed automatically; please leave it alone.\r\n"

// compose frames a file of size bytes named name as a mail from one address to another.
// The MIME structure is written by hand (headers through go-message) so that the size of
// the mail is known exactly before the file is read, and the file can be streamed.
func compose(from, to, name, key string, size int64, now time.Time) (*envelope, error) {
	var rnd [24]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	return composeWith(rnd, from, to, name, key, size, now)
}

// composeWith is compose with the boundary and Message-ID made of rnd.
func composeWith(rnd [24]byte, from, to, name, key string, size int64, now time.Time) (*envelope, error) {
	// Base64 never contains '-', so the boundary cannot occur in the body.
	boundary := "dibs-" + hex.EncodeToString(rnd[:12])
	domain := "dibs.invalid"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i+1 < len(from) {
		domain = from[i+1:]
	}
	msgID := hex.EncodeToString(rnd[12:]) + "@" + domain

	// textproto writes fields last-added first: add them in reverse.
	var h mail.Header
	h.SetContentType("multipart/mixed", map[string]string{"boundary": boundary})
	h.Set("MIME-Version", "1.0")
	h.Set(HeaderSize, strconv.FormatInt(size, 10))
	if key != "" {
		h.Set(HeaderKey, key)
	}
	h.Set(HeaderMessage, name)
	h.SetSubject("dibs message " + name)
	h.SetMessageID(msgID)
	h.SetDate(now)
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	h.SetAddressList("From", []*mail.Address{{Address: from}})

	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, h.Header.Header); err != nil {
		return nil, err
	}
	b.WriteString("--" + boundary + "\r\n")
	var th mail.InlineHeader
	th.Set("Content-Transfer-Encoding", "7bit")
	th.SetContentType("text/plain", map[string]string{"charset": "us-ascii"})
	if err := textproto.WriteHeader(&b, th.Header.Header); err != nil {
		return nil, err
	}
	b.WriteString(humanNote)
	b.WriteString("\r\n--" + boundary + "\r\n")
	var ah mail.AttachmentHeader
	ah.Set("Content-Transfer-Encoding", "base64")
	ah.SetContentDisposition("attachment", map[string]string{"filename": name})
	ah.SetContentType("application/octet-stream", map[string]string{"name": name})
	if err := textproto.WriteHeader(&b, ah.Header.Header); err != nil {
		return nil, err
	}
	return &envelope{
		prefix:    b.Bytes(),
		suffix:    []byte("\r\n--" + boundary + "--\r\n"),
		size:      size,
		messageID: msgID,
	}, nil
}

// errSizeChanged means a file did not hold the number of bytes it was announced with.
var errSizeChanged = errors.New("file size changed while sending")

// writeMail writes the whole mail, reading the file from r.
func (e *envelope) writeMail(w io.Writer, r io.Reader) error {
	if _, err := w.Write(e.prefix); err != nil {
		return err
	}
	if err := writeBase64(w, r, e.size); err != nil {
		return err
	}
	_, err := w.Write(e.suffix)
	return err
}

// writeBase64 streams exactly size bytes of r to w as base64 lines. It fails if r holds
// fewer or more bytes, so that what is sent matches the size announced in the headers.
func writeBase64(w io.Writer, r io.Reader, size int64) error {
	const block = 1024 // lines per buffer
	in := make([]byte, lineIn*block)
	out := make([]byte, 0, (lineOut+2)*block)
	var total int64
	first := true
	for {
		n, err := io.ReadFull(r, in)
		if n > 0 {
			total += int64(n)
			if total > size {
				return fmt.Errorf("%w: more than %d bytes", errSizeChanged, size)
			}
			out = out[:0]
			for i := 0; i < n; i += lineIn {
				j := min(i+lineIn, n)
				if !first {
					out = append(out, '\r', '\n')
				}
				first = false
				out = base64.StdEncoding.AppendEncode(out, in[i:j])
			}
			if _, werr := w.Write(out); werr != nil {
				return werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if total != size {
		return fmt.Errorf("%w: %d bytes, not %d", errSizeChanged, total, size)
	}
	return nil
}
