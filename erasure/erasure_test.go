package erasure

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func segment(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(n), byte(n >> 8), byte(n >> 16)}).Read(b)
	return b
}

func mustNew(t testing.TB, k, m int) *Code {
	t.Helper()
	c, err := New(k, m)
	if err != nil {
		t.Fatalf("New(%d, %d): %v", k, m, err)
	}
	return c
}

// without returns copies of the shard headers, minus the lost indexes, in a shuffled order.
func without(shards []Shard, lost []int, seed uint64) []Shard {
	var out []Shard
	for _, s := range shards {
		if !slices.Contains(lost, s.Index) {
			out = append(out, s)
		}
	}
	r := rand.New(rand.NewPCG(seed, 0))
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// flip returns s with one bit of a fresh copy of its Data flipped.
func flip(s Shard, bit int) Shard {
	s.Data = slices.Clone(s.Data)
	s.Data[bit/8%len(s.Data)] ^= 1 << (bit % 8)
	return s
}

func TestNew_Limits(t *testing.T) {
	for _, tc := range []struct{ k, m int }{{0, 0}, {-1, 2}, {1, -1}, {200, 57}, {257, 0}, {1, 256}, {math.MaxInt, math.MaxInt}} {
		c, err := New(tc.k, tc.m)
		if err == nil {
			t.Errorf("New(%d, %d) = %v, want an error", tc.k, tc.m, c)
		} else if !strings.HasPrefix(err.Error(), "erasure: ") {
			t.Errorf("New(%d, %d): error %q lacks the package prefix", tc.k, tc.m, err)
		}
	}
	for _, tc := range []struct{ k, m int }{{1, 0}, {1, 255}, {256, 0}, {128, 128}, {10, 4}} {
		c := mustNew(t, tc.k, tc.m)
		if c.K() != tc.k || c.M() != tc.m || c.N() != tc.k+tc.m {
			t.Errorf("New(%d, %d): K, M, N = %d, %d, %d", tc.k, tc.m, c.K(), c.M(), c.N())
		}
	}
}

func TestSplitJoin_Table(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		k, m    int
		size    int
		lost    []int
		corrupt []int // bit-flipped in Data, Hash left as it was
		wantErr bool
	}{
		{k: 10, m: 4, size: mib + 3},
		{k: 10, m: 4, size: mib + 3, lost: []int{0, 1, 2, 3}},
		{k: 10, m: 4, size: mib + 3, lost: []int{10, 11, 12, 13}},
		{k: 10, m: 4, size: mib + 3, lost: []int{0, 5, 11, 13}},
		{k: 10, m: 4, size: mib + 3, lost: []int{0, 1, 2, 3, 4}, wantErr: true},
		{k: 10, m: 4, size: mib, lost: []int{1, 2}, corrupt: []int{0, 12}},
		{k: 10, m: 4, size: mib, lost: []int{1, 2}, corrupt: []int{0, 3, 12}, wantErr: true},
		{k: 10, m: 4, size: mib, corrupt: []int{0, 1, 2, 3, 4}, wantErr: true},
		{k: 5, m: 2, size: 64 << 10, lost: []int{4, 6}},
		{k: 3, m: 2, size: 1000, lost: []int{0, 2}},
		{k: 3, m: 2, size: 1000, lost: []int{0, 1, 2}, wantErr: true},
		{k: 7, m: 3, size: 1000, lost: []int{6, 8}},  // 1000 is not a multiple of 7
		{k: 7, m: 3, size: 7*99 + 6, lost: []int{0}}, // last data shard mostly padding
		{k: 1, m: 0, size: 5000},
		{k: 1, m: 0, size: 5000, lost: []int{0}, wantErr: true},
		{k: 1, m: 3, size: 5000, lost: []int{0, 1, 2}}, // replication: any one copy will do
		{k: 1, m: 3, size: 5000, lost: []int{0, 1, 3}, corrupt: []int{2}, wantErr: true},
		{k: 5, m: 0, size: 5000},
		{k: 5, m: 0, size: 5000, lost: []int{4}, wantErr: true},
		{k: 5, m: 0, size: 5000, corrupt: []int{2}, wantErr: true},
		{k: 128, m: 128, size: 100000, lost: seq(0, 128)},
		{k: 128, m: 128, size: 100000, lost: seq(64, 192)},
		{k: 128, m: 128, size: 100000, lost: seq(0, 129), wantErr: true},
		{k: 255, m: 1, size: 100000, lost: []int{17}},
		{k: 1, m: 255, size: 100, lost: seq(0, 255)},
		{k: 256, m: 0, size: 1000},
		{k: 3, m: 2, size: 0},
		{k: 3, m: 2, size: 0, lost: []int{0, 3}},
		{k: 3, m: 2, size: 0, lost: []int{0, 3, 4}, wantErr: true},
		{k: 3, m: 2, size: 1},
		{k: 3, m: 2, size: 1, lost: []int{0, 1}},
		{k: 10, m: 4, size: 1, lost: []int{0, 10, 11, 12}},
		{k: 10, m: 4, size: 9, lost: []int{9}}, // fewer bytes than data shards
	} {
		name := fmt.Sprintf("k%d_m%d_size%d_lost%v_corrupt%v", tc.k, tc.m, tc.size, compact(tc.lost), tc.corrupt)
		t.Run(name, func(t *testing.T) {
			c := mustNew(t, tc.k, tc.m)
			data := segment(uint64(tc.k*1000+tc.m), tc.size)
			shards, err := c.Split(data)
			if err != nil {
				t.Fatal(err)
			}
			checkSplit(t, c, data, shards)
			given := without(shards, tc.lost, uint64(tc.size))
			for i := range given {
				if slices.Contains(tc.corrupt, given[i].Index) {
					given[i] = flip(given[i], 8*given[i].Index+3)
				}
			}
			var out bytes.Buffer
			sums, err := c.JoinHashes(&out, given)
			if tc.wantErr {
				if !errors.Is(err, ErrTooFewShards) {
					t.Fatalf("Join: err = %v, want ErrTooFewShards", err)
				}
				if out.Len() != 0 {
					t.Errorf("a failed Join wrote %d bytes", out.Len())
				}
				if _, err := c.Reconstruct(given); !errors.Is(err, ErrTooFewShards) {
					t.Errorf("Reconstruct: err = %v, want ErrTooFewShards", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Join: %v", err)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("Join gave %d bytes, not the %d-byte segment", out.Len(), len(data))
			}
			for i, sum := range sums { // the hashes of the data shards, given or rebuilt
				if sum != shards[i].Hash {
					t.Errorf("JoinHashes: data shard %d's hash %x, the split's %x", i, sum[:4], shards[i].Hash[:4])
				}
			}
			if len(sums) != tc.k {
				t.Errorf("JoinHashes gave %d hashes, want k = %d", len(sums), tc.k)
			}
			rebuilt, err := c.Reconstruct(given)
			if err != nil {
				t.Fatalf("Reconstruct: %v", err)
			}
			checkSameShards(t, rebuilt, shards)
		})
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func compact(lost []int) string {
	if len(lost) > 6 {
		return fmt.Sprintf("%d..%d", lost[0], lost[len(lost)-1])
	}
	return fmt.Sprint(lost)
}

// checkSplit checks the shape of a fresh split and that the data shards are the segment.
func checkSplit(t *testing.T, c *Code, data []byte, shards []Shard) {
	t.Helper()
	if len(shards) != c.N() {
		t.Fatalf("Split gave %d shards, want %d", len(shards), c.N())
	}
	ss := max(1, (len(data)+c.K()-1)/c.K())
	var joined []byte
	for i, s := range shards {
		if s.Index != i || s.K != c.K() || s.M != c.M() || s.SegmentSize != int64(len(data)) || len(s.Data) != ss {
			t.Fatalf("shard %d = {Index %d K %d M %d SegmentSize %d len %d}, want {%d %d %d %d %d}",
				i, s.Index, s.K, s.M, s.SegmentSize, len(s.Data), i, c.K(), c.M(), len(data), ss)
		}
		if !s.Verify() {
			t.Fatalf("shard %d fails Verify right after Split", i)
		}
		if i < c.K() {
			joined = append(joined, s.Data...)
		}
	}
	if !bytes.Equal(joined[:len(data)], data) || !bytes.Equal(joined[len(data):], make([]byte, len(joined)-len(data))) {
		t.Fatal("the data shards are not the segment followed by zero padding")
	}
}

func checkSameShards(t *testing.T, got, want []Shard) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d shards, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Index != w.Index || g.K != w.K || g.M != w.M || g.SegmentSize != w.SegmentSize ||
			g.Hash != w.Hash || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("rebuilt shard %d differs from the original", i)
		}
	}
}

func TestSplit_DoesNotAliasTheSegment(t *testing.T) {
	c := mustNew(t, 4, 2)
	buf := make([]byte, 1000, 4000) // spare capacity that reedsolomon.Split would use
	copy(buf, segment(1, 1000))
	want := slices.Clone(buf)
	shards, err := c.Split(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:cap(buf)][1000:], make([]byte, 3000)) || !bytes.Equal(buf, want) {
		t.Fatal("Split wrote into the caller's buffer")
	}
	clear(buf) // the caller reuses its buffer
	for i, s := range shards {
		if !s.Verify() {
			t.Fatalf("shard %d changed when the caller reused its buffer", i)
		}
	}
	var out bytes.Buffer
	if err := c.Join(&out, shards); err != nil || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("Join after the caller reused its buffer: %v", err)
	}
}

