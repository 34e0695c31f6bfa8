package pgpmsg

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// A SEIPDv2 message (what Seal writes to a Key.WithAEAD) is encrypted in chunks, each
// authenticated on its own by its GCM tag, with the chunk's index in the nonce and a key
// derived from the session key and the message's random salt (RFC 9580 §5.13.2). So a
// holder of the sealed bytes can prove it still has them by returning a few chunks: only
// the recipient can check them (it alone can decrypt the session key), nobody without the
// session key can make a chunk that passes, and a chunk of another message or at another
// index fails. The recipient needs to keep nothing but a hash of the message's preamble
// (its session key packets and SEIPDv2 header), which pins the session key, and the
// number of chunks; both can be read again from the sealed message (ChunkScanner).

const (
	seipdPrefixLen = 4 + 32 // version, cipher, AEAD mode, chunk size byte; salt
	aeadTagLen     = 16     // GCM, and every AEAD mode OpenPGP defines
	maxPreamble    = 4096   // a dibs message has one or two session key packets
	// MaxChunkSize is the largest SEIPDv2 chunk (ciphertext and tag) ChunkScanner takes.
	MaxChunkSize = 1<<20 + aeadTagLen
)

// ChunkLayout is what a sealed SEIPDv2 message shows of itself without any key.
type ChunkLayout struct {
	Preamble []byte // the session key packets, then the SEIPDv2 header and salt
	Chunks   int    // authenticated chunks (the final tag not counted)
	Size     int64  // bytes of the whole sealed message
}

// Pin is the SHA-256 of the preamble: kept by the recipient, it ties later chunk checks
// to this message's session key.
func (l ChunkLayout) Pin() [32]byte { return sha256.Sum256(l.Preamble) }

// ChunkScanner is an io.Writer that reads the framing of a sealed SEIPDv2 message
// written to it (a tee of a piece being opened; ScanFile for a file), keeping its
// preamble and the chunks asked for. It looks at packet headers only, so it costs
// next to nothing beside the bytes passing through.
type ChunkScanner struct {
	want   map[int][]byte // chunk index → its bytes as captured so far
	pre    []byte
	hdr    []byte // a packet or partial-length header being read
	left   int64  // bytes left in the current body part
	tag    int    // the current packet's tag (0 between packets)
	part   bool   // the current body part is partial: another length follows
	data   int64  // SEIPD body bytes seen
	csize  int64  // chunk ciphertext plus tag
	sealed bool   // the SEIPD packet is complete
	size   int64
	err    error
}

// NewChunkScanner returns a scanner that keeps the chunks at the given indexes.
func NewChunkScanner(want ...int) *ChunkScanner {
	s := &ChunkScanner{want: make(map[int][]byte, len(want))}
	for _, i := range want {
		s.want[i] = nil
	}
	return s
}

func (s *ChunkScanner) fail(format string, args ...any) error {
	s.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	return s.err
}

// Write takes the next bytes of the message. It fails on framing that is not a sealed
// SEIPDv2 message's.
func (s *ChunkScanner) Write(p []byte) (int, error) {
	n := len(p)
	s.size += int64(n)
	for len(p) > 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.left == 0 {
			if s.sealed {
				return 0, s.fail("data after the end of the encrypted message")
			}
			s.hdr = append(s.hdr, p[0])
			p = p[1:]
			s.header()
			continue
		}
		k := int(min(int64(len(p)), s.left))
		s.body(p[:k])
		p, s.left = p[k:], s.left-int64(k)
		s.partDone()
	}
	return n, s.err
}

// partDone ends the current packet once its last body part is read.
func (s *ChunkScanner) partDone() {
	if s.left == 0 && !s.part {
		s.sealed = s.sealed || s.tag == tagSEIPD
		s.tag = 0
	}
}

// header parses s.hdr once it holds a whole packet header (or, inside a partial body,
// a whole length), leaving it empty.
func (s *ChunkScanner) header() {
	b := s.hdr
	if s.part { // the next length of the SEIPD body
		_, bl, partial, ok := newFormatLength(b)
		if !ok {
			if len(b) >= 5 {
				s.fail("bad partial length")
			}
			return
		}
		s.hdr, s.left, s.part = s.hdr[:0], bl, partial
		s.partDone() // a zero final length ends the body
		return
	}
	if b[0]&0xc0 != 0xc0 {
		s.fail("not a new-format OpenPGP packet (byte %#02x)", b[0])
		return
	}
	if len(b) < 2 {
		return
	}
	hl, bl, partial, ok := newFormatLength(b[1:])
	if !ok {
		if len(b) >= 6 {
			s.fail("bad packet length")
		}
		return
	}
	tag := int(b[0] & 0x3f)
	switch {
	case tag == tagPKESK && !partial && s.data == 0:
		if len(s.pre)+1+hl+int(bl) > maxPreamble {
			s.fail("session key packets over %d bytes", maxPreamble)
			return
		}
		s.pre = append(s.pre, b[:1+hl]...)
	case tag == tagSEIPD && s.data == 0:
	default:
		s.fail("unexpected packet type %d in a sealed message", tag)
		return
	}
	s.hdr, s.tag, s.left, s.part = s.hdr[:0], tag, bl, partial
	if s.left == 0 && !s.part {
		s.fail("empty packet")
	}
}

