package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
)

// The same with a real full filesystem: the node on a tmpfs, filled to 1.5 MB free. It
// needs root (mount); elsewhere the test above stands in.
func TestProcess_FullDiskLeavesMessage(t *testing.T) {
	disk := t.TempDir()
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=32m"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v)", err)
	}
	t.Cleanup(func() { syscall.Unmount(disk, syscall.MNT_DETACH) })
	bob, err := agent.Init(filepath.Join(disk, "bob"), agent.InitConfig{KeyName: "bob.dibs@example.org", Identity: pgpmsgtest.Identity(t, "bob")})
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	var key bytes.Buffer
	pgpmsgtest.Key(t, "alice").WriteArmored(&key)
	q, carry, email := int64(1e9), agent.Carry, "alice@dibs.test"
	if err := bob.AddPeer("alice", agent.PeerEdit{Email: &email, Talk: &carry, Listen: &carry, LocalQuota: &q, RemoteQuota: &q, Key: &key}); err != nil {
		t.Fatal(err)
	}
	alice, bobKey := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Key(t, "bob")
	for _, name := range []string{"store-1.pgp", "store-2.pgp"} {
		if _, err := bob.Spool.Put(queue.Incoming, name, bytes.NewReader(store(t, alice, bob.ID, bobKey, 3<<20)), 0); err != nil {
			t.Fatal(err)
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(disk, &st); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, int64(st.Bavail)*int64(st.Bsize)-1536<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := bob.ProcessIncoming(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Left != 2 || res.Quarantined != 0 || !strings.Contains(res.Why, "no space left on device") {
		t.Errorf("with 1.5 MB free: %+v; want both left, for no space", res)
	}
	if es, _ := bob.Spool.List(queue.Quarantine); len(es) != 0 {
		t.Errorf("quarantined: %v", es)
	}
	os.Remove(filler)
	res, err = bob.ProcessIncoming(ctx)
	if err != nil || res.Processed != 2 {
		t.Fatalf("with room again: %+v, %v; want both processed", res, err)
	}
}
