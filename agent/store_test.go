package agent_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/testenv"
)

// makeTree writes a tree with the contents a backup tool gets wrong: random binary, CR
// and CRLF bytes, empty files, an empty directory, odd names, symlinks, modes, and many
// small files. It returns the tree's root.
func makeTree(t *testing.T, small int, big int) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "tree")
	rng := rand.New(rand.NewPCG(1, 2))
	write := func(rel string, data []byte, mode fs.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
	}
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	write("bin/random.dat", randBytes(big), 0o644)
	write("bin/cr.dat", bytes.Repeat([]byte("a\r\nb\rc\n\r\r\x00\xff"), 3000), 0o600)
	write("empty", nil, 0o644)
	write("exec.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	write("odd names/spaces and ünïcödé ☃.txt", []byte("odd\n"), 0o644)
	write("odd names/-dash", []byte("dash"), 0o644)
	write("odd names/new\nline", []byte("newline in name"), 0o644)
	for i := range small {
		write(fmt.Sprintf("small/%02d/f%04d.txt", i%17, i), randBytes(1+rng.IntN(3000)), 0o644)
	}
	if err := os.MkdirAll(filepath.Join(root, "emptydir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../exec.sh", filepath.Join(root, "bin", "link-to-exec")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(root, "dangling")); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	os.Chtimes(filepath.Join(root, "bin", "cr.dat"), old, old)
	return root
}

// sameTree fails the test unless got holds exactly want: entries, kinds, contents,
// modes, link targets, and file modification times.
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	type ent struct {
		kind  string
		mode  fs.FileMode
		sum   [32]byte
		link  string
		mtime time.Time
	}
	scan := func(root string) map[string]ent {
		out := map[string]ent{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			e := ent{mode: fi.Mode()}
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				e.kind = "link"
				e.link, _ = os.Readlink(p)
				e.mode = 0
			case fi.IsDir():
				e.kind = "dir"
			default:
				e.kind = "file"
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				e.sum = sha256.Sum256(b)
				e.mtime = fi.ModTime().Truncate(time.Microsecond)
			}
			out[rel] = e
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	w, g := scan(want), scan(got)
	bad := 0
	for name, we := range w {
		ge, ok := g[name]
		switch {
		case !ok:
			t.Errorf("%s: not recovered", name)
		case ge.kind != we.kind || ge.sum != we.sum || ge.link != we.link:
			t.Errorf("%s: recovered %s differs (kind %s/%s, link %q/%q)", name, ge.kind, we.kind, ge.kind, we.link, ge.link)
		case ge.mode != we.mode:
			t.Errorf("%s: mode %v, want %v", name, ge.mode, we.mode)
		case !ge.mtime.Equal(we.mtime):
			t.Errorf("%s: mtime %v, want %v", name, ge.mtime, we.mtime)
		default:
			continue
		}
		if bad++; bad > 10 {
			t.Fatal("too many differences")
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			t.Errorf("%s: recovered but never stored", name)
		}
	}
}

func fourNodes(t *testing.T, opts map[string]string) *testenv.Env {
	return testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}, {Name: "dave"}}, Options: opts})
}

func TestStore_TreeRoundTripAndPeerLoss(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "300"})
	alice := env.Node("alice")
	tree := makeTree(t, 1000, 2_500_000)
	res, err := alice.Store(ctx, tree, "/home/alice/tree")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) > 0 {
		t.Fatalf("warnings: %v", res.Warnings)
	}
	t.Logf("first store: %+v", res)
	// 1000 small files travel in a few packs, not in 1000 objects.
	if res.Objects > 10 {
		t.Errorf("%d objects for one big file and 1000 small ones", res.Objects)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	files := fileRows(t, alice.Node)
	for _, f := range files {
		if f.Status != "stored" {
			t.Fatalf("%s: status %s after settling", f.Name, f.Status)
		}
	}
	// A second store of the same tree changes nothing.
	res, err = alice.Store(ctx, tree, "/home/alice/tree")
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored != 0 || res.Objects != 0 || res.Unchanged != res.Entries {
		t.Fatalf("second store: %+v", res)
	}
	// One peer vanishes; the rest still give everything back.
	env.Cut("carol")
	if _, err := alice.RecoverFile("home/alice/tree/", 0); err != nil { // a relative --as name works the same
		t.Fatal(err)
	}
	settleAllowingErrors(env, 20)
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "home", "alice", "tree"))
	if rec := recoveryState(t, alice.Node, "/home/alice/tree"); rec != agent.RecoveryDone {
		t.Fatalf("recovery state %q", rec)
	}
}

