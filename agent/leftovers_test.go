package agent_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// A command killed after committing replies but before sealing them leaves them in the
// outbox; every command that moves messages seals them first, even with nothing else to
// do (59 of 101 ACKs once stayed there: process_message returned early on an empty
// incoming/, and send_message and poll_passives never flushed).
func TestOutbox_FlushedByEveryCommandThatMovesMessages(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
	alice := env.Node("alice")
	ctx := context.Background()
	for name, run := range map[string]func() error{
		"process_message": func() error { _, err := alice.ProcessIncoming(ctx); return err },
		"send_message":    func() error { _, err := alice.SendOutgoing(ctx, ""); return err },
		"poll_passives":   func() error { _, err := alice.PollPassives(ctx); return err },
		"export_messages": func() error { _, err := alice.ExportMessages(t.TempDir(), "", false); return err },
	} {
		if err := alice.QueueUnsealed("bob"); err != nil {
			t.Fatal(err)
		}
		if err := run(); err != nil {
			t.Logf("%s: %v", name, err) // a transport may fail here; the flush is what counts
		}
		if k := alice.OutboxLen(); k != 0 {
			t.Errorf("%s left %d messages in the outbox", name, k)
		}
	}
}

// cleanup removes what a killed atomic write leaves beside its target, outside tmp/:
// once a 1 MB .tmp-* under storage/<peer>/ stayed for good.
func TestCleanup_RemovesStaleTempFilesOutsideTmp(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
	alice := env.Node("alice")
	dir := filepath.Join(alice.Dir, "storage", "bob", "ab", "cd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale, fresh := filepath.Join(dir, ".tmp-1234"), filepath.Join(dir, ".tmp-5678")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	res, err := alice.Cleanup()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale temp file is still there (%v); cleanup said %+v", err, res)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a write in progress was removed: %v", err)
	}
	if res.Temp < 1 {
		t.Errorf("cleanup counted %d temporary files", res.Temp)
	}
}

// A store killed between recording an object and releasing its pieces leaves recorded
// pieces in its stage; one killed before the commit leaves unrecorded ones. The next
// sweep releases the first into outgoing/ and removes the others.
func TestSweepStaged_ReleasesRecordedPiecesOnly(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
	alice := env.Node("alice")
	env.Cut("alice") // nothing leaves outgoing/ while the test looks at it
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte("some content"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Store(context.Background(), src, ""); err != nil {
		t.Fatal(err)
	}
	var id, peer string
	for id, peer = range alice.SentPieces() {
		break
	}
	if id == "" {
		t.Fatal("no piece sent")
	}
	box := queue.Outgoing(peer)
	st, err := alice.Spool.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	recorded, unrecorded := alice.StoreFileName(peer, id), alice.StoreFileName(peer, pgpmsg.NewMessageID())
	for _, name := range []string{recorded, unrecorded} {
		if _, err := st.PutWith(box, name, func(w io.Writer) error { _, err := w.Write([]byte("sealed")); return err }); err != nil {
			t.Fatal(err)
		}
	}
	st.Close() // the files stay, unlocked: what a killed run leaves
	before, _ := alice.Spool.List(box)
	if k, err := alice.SweepStaged(); err != nil || k != 2 {
		t.Fatalf("SweepStaged = %d, %v; want 2 files settled", k, err)
	}
	after, _ := alice.Spool.List(box)
	have := map[string]bool{}
	for _, e := range after {
		have[e.Name] = true
	}
	if !have[recorded] || have[unrecorded] || len(after) != len(before)+1 {
		t.Errorf("outgoing/%s after the sweep: %v (recorded piece there: %v, unrecorded: %v)", peer, after, have[recorded], have[unrecorded])
	}
	if des, _ := os.ReadDir(filepath.Join(alice.Dir, "staged")); len(des) != 0 {
		t.Errorf("staged/ still holds %d entries", len(des))
	}
}