func (s *ChunkScanner) body(b []byte) {
	if s.tag == tagPKESK {
		s.pre = append(s.pre, b...)
		return
	}
	if s.data < seipdPrefixLen {
		k := int(min(int64(len(b)), seipdPrefixLen-s.data))
		s.pre = append(s.pre, b[:k]...)
		s.data += int64(k)
		b = b[k:]
		if s.data == seipdPrefixLen {
			h := s.pre[len(s.pre)-seipdPrefixLen:]
			if h[0] != 2 {
				s.fail("SEIPD version %d, not 2: no chunks to check", h[0])
				return
			}
			if h[3] > 14 {
				s.fail("AEAD chunk size byte %d over the largest taken", h[3])
				return
			}
			s.csize = int64(1)<<(h[3]+6) + aeadTagLen
		}
	}
	if len(b) == 0 {
		return
	}
	off := s.data - seipdPrefixLen // offset in the chunk area
	end := off + int64(len(b))
	for i, got := range s.want {
		lo, hi := int64(i)*s.csize, int64(i+1)*s.csize
		if hi <= off || lo >= end {
			continue
		}
		a, z := max(lo, off), min(hi, end)
		s.want[i] = append(got, b[a-off:z-off]...)
	}
	s.data += int64(len(b))
}

// ScanFile scans the sealed message in r (size bytes) as if it were written to a
// scanner, but reads only its packet headers, its preamble and the chunks asked for,
// seeking past the rest: a peer answering a probe reads a few chunks of a piece, not
// the piece.
func ScanFile(r io.ReaderAt, size int64, want ...int) (*ChunkScanner, error) {
	s := NewChunkScanner(want...)
	buf := make([]byte, 64<<10)
	for off := int64(0); off < size; {
		skip, n := s.next()
		if skip > 0 {
			skip = min(skip, size-off)
			s.left, s.data, s.size, off = s.left-skip, s.data+skip, s.size+skip, off+skip
			s.partDone()
			continue
		}
		n = min(n, int64(len(buf)), size-off)
		if _, err := r.ReadAt(buf[:n], off); err != nil {
			return nil, err
		}
		if _, err := s.Write(buf[:n]); err != nil {
			return nil, err
		}
		off += n
	}
	return s, nil
}

// next says what ScanFile does with the next bytes: skip that many (no chunk asked for
// covers them), or read up to n of them (a header, the preamble, a chunk asked for).
func (s *ChunkScanner) next() (skip, n int64) {
	switch {
	case s.err != nil || s.left == 0:
		return 0, 6 // a packet header or a length, and maybe a few bytes after it
	case s.tag != tagSEIPD:
		return 0, s.left
	case s.data < seipdPrefixLen:
		return 0, min(s.left, seipdPrefixLen-s.data)
	}
	off := s.data - seipdPrefixLen
	end := off + s.left // the end of this part, in chunk-area offsets
	for i := range s.want {
		lo, hi := int64(i)*s.csize, int64(i+1)*s.csize
		if lo <= off && off < hi {
			return 0, min(end, hi) - off
		}
		if lo > off {
			end = min(end, lo)
		}
	}
	return end - off, 0
}

// Layout returns the message's preamble and chunk count, once all of it was written.
func (s *ChunkScanner) Layout() (ChunkLayout, error) {
	if s.err != nil {
		return ChunkLayout{}, s.err
	}
	if !s.sealed || s.data < seipdPrefixLen+aeadTagLen {
		return ChunkLayout{}, fmt.Errorf("%w: sealed message cut short", ErrTruncated)
	}
	area := s.data - seipdPrefixLen - aeadTagLen
	return ChunkLayout{Preamble: s.pre, Chunks: int((area + s.csize - 1) / s.csize), Size: s.size}, nil
}

// Size is the number of bytes written, whether or not they scanned.
func (s *ChunkScanner) Size() int64 { return s.size }

