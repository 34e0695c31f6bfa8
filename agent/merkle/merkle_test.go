package merkle

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func data(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(n)}).Read(b)
	return b
}

func rootOf(b []byte, bs int) Hash {
	h := NewHasher(bs)
	h.Write(b)
	return h.Root()
}

func TestEveryBlockProvesAndNothingElseDoes(t *testing.T) {
	const bs = 64
	for _, size := range []int{0, 1, bs - 1, bs, bs + 1, 2 * bs, 3 * bs, 5*bs + 7, 7 * bs, 8 * bs, 13*bs + 1, 64 * bs, 100*bs + 3} {
		d := data(size)
		root := rootOf(d, bs)
		nb := Blocks(int64(size), bs)
		idx := make([]int, nb)
		for i := range idx {
			idx[i] = i
		}
		proofs, err := Prove(bytes.NewReader(d), int64(size), bs, idx)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		for _, p := range proofs {
			if err := Verify(root, int64(size), bs, p); err != nil {
				t.Fatalf("size %d block %d: %v", size, p.Index, err)
			}
			if len(p.Block) > 0 {
				bad := p
				bad.Block = append([]byte(nil), p.Block...)
				bad.Block[len(bad.Block)/2] ^= 1
				if Verify(root, int64(size), bs, bad) == nil {
					t.Fatalf("size %d block %d: a flipped bit verified", size, p.Index)
				}
			}
			for j := range p.Path {
				bad := p
				bad.Path = append([]Hash(nil), p.Path...)
				bad.Path[j][3] ^= 0x80
				if Verify(root, int64(size), bs, bad) == nil {
					t.Fatalf("size %d block %d: a flipped path hash verified", size, p.Index)
				}
			}
			if nb > 1 {
				moved := p
				moved.Index = (p.Index + 1) % nb
				if Verify(root, int64(size), bs, moved) == nil && !bytes.Equal(proofs[moved.Index].Block, p.Block) {
					t.Fatalf("size %d: block %d's proof verified as block %d", size, p.Index, moved.Index)
				}
			}
			if Verify(root, int64(size)+1, bs, p) == nil || (size > 0 && Verify(root, int64(size)-1, bs, p) == nil) {
				t.Fatalf("size %d: a proof verified against the wrong size", size)
			}
		}
		// Appending or cutting changes the root.
		if size > 0 && rootOf(d[:size-1], bs) == root {
			t.Fatalf("size %d: a truncated copy has the same root", size)
		}
		if rootOf(append(append([]byte(nil), d...), 0), bs) == root {
			t.Fatalf("size %d: an extended copy has the same root", size)
		}
	}
}

func TestHasherChunkingDoesNotMatter(t *testing.T) {
	d := data(10_000)
	want := rootOf(d, 128)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		h := NewHasher(128)
		for rest := d; len(rest) > 0; {
			n := min(len(rest), rng.IntN(700))
			h.Write(rest[:n])
			rest = rest[n:]
		}
		if h.Root() != want || h.Size() != int64(len(d)) {
			t.Fatal("chunked writes give another root")
		}
	}
}

func TestProveChecksRangeAndShortData(t *testing.T) {
	d := data(1000)
	if _, err := Prove(bytes.NewReader(d), 1000, 100, []int{10}); err == nil {
		t.Error("out-of-range block proved")
	}
	if _, err := Prove(bytes.NewReader(d[:500]), 1000, 100, []int{0}); err == nil {
		t.Error("short data proved")
	}
}

func TestEncodeDecode(t *testing.T) {
	d := data(5000)
	ps, err := Prove(bytes.NewReader(d), 5000, 256, []int{0, 7, 19})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeProofs(EncodeProofs(ps), 256)
	if err != nil || len(got) != 3 {
		t.Fatalf("%v %d", err, len(got))
	}
	root := rootOf(d, 256)
	for _, p := range got {
		if err := Verify(root, 5000, 256, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := DecodeProofs(EncodeProofs(ps), 100); err == nil {
		t.Error("a block longer than the block size decoded")
	}
	enc := EncodeProofs(ps)
	for cut := range len(enc) {
		if _, err := DecodeProofs(enc[:cut], 256); err == nil {
			t.Fatalf("a proof cut at %d decoded", cut)
		}
	}
	if !errors.Is(Verify(root, 5000, 256, Proof{Index: 0, Block: got[0].Block}), ErrMismatch) {
		t.Error("a proof without path verified")
	}
}

func FuzzDecodeProofs(f *testing.F) {
	d := data(3000)
	ps, _ := Prove(bytes.NewReader(d), 3000, 512, []int{1, 5})
	f.Add(EncodeProofs(ps))
	f.Add([]byte{0, 0, 0, 1, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := DecodeProofs(b, 512)
		if err == nil {
			root := rootOf(d, 512)
			for _, p := range ps {
				Verify(root, 3000, 512, p) // must not panic
			}
		}
	})
}

func BenchmarkHasher(b *testing.B) {
	d := data(8 << 20)
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		h := NewHasher(DefaultBlockSize)
		h.Write(d)
		h.Root()
	}
}
