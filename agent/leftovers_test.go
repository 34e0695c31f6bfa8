package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

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
