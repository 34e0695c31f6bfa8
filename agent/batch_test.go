package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/testenv"
)

// Every message is handled twice: once in a transaction rolled back after it (what a
// batch does when a later message of it fails: it runs again without that one), then
// for real. And every file is delivered twice, so the batches also hold replays that
// fail. Storing, probing, recovering, repair, reconciliation, recover_all, unstore and
// clear must end as they do without; a handler that deletes a file before its commit
// leaves the rerun without it (issue 17 item 1: a recovery "failed … no such file" or
// waiting forever).
func TestProcess_EveryHandlerRunTwiceInABatch(t *testing.T) {
	env := sixNodes(t, map[string]string{"kbPerFile": "100"})
	twice := func(nodes ...*testenv.Node) {
		for _, n := range nodes {
			n.RehearseBatches()
			n.Faults.Always(testenv.Duplicate)
		}
	}
	twice(env.Nodes...)
	alice, bob := env.Node("alice"), env.Node("bob")
	tree := makeTree(t, 20, 300_000)
	single := filepath.Join(t.TempDir(), "f")
	data := bytes.Repeat([]byte("0123456789abcdef"), 350_000/16)
	if err := os.WriteFile(single, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for item, as := range map[string]string{tree: "/t", single: "/f"} { // STORE, ACK
		if _, err := alice.Store(ctx, item, as); err != nil {
			t.Fatal(err)
		}
	}
	env.Settle(ctx, 30)
	onlyReplays(t, env)
	for _, r := range fileRows(t, alice.Node) {
		if r.Status != agent.StatusStored {
			t.Fatalf("%s v%d: %s after store", r.Name, r.Version, r.Status)
		}
	}

	if _, err := alice.Probe("/t/bin/random.dat"); err != nil { // PROBE, PROBE_RESPONSE
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	if db, _ := alice.Database("probe"); probeCount(db, "good") == 0 || probeCount(db, "failed") != 0 {
		t.Fatalf("probes: %+v", db["probe"])
	}

	if row := recoverNow(t, env, alice, "/t", 0); row.State != agent.RecoveryDone { // RECOVER, RECOVER_RESPONSE
		t.Fatalf("recover /t: %+v", row)
	}
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))

	// RECOVER_ALL, FINISHED_RECOVER_ALL, into a rebuilt directory.
	var kit bytes.Buffer
	if err := alice.ExportRecoveryKit(&kit); err != nil {
		t.Fatal(err)
	}
	alice = env.Rebuild("alice", &kit)
	twice(alice)
	if err := alice.RecoverAll(); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 30)
	if row := recoveryRow(t, alice.Node, "*all*"); row.State != agent.RecoveryDone {
		t.Fatalf("recover_all: %+v", row)
	}
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))
	if got, _ := os.ReadFile(filepath.Join(alice.Dir, "recovery", "f")); !bytes.Equal(got, data) {
		t.Fatalf("recover_all brought back %d bytes of /f, want %d", len(got), len(data))
	}

	// FORGET_YOU, then a repair that fetches the object back and places new pieces.
	os.WriteFile(single, []byte("changed since"), 0o644)
	if k, err := bob.Forget("alice"); err != nil || k == 0 {
		t.Fatalf("bob forgets alice: %d pieces, %v", k, err)
	}
	env.Settle(ctx, 10)
	if res, err := alice.Repair(); err != nil || res.Fetching == 0 {
		t.Fatalf("repair: %+v, %v; want objects fetched back", res, err)
	}
	env.Settle(ctx, 30)
	onlyReplays(t, env)
	for _, r := range fileRows(t, alice.Node) {
		if r.Status != agent.StatusStored {
			t.Fatalf("%s: %s after repair", r.Name, r.Status)
		}
	}
	sameHoldings(t, env, alice)                  // no piece sent by a run rolled back
	if _, err := alice.SyncPeers(); err != nil { // STORAGE_LIST
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	sameHoldings(t, env, alice)

	if _, err := alice.Unstore("/t"); err != nil { // UNSTORE, ACK
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	sameHoldings(t, env, alice)
	if _, err := alice.Clear(); err != nil { // CLEAR_DB
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	onlyReplays(t, env)
	for _, peer := range []string{"bob", "carol", "dave", "erin", "mallory"} {
		if n := len(piecesOn(t, env.Node(peer), "alice")); n != 0 {
			t.Errorf("%s still keeps %d piece files after CLEAR_DB", peer, n)
		}
	}
}

// onlyReplays fails the test if a node quarantined anything but a duplicate.
func onlyReplays(t *testing.T, env *testenv.Env) {
	t.Helper()
	for _, n := range env.Nodes {
		for name, reason := range n.Quarantined() {
			if !strings.HasPrefix(reason, "replay") {
				t.Fatalf("%s quarantined %s: %s", n.Spec.Name, name, reason)
			}
		}
	}
}

// sameHoldings fails the test unless each peer keeps, in its books and on disk, the
// pieces the owner counts there.
func sameHoldings(t *testing.T, env *testenv.Env, owner *testenv.Node) {
	t.Helper()
	stats, _ := owner.Database("stats")
	counted := map[string]int64{}
	for _, r := range stats["stats"].([]agent.StatsRow) {
		counted[r.Peer] = r.BytesThere
	}
	for _, peer := range env.Nodes {
		if peer == owner {
			continue
		}
		db, _ := peer.Database("storage")
		var holds int64
		pieces := 0
		for _, s := range db["storage"].([]agent.StorageRow) {
			if s.Peer == owner.Spec.Name {
				holds, pieces = s.Bytes, s.Pieces
			}
		}
		if holds != counted[peer.Spec.Name] {
			t.Errorf("%s holds %d bytes for %s, who counts %d", peer.Spec.Name, holds, owner.Spec.Name, counted[peer.Spec.Name])
		}
		if files := len(piecesOn(t, peer, owner.Spec.Name)); files != pieces {
			t.Errorf("%s keeps %d piece files for %s, its books %d", peer.Spec.Name, files, owner.Spec.Name, pieces)
		}
	}
}
