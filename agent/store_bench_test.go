package agent_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/dibs-backup/dibs/testenv"
)

// BenchmarkStore256MiB stores one 256 MiB file of random bytes for 3 peers (RS 2+1):
// reading, hashing, coding, sealing every piece to ourselves and then for its peer, and
// committing it into the peer's outgoing box. MB/s counts input bytes.
func BenchmarkStore256MiB(b *testing.B) {
	env := testenv.New(b, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}, {Name: "dave"}},
		Options: map[string]string{"redundantPieces": "1"}})
	alice := env.Node("alice")
	p := filepath.Join(b.TempDir(), "big")
	const size = 256 << 20
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	data = nil
	b.SetBytes(size)
	i := 0
	for b.Loop() {
		i++
		if _, err := alice.Store(ctx, p, "/big"+string(rune('a'+i%26))+filepath.Base(b.TempDir())); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, peer := range []string{"bob", "carol", "dave"} {
			os.RemoveAll(filepath.Join(alice.Dir, "outgoing", peer))
		}
		b.StartTimer()
	}
}
