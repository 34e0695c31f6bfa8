package pgpmsg

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strconv"
)

// A bound message is signed hash-then-sign: its signature covers the header and the
// first bytes of the payload (the head), and the header carries the SHA-256 of the rest
// (the tail). It suits a bulk payload whose SHA-256 the sender computes anyway, such as
// a coded shard, which carries its hash for the erasure code: a signature over the
// whole payload would hash the same bytes a second time. What Open guarantees of a
// bound message is what it guarantees of a signed one: every payload byte is
// authenticated, by the signature or by a hash the signature covers, before any is
// handed over.
const (
	// FieldSignedHead is the number of payload bytes the signature covers.
	FieldSignedHead = "Signed-Head"
	// FieldTailSHA256 is the SHA-256 of the payload after the head, in hex.
	FieldTailSHA256 = "Tail-Sha256"
	// FieldSignature is the detached signature (base64) of the header without this
	// field, followed by the head.
	FieldSignature = "Signature"
	// MaxSignedHead bounds the head of a bound message: it is read into memory to be
	// verified.
	MaxSignedHead = 64 << 20
)

// SealBound writes a bound message to dst: the header h and the payload head followed
// by tail, encrypted to to, with from's signature over h and head and with tailSum,
// which must be the SHA-256 of tail, in h (a wrong one makes a message that never
// opens). Otherwise it is Seal, and its errors are Seal's. To a Key.WithAEAD the tail
// is encrypted from where it lies.
func SealBound(dst io.Writer, h Header, head, tail []byte, tailSum [32]byte, from *Identity, to *Key) error {
	if from == nil || to == nil {
		return fmt.Errorf("pgpmsg: seal: %w: nil identity or key", ErrBadKey)
	}
	hdr, err := boundHeader(h, head, tailSum, from, to)
	if err != nil {
		return err
	}
	if !to.aead {
		return seal(dst, hdr, io.MultiReader(bytes.NewReader(head), bytes.NewReader(tail)), nil, to)
	}
	m, err := newV2Message(to)
	if err == nil {
		err = m.writeAll(dst, boundPlaintext(hdr, head, tail))
	}
	if err != nil {
		return fmt.Errorf("pgpmsg: seal: %w", err)
	}
	return nil
}

// boundHeader returns the header block of a bound message: h with From, To, the head's
// length, the tail's hash and from's signature over all that and the head.
func boundHeader(h Header, head []byte, tailSum [32]byte, from *Identity, to *Key) ([]byte, error) {
	if len(head) > MaxSignedHead {
		return nil, fmt.Errorf("pgpmsg: seal: %w: head of %d bytes, over %d", ErrTooLarge, len(head), MaxSignedHead)
	}
	h, err := addressed(h, from, to)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{FieldSignedHead, FieldTailSHA256, FieldSignature} {
		h.Del(f)
	}
	h.Set(FieldSignedHead, strconv.Itoa(len(head)))
	h.Set(FieldTailSHA256, hex.EncodeToString(tailSum[:]))
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("pgpmsg: seal: %w", err)
	}
	canon, err := h.marshal()
	if err != nil {
		return nil, err
	}
	sig, err := from.SignDetached(append(canon, head...))
	if err != nil {
		return nil, err
	}
	h.Set(FieldSignature, base64.StdEncoding.EncodeToString(sig))
	return h.marshal()
}

// boundHead returns the signed head length of a bound message's header.
func boundHead(h Header) (int64, error) {
	for _, f := range []string{FieldSignedHead, FieldTailSHA256, FieldSignature} {
		if n := len(h.Values(f)); n != 1 {
			return 0, fmt.Errorf("%w: unsigned, and %s appears %d times: not a bound message", ErrUnsigned, f, n)
		}
	}
	n, err := strconv.ParseInt(h.Get(FieldSignedHead), 10, 64)
	if err != nil || n < 0 || n > MaxSignedHead {
		return 0, fmt.Errorf("%w: %s %q", ErrBadSignature, FieldSignedHead, h.Get(FieldSignedHead))
	}
	return n, nil
}

// tailHasher passes writes on to w and hashes what comes after the first skip bytes.
type tailHasher struct {
	w    io.Writer
	skip int64
	h    hash.Hash
}

func (t *tailHasher) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	q := p[:n]
	if t.skip > 0 {
		k := int(min(t.skip, int64(len(q))))
		q, t.skip = q[k:], t.skip-int64(k)
	}
	t.h.Write(q)
	return n, err
}

// checkBound verifies a bound message read to its end: the signature over the header
// without it and the head (the first payload bytes, read again from payload), and the
// tail's hash.
func checkBound(h Header, payload io.ReaderAt, size, head int64, tailSum []byte, peers *Keyring) (*Key, error) {
	if head > size {
		return nil, fmt.Errorf("%w: %s %d, payload %d bytes", ErrBadSignature, FieldSignedHead, head, size)
	}
	if want, err := hex.DecodeString(h.Get(FieldTailSHA256)); err != nil || !bytes.Equal(want, tailSum) {
		return nil, fmt.Errorf("%w: the payload does not match its %s", ErrTruncated, FieldTailSHA256)
	}
	sig, err := base64.StdEncoding.DecodeString(h.Get(FieldSignature))
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not base64", ErrBadSignature, FieldSignature)
	}
	c := h.Clone()
	c.Del(FieldSignature)
	canon, err := c.marshal()
	if err != nil {
		return nil, err
	}
	signed := append(canon, make([]byte, head)...)
	if head > 0 {
		if _, err := payload.ReadAt(signed[len(canon):], 0); err != nil {
			return nil, fmt.Errorf("%w: %w", errSpill, err)
		}
	}
	k, err := VerifyDetached(peers, signed, sig)
	if err != nil {
		return nil, fmt.Errorf("bound message: %w", err)
	}
	return k, nil
}
