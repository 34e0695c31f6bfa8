package erasure

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/reedsolomon"
)

// MaxShards is the largest n = k+m of the classic (GF(2^8)) code.
const MaxShards = 256

// ErrTooFewShards means fewer than k trustworthy shards were given.
var ErrTooFewShards = errors.New("erasure: too few good shards")

// Code is a systematic Reed-Solomon code with k data and m parity shards. It is safe for
// concurrent use.
type Code struct {
	k, m int
	enc  reedsolomon.Encoder
}

// New returns the code with k data shards and m parity shards: 1 <= k, 0 <= m, k+m <= 256.
// With k = 1 every shard is a copy of the segment (replication); with m = 0 nothing is
// redundant.
func New(k, m int) (*Code, error) {
	switch {
	case k < 1:
		return nil, fmt.Errorf("erasure: new code: k = %d, need at least 1 data shard", k)
	case m < 0:
		return nil, fmt.Errorf("erasure: new code: m = %d, need 0 or more parity shards", m)
	case k > MaxShards || m > MaxShards || k+m > MaxShards:
		return nil, fmt.Errorf("erasure: new code: k+m = %d+%d, at most %d shards", k, m, MaxShards)
	}
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("erasure: new code %d+%d: %w", k, m, err)
	}
	return &Code{k: k, m: m, enc: enc}, nil
}

// K is the number of data shards: any K good shards rebuild a segment.
func (c *Code) K() int { return c.k }

// M is the number of parity shards: a segment survives the loss of any M shards.
func (c *Code) M() int { return c.m }

// N is the number of shards per segment, K+M.
func (c *Code) N() int { return c.k + c.m }

func (c *Code) String() string { return fmt.Sprintf("RS(%d+%d)", c.k, c.m) }

// Shard is one coded piece of a segment; it carries enough to be checked and placed on its own.
type Shard struct {
	Index       int      // 0..n-1; the first k hold the segment itself, zero-padded
	K, M        int      // the code
	SegmentSize int64    // original length of the segment (needed by Join; Split pads)
	Hash        [32]byte // SHA-256 of Data
	Data        []byte
}

// Verify reports whether s.Data matches s.Hash, its SHA-256.
func (s Shard) Verify() bool { return sha256.Sum256(s.Data) == s.Hash }

// SetHash fills s.Hash from s.Data: for shards from SplitBufferUnhashed.
func (s *Shard) SetHash() { s.Hash = sha256.Sum256(s.Data) }

// shardSize is the length of every shard of a segment of size bytes: the segment split in
// k, rounded up. An empty segment still has one-byte shards, so that it too is a set of n
// shards that can be stored, counted and checked like any other.
func shardSize(size int64, k int) int {
	if size <= 0 {
		return 1
	}
	return int((size + int64(k) - 1) / int64(k))
}

// Split codes segment into n shards with their hashes filled. It copies segment: the caller
// may reuse it as soon as Split returns. The shards' Data share one new allocation of
// n*ceil(len/k) bytes.
func (c *Code) Split(segment []byte) ([]Shard, error) {
	buf := make([]byte, c.N()*shardSize(int64(len(segment)), c.k))
	copy(buf, segment)
	return c.SplitBuffer(buf, len(segment))
}

// BufferSize is the length of the buffer SplitBuffer needs for a segment of up to
// segmentSize bytes: room for its n shards.
func (c *Code) BufferSize(segmentSize int) int { return c.N() * shardSize(int64(segmentSize), c.k) }

// SplitBuffer codes the segment held in buf[:size] in place, without copying it: buf must
// have at least BufferSize(size) bytes. The shards' Data alias buf, so the caller may
// reuse buf (for the next segment) only when it is done with the shards.
func (c *Code) SplitBuffer(buf []byte, size int) ([]Shard, error) {
	shards, err := c.SplitBufferUnhashed(buf, size)
	if err != nil {
		return nil, err
	}
	parallel(len(shards), len(shards[0].Data), func(i int) { shards[i].SetHash() })
	return shards, nil
}

// SplitBufferUnhashed is SplitBuffer without the hashes: each shard's Hash is zero until
// the caller calls SetHash, which it may do on several goroutines, each hashing the shard
// it then works on (hashing costs far more than coding).
func (c *Code) SplitBufferUnhashed(buf []byte, size int) ([]Shard, error) {
	if size < 0 || len(buf) < c.BufferSize(size) {
		return nil, fmt.Errorf("erasure: split buffer: %d bytes for a %d-byte segment, need %d", len(buf), size, c.BufferSize(size))
	}
	return c.encode(buf, size)
}

