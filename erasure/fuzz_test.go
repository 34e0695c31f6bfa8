package erasure

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzRoundTrip codes data with a small code, drops the shards set in lostMask, and
// requires a round trip whenever k shards survive, ErrTooFewShards otherwise, and never a
// panic.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("hello, world"), uint8(3), uint8(2), uint64(0b00101))
	f.Add([]byte{}, uint8(1), uint8(0), uint64(0))
	f.Add([]byte{0}, uint8(4), uint8(4), uint64(0xf0))
	f.Add(bytes.Repeat([]byte{0xff, 0, '\r', '\n'}, 1000), uint8(10), uint8(4), uint64(0b1100_0000_0011))
	f.Add(make([]byte, 37), uint8(9), uint8(0), uint64(1))
	f.Add([]byte("x"), uint8(16), uint8(8), uint64(0xffffff))
	f.Fuzz(func(t *testing.T, data []byte, kb, mb uint8, lostMask uint64) {
		k, m := 1+int(kb)%16, int(mb)%9
		c, err := New(k, m)
		if err != nil {
			t.Fatal(err)
		}
		shards, err := c.Split(data)
		if err != nil {
			t.Fatal(err)
		}
		var given []Shard
		for i, s := range shards {
			if lostMask&(1<<i) == 0 {
				given = append(given, s)
			}
		}
		var out bytes.Buffer
		err = c.Join(&out, given)
		rebuilt, rerr := c.Reconstruct(given)
		if len(given) < k {
			if !errors.Is(err, ErrTooFewShards) || !errors.Is(rerr, ErrTooFewShards) {
				t.Fatalf("k=%d m=%d, %d shards left: Join %v, Reconstruct %v; want ErrTooFewShards", k, m, len(given), err, rerr)
			}
			return
		}
		if err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("k=%d m=%d, %d shards left: Join = %v, equal %v", k, m, len(given), err, bytes.Equal(out.Bytes(), data))
		}
		if rerr != nil {
			t.Fatalf("k=%d m=%d, %d shards left: Reconstruct = %v", k, m, len(given), rerr)
		}
		for i := range rebuilt {
			if rebuilt[i].Hash != shards[i].Hash || !bytes.Equal(rebuilt[i].Data, shards[i].Data) {
				t.Fatalf("k=%d m=%d: rebuilt shard %d differs", k, m, i)
			}
		}
	})
}
