package pgpmsg

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Packet tags of the outer layer of an encrypted message.
const (
	tagPKESK = 1  // public-key encrypted session key
	tagSEIPD = 18 // symmetrically encrypted integrity protected data
	tagAEAD  = 20 // AEAD encrypted data (GnuPG 2.3+ OCB)
)

// framer passes a binary OpenPGP message through unchanged while it checks
// the outer packet framing, which nothing authenticates: only session key
// packets, then one encrypted data packet, then nothing. go-crypto would
// read on past the encrypted data and skip, for example, marker or padding
// packets, so that different files would open as the same message.
//
// A violation is kept in bad; reads fail from then on, and Open reports bad
// rather than whatever go-crypto made of the failed read.
type framer struct {
	r       *bufio.Reader
	left    int64 // bytes of the current header and (chunk of) body still to pass
	partial bool  // the current chunk is a partial-length chunk: a length follows it
	inData  bool  // the current packet is the encrypted data packet
	done    bool  // the encrypted data packet is complete
	rest    bool  // indeterminate length (old format): pass everything through
	packets int
	bad     error
}

func (f *framer) Read(p []byte) (int, error) {
	if f.bad != nil {
		return 0, f.bad
	}
	if f.left == 0 && !f.rest {
		if err := f.next(); err != nil {
			return 0, err
		}
	}
	if !f.rest && int64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= int64(n)
	return n, err
}

func (f *framer) fail(format string, args ...any) error {
	f.bad = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	return f.bad
}

// next moves to the next packet header or partial-length header and sets
// left to cover it and the data it announces.
func (f *framer) next() error {
	if f.partial {
		h, err := f.r.Peek(5)
		if len(h) == 0 {
			return err
		}
		hdrLen, bodyLen, partial, ok := newFormatLength(h)
		if !ok {
			return io.ErrUnexpectedEOF
		}
		f.left, f.partial = int64(hdrLen)+bodyLen, partial
		return nil
	}
	if f.inData {
		f.inData, f.done = false, true
	}
	if f.done {
		if _, err := f.r.Peek(1); err == nil {
			return f.fail("data after the end of the encrypted message")
		}
		return io.EOF
	}
	h, err := f.r.Peek(6)
	if len(h) == 0 {
		return err // io.EOF on empty input: go-crypto and Open report it
	}
	if h[0]&0x80 == 0 {
		return f.fail("not an OpenPGP message (byte %#02x)", h[0])
	}
	var tag int
	var hdrLen int
	var bodyLen int64
	partial, indeterminate := false, false
	if h[0]&0x40 != 0 { // new format
		tag = int(h[0] & 0x3f)
		var ok bool
		hdrLen, bodyLen, partial, ok = newFormatLength(h[1:])
		if !ok {
			return io.ErrUnexpectedEOF
		}
		hdrLen++
	} else { // old format
		tag = int(h[0]&0x3f) >> 2
		switch lt := h[0] & 3; lt {
		case 3:
			indeterminate = true
			hdrLen = 1
		default:
			n := 1 << lt // 1, 2 or 4 length bytes
			if len(h) < 1+n {
				return io.ErrUnexpectedEOF
			}
			for _, c := range h[1 : 1+n] {
				bodyLen = bodyLen<<8 | int64(c)
			}
			hdrLen = 1 + n
		}
	}
	f.packets++
	switch tag {
	case tagPKESK:
		if partial || indeterminate {
			return f.fail("session key packet with partial length")
		}
	case tagSEIPD, tagAEAD:
		f.inData = true
	default:
		return f.fail("unexpected packet type %d in an encrypted message", tag)
	}
	f.left, f.partial, f.rest = int64(hdrLen)+bodyLen, partial, indeterminate
	return nil
}

// finish checks, after go-crypto has read the message, that the encrypted
// data packet was complete and that nothing follows it.
func (f *framer) finish() error {
	if f.bad != nil {
		return f.bad
	}
	if f.rest {
		return nil
	}
	if f.left > 0 || f.partial || !(f.inData || f.done) {
		return f.fail("encrypted data not read to its end")
	}
	if err := f.next(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// newFormatLength parses a new-format packet length (RFC 4880 4.2.2).
func newFormatLength(b []byte) (hdrLen int, bodyLen int64, partial, ok bool) {
	if len(b) == 0 {
		return 0, 0, false, false
	}
	switch c := b[0]; {
	case c < 192:
		return 1, int64(c), false, true
	case c < 224:
		if len(b) < 2 {
			return 0, 0, false, false
		}
		return 2, int64(c-192)<<8 + int64(b[1]) + 192, false, true
	case c < 255:
		return 1, 1 << (c & 0x1f), true, true
	default:
		if len(b) < 5 {
			return 0, 0, false, false
		}
		return 5, int64(b[1])<<24 | int64(b[2])<<16 | int64(b[3])<<8 | int64(b[4]), false, true
	}
}
