package pgpmsg_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedDate is the Date of golden messages.
const fixedDate = "2025-06-01T12:00:00Z"

// newHeader returns a valid header without From and To.
func newHeader(typ string) pgpmsg.Header {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, typ)
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, time.Now().UTC().Format(time.RFC3339Nano))
	return h
}

// fullHeader returns a valid header from -> to.
func fullHeader(typ string, from, to pgpmsg.Fingerprint) pgpmsg.Header {
	h := newHeader(typ)
	h.Set(pgpmsg.FieldFrom, string(from))
	h.Set(pgpmsg.FieldTo, string(to))
	return h
}

func id(t testing.TB, name string) *pgpmsg.Identity { return pgpmsgtest.Identity(t, name) }

func seal(t testing.TB, h pgpmsg.Header, payload []byte, from *pgpmsg.Identity, to *pgpmsg.Key) []byte {
	t.Helper()
	var buf bytes.Buffer
	var r io.Reader
	if payload != nil {
		r = bytes.NewReader(payload)
	}
	if err := pgpmsg.Seal(&buf, h, r, from, to); err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return buf.Bytes()
}

// rawSeal makes an OpenPGP message with go-crypto directly, bypassing Seal's
// checks: plaintext is written as is. signers may be empty (unsigned).
func rawSeal(t testing.TB, plaintext []byte, to []*pgp.Entity, signers []*pgp.Entity, textSig bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := pgp.EncryptWithParams(&buf, to, nil, &pgp.EncryptParams{
		Signers: signers,
		TextSig: textSig,
		Config:  &packet.Config{DefaultCipher: packet.CipherAES256},
	})
	if err != nil {
		t.Fatalf("EncryptWithParams: %v", err)
	}
	if _, err := w.Write(plaintext); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func marshal(t testing.TB, h pgpmsg.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := h.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	return buf.Bytes()
}

// openWith opens msg as me, accepting peers, with a fresh TempDir that it
// checks is empty again after Close (or after a failed Open).
func openWith(t testing.TB, msg []byte, me *pgpmsg.Identity, peers *pgpmsg.Keyring, opts pgpmsg.OpenOptions) (*pgpmsg.Opened, error) {
	t.Helper()
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	o, err := pgpmsg.Open(bytes.NewReader(msg), me, peers, opts)
	if err != nil {
		if o != nil {
			t.Errorf("Open returned both %v and a message", err)
		}
		assertEmptyDir(t, opts.TempDir)
		return nil, err
	}
	t.Cleanup(func() {
		if err := o.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		assertEmptyDir(t, opts.TempDir)
	})
	return o, nil
}

func assertEmptyDir(t testing.TB, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("file left behind in temp dir: %s", e.Name())
	}
}

func wantErr(t testing.TB, err, sentinel error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %v", sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
	for _, other := range allSentinels {
		if other != sentinel && errors.Is(err, other) {
			t.Errorf("error %q is also %v", err, other)
		}
	}
}

var allSentinels = []error{
	pgpmsg.ErrNotForUs, pgpmsg.ErrUnsigned, pgpmsg.ErrBadSignature, pgpmsg.ErrUnknownSigner,
	pgpmsg.ErrSignerMismatch, pgpmsg.ErrWrongRecipient, pgpmsg.ErrMalformed, pgpmsg.ErrTooLarge,
	pgpmsg.ErrTruncated, pgpmsg.ErrKeyProtected, pgpmsg.ErrBadKey,
}

// patterned returns n deterministic bytes that include CR, LF and NUL.
func patterned(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