func TestJoin_CorruptShardIsMissing(t *testing.T) {
	c := mustNew(t, 4, 2)
	data := segment(2, 4096)
	shards, _ := c.Split(data)
	for bit := 0; bit < 8*len(shards[0].Data); bit += 97 {
		bad := flip(shards[bit%6], bit)
		if bad.Verify() {
			t.Fatalf("Verify missed a flip of bit %d", bit)
		}
		// With the good copy of that shard gone, the flipped one must not be used.
		given := append(without(shards, []int{bad.Index, (bad.Index + 1) % 6}, uint64(bit)), bad)
		var out bytes.Buffer
		if err := c.Join(&out, given); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("bit %d of shard %d flipped: Join = %v, equal %v", bit, bad.Index, err, bytes.Equal(out.Bytes(), data))
		}
		// And it does not count toward k.
		given = append(without(shards, []int{bad.Index, (bad.Index + 1) % 6, (bad.Index + 2) % 6}, 0), bad)
		if err := c.Join(io.Discard, given); !errors.Is(err, ErrTooFewShards) ||
			!strings.Contains(err.Error(), "3 good of 4 needed (4 given)") {
			t.Fatalf("3 good + 1 corrupt: err = %v, want ErrTooFewShards saying 3 good of 4", err)
		}
	}
}