// encode codes the segment held in buf[:size], which must have room for n shards of
// shardSize(size) bytes. The shards' Data alias buf; their hashes are not set.
func (c *Code) encode(buf []byte, size int) ([]Shard, error) {
	ss := shardSize(int64(size), c.k)
	n := c.N()
	clear(buf[size : c.k*ss]) // the padding of the last data shard
	data := make([][]byte, n)
	for i := range data {
		data[i] = buf[i*ss : (i+1)*ss : (i+1)*ss]
	}
	if err := c.enc.Encode(data); err != nil {
		return nil, fmt.Errorf("erasure: encode %d bytes with %v: %w", size, c, err)
	}
	shards := make([]Shard, n)
	for i := range shards {
		shards[i] = Shard{Index: i, K: c.k, M: c.m, SegmentSize: int64(size), Data: data[i]}
	}
	return shards, nil
}

// Join writes the segment that shards code to w. The shards may come in any order and be
// any subset. A shard is treated as missing if its Data does not match its Hash; if its K
// or M is not this code's, its Index is out of range or its Data has the wrong length; if
// its SegmentSize is not the one most shards agree on; if another shard claims its Index
// with other data; or if, where there are more than k shards, the parity shows it does not
// fit with the others. Join needs k good shards, else it fails with an error wrapping
// ErrTooFewShards that says how many were good. Nothing is written unless Join can decode.
func (c *Code) Join(w io.Writer, shards []Shard) error {
	_, err := c.JoinHashes(w, shards)
	return err
}

// JoinHashes is Join that also returns the SHA-256 of each of the k data shards it
// joined (padded as they were coded): the hashes of the given shards it used, which it
// checked, and the hashes of those it rebuilt, which it computes.
func (c *Code) JoinHashes(w io.Writer, shards []Shard) ([][32]byte, error) {
	all, size, err := c.decode(shards, false)
	if err != nil {
		return nil, err
	}
	sums := make([][32]byte, c.k)
	for i := range sums {
		given := false
		for _, s := range shards {
			if s.Index == i && len(s.Data) > 0 && len(all[i]) > 0 && &s.Data[0] == &all[i][0] {
				sums[i], given = s.Hash, true
				break
			}
		}
		if !given {
			sums[i] = sha256.Sum256(all[i])
		}
	}
	ss := shardSize(size, c.k)
	left := size
	for i := 0; i < c.k && left > 0; i++ {
		d := all[i][:min(int64(ss), left)]
		if _, err := w.Write(d); err != nil {
			return nil, fmt.Errorf("erasure: join: %w", err)
		}
		left -= int64(len(d))
	}
	return sums, nil
}

// Reconstruct rebuilds all n shards (data and parity) of the segment from any k good ones,
// for repair: the result holds every index once, in order, hashes filled. Which shards are
// good is decided as in Join. Returned shards that were given may share Data with them.
func (c *Code) Reconstruct(shards []Shard) ([]Shard, error) {
	all, size, err := c.decode(shards, true)
	if err != nil {
		return nil, err
	}
	out := make([]Shard, c.N())
	for i := range out {
		out[i] = Shard{Index: i, K: c.k, M: c.m, SegmentSize: size, Data: all[i]}
	}
	parallel(len(out), len(all[0]), func(i int) { out[i].Hash = sha256.Sum256(out[i].Data) })
	return out, nil
}

// maxTries bounds the reconstructions spent looking for shards that pass their hash but
// do not fit with the others.
const maxTries = 64

