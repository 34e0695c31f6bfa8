package pgpmsg

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Header field names written and checked by this package.
const (
	FieldVersion   = "Dibs-Version"
	FieldType      = "Type"
	FieldFrom      = "From"
	FieldTo        = "To"
	FieldMessageID = "Message-Id"
	FieldDate      = "Date"
	FieldInReplyTo = "In-Reply-To"
)

// Version is the value of Dibs-Version we write and accept.
const Version = "1"

// MaxHeaderSize is the largest header block ReadHeader accepts, in bytes,
// including the terminating empty line.
const MaxHeaderSize = 64 << 10

// Field is one header line.
type Field struct {
	Name, Value string
}

// Header is the plaintext header block of a message: "Name: value" lines in
// order, ended by an empty line. Names compare case-insensitively. There is
// no line folding; values are single lines of UTF-8 without control
// characters (tab allowed) and without leading or trailing white space.
//
// A Header value shares its fields with its copies; use Clone before
// modifying a copy.
type Header struct {
	fields []Field
}

// Get returns the value of the first field named name, or "".
func (h *Header) Get(name string) string {
	for _, f := range h.fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Values returns the values of all fields named name.
func (h *Header) Values(name string) []string {
	var vs []string
	for _, f := range h.fields {
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// Has reports whether a field named name is present.
func (h *Header) Has(name string) bool {
	for _, f := range h.fields {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// Set replaces all fields named name by one with value, at the place of the
// first one (or at the end).
func (h *Header) Set(name, value string) {
	for i, f := range h.fields {
		if strings.EqualFold(f.Name, name) {
			h.fields[i] = Field{name, value}
			h.del(name, i+1)
			return
		}
	}
	h.fields = append(h.fields, Field{name, value})
}

// Add appends a field.
func (h *Header) Add(name, value string) {
	h.fields = append(h.fields, Field{name, value})
}

// Del removes all fields named name.
func (h *Header) Del(name string) { h.del(name, 0) }

func (h *Header) del(name string, from int) {
	out := h.fields[:from]
	for _, f := range h.fields[from:] {
		if !strings.EqualFold(f.Name, name) {
			out = append(out, f)
		}
	}
	clear(h.fields[len(out):])
	h.fields = out
}

// Fields returns a copy of the fields in order.
func (h *Header) Fields() []Field {
	return append([]Field(nil), h.fields...)
}

// Len returns the number of fields.
func (h *Header) Len() int { return len(h.fields) }

// Clone returns a copy of h that shares nothing with it.
func (h Header) Clone() Header {
	return Header{fields: h.Fields()}
}

// WriteTo writes the header in canonical form, "Name: value\r\n" per field
// and a final "\r\n", in one Write. It writes nothing and returns an error
// wrapping ErrMalformed if a name or value could not be read back as is.
func (h Header) WriteTo(w io.Writer) (int64, error) {
	b, err := h.marshal()
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

func (h Header) marshal() ([]byte, error) {
	size := 2
	for _, f := range h.fields {
		if err := checkName(f.Name); err != nil {
			return nil, fmt.Errorf("pgpmsg: header: %w", err)
		}
		if err := checkValue(f.Value); err != nil {
			return nil, fmt.Errorf("pgpmsg: header: field %s: %w", f.Name, err)
		}
		if f.Value != strings.Trim(f.Value, " \t") {
			return nil, fmt.Errorf("pgpmsg: header: field %s: %w: leading or trailing white space", f.Name, ErrMalformed)
		}
		size += len(f.Name) + 2 + len(f.Value) + 2
	}
	if size > MaxHeaderSize {
		return nil, fmt.Errorf("pgpmsg: header: %w: %d bytes, limit %d", ErrTooLarge, size, MaxHeaderSize)
	}
	b := make([]byte, 0, size)
	for _, f := range h.fields {
		b = append(b, f.Name...)
		b = append(b, ": "...)
		b = append(b, f.Value...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...), nil
}

// ReadHeader reads a header block through its terminating empty line,
// leaving r at the first byte after it. Lines end in CRLF or LF. It rejects
// lines without a colon, names that are empty or not made of token
// characters, values with control characters (other than tab) or invalid
// UTF-8, continuation lines, and a header block that does not end before
// EOF (ErrMalformed), and blocks longer than MaxHeaderSize (ErrTooLarge).
// Errors from r are returned wrapped.
func ReadHeader(r *bufio.Reader) (Header, error) {
	h, err := readHeader(r)
	if err != nil {
		return Header{}, fmt.Errorf("pgpmsg: %w", err)
	}
	return h, nil
}

// readHeader is ReadHeader with errors not prefixed by the package name.
func readHeader(r *bufio.Reader) (Header, error) {
	var h Header
	total := 0
	var acc []byte
	for lineNo := 1; ; lineNo++ {
		acc = acc[:0]
		var line []byte
		for {
			frag, err := r.ReadSlice('\n')
			if total+len(acc)+len(frag) > MaxHeaderSize {
				return Header{}, fmt.Errorf("header: %w: header over %d bytes", ErrTooLarge, MaxHeaderSize)
			}
			if err == bufio.ErrBufferFull {
				acc = append(acc, frag...)
				continue
			}
			if err == io.EOF {
				return Header{}, fmt.Errorf("header: %w: no empty line before end of data (line %d)", ErrMalformed, lineNo)
			}
			if err != nil {
				return Header{}, fmt.Errorf("header: %w", err)
			}
			if len(acc) > 0 {
				acc = append(acc, frag...)
				line = acc
			} else {
				line = frag
			}
			break
		}
		total += len(line)
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return Header{}, fmt.Errorf("header: line %d: %w: continuation lines are not allowed", lineNo, ErrMalformed)
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			return Header{}, fmt.Errorf("header: line %d: %w: missing colon", lineNo, ErrMalformed)
		}
		name := string(line[:i])
		if err := checkName(name); err != nil {
			return Header{}, fmt.Errorf("header: line %d: %w", lineNo, err)
		}
		value := string(bytes.Trim(line[i+1:], " \t"))
		if err := checkValue(value); err != nil {
			return Header{}, fmt.Errorf("header: line %d: field %s: %w", lineNo, name, err)
		}
		h.fields = append(h.fields, Field{name, value})
	}
}

// checkName accepts RFC 9110 tokens.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty field name", ErrMalformed)
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("%w: field name %q: invalid character %q", ErrMalformed, name, name[i])
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func checkValue(v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: value is not valid UTF-8", ErrMalformed)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Errorf("%w: control character %q in value", ErrMalformed, c)
		}
	}
	return nil
}

// Validate checks the fields every dibs message carries: Dibs-Version is
// Version; Type is [A-Z_]+; From and To are canonical fingerprints;
// Message-Id (and In-Reply-To, if present) is 32 lower-case hex digits;
// Date parses as RFC 3339. Each of these fields may appear at most once.
// Errors wrap ErrMalformed.
func (h Header) Validate() error {
	if err := h.validate(); err != nil {
		return fmt.Errorf("pgpmsg: %w", err)
	}
	return nil
}

func (h Header) validate() error {
	for _, name := range []string{FieldVersion, FieldType, FieldFrom, FieldTo, FieldMessageID, FieldDate, FieldInReplyTo} {
		switch n := len(h.Values(name)); {
		case n > 1:
			return fmt.Errorf("header: %w: %s appears %d times", ErrMalformed, name, n)
		case n == 0 && name != FieldInReplyTo:
			return fmt.Errorf("header: %w: %s missing", ErrMalformed, name)
		}
	}
	bad := func(name, why string) error {
		return fmt.Errorf("header: %w: %s %q: %s", ErrMalformed, name, h.Get(name), why)
	}
	if h.Get(FieldVersion) != Version {
		return bad(FieldVersion, "unsupported version, want "+Version)
	}
	if !isType(h.Get(FieldType)) {
		return bad(FieldType, "want [A-Z_]+")
	}
	for _, name := range []string{FieldFrom, FieldTo} {
		if !Fingerprint(h.Get(name)).valid() {
			return bad(name, "want a fingerprint of 40 upper-case hex digits")
		}
	}
	if !isMessageID(h.Get(FieldMessageID)) {
		return bad(FieldMessageID, "want 32 lower-case hex digits")
	}
	if h.Has(FieldInReplyTo) && !isMessageID(h.Get(FieldInReplyTo)) {
		return bad(FieldInReplyTo, "want 32 lower-case hex digits")
	}
	if _, err := time.Parse(time.RFC3339Nano, h.Get(FieldDate)); err != nil {
		return bad(FieldDate, "want RFC 3339")
	}
	return nil
}

// Date parses the Date field (RFC 3339, fractional seconds allowed).
func (h Header) Date() (time.Time, error) {
	v := h.Get(FieldDate)
	if v == "" {
		return time.Time{}, fmt.Errorf("pgpmsg: header: %w: Date missing", ErrMalformed)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("pgpmsg: header: %w: Date: %w", ErrMalformed, err)
	}
	return t, nil
}

// From returns the From field as a Fingerprint (not validated).
func (h Header) From() Fingerprint { return Fingerprint(h.Get(FieldFrom)) }

// To returns the To field as a Fingerprint (not validated).
func (h Header) To() Fingerprint { return Fingerprint(h.Get(FieldTo)) }

func isType(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('A' <= c && c <= 'Z' || c == '_') {
			return false
		}
	}
	return true
}

func isMessageID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// NewMessageID returns 128 random bits as 32 lower-case hex digits.
func NewMessageID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(errors.New("pgpmsg: crypto/rand failed: " + err.Error()))
	}
	return hex.EncodeToString(b[:])
}