func TestJoin_DisagreeingHeadersAreMissing(t *testing.T) {
	c := mustNew(t, 4, 2)
	data := segment(3, 1003)
	shards, _ := c.Split(data)
	other, _ := mustNew(t, 4, 3).Split(data)
	longer, _ := c.Split(segment(3, 1004))
	for _, tc := range []struct {
		name string
		bad  func(s Shard) Shard
	}{
		{"wrong K", func(s Shard) Shard { s.K = 3; return s }},
		{"wrong M", func(s Shard) Shard { s.M = 3; return s }},
		{"index out of range", func(s Shard) Shard { s.Index = 6; return s }},
		{"negative index", func(s Shard) Shard { s.Index = -1; return s }},
		{"segment size of the minority", func(s Shard) Shard { s.SegmentSize--; return s }},
		{"negative segment size", func(s Shard) Shard { s.SegmentSize = -5; return s }},
		{"data of the wrong length", func(s Shard) Shard {
			s.Data = append(slices.Clone(s.Data), 0)
			s.Hash = sha(s.Data)
			return s
		}},
		{"shard of another code", func(s Shard) Shard { return other[s.Index] }},
		{"shard of a longer segment", func(s Shard) Shard { return longer[s.Index] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Shards 0 and 1 lost, shard 2 bad: only 3 good of 4.
			given := without(shards, []int{0, 1, 2}, 9)
			given = append(given, tc.bad(shards[2]))
			err := c.Join(io.Discard, given)
			if !errors.Is(err, ErrTooFewShards) {
				t.Fatalf("Join: err = %v, want ErrTooFewShards", err)
			}
			// Shard 1 back: 4 good ones, and the bad one changes nothing.
			var out bytes.Buffer
			if err := c.Join(&out, append(given, shards[1])); err != nil || !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("Join with 4 good and 1 bad: %v", err)
			}
		})
	}
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

