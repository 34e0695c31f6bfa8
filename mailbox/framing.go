package mailbox

import (
	"bytes"
	"crypto/sha256"
	"io"
	"time"
)

// The framing of a dibs mail, for a server that speaks mail itself (the SMTP and IMAP doors
// of `dibs relay_server`): the same form the Sender sends and the Poller fetches.

// ErrNotOurs is what OpenMail returns for a mail without the dibs mark, or for another key.
var ErrNotOurs = errNotOurs

// OpenMail reads the header of the dibs mail r for key (its X-Dibs-Key must be key; ""
// takes any) and returns its file's name, the size its X-Dibs-Size announces (-1 if it
// has none), and a reader of the file. That reader fails rather than end early: at EOF
// its byte count must match X-Dibs-Size, and it never gives more than max bytes (0: no
// limit). Errors: ErrNotOurs, or one wrapping ErrBadMail for a marked mail that cannot be
// used. Only the header and MIME framing are read before OpenMail returns.
func OpenMail(r io.Reader, key string, max int64) (name string, size int64, file io.Reader, err error) {
	name, file, err = openMail(r, key, max, "")
	if err != nil {
		return "", 0, nil, err
	}
	return name, file.(*checkedReader).want, file, nil
}

// Mail is a dibs mail framed around a file that is read only when the mail is written.
type Mail struct{ env *envelope }

// FrameFile frames a file of size bytes named name, for key, as a mail from one address to
// another dated date. The same arguments give the same bytes, so that a server can serve
// the mail again and again without keeping it: boundary and Message-ID derive from them.
func FrameFile(from, to, name, key string, size int64, date time.Time) (*Mail, error) {
	sum := sha256.Sum256([]byte("dibs-mail\x00" + key + "\x00" + name + "\x00" + date.UTC().Format(time.RFC3339Nano)))
	var rnd [24]byte
	copy(rnd[:], sum[:])
	env, err := composeWith(rnd, from, to, name, key, size, date)
	if err != nil {
		return nil, err
	}
	return &Mail{env}, nil
}

// Len is the exact length of the mail in bytes.
func (m *Mail) Len() int64 { return m.env.mailLen() }

// Write writes the whole mail to w, reading the file from file, which must hold exactly
// the size bytes the mail was framed with.
func (m *Mail) Write(w io.Writer, file io.Reader) error { return m.env.writeMail(w, file) }

// Skeleton is the mail with the file left out: the same header and MIME structure, the
// attachment's body empty. What needs only those (the header, the structure, the text
// part) can be read from it without opening the file.
func (m *Mail) Skeleton() []byte {
	return bytes.Join([][]byte{m.env.prefix, m.env.suffix}, nil)
}

// AttachmentLen is the length of the attachment's body in the mail: the file in base64.
func (m *Mail) AttachmentLen() int64 { return encodedLen(m.env.size) }
