package agent_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// packedTree writes files of 100 kB (small enough to be packed) under root, in dirs
// "keep" and "drop", and returns root.
func packedTree(t *testing.T, keep, drop int) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "tree")
	rng := rand.New(rand.NewPCG(3, 4))
	for dir, count := range map[string]int{"keep": keep, "drop": drop} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range count {
			b := make([]byte, 100_000)
			for j := range b {
				b[j] = byte(rng.UintN(256))
			}
			if err := os.WriteFile(filepath.Join(root, dir, fmt.Sprintf("f%02d", i)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// loseDiskAndRecoverAll rebuilds alice from her recovery kit alone and runs recover_all.
func loseDiskAndRecoverAll(t *testing.T, env *testenv.Env) *testenv.Node {
	t.Helper()
	var kit bytes.Buffer
	if err := env.Node("alice").ExportRecoveryKit(&kit); err != nil {
		t.Fatal(err)
	}
	alice := env.Rebuild("alice", &kit)
	if err := alice.RecoverAll(); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryDone {
		db, _ := alice.Database("recovery")
		t.Fatalf("recover_all: %q %+v", st, db)
	}
	return alice
}

func sameFile(t *testing.T, want, got string) {
	t.Helper()
	w, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	g, err := os.ReadFile(got)
	if err != nil {
		t.Errorf("%s: %v", got, err)
		return
	}
	if !bytes.Equal(w, g) {
		t.Errorf("%s: recovered %d bytes differ from the %d stored", got, len(g), len(w))
	}
}

func notRecovered(t *testing.T, alice *testenv.Node, sname string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(alice.Dir, "recovery", sname)); err == nil {
		t.Errorf("%s was unstored, and recover_all brought it back", sname)
	}
	for _, r := range fileRows(t, alice.Node) {
		if r.Name == sname {
			t.Errorf("%s was unstored, and the rebuilt books list it again", sname)
		}
	}
}

// peersHold sums what the peers count as held for alice.
func peersHold(t *testing.T, env *testenv.Env) int64 {
	t.Helper()
	var sum int64
	for _, name := range []string{"bob", "carol", "dave"} {
		st, err := env.Node(name).PeerStates()
		if err != nil {
			t.Fatal(err)
		}
		sum += st["alice"].LocalUsed
	}
	return sum
}

// The unstore of one small file of a pack is kept with the peers: after a disk loss,
// recover_all does not bring the file back, and the rest of the pack comes back whole.
func TestUnstore_PackedFileStaysGoneAfterRecoverAll(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	tree := packedTree(t, 5, 1)
	res, err := alice.Store(ctx, tree, "/t")
	if err != nil {
		t.Fatal(err)
	}
	if res.Objects != 1 {
		t.Fatalf("%d objects for 6 small files, want one pack", res.Objects)
	}
	env.Settle(ctx, 20)
	if _, err := alice.Unstore("/t/drop/f00"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)

	alice = loseDiskAndRecoverAll(t, env)
	notRecovered(t, alice, "/t/drop/f00")
	for i := range 5 {
		rel := fmt.Sprintf("keep/f%02d", i)
		sameFile(t, filepath.Join(tree, rel), filepath.Join(alice.Dir, "recovery", "t", rel))
	}
	// The tombstone is in the rebuilt books: a reconciliation keeps it at the peers, and a
	// second disk loss still honours it.
	if _, err := alice.SyncPeers(); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	alice = loseDiskAndRecoverAll(t, env)
	notRecovered(t, alice, "/t/drop/f00")
	sameFile(t, filepath.Join(tree, "keep/f00"), filepath.Join(alice.Dir, "recovery", "t", "keep/f00"))
}

// Unstoring most of a pack rewrites it: the live files go into a new pack, the old one's
// pieces leave the peers, the peers' use drops, and the live files recover whole.
// oldPackGone checks that no peer still holds a piece it held before (before: the
// peers' pieces for alice then) and that the peers hold less than half of used bytes
// for alice: what is left after 8 of a pack's 10 files were unstored and it was rewritten.
func oldPackGone(t *testing.T, env *testenv.Env, before map[string][]string, used int64) {
	t.Helper()
	for name, old := range before {
		now := map[string]bool{}
		for _, p := range piecesOn(t, env.Node(name), "alice") {
			now[p] = true
		}
		for _, p := range old {
			if now[p] {
				t.Errorf("%s still holds %s of the old pack", name, filepath.Base(p))
			}
		}
	}
	if after := peersHold(t, env); after > used/2 {
		t.Errorf("the peers hold %d bytes for alice, %d before 8 of 10 files were unstored", after, used)
	}
}

func TestUnstore_MostOfPackRewritesIt(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	tree := packedTree(t, 2, 8)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	before := map[string][]string{}
	for _, name := range []string{"bob", "carol", "dave"} {
		before[name] = piecesOn(t, env.Node(name), "alice")
		if len(before[name]) == 0 {
			t.Fatalf("%s holds nothing for alice", name)
		}
	}
	used := peersHold(t, env)
	if _, err := alice.Unstore("/t/drop"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	oldPackGone(t, env, before, used)
	st, err := alice.PeerStates()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st["bob"].RemoteUsed+st["carol"].RemoteUsed+st["dave"].RemoteUsed, peersHold(t, env); got != want {
		t.Errorf("alice counts %d bytes at her peers, they count %d", got, want)
	}

	alice = loseDiskAndRecoverAll(t, env)
	for i := range 8 {
		notRecovered(t, alice, fmt.Sprintf("/t/drop/f%02d", i))
	}
	notRecovered(t, alice, "/t/drop")
	for i := range 2 {
		rel := fmt.Sprintf("keep/f%02d", i)
		sameFile(t, filepath.Join(tree, rel), filepath.Join(alice.Dir, "recovery", "t", rel))
	}
}

// A tombstone goes once the pack it names is gone: unstoring the rest of the pack
// leaves nothing at the peers.
func TestUnstore_TombstoneGoesWithItsPack(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	tree := packedTree(t, 5, 1)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	used := peersHold(t, env)
	if _, err := alice.Unstore("/t/drop/f00"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if now := peersHold(t, env); now <= used {
		t.Fatalf("the peers hold %d bytes for alice after an unstore of one packed file, %d before: no tombstone", now, used)
	}
	if _, err := alice.Unstore("/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	for _, name := range []string{"bob", "carol", "dave"} {
		if ps := piecesOn(t, env.Node(name), "alice"); len(ps) != 0 {
			t.Errorf("%s still holds %d pieces for alice", name, len(ps))
		}
	}
	if n := peersHold(t, env); n != 0 {
		t.Errorf("the peers count %d bytes for alice", n)
	}
}

// A tombstone's pieces are repaired like any others: a peer that holds one forgets us,
// and repair places it elsewhere.
func TestUnstore_TombstoneIsRepaired(t *testing.T) {
	env := sixNodes(t, nil)
	alice := env.Node("alice")
	tree := packedTree(t, 5, 1)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if _, err := alice.Unstore("/t/drop/f00"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	holder := ""
	for _, name := range []string{"bob", "carol", "dave", "erin", "mallory"} {
		for _, p := range piecesOn(t, env.Node(name), "alice") {
			if fi := mustLstat(t, p); fi.Size() < 10_000 { // the tombstone's; the pack's are 250 kB
				holder = name
			}
		}
	}
	if holder == "" {
		t.Fatal("no peer holds a tombstone")
	}
	if _, err := env.Node(holder).Forget("alice"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	res, err := alice.Repair()
	if err != nil || res.Rebuilt < 1 || res.Short != 0 {
		t.Fatalf("repair: %+v, %v", res, err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	if res, err := alice.Repair(); err != nil || res.Rebuilt != 0 || res.Fetching != 0 {
		t.Fatalf("a second repair: %+v, %v; want nothing left to do", res, err)
	}
	alice = loseDiskAndRecoverAll(t, env)
	notRecovered(t, alice, "/t/drop/f00")
	sameFile(t, filepath.Join(tree, "keep/f00"), filepath.Join(alice.Dir, "recovery", "t", "keep/f00"))
}

// A pack whose live files changed locally cannot be rewritten from them: a tombstone
// carries the drops at once, the pack is fetched back, and the next cleanup rewrites it
// from what came back.
func TestUnstore_PackWithChangedFilesIsFetchedBackAndRewritten(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	tree := packedTree(t, 2, 8)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	stored, err := os.ReadFile(filepath.Join(tree, "keep", "f00"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "keep", "f00"), []byte("changed, not stored again"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := map[string][]string{}
	for _, name := range []string{"bob", "carol", "dave"} {
		before[name] = piecesOn(t, env.Node(name), "alice")
	}
	used := peersHold(t, env)
	if _, err := alice.Unstore("/t/drop"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	if now := peersHold(t, env); now <= used {
		t.Fatalf("the peers hold %d bytes for alice, %d before: the pack went, or no tombstone came", now, used)
	}
	db, err := alice.Database("recovery")
	if err != nil {
		t.Fatal(err)
	}
	fetched := 0
	for _, r := range db["recovery"].([]agent.RecoveryRow) {
		if strings.HasPrefix(r.Name, "*prune* ") && r.State == agent.RecoveryDone {
			fetched++
		}
	}
	if fetched != 1 {
		t.Fatalf("%d packs fetched back, want 1: %+v", fetched, db["recovery"])
	}
	if _, err := alice.Cleanup(); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	oldPackGone(t, env, before, used)
	if des, _ := os.ReadDir(filepath.Join(alice.Dir, "recovery.tmp")); len(des) != 0 {
		t.Errorf("the pack fetched back is still staged: %v", des)
	}
	alice = loseDiskAndRecoverAll(t, env)
	for i := range 8 {
		notRecovered(t, alice, fmt.Sprintf("/t/drop/f%02d", i))
	}
	if got, _ := os.ReadFile(filepath.Join(alice.Dir, "recovery", "t", "keep", "f00")); !bytes.Equal(got, stored) {
		t.Errorf("keep/f00: recovered %d bytes, want the %d stored", len(got), len(stored))
	}
	sameFile(t, filepath.Join(tree, "keep/f01"), filepath.Join(alice.Dir, "recovery", "t", "keep/f01"))
}

// A version beyond maxVersions dropped from a pack stays dropped after recover_all.
func TestStore_VersionBeyondMaxVersionsStaysGoneAfterRecoverAll(t *testing.T) {
	env := fourNodes(t, map[string]string{"maxVersions": "1"})
	alice := env.Node("alice")
	tree := packedTree(t, 5, 1)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	changed := filepath.Join(tree, "drop", "f00")
	if err := os.WriteFile(changed, []byte("the second version"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := alice.Store(ctx, tree, "/t"); err != nil || res.Stored != 1 {
		t.Fatalf("second store: %+v, %v", res, err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	alice = loseDiskAndRecoverAll(t, env)
	var versions []int
	for _, r := range fileRows(t, alice.Node) {
		if r.Name == "/t/drop/f00" {
			versions = append(versions, r.Version)
		}
	}
	if len(versions) != 1 || versions[0] != 2 {
		t.Errorf("the rebuilt books hold versions %v of /t/drop/f00, want [2]", versions)
	}
	sameFile(t, changed, filepath.Join(alice.Dir, "recovery", "t", "drop", "f00"))
	sameFile(t, filepath.Join(tree, "keep/f00"), filepath.Join(alice.Dir, "recovery", "t", "keep/f00"))
}

// A name unstored from a pack and stored again gets a version number the tombstone does
// not name: recover_all brings back the new file, not nothing and not the old one.
func TestUnstore_StoredAgainAfterUnstoreComesBack(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	tree := packedTree(t, 5, 1)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if _, err := alice.Unstore("/t/drop/f00"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	again := filepath.Join(tree, "drop", "f00")
	if err := os.WriteFile(again, []byte("stored again after its unstore"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := alice.Store(ctx, tree, "/t"); err != nil || res.Stored != 1 {
		t.Fatalf("store again: %+v, %v", res, err)
	}
	env.Settle(ctx, 20)
	for _, r := range fileRows(t, alice.Node) {
		if r.Name == "/t/drop/f00" && r.Version != 2 {
			t.Errorf("stored again as version %d; the tombstone names version 1", r.Version)
		}
	}
	alice = loseDiskAndRecoverAll(t, env)
	sameFile(t, again, filepath.Join(alice.Dir, "recovery", "t", "drop", "f00"))
}

// smallPieces counts the pieces below 10 kB the peers hold for alice: tombstones' (a
// packed tree's pieces here are 100 kB and more).
func smallPieces(t *testing.T, env *testenv.Env) int {
	t.Helper()
	c := 0
	for _, name := range []string{"bob", "carol", "dave"} {
		for _, p := range piecesOn(t, env.Node(name), "alice") {
			if mustLstat(t, p).Size() < 10_000 {
				c++
			}
		}
	}
	return c
}

// The disk is lost after a pack was deleted from the peers but before its tombstone's
// UNSTORE went out: recover_all brings back a tombstone whose pack never comes, and the
// next cleanup unstores it.
func TestRecoverAll_TombstoneOfAGonePackIsUnstored(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	tree := packedTree(t, 3, 3)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if _, err := alice.Unstore("/t/drop/f00"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if smallPieces(t, env) == 0 {
		t.Fatal("no tombstone at the peers")
	}
	if _, err := alice.Unstore("/t/drop"); err != nil { // half the pack: rewritten
		t.Fatal(err)
	}
	// The peers get the new pack and the old one's UNSTOREs and answer; alice processes
	// the answers (the old pack goes, its tombstone is to be unstored) and sends nothing.
	if _, err := alice.SendOutgoing(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bob", "carol", "dave"} {
		env.Node(name).Cron(ctx)
	}
	if _, err := alice.ProcessIncoming(ctx); err != nil {
		t.Fatal(err)
	}
	alice = loseDiskAndRecoverAll(t, env)
	if smallPieces(t, env) == 0 {
		t.Fatal("the tombstone is not at the peers: the test missed its moment")
	}
	for i := range 3 {
		notRecovered(t, alice, fmt.Sprintf("/t/drop/f%02d", i))
		rel := fmt.Sprintf("keep/f%02d", i)
		sameFile(t, filepath.Join(tree, rel), filepath.Join(alice.Dir, "recovery", "t", rel))
	}
	if _, err := alice.Cleanup(); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	if c := smallPieces(t, env); c != 0 {
		t.Errorf("the peers still hold %d pieces of a tombstone whose pack is gone", c)
	}
}

// The disk is lost after a pack was rewritten but before the old pack's UNSTOREs went
// out: recover_all finds both packs, and whichever comes first, the other is used by no
// version. Cleanups (and the fetch they start) leave one pack of the live files at the
// peers, and no tombstone.
func TestRecoverAll_BothPacksOfARewriteEndInOne(t *testing.T) {
	env := fourNodes(t, map[string]string{"packPrunePercent": "60"})
	alice := env.Node("alice")
	tree := packedTree(t, 3, 3)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	used := peersHold(t, env)
	if _, err := alice.Unstore("/t/drop"); err != nil { // half the pack: a tombstone
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if smallPieces(t, env) == 0 {
		t.Fatal("no tombstone at the peers")
	}
	alice.Faults.SetRule(func(_ string, m queue.Message) testenv.Fault {
		if m.Size < 20_000 { // the UNSTOREs; the new pack's pieces pass
			return testenv.Drop
		}
		return testenv.Pass
	})
	if err := alice.SetOption("packPrunePercent", "50"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Cleanup(); err != nil { // rewrites the pack
		t.Fatal(err)
	}
	settleAllowingErrors(env, 20)
	alice = loseDiskAndRecoverAll(t, env)
	check := func() {
		t.Helper()
		for i := range 3 {
			notRecovered(t, alice, fmt.Sprintf("/t/drop/f%02d", i))
			rel := fmt.Sprintf("keep/f%02d", i)
			sameFile(t, filepath.Join(tree, rel), filepath.Join(alice.Dir, "recovery", "t", rel))
		}
	}
	check()
	if err := alice.SetOption("packPrunePercent", "50"); err != nil { // the test's setup set 60 again
		t.Fatal(err)
	}
	for range 2 { // a pack fetched back is rewritten by the next one
		if _, err := alice.Cleanup(); err != nil {
			t.Fatal(err)
		}
		env.Settle(ctx, 20)
	}
	checkQuiet(t, env)
	for _, name := range []string{"bob", "carol", "dave"} {
		if ps := piecesOn(t, env.Node(name), "alice"); len(ps) != 1 {
			t.Errorf("%s holds %d pieces for alice, want the one of the live files' pack", name, len(ps))
		}
	}
	if now := peersHold(t, env); now > used*6/10 {
		t.Errorf("the peers hold %d bytes for alice, %d before half of it was unstored", now, used)
	}
	alice = loseDiskAndRecoverAll(t, env)
	check()
}