func TestJoin_WrongIndexShard(t *testing.T) {
	// A shard whose Data and Hash agree but that claims another shard's index passes every
	// check but the parity: Join must find it when there are shards to spare.
	c := mustNew(t, 10, 4)
	data := segment(4, 100003)
	shards, _ := c.Split(data)
	liar := shards[5]
	liar.Index = 3

	t.Run("real one missing", func(t *testing.T) {
		for _, lost := range [][]int{{3}, {3, 12}, {3, 0}} {
			given := append(without(shards, lost, 1), liar)
			var out bytes.Buffer
			if err := c.Join(&out, given); err != nil || !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("lost %v, shard 5 posing as 3: Join = %v, equal %v", lost, err, bytes.Equal(out.Bytes(), data))
			}
			rebuilt, err := c.Reconstruct(given)
			if err != nil {
				t.Fatal(err)
			}
			checkSameShards(t, rebuilt, shards)
		}
	})
	t.Run("real one present", func(t *testing.T) {
		// Two different shards claim index 3: neither can be trusted, the other 13 suffice.
		given := append(without(shards, nil, 2), liar)
		var out bytes.Buffer
		if err := c.Join(&out, given); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("Join = %v", err)
		}
	})
	t.Run("same shard twice", func(t *testing.T) {
		given := append(without(shards, []int{0, 1, 2, 3}, 3), shards[4], shards[4])
		if err := c.Join(io.Discard, given); err != nil {
			t.Fatalf("a duplicate of a good shard: Join = %v", err)
		}
	})
	t.Run("no shard to spare", func(t *testing.T) {
		// k+1 shards with one liar: the parity shows they disagree but not who lies.
		given := append(without(shards, []int{3, 10, 11, 12}, 4), liar)
		if err := c.Join(io.Discard, given); !errors.Is(err, ErrTooFewShards) ||
			!strings.Contains(err.Error(), "do not fit together") {
			t.Fatalf("Join = %v, want ErrTooFewShards saying they do not fit together", err)
		}
	})
	t.Run("hash forged over corrupt data", func(t *testing.T) {
		bad := flip(shards[7], 77)
		bad.Hash = sha(bad.Data)
		given := append(without(shards, []int{7, 0}, 5), bad)
		var out bytes.Buffer
		if err := c.Join(&out, given); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("Join = %v", err)
		}
	})
}

