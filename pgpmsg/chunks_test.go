package pgpmsg_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// scan feeds msg to a scanner in writes of step bytes.
func scan(t *testing.T, msg []byte, step int, want ...int) *pgpmsg.ChunkScanner {
	t.Helper()
	s := pgpmsg.NewChunkScanner(want...)
	for len(msg) > 0 {
		k := min(step, len(msg))
		if _, err := s.Write(msg[:k]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		msg = msg[k:]
	}
	return s
}

func TestChunks_ScanAndCheck(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	r := rand.New(rand.NewPCG(1, 2))
	// Sizes around chunk boundaries (64 KiB chunks): the header adds a few hundred bytes.
	for _, size := range []int{0, 1, 1000, 64<<10 - 300, 64 << 10, 3 << 16, 5<<16 + 12345} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(r.Uint32())
		}
		msg := seal(t, fullHeader("STORE", alice.Fingerprint(), alice.Fingerprint()), payload, alice, alice.Public().WithAEAD())
		for _, step := range []int{1, 7, 4096, len(msg)} {
			all := scan(t, msg, step)
			l, err := all.Layout()
			if err != nil {
				t.Fatalf("size %d step %d: %v", size, step, err)
			}
			wantChunks := (size + 300 + 64<<10) / (64 << 10) // roughly: header + payload, rounded up
			if l.Chunks < 1 || l.Chunks > wantChunks+1 {
				t.Fatalf("size %d: %d chunks", size, l.Chunks)
			}
			idx := []int{0, l.Chunks - 1, l.Chunks / 2}
			s := scan(t, msg, step, idx...)
			c, err := pgpmsg.NewChunkChecker(alice, l.Preamble, l.Chunks)
			if err != nil {
				t.Fatal(err)
			}
			if l2, _ := s.Layout(); l2.Pin() != l.Pin() {
				t.Fatal("pin differs between scans")
			}
			for _, i := range idx {
				ch, err := s.Chunk(i)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Check(i, ch); err != nil {
					t.Fatalf("size %d chunk %d (%d bytes): %v", size, i, len(ch), err)
				}
				// A flipped bit, a wrong index, a cut chunk: all fail.
				bad := bytes.Clone(ch)
				bad[r.IntN(len(bad))] ^= 1 << r.IntN(8)
				if err := c.Check(i, bad); !errors.Is(err, pgpmsg.ErrChunk) {
					t.Fatalf("flipped chunk %d: %v", i, err)
				}
				if err := c.Check(i, ch[:len(ch)-1]); !errors.Is(err, pgpmsg.ErrChunk) {
					t.Fatalf("cut chunk %d: %v", i, err)
				}
				if l.Chunks > 1 {
					if err := c.Check((i+1)%l.Chunks, ch); !errors.Is(err, pgpmsg.ErrChunk) {
						t.Fatalf("chunk %d as %d: %v", i, (i+1)%l.Chunks, err)
					}
				}
			}
			if _, err := s.Chunk(l.Chunks); err == nil {
				t.Fatal("a chunk past the end")
			}
			// Only the recipient can check: bob cannot decrypt the session key.
			if _, err := pgpmsg.NewChunkChecker(bob, l.Preamble, l.Chunks); !errors.Is(err, pgpmsg.ErrNotForUs) {
				t.Fatalf("bob's checker: %v", err)
			}
		}
	}
}

// A chunk of another message to the same key fails, though both are sealed alike.
func TestChunks_OtherMessageFails(t *testing.T) {
	alice := id(t, "alice")
	payload := bytes.Repeat([]byte("same bytes \r\n"), 20000)
	h := fullHeader("STORE", alice.Fingerprint(), alice.Fingerprint())
	m1 := seal(t, h, payload, alice, alice.Public().WithAEAD())
	m2 := seal(t, h, payload, alice, alice.Public().WithAEAD())
	s1, s2 := scan(t, m1, 1<<16, 1), scan(t, m2, 1<<16, 1)
	l1, _ := s1.Layout()
	l2, _ := s2.Layout()
	if l1.Pin() == l2.Pin() {
		t.Fatal("two messages share a pin")
	}
	c1, err := pgpmsg.NewChunkChecker(alice, l1.Preamble, l1.Chunks)
	if err != nil {
		t.Fatal(err)
	}
	ch2, _ := s2.Chunk(1)
	if err := c1.Check(1, ch2); !errors.Is(err, pgpmsg.ErrChunk) {
		t.Fatalf("chunk of another message: %v", err)
	}
}

func TestChunks_ScannerRejects(t *testing.T) {
	alice := id(t, "alice")
	h := fullHeader("HELLO", alice.Fingerprint(), alice.Fingerprint())
	v1 := seal(t, h, []byte("hello"), alice, alice.Public()) // SEIPDv1: no chunks
	v2 := seal(t, h, bytes.Repeat([]byte{7}, 100000), alice, alice.Public().WithAEAD())
	cases := map[string][]byte{
		"SEIPDv1":       v1,
		"cut":           v2[:len(v2)-20],
		"trailing data": append(bytes.Clone(v2), 0xc0|18, 1, 2),
		"not OpenPGP":   []byte("hello world"),
		"empty":         nil,
	}
	for name, msg := range cases {
		s := pgpmsg.NewChunkScanner(0)
		_, werr := s.Write(msg)
		_, lerr := s.Layout()
		if werr == nil && lerr == nil {
			t.Errorf("%s: scanned without error", name)
		}
	}
}

