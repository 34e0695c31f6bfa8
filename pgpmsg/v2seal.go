package pgpmsg

import (
	"bytes"
	"crypto"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// The SEIPDv2 messages between dibs nodes that carry pieces are composed here, packet by
// packet, rather than by go-crypto's Encrypt: go-crypto buffers every layer (the literal
// data and the encrypted data each through a partial-length writer that copies each
// Write, the AEAD writer through its chunk buffer), so a piece wrapped for its peer was
// copied about ten times on its way to disk, a sixth of a store's CPU. Here a shard is
// encrypted from where it lies, and a wrapped piece is encrypted once more chunk by
// chunk as it is made, with no pipe between the two: two copies in all. go-crypto still
// writes the session key packets, the one-pass signature and the signature, and reads
// everything (Open), so what is written is checked by the same reader as ever. The
// layout is RFC 9580's: PKESK v6, then SEIPDv2 (AES-256, GCM, 64 KiB chunks) with
// 64 KiB partial lengths; inside, a literal packet of fixed length (format 'b', no
// name, no date), preceded by a one-pass signature and followed by the signature when
// signed.

const (
	v2ChunkByte = 10 // 1 << (10+6) = 64 KiB chunks, as Seal's (sealChunk)
	v2Chunk     = 1 << (v2ChunkByte + 6)
	partSize    = 1 << 16 // partial body length of the encrypted data packet
)

// v2Message is an encrypted message being written: its SEIPDv2 packet takes the
// plaintext in Writes.
type v2Message struct {
	body   *partWriter
	aead   cipher.AEAD
	nonce  []byte // the IV, then the chunk index
	ad     []byte
	buf    []byte // plaintext of the chunk being filled
	out    []byte // a sealed chunk
	filled int
	chunks uint64
	plain  int64 // plaintext bytes taken
	layout ChunkLayout
	err    error
}

// v2Size is the number of bytes a SEIPDv2 packet body takes for plain plaintext bytes.
func v2Size(plain int64) int64 {
	chunks := max(1, (plain+v2Chunk-1)/v2Chunk)
	return seipdPrefixLen + plain + chunks*aeadTagLen + aeadTagLen
}

// newV2Message makes a session key for to and its key packet, which start writes.
func newV2Message(to *Key) (*v2Message, error) {
	cfg := &packet.Config{DefaultCipher: packet.CipherAES256}
	ek, err := to.e.EncryptionKeyWithError(time.Now(), cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: no encryption key in %s: %w", ErrBadKey, to.fp, err)
	}
	sk := make([]byte, 32)
	salt := make([]byte, 32)
	rand.Read(sk)
	rand.Read(salt)
	var pre bytes.Buffer
	if err := packet.SerializeEncryptedKeyAEADwithHiddenOption(&pre, ek.PublicKey, packet.CipherAES256, true, sk, false, cfg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	ad := []byte{0xc0 | tagSEIPD, 2, byte(packet.CipherAES256), byte(packet.AEADModeGCM), v2ChunkByte}
	pre.Write(ad[1:])
	pre.Write(salt)
	aead, iv, err := seipdv2Key(sk, salt, ad)
	if err != nil {
		return nil, err
	}
	return &v2Message{aead: aead, nonce: append(iv, make([]byte, 8)...), ad: ad,
		buf: make([]byte, v2Chunk), out: make([]byte, 0, v2Chunk+aeadTagLen),
		layout: ChunkLayout{Preamble: pre.Bytes()}}, nil
}

// keyPackets is the session key packet of m.
func (m *v2Message) keyPackets() []byte {
	return m.layout.Preamble[:len(m.layout.Preamble)-seipdPrefixLen]
}

// start writes the key packet and the head of the encrypted data packet to dst, for a
// plaintext of at least minPlain bytes.
func (m *v2Message) start(dst io.Writer, minPlain int64) error {
	kp := m.keyPackets()
	if _, err := dst.Write(append(bytes.Clone(kp), 0xc0|tagSEIPD)); err != nil {
		return err
	}
	m.body = newPartWriter(dst, v2Size(minPlain))
	m.layout.Size = int64(len(kp)) + 1
	_, err := m.body.Write(m.layout.Preamble[len(kp):])
	return err
}

// v2MessageSize is the size of a whole message newV2Message writes, for plain
// plaintext bytes, with keyPackets bytes of session key packets.
func v2MessageSize(keyPackets int, plain int64) int64 {
	return int64(keyPackets) + 1 + partFramed(v2Size(plain))
}

func (m *v2Message) sealChunk(p []byte) error {
	binary.BigEndian.PutUint64(m.nonce[len(m.nonce)-8:], m.chunks)
	m.out = m.aead.Seal(m.out[:0], m.nonce, p, m.ad)
	m.chunks++
	_, err := m.body.Write(m.out)
	return err
}

// Write takes plaintext; a whole chunk's worth is sealed from where it lies.
func (m *v2Message) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && m.err == nil {
		if m.filled == 0 && len(p) >= v2Chunk {
			m.err = m.sealChunk(p[:v2Chunk])
			p = p[v2Chunk:]
			continue
		}
		k := copy(m.buf[m.filled:], p)
		m.filled += k
		p = p[k:]
		if m.filled == v2Chunk {
			m.err = m.sealChunk(m.buf)
			m.filled = 0
		}
	}
	if m.err != nil {
		return 0, m.err
	}
	m.plain += int64(n)
	return n, nil
}

// Close seals the last chunk and the final tag and ends the packet.
func (m *v2Message) Close() error {
	if m.err != nil {
		return m.err
	}
	if m.filled > 0 || m.chunks == 0 {
		if err := m.sealChunk(m.buf[:m.filled]); err != nil {
			return err
		}
	}
	binary.BigEndian.PutUint64(m.nonce[len(m.nonce)-8:], m.chunks)
	ad := binary.BigEndian.AppendUint64(bytes.Clone(m.ad), uint64(m.plain))
	if _, err := m.body.Write(m.aead.Seal(m.out[:0], m.nonce, nil, ad)); err != nil {
		return err
	}
	if err := m.body.Close(); err != nil {
		return err
	}
	m.layout.Chunks = int(m.chunks)
	m.layout.Size += m.body.framed
	return nil
}

// partWriter writes a packet body in partial lengths of partSize, as far as the body
// is known to reach (at least min bytes), and the rest, held back, as the final length.
type partWriter struct {
	w      io.Writer
	stream int64 // bytes that go out in whole parts
	done   int64 // of those, written
	left   int   // bytes left in the current part
	rest   []byte
	framed int64 // bytes written, length octets included
}

// partHeader is the partial length of partSize (2^16) bytes.
var partHeader = [1]byte{224 + 16}

func newPartWriter(w io.Writer, min int64) *partWriter {
	return &partWriter{w: w, stream: (max(min, 1) - 1) / partSize * partSize}
}

// partFramed is the number of bytes a body of exactly n bytes takes with its lengths.
func partFramed(n int64) int64 {
	parts := (n - 1) / partSize
	return n + parts + int64(len(newLength(n-parts*partSize)))
}

func (pw *partWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && pw.done < pw.stream {
		if pw.left == 0 {
			if _, err := pw.w.Write(partHeader[:]); err != nil {
				return 0, err
			}
			pw.left = partSize
			pw.framed++
		}
		k := min(len(p), pw.left)
		if _, err := pw.w.Write(p[:k]); err != nil {
			return 0, err
		}
		p, pw.left, pw.done, pw.framed = p[k:], pw.left-k, pw.done+int64(k), pw.framed+int64(k)
	}
	pw.rest = append(pw.rest, p...)
	return n, nil
}

func (pw *partWriter) Close() error {
	if pw.done != pw.stream || pw.left != 0 {
		return errors.New("pgpmsg: seal: message shorter than announced")
	}
	l := newLength(int64(len(pw.rest)))
	if _, err := pw.w.Write(append(l, pw.rest...)); err != nil {
		return err
	}
	pw.framed += int64(len(l) + len(pw.rest))
	return nil
}

// newLength encodes a new-format packet length.
func newLength(n int64) []byte {
	switch {
	case n < 192:
		return []byte{byte(n)}
	case n < 8384:
		n -= 192
		return []byte{byte(n>>8) + 192, byte(n)}
	default:
		return binary.BigEndian.AppendUint32([]byte{255}, uint32(n))
	}
}

// literalHeader is the head of a literal data packet of n data bytes: binary, no file
// name, no date (what Seal writes through go-crypto).
func literalHeader(n int64) []byte {
	h := append([]byte{0xc0 | 11}, newLength(6+n)...)
	return append(h, 'b', 0, 0, 0, 0, 0)
}

// signing is the one-pass signature of a message being written: the literal data is
// hashed as it passes, and the signature packet follows it.
type signing struct {
	key    pgp.Key
	h      hash.Hash
	to     *Key
	config *packet.Config
}

func newSigning(from *Identity, to *Key) (*signing, []byte, error) {
	cfg := &packet.Config{DefaultHash: crypto.SHA256}
	k, ok := from.e.SigningKeyById(time.Now(), 0, cfg)
	if !ok || k.PrivateKey == nil || k.PrivateKey.Encrypted {
		return nil, nil, fmt.Errorf("%w: no usable signing key in %s", ErrBadKey, from.Fingerprint())
	}
	var ops bytes.Buffer
	err := (&packet.OnePassSignature{Version: 3, SigType: packet.SigTypeBinary, Hash: crypto.SHA256,
		PubKeyAlgo: k.PrivateKey.PubKeyAlgo, KeyId: k.PrivateKey.KeyId, IsLast: true}).Serialize(&ops)
	if err != nil {
		return nil, nil, err
	}
	return &signing{key: k, h: sha256.New(), to: to, config: cfg}, ops.Bytes(), nil
}

// signature returns the signature packet over what was hashed.
func (s *signing) signature() ([]byte, error) {
	pub := &s.key.PrivateKey.PublicKey
	lifetime := uint32(0)
	sig := &packet.Signature{Version: pub.Version, SigType: packet.SigTypeBinary, PubKeyAlgo: pub.PubKeyAlgo,
		Hash: crypto.SHA256, CreationTime: time.Now(), IssuerKeyId: &pub.KeyId, IssuerKeyVersion: uint8(pub.Version),
		IssuerFingerprint: pub.Fingerprint, SigLifetimeSecs: &lifetime,
		IntendedRecipients: []*packet.Recipient{{KeyVersion: s.to.e.PrimaryKey.Version, Fingerprint: s.to.e.PrimaryKey.Fingerprint}}}
	if err := sig.Sign(s.h, s.key.PrivateKey, s.config); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := sig.Serialize(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// boundPlaintext is the plaintext of a bound message: one literal packet of its header
// block, head and tail.
func boundPlaintext(hdr, head, tail []byte) [][]byte {
	return [][]byte{literalHeader(int64(len(hdr) + len(head) + len(tail))), hdr, head, tail}
}

func plaintextLen(parts [][]byte) int64 {
	var n int64
	for _, b := range parts {
		n += int64(len(b))
	}
	return n
}

// writeAll writes the whole message m, of the plaintext parts, to dst.
func (m *v2Message) writeAll(dst io.Writer, parts [][]byte) error {
	if err := m.start(dst, plaintextLen(parts)); err != nil {
		return err
	}
	for _, b := range parts {
		if _, err := m.Write(b); err != nil {
			return err
		}
	}
	return m.Close()
}

// Wrapping is what SealBoundWrapped seals: a bound message from From to Self (a piece
// sealed to its owner), inside a message from From to To (the peer that will keep it).
type Wrapping struct {
	Outer Header // the outer message's header, as Seal takes it
	Inner Header // the bound message's header, as SealBound takes it
	// Head and Tail are the bound message's payload: Head is signed, Tail is bound by
	// TailSum, which must be its SHA-256 (a wrong one makes a piece that never opens).
	Head, Tail []byte
	TailSum    [32]byte
	From       *Identity // signs both messages
	Self       *Key      // the inner message's recipient: a Key.WithAEAD
	To         *Key      // the outer message's recipient: a Key.WithAEAD
}

// SealBoundWrapped writes w to dst in one pass: a message from w.From to w.To (as Seal
// would, to a Key.WithAEAD) whose payload is the bound message SealBound(w.Inner,
// w.Head, w.Tail, w.TailSum, w.From, w.Self). Both keys must be WithAEAD copies. It
// returns the inner message's chunk layout, for probes. On error, dst may hold a
// partial message that must be discarded.
func SealBoundWrapped(dst io.Writer, w Wrapping) (ChunkLayout, error) {
	fail := func(err error) (ChunkLayout, error) { return ChunkLayout{}, fmt.Errorf("pgpmsg: seal: %w", err) }
	if w.From == nil || w.Self == nil || w.To == nil || !w.Self.aead || !w.To.aead {
		return fail(fmt.Errorf("%w: wrapping needs an identity and two WithAEAD keys", ErrBadKey))
	}
	ohdr, err := sealHeader(w.Outer, w.From, w.To)
	if err != nil {
		return ChunkLayout{}, err
	}
	ihdr, err := boundHeader(w.Inner, w.Head, w.TailSum, w.From, w.Self)
	if err != nil {
		return ChunkLayout{}, err
	}

	// The inner message is written into the outer's literal data, so its exact size
	// comes first: its key packet is made before anything is written.
	im, err := newV2Message(w.Self)
	if err != nil {
		return fail(err)
	}
	iparts := boundPlaintext(ihdr, w.Head, w.Tail)
	innerSize := v2MessageSize(len(im.keyPackets()), plaintextLen(iparts))

	sg, ops, err := newSigning(w.From, w.To)
	if err != nil {
		return fail(err)
	}
	olit := literalHeader(int64(len(ohdr)) + innerSize)
	om, err := newV2Message(w.To)
	if err != nil {
		return fail(err)
	}
	if err := om.start(dst, int64(len(ops)+len(olit)+len(ohdr))+innerSize); err != nil {
		return fail(err)
	}
	for _, b := range [][]byte{ops, olit} {
		if _, err := om.Write(b); err != nil {
			return fail(err)
		}
	}
	// From here on, everything written to the outer message is literal data, hashed.
	lit := &literalSink{m: om, h: sg.h}
	if _, err := lit.Write(ohdr); err != nil {
		return fail(err)
	}
	if err := im.writeAll(lit, iparts); err != nil {
		return fail(err)
	}
	if im.layout.Size != innerSize {
		return fail(fmt.Errorf("inner message is %d bytes, %d announced", im.layout.Size, innerSize))
	}
	sig, err := sg.signature()
	if err != nil {
		return fail(err)
	}
	if _, err := om.Write(sig); err != nil {
		return fail(err)
	}
	if err := om.Close(); err != nil {
		return fail(err)
	}
	return im.layout, nil
}

// literalSink takes literal data: it hashes it for the signature and encrypts it.
type literalSink struct {
	m *v2Message
	h hash.Hash
}

func (s *literalSink) Write(p []byte) (int, error) {
	s.h.Write(p)
	return s.m.Write(p)
}
