package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/dibs-backup/dibs/pgpmsg"
)

// filterPrefix is how much of a deposit the recipients filter reads: the public-key
// encrypted session key packets that open an OpenPGP message are a few hundred bytes each.
const filterPrefix = 16 << 10

// bodyError is a failure to read a request body: the client's fault or the network's.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// exactReader reads exactly left bytes from r: ending early is io.ErrUnexpectedEOF, and
// holding more is an error too. Its errors are bodyErrors.
type exactReader struct {
	r     io.Reader
	left  int64
	ended bool
}

var errLonger = errors.New("more bytes than announced")

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		if !e.ended {
			e.ended = true
			var b [1]byte
			n, err := io.ReadFull(e.r, b[:])
			if n > 0 {
				return 0, &bodyError{errLonger}
			}
			if err != io.EOF {
				return 0, wrapBody(err)
			}
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		err = wrapBody(err)
	}
	return n, err
}

func wrapBody(err error) error {
	var be *bodyError
	if errors.As(err, &be) {
		return err
	}
	return &bodyError{err}
}

// recipientFilter passes a deposit through unchanged, but first reads a bounded prefix and
// fails with ErrForbidden unless the OpenPGP message is encrypted to one of want. It is a
// cheap filter against misaddressed and junk deposits, not a security boundary: the key ids
// are not authenticated, and only the recipient can tell a real message.
type recipientFilter struct {
	r       io.Reader
	size    int64
	want    []uint64
	checked bool
	rest    io.Reader
}

func (f *recipientFilter) Read(p []byte) (int, error) {
	if !f.checked {
		f.checked = true
		prefix := make([]byte, min(f.size, filterPrefix))
		if _, err := io.ReadFull(f.r, prefix); err != nil {
			return 0, err
		}
		if err := checkRecipients(prefix, f.want); err != nil {
			return 0, err
		}
		f.rest = io.MultiReader(bytes.NewReader(prefix), f.r)
	}
	if f.rest == nil {
		return 0, fmt.Errorf("relay: recipients filter: read after failure")
	}
	return f.rest.Read(p)
}

// filterError is the recipients filter's refusal. It wraps ErrForbidden.
type filterError struct{ msg string }

func (e *filterError) Error() string { return e.msg + ": " + ErrForbidden.Error() }
func (e *filterError) Unwrap() error { return ErrForbidden }

func checkRecipients(prefix []byte, want []uint64) error {
	got, err := pgpmsg.Recipients(bytes.NewReader(prefix))
	if err != nil {
		return &filterError{fmt.Sprintf("not a sealed OpenPGP message (%v)", err)}
	}
	for _, id := range got {
		if slices.Contains(want, id) {
			return nil
		}
	}
	return &filterError{"file is not encrypted to the recipient's key"}
}

// CheckRecipients returns nil if prefix, the start of a file (16 KiB is plenty), is an
// OpenPGP message encrypted to one of the key ids want, and an error wrapping ErrForbidden
// otherwise: the recipients filter of deposits, for doors other than HTTP (relay_server's
// SMTP door). It decrypts nothing; the key ids it reads are not authenticated.
func CheckRecipients(prefix []byte, want []uint64) error {
	return checkRecipients(prefix, want)
}

// FilterPrefix is how much of a file CheckRecipients needs: the public-key encrypted
// session key packets that open an OpenPGP message are a few hundred bytes each.
const FilterPrefix = filterPrefix
