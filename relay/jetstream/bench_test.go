package jetstream_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/relay"
	"github.com/dibs-backup/dibs/relay/storetest"
)

// BenchmarkRelayStore: bob deposits files through a relay_server front (HTTP on loopback,
// sessions, signed requests, the recipients filter), then alice collects them all (GET,
// then DELETE once her sink has them), with the directory store and with JetStream (on
// DIBS_NATS_URLS, else on a 3-node cluster in this process; deposit through one relay
// instance, collect through another). It reports deposits/s, collections/s and the MB/s
// of each phase.
func BenchmarkRelayStore(b *testing.B) {
	for _, backend := range []string{"dir", "jetstream"} {
		for _, bc := range []struct{ files, size int }{{200, 16 << 10}, {50, 1 << 20}} {
			b.Run(fmt.Sprintf("%s/%dx%dKiB", backend, bc.files, bc.size>>10), func(b *testing.B) {
				allow := writeAllow(b)
				var in, out string
				if backend == "dir" {
					s, err := relay.OpenDirStore(filepath.Join(b.TempDir(), "store"), relay.DirOptions{AllowFile: allow})
					if err != nil {
						b.Fatal(err)
					}
					in = relayFront(b, s)
					out = in
				} else {
					urls := benchURLs(b)
					prefix := fmt.Sprintf("dibs-bench-%d", time.Now().UnixNano())
					in = relayFront(b, open(b, rotate(urls, 0), prefix, storetest.Options{AllowFile: allow}))
					out = relayFront(b, open(b, rotate(urls, 1), prefix, storetest.Options{AllowFile: allow}))
				}
				data := sealed(b, bc.size)
				bob, alice := client(b, "bob"), client(b, "alice")
				ctx := context.Background()
				var dep, col time.Duration
				b.ResetTimer()
				for i := range b.N {
					start := time.Now()
					for j := range bc.files {
						name := fmt.Sprintf("m-%d-%04d.pgp", i, j)
						if err := bob.Send(ctx, endpoint(b, in), message(name, data)); err != nil {
							b.Fatal(err)
						}
					}
					dep += time.Since(start)
					start = time.Now()
					c := &collector{files: map[string][][]byte{}}
					if n, err := alice.Poll(ctx, endpoint(b, out), c.sink); n != bc.files || err != nil {
						b.Fatalf("Poll = %d, %v", n, err)
					}
					col += time.Since(start)
				}
				files := float64(b.N * bc.files)
				mb := files * float64(len(data)) / 1e6
				b.ReportMetric(files/dep.Seconds(), "deposits/s")
				b.ReportMetric(mb/dep.Seconds(), "depositMB/s")
				b.ReportMetric(files/col.Seconds(), "collections/s")
				b.ReportMetric(mb/col.Seconds(), "collectMB/s")
			})
		}
	}
}

var benchCluster []string

// benchURLs returns DIBS_NATS_URLS, or the URLs of a cluster started for the benchmarks.
func benchURLs(b *testing.B) []string {
	if env := endpointsFromEnv(); env != nil {
		return env
	}
	if benchCluster == nil {
		ct := &cleanupT{TB: b}
		c := startCluster(ct)
		benchCluster = c.urls
		prev := sharedStop
		sharedStop = func() {
			ct.run()
			if prev != nil {
				prev()
			}
		}
	}
	return benchCluster
}
