// Package merkle is the hash tree that lets an owner check that a peer still holds a
// piece without sending the piece back: the owner keeps the root computed while the
// piece streamed out; later it asks for a few random blocks, and the peer answers with
// each block and the sibling hashes on its path to the root.
//
// Leaves are H(0x00 ‖ block), inner nodes H(0x01 ‖ left ‖ right), with a node lacking a
// right sibling promoted unchanged; the root is H(0x02 ‖ size ‖ tree root), so a piece
// cut short or extended fails. Empty data has the tree root H(0x00). H is SHA-256.
package merkle

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DefaultBlockSize is the leaf size dibs uses.
const DefaultBlockSize = 4096

// Hash is a SHA-256 value.
type Hash [32]byte

func leaf(b []byte) Hash {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(b)
	var out Hash
	h.Sum(out[:0])
	return out
}

func node(l, r Hash) Hash {
	var buf [65]byte
	buf[0] = 1
	copy(buf[1:], l[:])
	copy(buf[33:], r[:])
	return sha256.Sum256(buf[:])
}

func final(size int64, top Hash) Hash {
	var buf [41]byte
	buf[0] = 2
	binary.BigEndian.PutUint64(buf[1:9], uint64(size))
	copy(buf[9:], top[:])
	return sha256.Sum256(buf[:])
}

// Blocks is the number of leaves of size bytes (at least one: empty data is one empty leaf).
func Blocks(size int64, blockSize int) int {
	if size <= 0 {
		return 1
	}
	return int((size + int64(blockSize) - 1) / int64(blockSize))
}

// Hasher computes the root of everything written to it, keeping one partial block and
// one hash per tree level.
type Hasher struct {
	bs    int
	buf   []byte
	size  int64
	stack []stackEntry // complete subtrees, largest first
}

type stackEntry struct {
	h      Hash
	leaves int // a power of two
}

// NewHasher returns a Hasher with blockSize-byte leaves.
func NewHasher(blockSize int) *Hasher {
	return &Hasher{bs: blockSize, buf: make([]byte, 0, blockSize)}
}

// Write adds p to the data. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	h.size += int64(n)
	for len(p) > 0 {
		if len(h.buf) == 0 && len(p) >= h.bs {
			h.push(leaf(p[:h.bs]))
			p = p[h.bs:]
			continue
		}
		k := copy(h.buf[len(h.buf):h.bs], p)
		h.buf = h.buf[:len(h.buf)+k]
		p = p[k:]
		if len(h.buf) == h.bs {
			h.push(leaf(h.buf))
			h.buf = h.buf[:0]
		}
	}
	return n, nil
}

func (h *Hasher) push(l Hash) {
	e := stackEntry{l, 1}
	for len(h.stack) > 0 && h.stack[len(h.stack)-1].leaves == e.leaves {
		top := h.stack[len(h.stack)-1]
		h.stack = h.stack[:len(h.stack)-1]
		e = stackEntry{node(top.h, e.h), e.leaves * 2}
	}
	h.stack = append(h.stack, e)
}

// Size is the number of bytes written.
func (h *Hasher) Size() int64 { return h.size }

// Root is the root of the data written so far.
func (h *Hasher) Root() Hash {
	stack := append([]stackEntry(nil), h.stack...)
	if len(h.buf) > 0 || h.size == 0 {
		stack = append(stack, stackEntry{leaf(h.buf), 1})
	}
	// Fold from the right: the smaller subtrees are promoted until they pair up, which is
	// the same tree a level-by-level build with promotion of odd nodes gives.
	top := stack[len(stack)-1].h
	for i := len(stack) - 2; i >= 0; i-- {
		top = node(stack[i].h, top)
	}
	return final(h.size, top)
}

// Proof is one block with the sibling hashes from its leaf up to the tree root.
type Proof struct {
	Index int
	Block []byte
	Path  []Hash
}

// levels returns every level of the tree over leaves, bottom first.
func levels(leaves []Hash) [][]Hash {
	out := [][]Hash{leaves}
	for cur := leaves; len(cur) > 1; {
		next := make([]Hash, 0, (len(cur)+1)/2)
		for i := 0; i < len(cur); i += 2 {
			if i+1 < len(cur) {
				next = append(next, node(cur[i], cur[i+1]))
			} else {
				next = append(next, cur[i]) // promoted
			}
		}
		out = append(out, next)
		cur = next
	}
	return out
}

