package agent_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// BenchmarkProcess10kHello processes 10,000 small HELLO files from two peers, as
// process_message does: open and verify each, record its Message-Id and the reply in one
// transaction, seal the replies into outgoing/. It reports files/s. The peers are NAT'd,
// so alice's daemon does not push the replies meanwhile: process_message only queues.
//
// On ext4 the first round is faster than the next ones: ext4 will not reuse an inode
// deleted in the last minutes, and its allocator scans past each such inode, so creating
// files right after 20,000 were deleted costs far more kernel time (the rounds run at
// one speed on tmpfs). Run with -benchtime 1x for a fresh-disk figure, 2x or more for
// the steady state of a busy node.
func BenchmarkProcess10kHello(b *testing.B) {
	const files = 10_000
	env := testenv.New(b, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob", NAT: true}, {Name: "carol", NAT: true}}})
	alice := env.Node("alice")
	to := pgpmsgtest.Identity(b, "alice").Public()
	src := b.TempDir()
	for i := range files {
		from := pgpmsgtest.Identity(b, []string{"bob", "carol"}[i%2])
		var h pgpmsg.Header
		h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
		h.Set(pgpmsg.FieldType, "HELLO")
		h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
		h.Set(pgpmsg.FieldDate, time.Now().UTC().Format(time.RFC3339Nano))
		var buf bytes.Buffer
		if err := pgpmsg.Seal(&buf, h, nil, from, to); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("20261123T000000.%09dZ-hello.pgp", i)), buf.Bytes(), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(src)
	b.ResetTimer()
	var processed int
	for b.Loop() {
		b.StopTimer()
		// Fresh Message-Ids are needed each round: forget the ones processed.
		for _, e := range entries {
			raw, _ := os.ReadFile(filepath.Join(src, e.Name()))
			if _, err := alice.Spool.Put(queue.Incoming, e.Name(), bytes.NewReader(raw), 0); err != nil {
				b.Fatal(err)
			}
		}
		for _, peer := range []string{"bob", "carol"} {
			os.RemoveAll(filepath.Join(alice.Dir, "outgoing", peer))
		}
		alice.ForgetSeen()
		syscall.Sync() // the set-up's writes are not the processing's to wait for
		b.StartTimer()
		res, err := alice.ProcessIncoming(ctx)
		if err != nil || res.Processed != files {
			b.Fatalf("processed %+v: %v", res, err)
		}
		processed += res.Processed
	}
	b.ReportMetric(float64(processed)/b.Elapsed().Seconds(), "files/s")
}