// checkedChunks returns the first three chunks of msg that pass the check, by index: none
// if msg does not scan or has no key for who.
func checkedChunks(who *pgpmsg.Identity, msg []byte) map[int][]byte {
	s := pgpmsg.NewChunkScanner(0, 1, 2)
	if _, err := s.Write(msg); err != nil {
		return nil
	}
	l, err := s.Layout()
	if err != nil {
		return nil
	}
	c, err := pgpmsg.NewChunkChecker(who, l.Preamble, l.Chunks)
	if err != nil {
		return nil
	}
	out := map[int][]byte{}
	for i := range min(3, l.Chunks) {
		if ch, err := s.Chunk(i); err == nil && c.Check(i, ch) == nil {
			out[i] = ch
		}
	}
	return out
}

// The scanner reads what a peer stored, which may be anything: it never panics, and what
// it calls chunks of a damaged message never pass the check.
//
// "Damaged" is judged against the fuzz input before its byte is flipped, not against the
// seed sealed here: an input may be any message alice sealed (a fuzz worker seals its own
// seed, with a session key of its own), and a chunk need not lie in a message verbatim
// (partial-length headers may cut it). A chunk that passes after the flip must be, byte
// for byte, the chunk the unflipped message has there, when that one passes too.
func FuzzChunkScanner(f *testing.F) {
	alice := pgpmsgtest.Identity(f, "alice")
	msg := seal(f, fullHeader("STORE", alice.Fingerprint(), alice.Fingerprint()), bytes.Repeat([]byte{1, 2, 3}, 50000), alice, alice.Public().WithAEAD())
	f.Add(msg, uint(0), byte(0))
	f.Add(msg[:300], uint(10), byte(1))
	f.Fuzz(func(t *testing.T, m []byte, at uint, flip byte) {
		before := checkedChunks(alice, m)
		pos := -1
		if len(m) > 0 {
			m = bytes.Clone(m)
			pos = int(at % uint(len(m)))
			m[pos] ^= flip
		}
		s := pgpmsg.NewChunkScanner(0, 1, 2)
		if _, err := s.Write(m); err != nil {
			return
		}
		l, err := s.Layout()
		if err != nil {
			return
		}
		// Reading only what is asked finds the same: skipped bytes do not frame.
		fs, err := pgpmsg.ScanFile(bytes.NewReader(m), int64(len(m)), 0, 1, 2)
		if err != nil {
			t.Fatalf("ScanFile: %v, Write scan: ok", err)
		}
		if fl, err := fs.Layout(); err != nil || fl.Pin() != l.Pin() || fl.Chunks != l.Chunks || fl.Size != l.Size {
			t.Fatalf("ScanFile layout %+v (%v), Write scan %+v", fl.Chunks, err, l.Chunks)
		}
		c, err := pgpmsg.NewChunkChecker(alice, l.Preamble, l.Chunks)
		if err != nil {
			return
		}
		for i := range min(3, l.Chunks) {
			ch, err := s.Chunk(i)
			if err != nil {
				t.Fatalf("chunk %d of %d: %v", i, l.Chunks, err)
			}
			// Passing is right only if the flip missed the chunk (header or other chunks).
			if want, ok := before[i]; ok && c.Check(i, ch) == nil && !bytes.Equal(ch, want) {
				t.Fatalf("chunk %d, damaged by flipping byte %d by %#x, passed", i, pos, flip)
			}
		}
	})
}

// countingReaderAt counts the bytes read from it.
type countingReaderAt struct {
	r *bytes.Reader
	n int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

// ScanFile finds what a scan of the whole message finds, reading only the chunks asked.
func TestChunks_ScanFileReadsOnlyWhatIsAsked(t *testing.T) {
	alice := id(t, "alice")
	for _, size := range []int{10, 64<<10 - 300, 3<<16 + 5, 2 << 20} {
		payload := bytes.Repeat([]byte{0x0d, 0x0a, 0x00, 0xff}, size/4)
		msg := seal(t, fullHeader("STORE", alice.Fingerprint(), alice.Fingerprint()), payload, alice, alice.Public().WithAEAD())
		full := scan(t, msg, len(msg))
		l, err := full.Layout()
		if err != nil {
			t.Fatal(err)
		}
		want := []int{l.Chunks - 1, 0, l.Chunks / 2}
		all := scan(t, msg, len(msg), want...)
		cr := &countingReaderAt{r: bytes.NewReader(msg)}
		s, err := pgpmsg.ScanFile(cr, int64(len(msg)), want...)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		sl, err := s.Layout()
		if err != nil || sl.Pin() != l.Pin() || sl.Chunks != l.Chunks || sl.Size != l.Size {
			t.Fatalf("size %d: ScanFile layout %d chunks, %d bytes (%v); want %d, %d", size, sl.Chunks, sl.Size, err, l.Chunks, l.Size)
		}
		for _, i := range want {
			a, _ := all.Chunk(i)
			b, err := s.Chunk(i)
			if err != nil || !bytes.Equal(a, b) {
				t.Fatalf("size %d: chunk %d differs (%v)", size, i, err)
			}
		}
		if limit := int64(len(l.Preamble)) + 3*(64<<10+16) + int64(len(msg))/1000 + 64; size > 1<<20 && cr.n > limit {
			t.Errorf("size %d: read %d of %d bytes, want at most %d", size, cr.n, len(msg), limit)
		}
	}
}