// Prove reads the data (size bytes of r) and returns a proof for each index.
func Prove(r io.ReaderAt, size int64, blockSize int, indices []int) ([]Proof, error) {
	nb := Blocks(size, blockSize)
	for _, i := range indices {
		if i < 0 || i >= nb {
			return nil, fmt.Errorf("merkle: block %d out of range (%d blocks)", i, nb)
		}
	}
	leaves := make([]Hash, nb)
	buf := make([]byte, blockSize)
	for i := range nb {
		b, err := readBlock(r, size, blockSize, i, buf)
		if err != nil {
			return nil, err
		}
		leaves[i] = leaf(b)
	}
	lv := levels(leaves)
	proofs := make([]Proof, 0, len(indices))
	for _, i := range indices {
		b, err := readBlock(r, size, blockSize, i, make([]byte, blockSize))
		if err != nil {
			return nil, err
		}
		p := Proof{Index: i, Block: b}
		idx := i
		for _, level := range lv[:len(lv)-1] {
			sib := idx ^ 1
			if sib < len(level) {
				p.Path = append(p.Path, level[sib])
			}
			idx /= 2
		}
		proofs = append(proofs, p)
	}
	return proofs, nil
}

func readBlock(r io.ReaderAt, size int64, blockSize, i int, buf []byte) ([]byte, error) {
	off := int64(i) * int64(blockSize)
	n := int(min(int64(blockSize), size-off))
	if n <= 0 {
		return buf[:0], nil
	}
	if _, err := r.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF)) {
		return nil, fmt.Errorf("merkle: read block %d: %w", i, err)
	} else if err != nil {
		return nil, fmt.Errorf("merkle: data shorter than %d bytes", size)
	}
	return buf[:n], nil
}

// ErrMismatch means a proof does not lead to the root.
var ErrMismatch = errors.New("merkle: proof does not match the root")

// Verify checks one proof against a root and the data's size.
func Verify(root Hash, size int64, blockSize int, p Proof) error {
	nb := Blocks(size, blockSize)
	if p.Index < 0 || p.Index >= nb {
		return fmt.Errorf("merkle: block %d out of range (%d blocks)", p.Index, nb)
	}
	want := blockSize
	if p.Index == nb-1 {
		want = int(size - int64(nb-1)*int64(blockSize))
	}
	if len(p.Block) != want {
		return fmt.Errorf("merkle: block %d has %d bytes, want %d", p.Index, len(p.Block), want)
	}
	h := leaf(p.Block)
	idx, width, used := p.Index, nb, 0
	for width > 1 {
		sib := idx ^ 1
		if sib < width {
			if used >= len(p.Path) {
				return ErrMismatch
			}
			if idx%2 == 0 {
				h = node(h, p.Path[used])
			} else {
				h = node(p.Path[used], h)
			}
			used++
		}
		idx /= 2
		width = (width + 1) / 2
	}
	if used != len(p.Path) || final(size, h) != root {
		return ErrMismatch
	}
	return nil
}

// Limits of the encoded form.
const (
	maxProofs = 1024
	maxPath   = 64
)

// EncodeProofs serializes proofs: count, then per proof index, block length, block,
// path length, path hashes (big-endian uint32 counts).
func EncodeProofs(ps []Proof) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len(ps)))
	for _, p := range ps {
		b = binary.BigEndian.AppendUint32(b, uint32(p.Index))
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.Block)))
		b = append(b, p.Block...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(p.Path)))
		for _, h := range p.Path {
			b = append(b, h[:]...)
		}
	}
	return b
}

// DecodeProofs parses EncodeProofs' output; blocks longer than blockSize, too many
// proofs or too long paths are refused, so a hostile answer cannot make us allocate much.
func DecodeProofs(b []byte, blockSize int) ([]Proof, error) {
	bad := errors.New("merkle: malformed proofs")
	u32 := func() (int, bool) {
		if len(b) < 4 {
			return 0, false
		}
		v := binary.BigEndian.Uint32(b)
		b = b[4:]
		return int(v), v <= 1<<30
	}
	n, ok := u32()
	if !ok || n > maxProofs {
		return nil, bad
	}
	out := make([]Proof, 0, n)
	for range n {
		var p Proof
		var bl, pl int
		if p.Index, ok = u32(); !ok {
			return nil, bad
		}
		if bl, ok = u32(); !ok || bl > blockSize || bl > len(b) {
			return nil, bad
		}
		p.Block, b = append([]byte(nil), b[:bl]...), b[bl:]
		if pl, ok = u32(); !ok || pl > maxPath || pl*32 > len(b) {
			return nil, bad
		}
		p.Path = make([]Hash, pl)
		for i := range pl {
			copy(p.Path[i][:], b[:32])
			b = b[32:]
		}
		out = append(out, p)
	}
	if len(b) != 0 {
		return nil, bad
	}
	return out, nil
}