func TestJoin_ShuffledAndWriterError(t *testing.T) {
	c := mustNew(t, 5, 3)
	data := segment(5, 77777)
	shards, _ := c.Split(data)
	for seed := range uint64(20) {
		given := without(shards, []int{int(seed % 8), int(seed*3) % 8}, seed)
		var out bytes.Buffer
		if err := c.Join(&out, given); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("seed %d: Join = %v", seed, err)
		}
	}
	boom := errors.New("disk full")
	if err := c.Join(writerFunc(func([]byte) (int, error) { return 0, boom }), shards); !errors.Is(err, boom) {
		t.Errorf("Join to a failing writer: err = %v, want the writer's error", err)
	}
	if err := c.Join(io.Discard, nil); !errors.Is(err, ErrTooFewShards) {
		t.Errorf("Join of no shards: err = %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestSplitReader_RoundTrip(t *testing.T) {
	c := mustNew(t, 3, 2)
	for _, size := range []int{0, 1, 999, 1000, 1001, 5000, 10*1000 + 7} {
		data := segment(6, size)
		var out bytes.Buffer
		segs := 0
		err := SplitReader(iotest.HalfReader(bytes.NewReader(data)), 1000, c, func(seg int, shards []Shard) error {
			if seg != segs {
				t.Fatalf("segment %d after %d", seg, segs)
			}
			segs++
			want := min(1000, size-1000*seg)
			if shards[0].SegmentSize != int64(want) {
				t.Fatalf("segment %d: SegmentSize %d, want %d", seg, shards[0].SegmentSize, want)
			}
			return c.Join(&out, without(shards, []int{seg % 5, (seg + 2) % 5}, uint64(seg)))
		})
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if want := max(1, (size+999)/1000); segs != want {
			t.Errorf("size %d: %d segments, want %d", size, segs, want)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Errorf("size %d: round trip changed the data", size)
		}
	}
}

func TestSplitReader_Errors(t *testing.T) {
	c := mustNew(t, 3, 2)
	boom := errors.New("boom")
	err := SplitReader(io.MultiReader(bytes.NewReader(make([]byte, 2500)), iotest.ErrReader(boom)), 1000, c,
		func(int, []Shard) error { return nil })
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "erasure: read segment 2: ") {
		t.Errorf("read error: %v", err)
	}
	stop := errors.New("stop")
	calls := 0
	err = SplitReader(bytes.NewReader(make([]byte, 5000)), 1000, c, func(seg int, _ []Shard) error {
		calls++
		if seg == 1 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Errorf("emit error: %v after %d calls", err, calls)
	}
	if err := SplitReader(bytes.NewReader(nil), 0, c, nil); err == nil {
		t.Error("segment size 0 accepted")
	}
}

func TestSplitReader_MemoryBounded(t *testing.T) {
	// 64 MiB through 1 MiB segments must not allocate anywhere near 64 MiB.
	const total, segSize = 64 << 20, 1 << 20
	c := mustNew(t, 10, 4)
	r := io.LimitReader(zeros{}, total)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n := 0
	err := SplitReader(r, segSize, c, func(_ int, shards []Shard) error { n++; return nil })
	runtime.ReadMemStats(&after)
	if err != nil || n != 64 {
		t.Fatalf("SplitReader: %v after %d segments", err, n)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4*segSize {
		t.Errorf("SplitReader allocated %d bytes for %d bytes of input in %d-byte segments", alloc, total, segSize)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestSplitBufferMatchesSplit(t *testing.T) {
	c, err := New(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	seg := make([]byte, 1000)
	for i := range seg {
		seg[i] = byte(i * 7)
	}
	want, err := c.Split(seg)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, c.BufferSize(len(seg)))
	copy(buf, seg)
	got, err := c.SplitBuffer(buf, len(seg))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i].Hash != want[i].Hash || string(got[i].Data) != string(want[i].Data) {
			t.Fatalf("shard %d differs", i)
		}
	}
	if _, err := c.SplitBuffer(buf[:10], len(seg)); err == nil {
		t.Fatal("a short buffer was accepted")
	}
}

func TestSplitBufferUnhashed_HashedByCaller(t *testing.T) {
	c, err := New(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	seg := []byte("a segment of an odd length, 43 bytes long.")
	want, err := c.Split(seg)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, c.BufferSize(len(seg)))
	copy(buf, seg)
	got, err := c.SplitBufferUnhashed(buf, len(seg))
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i].Hash != ([32]byte{}) || got[i].Verify() {
			t.Fatalf("shard %d is hashed before SetHash", i)
		}
		if string(got[i].Data) != string(want[i].Data) {
			t.Fatalf("shard %d data differs", i)
		}
	}
	// Unhashed shards are missing to Join; hashed, they decode.
	if err := c.Join(io.Discard, got); !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("Join of unhashed shards: %v", err)
	}
	for i := range got {
		got[i].SetHash()
		if got[i].Hash != want[i].Hash {
			t.Fatalf("shard %d: SetHash gave another hash than Split", i)
		}
	}
	var out bytes.Buffer
	if err := c.Join(&out, got[1:]); err != nil || out.String() != string(seg) {
		t.Fatalf("Join: %q, %v", out.String(), err)
	}
	if _, err := c.SplitBufferUnhashed(buf[:10], len(seg)); err == nil {
		t.Fatal("a short buffer was accepted")
	}
}
