package erasure

import (
	"errors"
	"fmt"
	"io"
)

// SplitReader reads r segment by segment, segmentSize bytes each (the last one shorter),
// codes each segment with c and hands its n shards to emit with the segment's number,
// counting from 0. An empty r gives one empty segment, so that every stream, even an empty
// one, is stored as at least one set of shards. Reading stops at the first error of r or
// emit, which SplitReader returns.
//
// All segments go through one buffer of n*ceil(segmentSize/k) bytes, so memory stays near
// segmentSize*(1+m/k) whatever the length of r: the shards passed to emit, and their Data,
// are only valid during the call. An emit that keeps shards must copy their Data.
func SplitReader(r io.Reader, segmentSize int, c *Code, emit func(segment int, shards []Shard) error) error {
	if segmentSize < 1 {
		return fmt.Errorf("erasure: split reader: segment size %d, need at least 1", segmentSize)
	}
	buf := make([]byte, c.N()*shardSize(int64(segmentSize), c.k))
	for seg := 0; ; seg++ {
		size, err := io.ReadFull(r, buf[:segmentSize])
		switch {
		case errors.Is(err, io.EOF) && seg > 0:
			return nil // the previous segment was the last one, and full
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			err = io.EOF // a short (or lone empty) last segment
		case err != nil:
			return fmt.Errorf("erasure: read segment %d: %w", seg, err)
		}
		shards, cerr := c.SplitBuffer(buf, size)
		if cerr != nil {
			return cerr
		}
		if eerr := emit(seg, shards); eerr != nil {
			return fmt.Errorf("erasure: segment %d: %w", seg, eerr)
		}
		if err == io.EOF {
			return nil
		}
	}
}
