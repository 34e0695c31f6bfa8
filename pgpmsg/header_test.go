package pgpmsg_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
)

// goldenHeader is the header written to testdata/header.golden.
func goldenHeader() pgpmsg.Header {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, "RECOVER_RESPONSE")
	h.Set(pgpmsg.FieldFrom, "83BC8FD7D87072905492EA39D969CAE3EB3CE80C")
	h.Set(pgpmsg.FieldTo, "4D6879878E6C32A640FDD4C4AD66A141C11D1AAA")
	h.Set(pgpmsg.FieldMessageID, "0123456789abcdef0123456789abcdef")
	h.Set(pgpmsg.FieldInReplyTo, "fedcba9876543210fedcba9876543210")
	h.Set(pgpmsg.FieldDate, "2025-06-01T12:00:00.123456789+02:00")
	h.Add("X-Note", "UTF-8 ok: Grüße, tab\tinside")
	h.Add("X-Note", "second value, same name")
	h.Add("x-empty", "")
	return h
}

func TestHeader_Golden(t *testing.T) {
	h := goldenHeader()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	got := marshal(t, h)
	path := filepath.Join("testdata", "header.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("WriteTo:\n%q\nwant\n%q", got, want)
	}
	back, err := pgpmsg.ReadHeader(bufio.NewReader(bytes.NewReader(want)))
	if err != nil {
		t.Fatal(err)
	}
	if !equalFields(back.Fields(), h.Fields()) {
		t.Fatalf("ReadHeader(golden) = %v, want %v", back.Fields(), h.Fields())
	}
	d, err := back.Date()
	if err != nil || !d.Equal(time.Date(2025, 6, 1, 10, 0, 0, 123456789, time.UTC)) {
		t.Errorf("Date = %v, %v", d, err)
	}
}

func equalFields(a, b []pgpmsg.Field) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHeader_GetSetAddDel(t *testing.T) {
	var h pgpmsg.Header
	h.Add("A", "1")
	h.Add("b", "2")
	h.Add("a", "3")
	if h.Get("a") != "1" || h.Get("B") != "2" || h.Get("c") != "" {
		t.Fatal("Get is not case-insensitive first-value")
	}
	h.Set("A", "x")
	if f := h.Fields(); len(f) != 2 || f[0] != (pgpmsg.Field{Name: "A", Value: "x"}) || f[1].Name != "b" {
		t.Fatalf("Set: %v", f)
	}
	h.Set("new", "n")
	h.Del("B")
	if f := h.Fields(); len(f) != 2 || f[1].Name != "new" {
		t.Fatalf("Del/Set new: %v", f)
	}
	c := h.Clone()
	c.Set("A", "changed")
	if h.Get("A") != "x" {
		t.Fatal("Clone shares fields")
	}
	// Fields returns a copy.
	h.Fields()[0].Value = "mutated"
	if h.Get("A") != "x" {
		t.Fatal("Fields exposes internal state")
	}
}

