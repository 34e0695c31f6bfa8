package pgpmsg_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/dibs-backup/dibs/pgpmsg"
)

func sealBound(t *testing.T, h pgpmsg.Header, head, tail []byte, sum [32]byte, from *pgpmsg.Identity, to *pgpmsg.Key) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := pgpmsg.SealBound(&buf, h, head, tail, sum, from, to); err != nil {
		t.Fatalf("SealBound: %v", err)
	}
	return buf.Bytes()
}

func TestBound_RoundTrip(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	peers := pgpmsg.NewKeyring(alice.Public())
	for _, c := range []struct{ head, tail int }{{0, 0}, {0, 10}, {100, 0}, {3000, 70000}, {200, 3 << 20}} {
		head, tail := bytes.Repeat([]byte("h\r"), c.head/2), make([]byte, c.tail)
		for i := range tail {
			tail[i] = byte(i * 7)
		}
		for _, to := range []*pgpmsg.Key{bob.Public(), bob.Public().WithAEAD()} {
			msg := sealBound(t, newHeader("STORE"), head, tail, sha256.Sum256(tail), alice, to)
			o, err := openWith(t, msg, bob, peers, pgpmsg.OpenOptions{Bound: true, MemLimit: 64 << 10})
			if err != nil {
				t.Fatalf("%+v: %v", c, err)
			}
			got, _ := io.ReadAll(o.Payload())
			if !bytes.Equal(got, append(bytes.Clone(head), tail...)) || o.Signer.Fingerprint() != alice.Fingerprint() || !o.Bound {
				t.Fatalf("%+v: payload of %d bytes, signer %s", c, len(got), o.Signer.Fingerprint())
			}
			// Without Bound, Open takes only signed messages.
			if _, err := openWith(t, msg, bob, peers, pgpmsg.OpenOptions{}); !errors.Is(err, pgpmsg.ErrUnsigned) {
				t.Fatalf("%+v: opened without Bound: %v", c, err)
			}
		}
	}
}

// A bound message's plaintext made by hand: hdr (its fields as given) and payload,
// encrypted to bob, unsigned at the OpenPGP level.
func rawBound(t *testing.T, h pgpmsg.Header, payload []byte, bob *pgpmsg.Identity) []byte {
	return rawSeal(t, append(marshal(t, h), payload...), []*pgp.Entity{bob.Public().Entity()}, nil, false)
}

func TestBound_Rejects(t *testing.T) {
	alice, bob, mallory := id(t, "alice"), id(t, "bob"), id(t, "mallory")
	peers := pgpmsg.NewKeyring(alice.Public(), mallory.Public())
	head, tail := []byte("manifest"), bytes.Repeat([]byte{0x0d, 0x0a, 0}, 5000)
	good := sealBound(t, newHeader("STORE"), head, tail, sha256.Sum256(tail), alice, bob.Public())
	o, err := openWith(t, good, bob, peers, pgpmsg.OpenOptions{Bound: true})
	if err != nil {
		t.Fatal(err)
	}
	h := o.Header
	payload, _ := o.PayloadBytes()
	otherTail := append(bytes.Clone(payload[:len(head)]), bytes.Repeat([]byte{1}, len(tail))...)
	withTail := h.Clone()
	sum := sha256.Sum256(otherTail[len(head):])
	withTail.Set(pgpmsg.FieldTailSHA256, hex.EncodeToString(sum[:]))
	longerHead := h.Clone()
	longerHead.Set(pgpmsg.FieldSignedHead, "9")
	noSig := h.Clone()
	noSig.Del(pgpmsg.FieldSignature)
	twoSigs := h.Clone()
	twoSigs.Add(pgpmsg.FieldSignature, h.Get(pgpmsg.FieldSignature))
	badSig := h.Clone()
	sig, _ := base64.StdEncoding.DecodeString(h.Get(pgpmsg.FieldSignature))
	sig[len(sig)-5] ^= 1
	badSig.Set(pgpmsg.FieldSignature, base64.StdEncoding.EncodeToString(sig))
	// Mallory signs a header that claims alice sent it.
	forged := sealBound(t, newHeader("STORE"), head, tail, sha256.Sum256(tail), mallory, bob.Public())
	fo, _ := openWith(t, forged, bob, peers, pgpmsg.OpenOptions{Bound: true})
	claimsAlice := fo.Header.Clone()
	claimsAlice.Set(pgpmsg.FieldFrom, string(alice.Fingerprint()))
	fpay, _ := fo.PayloadBytes()

	cases := []struct {
		name string
		msg  []byte
		want error
	}{
		{"the original, re-encrypted", rawBound(t, h, payload, bob), nil},
		{"another tail", rawBound(t, h, otherTail, bob), pgpmsg.ErrTruncated},
		{"another tail and its hash", rawBound(t, withTail, otherTail, bob), pgpmsg.ErrBadSignature},
		{"a longer head", rawBound(t, longerHead, payload, bob), pgpmsg.ErrTruncated},
		{"another head", rawBound(t, h, append([]byte("MANIFEST"), payload[len(head):]...), bob), pgpmsg.ErrBadSignature},
		{"cut tail", rawBound(t, h, payload[:len(payload)-1], bob), pgpmsg.ErrTruncated},
		{"no signature", rawBound(t, noSig, payload, bob), pgpmsg.ErrUnsigned},
		{"two signatures", rawBound(t, twoSigs, payload, bob), pgpmsg.ErrUnsigned},
		{"bad signature", rawBound(t, badSig, payload, bob), pgpmsg.ErrBadSignature},
		{"mallory's signature, alice's From", rawBound(t, claimsAlice, fpay, bob), pgpmsg.ErrBadSignature},
		{"mallory's own, honest", forged, nil},
	}
	for _, c := range cases {
		o, err := openWith(t, c.msg, bob, peers, pgpmsg.OpenOptions{Bound: true})
		switch {
		case c.want == nil && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		case c.want == nil && o.Signer == nil:
			t.Errorf("%s: no signer", c.name)
		}
	}
	// Only known signers: a keyring without mallory refuses mallory's message.
	if _, err := openWith(t, forged, bob, pgpmsg.NewKeyring(alice.Public()), pgpmsg.OpenOptions{Bound: true}); !errors.Is(err, pgpmsg.ErrUnknownSigner) {
		t.Errorf("unknown signer: %v", err)
	}
}