// settleAllowingErrors runs cron rounds while some peer is unreachable (send errors are
// expected) until nothing moves.
func settleAllowingErrors(env *testenv.Env, rounds int) {
	for range rounds {
		moved := false
		for _, n := range env.Nodes {
			if n.Cron(ctx).Moved() {
				moved = true
			}
		}
		if !moved {
			return
		}
	}
}

func checkQuiet(t *testing.T, env *testenv.Env) {
	t.Helper()
	for _, n := range env.Nodes {
		if q := n.Quarantined(); len(q) > 0 {
			t.Fatalf("%s quarantined %v", n.Spec.Name, q)
		}
	}
}

func fileRows(t *testing.T, n *agent.Node) []agent.FileRow {
	t.Helper()
	db, err := n.Database("files")
	if err != nil {
		t.Fatal(err)
	}
	return db["files"].([]agent.FileRow)
}

func recoveryState(t *testing.T, n *agent.Node, name string) string {
	t.Helper()
	db, err := n.Database("recovery")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range db["recovery"].([]agent.RecoveryRow) {
		if r.Name == name {
			return r.State
		}
	}
	return ""
}

var _ = strings.Contains

func TestCodeFor(t *testing.T) {
	for _, c := range []struct{ peers, red, k, m int }{
		{1, 2, 1, 0}, {2, 2, 1, 1}, {3, 2, 1, 2}, {4, 2, 2, 2}, {5, 2, 2, 2}, {10, 2, 7, 2}, {40, 2, 16, 2}, {4, 1, 3, 1},
	} {
		k, m, err := agent.CodeFor(c.peers, c.red)
		if err != nil || k != c.k || m != c.m {
			t.Errorf("CodeFor(%d, %d) = %d+%d, %v; want %d+%d", c.peers, c.red, k, m, err, c.k, c.m)
		}
	}
	if _, _, err := agent.CodeFor(0, 2); err == nil {
		t.Error("no peers: no error")
	}
}

func TestStore_LoseWholeDirThenRecoverAll(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "200"})
	alice := env.Node("alice")
	tree := makeTree(t, 300, 900_000)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	var kit bytes.Buffer
	if err := alice.ExportRecoveryKit(&kit); err != nil {
		t.Fatal(err)
	}
	alice = env.Rebuild("alice", &kit)
	env.Cut("carol") // and a peer is gone for good
	if rows := fileRows(t, alice.Node); len(rows) != 0 {
		t.Fatalf("a new directory knows %d files", len(rows))
	}
	if err := alice.RecoverAll(); err != nil {
		t.Fatal(err)
	}
	settleAllowingErrors(env, 20)
	checkQuiet(t, env)
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryDone {
		db, _ := alice.Database("recovery")
		t.Fatalf("recover_all: %q %+v", st, db)
	}
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))
	// The books are back (carol's pieces are unknown: degraded, not lost), and probes,
	// reconciliation, repair and new stores work.
	rows := fileRows(t, alice.Node)
	if len(rows) < 300 {
		t.Fatalf("%d files in the rebuilt books", len(rows))
	}
	for _, r := range rows {
		if r.Status != agent.StatusStored && r.Status != agent.StatusDegraded {
			t.Fatalf("%s: %s after recover_all", r.Name, r.Status)
		}
	}
	env.Mend("carol")
	if _, err := alice.SyncPeers(); err != nil { // carol drops the pieces alice no longer knows
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	if n := len(piecesOn(t, env.Node("carol"), "alice")); n != 0 {
		t.Fatalf("carol kept %d pieces the rebuilt books do not know", n)
	}
	if _, err := alice.Repair(); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	for _, r := range fileRows(t, alice.Node) {
		if r.Status != agent.StatusStored {
			t.Fatalf("%s: %s after repair", r.Name, r.Status)
		}
	}
	if _, err := alice.Probe("/t/bin/random.dat"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	if db, _ := alice.Database("probe"); probeCount(db, "good") == 0 || probeCount(db, "failed") != 0 {
		t.Fatalf("probes after recover_all: %+v", db["probe"])
	}
	os.WriteFile(filepath.Join(tree, "new-after-recovery"), []byte("new"), 0o644)
	res, err := alice.Store(ctx, tree, "/t")
	if err != nil {
		t.Fatal(err)
	}
	// Only the new file is stored again: the rebuilt books know every other file's
	// content, the large ones' too (their hash is noted as they are recovered).
	if res.Stored != 1 || res.Unchanged < 300 {
		t.Fatalf("store after recover_all: %+v, want only the new file stored", res)
	}
	env.Settle(ctx, 20)
	if _, err := alice.Unstore("/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	for _, peer := range []string{"bob", "carol", "dave"} {
		db, _ := env.Node(peer).Database("storage")
		if rows := db["storage"].([]agent.StorageRow); len(rows) != 0 {
			t.Errorf("%s still holds %+v after unstore", peer, rows)
		}
	}
}

func probeCount(db map[string]any, what string) int {
	sum := 0
	for _, r := range db["probe"].([]agent.ProbeRow) {
		switch what {
		case "good":
			sum += r.Good
		case "failed":
			sum += r.Failed
		case "timeout":
			sum += r.Timeout
		}
	}
	return sum
}

func sixNodes(t *testing.T, opts map[string]string) *testenv.Env {
	return testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}, {Name: "dave"}, {Name: "erin"}, {Name: "mallory"}}, Options: opts})
}