// Chunk returns chunk i (ciphertext and tag), which must have been asked for.
func (s *ChunkScanner) Chunk(i int) ([]byte, error) {
	l, err := s.Layout()
	if err != nil {
		return nil, err
	}
	got, asked := s.want[i]
	if !asked || i >= l.Chunks {
		return nil, fmt.Errorf("no chunk %d: the message has %d", i, l.Chunks)
	}
	area := s.data - seipdPrefixLen - aeadTagLen
	return got[:min(int64(len(got)), area-int64(i)*s.csize)], nil
}

// ErrChunk: a chunk does not authenticate as the one asked of the pinned message.
var ErrChunk = errors.New("chunk does not authenticate")

// ChunkChecker checks chunks of one sealed message addressed to us.
type ChunkChecker struct {
	aead   cipher.AEAD
	iv     []byte
	ad     []byte
	csize  int
	chunks int
}

// NewChunkChecker decrypts the session key in preamble with me's key and returns a
// checker for the message's chunks; chunks is their count, as kept with the pin.
func NewChunkChecker(me *Identity, preamble []byte, chunks int) (*ChunkChecker, error) {
	if len(preamble) < seipdPrefixLen || chunks < 0 {
		return nil, fmt.Errorf("%w: preamble too short", ErrMalformed)
	}
	h := preamble[len(preamble)-seipdPrefixLen:]
	if h[0] != 2 || h[2] != byte(packet.AEADModeGCM) || h[3] > 14 {
		return nil, fmt.Errorf("%w: not a SEIPDv2 AES-GCM message dibs sealed", ErrMalformed)
	}
	keyLen := map[byte]int{byte(packet.CipherAES128): 16, byte(packet.CipherAES192): 24, byte(packet.CipherAES256): 32}[h[1]]
	if keyLen == 0 {
		return nil, fmt.Errorf("%w: cipher %d", ErrMalformed, h[1])
	}
	sk, err := sessionKey(me, preamble[:len(preamble)-seipdPrefixLen], keyLen)
	if err != nil {
		return nil, err
	}
	ad := []byte{0xc0 | tagSEIPD, h[0], h[1], h[2], h[3]}
	aead, iv, err := seipdv2Key(sk, h[4:], ad)
	if err != nil {
		return nil, err
	}
	return &ChunkChecker{aead: aead, iv: iv, ad: ad, csize: 1<<(h[3]+6) + aeadTagLen, chunks: chunks}, nil
}

// seipdv2Key derives a SEIPDv2 GCM message's key and IV (the nonce but for the chunk
// index) from its session key and salt; ad is the packet's tag, version, cipher, mode
// and chunk size byte (RFC 9580 §5.13.2).
func seipdv2Key(sessionKey, salt, ad []byte) (cipher.AEAD, []byte, error) {
	okm, err := hkdf.Key(sha256.New, sessionKey, salt, string(ad), len(sessionKey)+12-8)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(okm[:len(sessionKey)])
	if err != nil {
		return nil, nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	return aead, okm[len(sessionKey):], nil
}

// sessionKey decrypts the first session key packet of pkesks addressed to one of me's keys.
func sessionKey(me *Identity, pkesks []byte, keyLen int) ([]byte, error) {
	r := packet.NewReader(bytes.NewReader(pkesks))
	for {
		p, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("%w: no session key for us in the preamble", ErrNotForUs)
		}
		ek, ok := p.(*packet.EncryptedKey)
		if !ok {
			return nil, fmt.Errorf("%w: packet %T in the preamble", ErrMalformed, p)
		}
		for _, priv := range privateKeys(me) {
			if ek.KeyId != 0 && ek.KeyId != priv.KeyId {
				continue
			}
			if ek.Decrypt(priv, nil) == nil && len(ek.Key) == keyLen {
				return ek.Key, nil
			}
		}
	}
}

func privateKeys(me *Identity) []*packet.PrivateKey {
	var out []*packet.PrivateKey
	for _, sk := range me.e.Subkeys {
		if sk.PrivateKey != nil && !sk.PrivateKey.Encrypted {
			out = append(out, sk.PrivateKey)
		}
	}
	return out
}

// Check reports whether chunk is chunk i of the message, untouched.
func (c *ChunkChecker) Check(i int, chunk []byte) error {
	if i < 0 || i >= c.chunks {
		return fmt.Errorf("%w: index %d, the message has %d", ErrChunk, i, c.chunks)
	}
	if n := len(chunk); n <= aeadTagLen || n > c.csize || n < c.csize && i != c.chunks-1 {
		return fmt.Errorf("%w: chunk %d is %d bytes", ErrChunk, i, n)
	}
	nonce := binary.BigEndian.AppendUint64(append([]byte(nil), c.iv...), uint64(i))
	if _, err := c.aead.Open(nil, nonce, chunk, c.ad); err != nil {
		return fmt.Errorf("%w: chunk %d", ErrChunk, i)
	}
	return nil
}