func TestReadHeader_LineEndings(t *testing.T) {
	in := "A: 1\nB:2\r\nC:   spaced value \t\r\nD:\n\r\nPAYLOAD"
	r := bufio.NewReader(strings.NewReader(in))
	h, err := pgpmsg.ReadHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	want := []pgpmsg.Field{{"A", "1"}, {"B", "2"}, {"C", "spaced value"}, {"D", ""}}
	if !equalFields(h.Fields(), want) {
		t.Fatalf("got %v", h.Fields())
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "PAYLOAD" {
		t.Fatalf("reader left at %q", rest)
	}
}

func TestReadHeader_Rejects(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"empty input", "", pgpmsg.ErrMalformed},
		{"no blank line", "A: 1\r\n", pgpmsg.ErrMalformed},
		{"no final newline", "A: 1\r\n\r", pgpmsg.ErrMalformed},
		{"missing colon", "A 1\r\n\r\n", pgpmsg.ErrMalformed},
		{"empty name", ": 1\r\n\r\n", pgpmsg.ErrMalformed},
		{"space in name", "A B: 1\r\n\r\n", pgpmsg.ErrMalformed},
		{"space before colon", "A : 1\r\n\r\n", pgpmsg.ErrMalformed},
		{"non-token name", "A(b): 1\r\n\r\n", pgpmsg.ErrMalformed},
		{"8-bit name", "Ä: 1\r\n\r\n", pgpmsg.ErrMalformed},
		{"folded", "A: 1\r\n 2\r\n\r\n", pgpmsg.ErrMalformed},
		{"folded tab", "A: 1\r\n\t2\r\n\r\n", pgpmsg.ErrMalformed},
		{"bare CR in value", "A: 1\r2\r\n\r\n", pgpmsg.ErrMalformed},
		{"NUL in value", "A: 1\x002\r\n\r\n", pgpmsg.ErrMalformed},
		{"control in value", "A: \x1b[31m\r\n\r\n", pgpmsg.ErrMalformed},
		{"invalid UTF-8", "A: \xff\xfe\r\n\r\n", pgpmsg.ErrMalformed},
		{"over size, one line", "A: " + strings.Repeat("x", pgpmsg.MaxHeaderSize) + "\r\n\r\n", pgpmsg.ErrTooLarge},
		{"over size, many lines", strings.Repeat("A: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 2000) + "\r\n", pgpmsg.ErrTooLarge},
		{"over size by the blank line", "A: " + strings.Repeat("x", pgpmsg.MaxHeaderSize-6) + "\r\n\r\n", pgpmsg.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pgpmsg.ReadHeader(bufio.NewReader(strings.NewReader(tc.in)))
			wantErr(t, err, tc.want)
			if !strings.HasPrefix(err.Error(), "pgpmsg: header: ") {
				t.Errorf("error %q lacks prefix", err)
			}
		})
	}
	// Exactly MaxHeaderSize is fine.
	in := "A: " + strings.Repeat("x", pgpmsg.MaxHeaderSize-7) + "\r\n\r\n"
	if len(in) != pgpmsg.MaxHeaderSize {
		t.Fatal(len(in))
	}
	if _, err := pgpmsg.ReadHeader(bufio.NewReader(strings.NewReader(in))); err != nil {
		t.Fatalf("header of exactly MaxHeaderSize: %v", err)
	}
	// A read error is passed on.
	boom := errors.New("boom")
	_, err := pgpmsg.ReadHeader(bufio.NewReader(io.MultiReader(strings.NewReader("A: 1\r\n"), errReader{boom})))
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestHeader_WriteToRejects(t *testing.T) {
	for _, f := range []pgpmsg.Field{
		{"", "v"}, {"A B", "v"}, {"A:", "v"}, {"A", "x\r\nInjected: 1"}, {"A", "x\ny"},
		{"A", "\x00"}, {"A", " leading"}, {"A", "trailing "}, {"A", "\xff"},
	} {
		var h pgpmsg.Header
		h.Add(f.Name, f.Value)
		var buf bytes.Buffer
		_, err := h.WriteTo(&buf)
		wantErr(t, err, pgpmsg.ErrMalformed)
		if buf.Len() != 0 {
			t.Errorf("%q: wrote %q before failing", f, buf.Bytes())
		}
	}
}

func TestHeader_Validate(t *testing.T) {
	valid := goldenHeader
	if err := valid().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(h *pgpmsg.Header)
	}{
		{"no version", func(h *pgpmsg.Header) { h.Del(pgpmsg.FieldVersion) }},
		{"version 2", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldVersion, "2") }},
		{"no type", func(h *pgpmsg.Header) { h.Del(pgpmsg.FieldType) }},
		{"lower type", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldType, "store") }},
		{"digit type", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldType, "STORE2") }},
		{"no from", func(h *pgpmsg.Header) { h.Del(pgpmsg.FieldFrom) }},
		{"lower from", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldFrom, strings.ToLower(h.Get(pgpmsg.FieldFrom))) }},
		{"short to", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldTo, h.Get(pgpmsg.FieldTo)[1:]) }},
		{"two To", func(h *pgpmsg.Header) { h.Add("to", h.Get(pgpmsg.FieldTo)) }},
		{"no id", func(h *pgpmsg.Header) { h.Del(pgpmsg.FieldMessageID) }},
		{"upper id", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldMessageID, strings.ToUpper(h.Get(pgpmsg.FieldMessageID))) }},
		{"long id", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldMessageID, h.Get(pgpmsg.FieldMessageID)+"0") }},
		{"bad in-reply-to", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldInReplyTo, "x") }},
		{"no date", func(h *pgpmsg.Header) { h.Del(pgpmsg.FieldDate) }},
		{"rfc822 date", func(h *pgpmsg.Header) { h.Set(pgpmsg.FieldDate, "Sun, 01 Jun 2025 12:00:00 +0000") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := valid()
			tc.mod(&h)
			wantErr(t, h.Validate(), pgpmsg.ErrMalformed)
		})
	}
}

func TestNewMessageID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := pgpmsg.NewMessageID()
		var h pgpmsg.Header = goldenHeader()
		h.Set(pgpmsg.FieldMessageID, id)
		if err := h.Validate(); err != nil || seen[id] {
			t.Fatalf("id %q: %v, repeated %v", id, err, seen[id])
		}
		seen[id] = true
	}
}

func FuzzReadHeader(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "header.golden")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("A: 1\nB:2\r\n\r\nrest"))
	f.Add([]byte("A: 1\r\n 2\r\n\r\n"))
	f.Add([]byte("\r\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		h, err := pgpmsg.ReadHeader(r)
		if err != nil {
			if !errors.Is(err, pgpmsg.ErrMalformed) && !errors.Is(err, pgpmsg.ErrTooLarge) {
				t.Fatalf("error %v is neither ErrMalformed nor ErrTooLarge", err)
			}
			return
		}
		rest, _ := io.ReadAll(r)
		consumed := len(in) - len(rest)
		if consumed > pgpmsg.MaxHeaderSize {
			t.Fatalf("consumed %d bytes > MaxHeaderSize", consumed)
		}
		// What was read must write out canonically and read back the same.
		var buf bytes.Buffer
		if _, err := h.WriteTo(&buf); err != nil {
			if errors.Is(err, pgpmsg.ErrTooLarge) {
				return // LF input near the limit grows past it as CRLF
			}
			t.Fatalf("WriteTo of a parsed header: %v", err)
		}
		// The canonical form adds at most ": " spacing and a CR per line.
		if buf.Len() > consumed+2*h.Len()+1 {
			t.Fatalf("canonical form grew from %d to %d", consumed, buf.Len())
		}
		h2, err := pgpmsg.ReadHeader(bufio.NewReader(&buf))
		if err != nil && !errors.Is(err, pgpmsg.ErrTooLarge) {
			t.Fatalf("re-read canonical form: %v", err)
		}
		if err == nil && !equalFields(h.Fields(), h2.Fields()) {
			t.Fatalf("round trip %v != %v", h.Fields(), h2.Fields())
		}
	})
}
