package erasure

import (
	"fmt"
	"io"
	"testing"
)

var benchCodes = []struct{ k, m int }{{10, 4}, {5, 2}, {3, 2}}

const benchSegment = 64 << 20

// BenchmarkSplit is Split: copy, Reed-Solomon encode, and SHA-256 of every shard.
func BenchmarkSplit(b *testing.B) {
	data := segment(1, benchSegment)
	for _, bc := range benchCodes {
		b.Run(fmt.Sprintf("k%d_m%d", bc.k, bc.m), func(b *testing.B) {
			c := mustNew(b, bc.k, bc.m)
			b.SetBytes(benchSegment)
			for b.Loop() {
				if _, err := c.Split(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJoinLost2 is Join with the first two data shards lost: hash checks, rebuild,
// cross-check against the spare shards, write.
func BenchmarkJoinLost2(b *testing.B) {
	data := segment(1, benchSegment)
	for _, bc := range benchCodes {
		b.Run(fmt.Sprintf("k%d_m%d", bc.k, bc.m), func(b *testing.B) {
			c := mustNew(b, bc.k, bc.m)
			shards, err := c.Split(data)
			if err != nil {
				b.Fatal(err)
			}
			given := shards[2:]
			b.SetBytes(benchSegment)
			for b.Loop() {
				if err := c.Join(io.Discard, given); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