// decode picks the good shards and rebuilds the data shards (every shard if full), indexed
// by Index. It returns the segment size.
func (c *Code) decode(shards []Shard, full bool) ([][]byte, int64, error) {
	n := c.N()
	// Shards that describe themselves as part of this code, with a matching hash.
	ok := make([]bool, len(shards))
	work := 0
	if len(shards) > 0 {
		work = len(shards[0].Data)
	}
	parallel(len(shards), work, func(i int) {
		s := &shards[i]
		ok[i] = s.K == c.k && s.M == c.m && s.Index >= 0 && s.Index < n && s.SegmentSize >= 0 &&
			len(s.Data) == shardSize(s.SegmentSize, c.k) && s.Verify()
	})
	// The segment size most of them agree on (ties: the first seen).
	votes := make(map[int64]int)
	var size int64
	best := 0
	for i, s := range shards {
		if !ok[i] {
			continue
		}
		votes[s.SegmentSize]++
		if v := votes[s.SegmentSize]; v > best {
			best, size = v, s.SegmentSize
		}
	}
	// One shard per index; two different shards claiming one index are both dropped.
	at := make([][]byte, n)
	hashAt := make([][32]byte, n)
	conflict := make([]bool, n)
	for i, s := range shards {
		if !ok[i] || s.SegmentSize != size || conflict[s.Index] {
			continue
		}
		switch {
		case at[s.Index] == nil:
			at[s.Index], hashAt[s.Index] = s.Data, s.Hash
		case hashAt[s.Index] != s.Hash:
			at[s.Index], conflict[s.Index] = nil, true
		}
	}
	var idx []int // indexes of the candidates, ascending: data shards first
	for i, d := range at {
		if d != nil {
			idx = append(idx, i)
		}
	}
	if len(idx) < c.k {
		return nil, 0, fmt.Errorf("%w: %d good of %d needed (%d given)", ErrTooFewShards, len(idx), c.k, len(shards))
	}
	ss := shardSize(size, c.k)
	if len(idx) == c.k || c.m == 0 {
		// Nothing to cross-check with: the hashes are all we have.
		if err := c.rebuild(at, ss, full); err != nil {
			return nil, 0, err
		}
		return at, size, nil
	}
	// More than k: rebuild from k of them and check the rest against the result. A shard
	// with a right hash but a wrong index (or a forged hash) shows up as a mismatch; then
	// look for the fewest shards whose exclusion leaves a consistent set.
	tries := 0
	for drop := 0; len(idx)-drop > c.k; drop++ {
		var found [][]byte
		combinations(len(idx), drop, func(excl []int) bool {
			if tries++; tries > maxTries {
				return false
			}
			use := make([]int, 0, len(idx)-drop)
			for i, j := 0, 0; i < len(idx); i++ {
				if j < len(excl) && excl[j] == i {
					j++
					continue
				}
				use = append(use, idx[i])
			}
			try := make([][]byte, n)
			for _, i := range use[:c.k] {
				try[i] = at[i]
			}
			if c.rebuild(try, ss, true) != nil {
				return true
			}
			for _, i := range use[c.k:] {
				if !bytes.Equal(try[i], at[i]) {
					return true
				}
			}
			found = try
			return false
		})
		if found != nil {
			return found, size, nil
		}
		if tries > maxTries {
			break
		}
	}
	return nil, 0, fmt.Errorf("%w: %d shards pass their hashes but do not fit together, "+
		"and no %d of them can be trusted (%d given)", ErrTooFewShards, len(idx), c.k, len(shards))
}

// rebuild fills the missing (nil) shards of at: the data shards, or all if full. The
// rebuilt shards share one new allocation.
func (c *Code) rebuild(at [][]byte, ss int, full bool) error {
	missing := 0
	for i, d := range at {
		if d == nil && (full || i < c.k) {
			missing++
		}
	}
	if missing == 0 {
		return nil
	}
	buf := make([]byte, missing*ss)
	for i, d := range at {
		if d == nil && (full || i < c.k) {
			at[i], buf = buf[:0:ss], buf[ss:] // empty with capacity: reedsolomon fills it in place
		}
	}
	var err error
	if full {
		err = c.enc.Reconstruct(at)
	} else {
		err = c.enc.ReconstructData(at)
	}
	if err != nil {
		return fmt.Errorf("erasure: reconstruct with %v: %w", c, err)
	}
	return nil
}

// combinations calls f with every ascending choice of r of 0..n-1, until f returns false.
func combinations(n, r int, f func([]int) bool) {
	c := make([]int, r)
	for i := range c {
		c[i] = i
	}
	for {
		if !f(c) {
			return
		}
		i := r - 1
		for i >= 0 && c[i] == n-r+i {
			i--
		}
		if i < 0 {
			return
		}
		c[i]++
		for j := i + 1; j < r; j++ {
			c[j] = c[j-1] + 1
		}
	}
}

// parallel runs f(0..n-1) on up to GOMAXPROCS goroutines when the work (n items of size
// bytes) is worth it, else in the caller's goroutine.
func parallel(n, size int, f func(int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers < 2 || n*size < 1<<20 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}
