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

// wrapping is a STORE wrapping a PIECE of head and tail, from from to self, for to.
func wrapping(head, tail []byte, from *pgpmsg.Identity, self, to *pgpmsg.Key) pgpmsg.Wrapping {
	return pgpmsg.Wrapping{Outer: newHeader("STORE"), Inner: newHeader("PIECE"), Head: head, Tail: tail,
		TailSum: sha256.Sum256(tail), From: from, Self: self, To: to}
}

// A piece sealed to its owner and wrapped for a peer in one pass: the peer opens the
// wrapper (signed by the owner, as Seal makes them), the owner opens the piece inside,
// and the layout returned is the one a scanner of the piece reads.
func TestBoundWrapped_RoundTrip(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	self, peer := alice.Public().WithAEAD(), bob.Public().WithAEAD()
	for _, size := range []int{0, 1, 100, 64<<10 - 700, 64 << 10, 64<<10 + 1, 1 << 20, 3<<20 + 77} {
		head, tail := []byte(`[{"name":"/x"}]`), make([]byte, size)
		for i := range tail {
			tail[i] = byte(i*31 + i>>8)
		}
		var buf bytes.Buffer
		l, err := pgpmsg.SealBoundWrapped(&buf, wrapping(head, tail, alice, self, peer))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		outer, err := openWith(t, buf.Bytes(), bob, pgpmsg.NewKeyring(alice.Public()), pgpmsg.OpenOptions{})
		if err != nil {
			t.Fatalf("size %d: the peer opens the wrapper: %v", size, err)
		}
		if outer.Signer.Fingerprint() != alice.Fingerprint() || outer.Header.Get(pgpmsg.FieldType) != "STORE" || outer.Bound {
			t.Fatalf("size %d: wrapper %+v", size, outer.Header)
		}
		piece, _ := outer.PayloadBytes()
		if int64(len(piece)) != l.Size {
			t.Fatalf("size %d: piece of %d bytes, layout says %d", size, len(piece), l.Size)
		}
		s := scan(t, piece, 1<<16, 0)
		sl, err := s.Layout()
		if err != nil || sl.Pin() != l.Pin() || sl.Chunks != l.Chunks || sl.Size != l.Size {
			t.Fatalf("size %d: scanned %+v (%v), returned %+v", size, sl.Chunks, err, l.Chunks)
		}
		c, err := pgpmsg.NewChunkChecker(alice, l.Preamble, l.Chunks)
		if err != nil {
			t.Fatal(err)
		}
		if ch, _ := s.Chunk(0); c.Check(0, ch) != nil {
			t.Fatalf("size %d: chunk 0 does not check", size)
		}
		in, err := openWith(t, piece, alice, pgpmsg.NewKeyring(alice.Public()), pgpmsg.OpenOptions{Bound: true})
		if err != nil {
			t.Fatalf("size %d: the owner opens the piece: %v", size, err)
		}
		got, _ := in.PayloadBytes()
		if !in.Bound || !bytes.Equal(got, append(bytes.Clone(head), tail...)) {
			t.Fatalf("size %d: piece payload of %d bytes, bound %v", size, len(got), in.Bound)
		}
	}
	// Only WithAEAD keys: a key GnuPG 2.2 must read gets no such message.
	if _, err := pgpmsg.SealBoundWrapped(io.Discard, wrapping(nil, nil, alice, alice.Public(), peer)); !errors.Is(err, pgpmsg.ErrBadKey) {
		t.Fatalf("plain key: %v", err)
	}
}

// Damage anywhere in a wrapped piece, a bit flipped or the file cut, is refused by the
// peer that opens it (or, in the one unauthenticated octet of the session key packet,
// opens to exactly what was sealed).
func TestBoundWrapped_DamageSweep(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	tail := patterned(200 << 10)
	var buf bytes.Buffer
	if _, err := pgpmsg.SealBoundWrapped(&buf, wrapping([]byte("m"), tail, alice, alice.Public().WithAEAD(), bob.Public().WithAEAD())); err != nil {
		t.Fatal(err)
	}
	msg := buf.Bytes()
	peers := pgpmsg.NewKeyring(alice.Public())
	clean, err := openWith(t, msg, bob, peers, pgpmsg.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := clean.PayloadBytes()
	sweepDamage(t, msg, bob, peers, want, 661, 3001)
}
