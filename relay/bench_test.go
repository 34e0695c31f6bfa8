package relay

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dibs-backup/dibs/queue"
)

// BenchmarkRelay_DepositPoll moves files from bob to alice through a relay_server over
// loopback: bob deposits every file (durably stored at the relay), then alice polls them
// all into her own spool (durably) and the relay deletes them. Bytes/s count each file once.
func BenchmarkRelay_DepositPoll(b *testing.B) {
	for _, bc := range []struct {
		files, size int
	}{{100, 1 << 20}, {10, 16 << 20}} {
		b.Run(fmt.Sprintf("%dx%dMiB", bc.files, bc.size>>20), func(b *testing.B) {
			r := newRelay(b, DirOptions{}, "alice", "bob")
			data := sealed(b, "bob", "alice", bc.size)
			bob, alice := newClient(b, "bob"), newClient(b, "alice")
			local, err := queue.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			sink := func(name string, rd io.Reader) error {
				_, err := local.Put(queue.Incoming, name, rd, 0)
				return err
			}
			ctx := context.Background()
			ep := relayEndpoint(b, r, "alice")
			b.SetBytes(int64(bc.files * len(data)))
			b.ResetTimer()
			for i := range b.N {
				for j := range bc.files {
					name := fmt.Sprintf("m-%d-%d.pgp", i, j)
					if err := bob.Send(ctx, ep, message(name, data)); err != nil {
						b.Fatal(err)
					}
				}
				n, err := alice.Poll(ctx, ep, sink)
				if err != nil || n != bc.files {
					b.Fatalf("Poll = %d, %v", n, err)
				}
				b.StopTimer()
				des, _ := os.ReadDir(local.Dir(queue.Incoming))
				for _, de := range des {
					os.Remove(filepath.Join(local.Dir(queue.Incoming), de.Name()))
				}
				b.StartTimer()
			}
		})
	}
}