// piecesOn lists the piece files a peer holds for owner.
func piecesOn(t *testing.T, peer *testenv.Node, owner string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(peer.Dir, "storage", owner), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestProbe_WrongBlockFailsAndRepairPlacesElsewhere(t *testing.T) {
	env := sixNodes(t, map[string]string{"kbPerFile": "100"})
	alice := env.Node("alice")
	dir := t.TempDir()
	data := bytes.Repeat([]byte("probe me \x00\r\n"), 20000) // 240 kB: a few segments
	os.WriteFile(filepath.Join(dir, "f"), data, 0o644)
	if _, err := alice.Store(ctx, filepath.Join(dir, "f"), "/f"); err != nil {
		t.Fatal(err)
	}
	if fresh, repair := storeFiles(t, alice); fresh == 0 || repair != 0 {
		t.Fatalf("a store queued %d fresh STOREs and %d of repair", fresh, repair)
	}
	env.Settle(ctx, 20)
	// A good probe first: every peer answers right.
	if _, err := alice.Probe("/f"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	db, _ := alice.Database("probe")
	if probeCount(db, "good") == 0 || probeCount(db, "failed") != 0 {
		t.Fatalf("honest peers: %+v", db["probe"])
	}
	// Bob's disk flips bytes in every piece he holds for alice.
	bob := env.Node("bob")
	held := piecesOn(t, bob, "alice")
	if len(held) == 0 {
		t.Fatal("bob holds nothing")
	}
	for _, p := range held {
		b, _ := os.ReadFile(p)
		for i := 0; i < len(b); i += 1024 {
			b[i] ^= 0x55
		}
		os.WriteFile(p, b, 0o600)
	}
	if _, err := alice.Probe("/f"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	db, _ = alice.Database("probe")
	for _, r := range db["probe"].([]agent.ProbeRow) {
		if r.Peer == "bob" && r.Failed != len(held) {
			t.Fatalf("bob failed %d probes, want %d: %+v", r.Failed, len(held), r)
		}
		if r.Peer != "bob" && r.Failed != 0 {
			t.Fatalf("%s failed a probe: %+v", r.Peer, r)
		}
	}
	if st := fileRows(t, alice.Node)[0].Status; st != agent.StatusDegraded {
		t.Fatalf("status after failed probes: %s", st)
	}
	res, err := alice.Repair()
	if err != nil {
		t.Fatal(err)
	}
	if res.Rebuilt != len(held) {
		t.Fatalf("repair: %+v, want %d rebuilt", res, len(held))
	}
	if fresh, repair := storeFiles(t, alice); fresh != 0 || repair != len(held) {
		t.Fatalf("repair queued %d fresh STOREs and %d of repair, want %d of repair (budget.go tells them apart)", fresh, repair, len(held))
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	if st := fileRows(t, alice.Node)[0].Status; st != agent.StatusStored {
		t.Fatalf("status after repair: %s", st)
	}
	if left := piecesOn(t, bob, "alice"); len(left) != 0 {
		t.Errorf("bob still holds %d bad pieces after repair", len(left))
	}
	// Every piece is on a different peer, segment by segment, and a probe now passes.
	before := probeCount(db, "good")
	alice.Probe("/f")
	env.Settle(ctx, 10)
	db, _ = alice.Database("probe")
	if probeCount(db, "good") <= before || probeCount(db, "failed") != len(held) {
		t.Fatalf("probe after repair: %+v", db["probe"])
	}
	// Everything still comes back.
	alice.RecoverFile("/f", 0)
	env.Settle(ctx, 20)
	got, err := os.ReadFile(filepath.Join(alice.Dir, "recovery", "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("recovered after repair: %d bytes, %v", len(got), err)
	}
}

// A peer that keeps one piece and answers for the others with it (each piece sealed to
// alice alike, but each with its own session key and pin) fails every probe but the
// one of the piece it kept.
func TestProbe_SwappedPiecesFail(t *testing.T) {
	env := sixNodes(t, map[string]string{"kbPerFile": "100"})
	alice, bob := env.Node("alice"), env.Node("bob")
	dir := t.TempDir()
	data := make([]byte, 700_000)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	os.WriteFile(filepath.Join(dir, "f"), data, 0o644)
	if _, err := alice.Store(ctx, filepath.Join(dir, "f"), "/f"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	held := piecesOn(t, bob, "alice")
	if len(held) < 2 {
		t.Fatalf("bob holds %d pieces, want 2 or more", len(held))
	}
	kept, _ := os.ReadFile(held[0])
	for _, p := range held[1:] {
		os.WriteFile(p, kept, 0o600)
	}
	if _, err := alice.Probe("/f"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	db, _ := alice.Database("probe")
	for _, r := range db["probe"].([]agent.ProbeRow) {
		if r.Peer == "bob" && (r.Failed != len(held)-1 || r.Good != 1) {
			t.Fatalf("bob: %d good, %d failed; want 1 and %d: %+v", r.Good, r.Failed, len(held)-1, r)
		}
		if r.Peer != "bob" && r.Failed != 0 {
			t.Fatalf("%s failed a probe: %+v", r.Peer, r)
		}
	}
}

func TestStore_OverQuotaNackPlacesElsewhere(t *testing.T) {
	env := sixNodes(t, map[string]string{"kbPerFile": "100"})
	alice := env.Node("alice")
	// Dave grants alice almost nothing, though alice believes she has a gigabyte there.
	small := int64(1000)
	if err := env.Node("dave").EditPeer("alice", agent.PeerEdit{LocalQuota: &small}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := make([]byte, 500_000)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	os.WriteFile(filepath.Join(dir, "g"), data, 0o644)
	if _, err := alice.Store(ctx, filepath.Join(dir, "g"), "/g"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	if n := len(piecesOn(t, env.Node("dave"), "alice")); n != 0 {
		t.Fatalf("dave kept %d pieces over quota", n)
	}
	res, err := alice.Repair()
	if err != nil {
		t.Fatal(err)
	}
	if res.Rebuilt == 0 {
		t.Fatalf("nothing re-placed after NACKs: %+v", res)
	}
	env.Settle(ctx, 20)
	if st := fileRows(t, alice.Node)[0].Status; st != agent.StatusStored {
		t.Fatalf("status: %s", st)
	}
	db, _ := alice.Database("peers")
	for _, r := range db["peers"].([]agent.PeerRow) {
		if r.Peer == "dave" && r.RemoteUsed != 0 {
			t.Errorf("alice counts %d bytes at dave", r.RemoteUsed)
		}
	}
	// Quotas cannot go below use, and peers holding something cannot be deleted.
	one := int64(1)
	if err := alice.EditPeer("bob", agent.PeerEdit{RemoteQuota: &one}); err == nil {
		t.Error("alice lowered bob's remote quota below what he holds")
	}
	if err := env.Node("bob").EditPeer("alice", agent.PeerEdit{LocalQuota: &one}); err == nil {
		t.Error("bob lowered alice's local quota below what he holds for her")
	}
	if err := alice.DeletePeer("bob"); err == nil {
		t.Error("alice deleted bob, who holds her pieces")
	}
	if err := env.Node("bob").DeletePeer("alice"); err == nil {
		t.Error("bob deleted alice, whose pieces he holds")
	}
}

func TestSync_FreesUnreferencedAndFindsMissing(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	alice, bob := env.Node("alice"), env.Node("bob")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a"), bytes.Repeat([]byte("a"), 150_000), 0o644)
	os.WriteFile(filepath.Join(dir, "b"), bytes.Repeat([]byte("b"), 150_000), 0o644)
	alice.Store(ctx, filepath.Join(dir, "a"), "/a")
	alice.Store(ctx, filepath.Join(dir, "b"), "/b")
	env.Settle(ctx, 20)
	held := piecesOn(t, bob, "alice")
	if len(held) < 2 {
		t.Fatalf("bob holds %d pieces", len(held))
	}
	// Alice's UNSTORE of /a is lost in transit, so bob keeps pieces nobody references.
	alice.Faults.Always(testenv.Lose)
	alice.Unstore("/a")
	env.Settle(ctx, 10)
	alice.Faults.Clear()
	if after := piecesOn(t, bob, "alice"); len(after) != len(held) {
		t.Fatalf("the UNSTORE was not lost: %d -> %d", len(held), len(after))
	}
	// And the piece files bob holds vanish from his disk (a failed disk, books intact).
	for _, p := range held {
		os.Remove(p)
	}
	if _, err := alice.SyncPeers(); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	checkQuiet(t, env)
	db, _ := bob.Database("storage")
	if rows := db["storage"].([]agent.StorageRow); len(rows) != 0 {
		t.Fatalf("bob's books still hold %+v after the storage list", rows)
	}
	for _, r := range fileRows(t, alice.Node) {
		if r.Name == "/a" {
			t.Fatalf("/a still listed after unstore: %+v", r)
		}
		if r.Name == "/b" && r.Status == agent.StatusStored {
			t.Fatalf("/b: %s, though bob lost its piece", r.Status)
		}
	}
	if res, err := alice.Repair(); err != nil || res.Rebuilt == 0 {
		t.Fatalf("repair: %+v, %v", res, err)
	}
	env.Settle(ctx, 20)
	for _, r := range fileRows(t, alice.Node) {
		if r.Status != agent.StatusStored {
			t.Fatalf("%s: %s after repair", r.Name, r.Status)
		}
	}
	// Both sides' books agree on what bob holds for alice.
	db, _ = alice.Database("stats")
	bdb, _ := bob.Database("storage")
	var bobHolds int64
	for _, r := range bdb["storage"].([]agent.StorageRow) {
		if r.Peer == "alice" {
			bobHolds = r.Bytes
		}
	}
	for _, r := range db["stats"].([]agent.StatsRow) {
		if r.Peer == "bob" && r.BytesThere != bobHolds {
			t.Errorf("alice counts %d bytes at bob, who holds %d", r.BytesThere, bobHolds)
		}
	}
}

func TestStore_DuplicatedAndReorderedMessagesChangeNothing(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	alice := env.Node("alice")
	tree := makeTree(t, 50, 400_000)
	for _, n := range env.Nodes {
		n.Faults.Always(testenv.Duplicate)
	}
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 30)
	// Then everything is held back and delivered in reverse order.
	for _, n := range env.Nodes {
		n.Faults.Always(testenv.Hold)
	}
	os.WriteFile(filepath.Join(tree, "later"), []byte("later"), 0o644)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	alice.Probe("/t/bin/random.dat")
	for range 6 {
		env.Settle(ctx, 10)
		for _, n := range env.Nodes {
			if err := n.Faults.Release(ctx, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range env.Nodes {
		n.Faults.Clear()
	}
	env.Settle(ctx, 30)
	for _, n := range env.Nodes {
		for name, reason := range n.Quarantined() {
			if !strings.HasPrefix(reason, "replay") {
				t.Errorf("%s quarantined %s: %s", n.Spec.Name, name, reason)
			}
		}
	}
	for _, r := range fileRows(t, alice.Node) {
		if r.Status != agent.StatusStored {
			t.Fatalf("%s v%d: %s", r.Name, r.Version, r.Status)
		}
	}
	// Each peer holds exactly the pieces alice counts there.
	stats, _ := alice.Database("stats")
	for _, r := range stats["stats"].([]agent.StatsRow) {
		db, _ := env.Node(r.Peer).Database("storage")
		var holds int64
		for _, s := range db["storage"].([]agent.StorageRow) {
			if s.Peer == "alice" {
				holds = s.Bytes
			}
		}
		if holds != r.BytesThere {
			t.Errorf("%s holds %d bytes for alice, alice counts %d", r.Peer, holds, r.BytesThere)
		}
	}
	if db, _ := alice.Database("probe"); probeCount(db, "failed") != 0 {
		t.Errorf("probes failed: %+v", db["probe"])
	}
	alice.RecoverFile("/t", 0)
	env.Settle(ctx, 30)
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))
}

func TestRepair_FetchesBackWhenLocalFileChanged(t *testing.T) {
	env := sixNodes(t, map[string]string{"kbPerFile": "100"})
	alice, bob := env.Node("alice"), env.Node("bob")
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	data := make([]byte, 350_000)
	for i := range data {
		data[i] = byte(i ^ i>>9)
	}
	os.WriteFile(p, data, 0o644)
	if _, err := alice.Store(ctx, p, "/f"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	os.WriteFile(p, []byte("the local copy changed since"), 0o644)
	if k, err := bob.Forget("alice"); err != nil || k == 0 {
		t.Fatalf("bob forgets alice: %d pieces, %v", k, err)
	}
	env.Settle(ctx, 10)
	if st := fileRows(t, alice.Node)[0].Status; st != agent.StatusDegraded {
		t.Fatalf("after FORGET_YOU: %s", st)
	}
	res, err := alice.Repair()
	if err != nil || res.Fetching != 1 || res.Rebuilt != 0 {
		t.Fatalf("repair: %+v, %v; want one object fetched back", res, err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	if st := fileRows(t, alice.Node)[0].Status; st != agent.StatusStored {
		t.Fatalf("after repair from fetched pieces: %s", st)
	}
	if n := len(piecesOn(t, bob, "alice")); n != 0 {
		t.Fatalf("bob, who forgot alice, got %d pieces back", n)
	}
	alice.RecoverFile("/f", 0)
	env.Settle(ctx, 20)
	got, _ := os.ReadFile(filepath.Join(alice.Dir, "recovery", "f"))
	if !bytes.Equal(got, data) {
		t.Fatalf("recovered %d bytes, want the %d stored", len(got), len(data))
	}
}

// ACKs that were still on their way when the owner lost its directory reach the rebuilt
// node, which does not know those pieces: it must not ask for them to be deleted, since
// recover_all needs them.
func TestStore_LateAcksAfterDiskLossDeleteNothing(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	alice, bob := env.Node("alice"), env.Node("bob")
	dir := t.TempDir()
	data := bytes.Repeat([]byte("keep me\r\n"), 40_000)
	os.WriteFile(filepath.Join(dir, "f"), data, 0o644)
	bob.Faults.Always(testenv.Hold) // bob's answers are late
	if _, err := alice.Store(ctx, filepath.Join(dir, "f"), "/f"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	held := len(piecesOn(t, bob, "alice"))
	if held == 0 || bob.Faults.Held() == 0 {
		t.Fatalf("bob holds %d pieces and %d late answers", held, bob.Faults.Held())
	}
	var kit bytes.Buffer
	if err := alice.ExportRecoveryKit(&kit); err != nil {
		t.Fatal(err)
	}
	alice = env.Rebuild("alice", &kit)
	bob.Faults.Clear()
	if err := bob.Faults.Release(ctx, false); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	if now := len(piecesOn(t, bob, "alice")); now != held {
		t.Fatalf("late ACKs to the rebuilt node cost bob %d of %d pieces", held-now, held)
	}
	if err := alice.RecoverAll(); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	got, err := os.ReadFile(filepath.Join(alice.Dir, "recovery", "f"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("recovered %d bytes, %v", len(got), err)
	}
}

func TestStore_VersionsDeletionAndTouch(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100", "maxVersions": "3"})
	alice := env.Node("alice")
	dir := t.TempDir()
	big := filepath.Join(dir, "big")     // a large file: its own object
	small := filepath.Join(dir, "small") // a small one: packed
	content := func(v int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("version %d\r\n", v)), 30_000) }
	versionsOf := func(name string) []agent.FileRow {
		var out []agent.FileRow
		for _, r := range fileRows(t, alice.Node) {
			if r.Name == name {
				out = append(out, r)
			}
		}
		return out
	}
	for v := 1; v <= 5; v++ {
		os.WriteFile(big, content(v), 0o644)
		os.WriteFile(small, []byte(fmt.Sprintf("small %d", v)), 0o644)
		mt := time.Date(2020, 1, v, 0, 0, 0, 0, time.UTC)
		os.Chtimes(big, mt, mt)
		res, err := alice.Store(ctx, dir, "/d")
		if err != nil {
			t.Fatal(err)
		}
		if v > 1 && res.Stored != 2 { // big and small; the directory did not change
			t.Fatalf("round %d: %+v", v, res)
		}
		env.Settle(ctx, 20)
	}
	vs := versionsOf("/d/big")
	if len(vs) != 3 || vs[0].Version != 3 || vs[2].Version != 5 {
		t.Fatalf("versions kept: %+v, want 3, 4, 5", vs)
	}
	// Touching without changing the content makes no new version.
	later := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(big, later, later)
	res, err := alice.Store(ctx, dir, "/d")
	if err != nil || res.Stored != 0 {
		t.Fatalf("touch: %+v, %v", res, err)
	}
	// Old versions' pieces were unstored at the peers: they hold 3 versions' worth.
	stats, _ := alice.Database("stats")
	var there int64
	for _, r := range stats["stats"].([]agent.StatsRow) {
		there += r.BytesThere
	}
	if there > 3*3*int64(len(content(1)))+3*3*200_000 {
		t.Errorf("peers hold %d bytes for 3 versions of a %d-byte file", there, len(content(1)))
	}
	// An older version comes back on request.
	if _, err := alice.RecoverFile("/d/big", 4); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	got, _ := os.ReadFile(filepath.Join(alice.Dir, "recovery", "d", "big"))
	if !bytes.Equal(got, content(4)) {
		t.Fatalf("version 4: %d bytes", len(got))
	}
	// A file deleted locally is marked, and stays recoverable.
	os.Remove(small)
	res, err = alice.Store(ctx, dir, "/d")
	if err != nil || res.Deleted != 1 {
		t.Fatalf("after a delete: %+v, %v", res, err)
	}
	vs = versionsOf("/d/small")
	if vs[len(vs)-1].Deleted == nil {
		t.Fatalf("the deleted file is not marked: %+v", vs)
	}
	if _, err := alice.RecoverFile("/d/small", 0); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if got, _ := os.ReadFile(filepath.Join(alice.Dir, "recovery", "d", "small")); string(got) != "small 5" {
		t.Fatalf("deleted file recovered as %q", got)
	}
}

func TestAutoCheck_FollowsLinksAndMarksRemovedEntries(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	docs := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(filepath.Join(docs, "sub"), 0o755)
	os.WriteFile(filepath.Join(docs, "sub", "a.txt"), []byte("a"), 0o644)
	auto := filepath.Join(alice.Dir, "autoBackup")
	os.MkdirAll(auto, 0o755)
	if err := os.Symlink(docs, filepath.Join(auto, "docs")); err != nil {
		t.Fatal(err)
	}
	res, err := alice.AutoCheck(ctx)
	if err != nil || res.Stored != 3 {
		t.Fatalf("auto_check: %+v, %v", res, err)
	}
	names := map[string]bool{}
	for _, r := range fileRows(t, alice.Node) {
		names[r.Name] = true
	}
	if !names["/autoBackup/docs/sub/a.txt"] {
		t.Fatalf("stored names: %v", names)
	}
	os.Remove(filepath.Join(auto, "docs"))
	if res, err = alice.AutoCheck(ctx); err != nil || res.Deleted != 3 {
		t.Fatalf("after unlinking: %+v, %v", res, err)
	}
}
