package agent_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// outsideDir is a directory outside DIBS_DIR with one file in it, and a snapshot of
// both; unchanged fails the test if recovery wrote, chmod-ed or touched any of it.
type outsideDir struct {
	path string
	fi   map[string]fs.FileInfo
	data map[string]string
}

func newOutsideDir(t *testing.T) *outsideDir {
	t.Helper()
	o := &outsideDir{path: t.TempDir()}
	if err := os.WriteFile(filepath.Join(o.path, "keep"), []byte("outside\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	old := time.Date(1999, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range []string{filepath.Join(o.path, "keep"), o.path} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(o.path, 0o711); err != nil {
		t.Fatal(err)
	}
	o.fi, o.data = o.scan(t)
	return o
}

func (o *outsideDir) scan(t *testing.T) (map[string]fs.FileInfo, map[string]string) {
	t.Helper()
	fis, data := map[string]fs.FileInfo{}, map[string]string{}
	err := filepath.WalkDir(o.path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		fis[p] = fi
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			data[p] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fis, data
}

func (o *outsideDir) unchanged(t *testing.T, when string) {
	t.Helper()
	fis, data := o.scan(t)
	for p, fi := range fis {
		was, ok := o.fi[p]
		switch {
		case !ok:
			t.Errorf("%s: %s appeared outside DIBS_DIR", when, p)
		case fi.Mode() != was.Mode():
			t.Errorf("%s: %s mode %v, was %v", when, p, fi.Mode(), was.Mode())
		case !fi.ModTime().Equal(was.ModTime()):
			t.Errorf("%s: %s mtime %v, was %v", when, p, fi.ModTime(), was.ModTime())
		case data[p] != o.data[p]:
			t.Errorf("%s: %s holds %q, held %q", when, p, data[p], o.data[p])
		}
	}
	for p := range o.fi {
		if _, ok := fis[p]; !ok {
			t.Errorf("%s: %s is gone", when, p)
		}
	}
}

func recoveryRow(t *testing.T, n *agent.Node, name string) agent.RecoveryRow {
	t.Helper()
	db, err := n.Database("recovery")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range db["recovery"].([]agent.RecoveryRow) {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no recovery %s", name)
	return agent.RecoveryRow{}
}

// recoverNow recovers sname (at version) and settles the grid.
func recoverNow(t *testing.T, env *testenv.Env, n *testenv.Node, sname string, version int) agent.RecoveryRow {
	t.Helper()
	job, err := n.RecoverFile(sname, version)
	if err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	return recoveryRow(t, n.Node, job)
}

func mustLstat(t *testing.T, p string) fs.FileInfo {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// An earlier recovery, or the user, left symlinks to an outside directory where a
// recovered directory and a recovered file go: the recovery replaces them with the real
// things and leaves the outside alone.
func TestRecover_LinksLeftWhereDirAndFileGoAreReplaced(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	tree := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(filepath.Join(tree, "d"), 0o750); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(tree, "d"), 0o750)
	os.WriteFile(filepath.Join(tree, "d", "f"), []byte("in d\n"), 0o644)
	os.WriteFile(filepath.Join(tree, "top"), []byte("top\n"), 0o600)
	old := time.Date(2003, 4, 5, 6, 7, 8, 0, time.UTC)
	os.Chtimes(filepath.Join(tree, "d"), old, old)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	rec := filepath.Join(alice.Dir, "recovery", "t")
	if r := recoverNow(t, env, alice, "/t", 0); r.State != agent.RecoveryDone {
		t.Fatalf("first recovery: %+v", r)
	}
	sameTree(t, tree, rec)

	outside := newOutsideDir(t)
	if err := os.RemoveAll(filepath.Join(rec, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside.path, filepath.Join(rec, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(rec, "top")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside.path, "keep"), filepath.Join(rec, "top")); err != nil {
		t.Fatal(err)
	}
	if r := recoverNow(t, env, alice, "/t", 0); r.State != agent.RecoveryDone {
		t.Errorf("second recovery: %+v", r)
	}
	outside.unchanged(t, "after recovering over links")
	if fi := mustLstat(t, filepath.Join(rec, "d")); !fi.IsDir() {
		t.Errorf("recovered d is %v, not a directory", fi.Mode())
	}
	if fi := mustLstat(t, filepath.Join(rec, "top")); !fi.Mode().IsRegular() {
		t.Errorf("recovered top is %v, not a regular file", fi.Mode())
	}
	sameTree(t, tree, rec)
}

// A stored tree had a symlink a to a directory outside, recovered, and later a directory
// a with a file a/passwd. However the versions are recovered over the recovered link,
// nothing is written through it.
func TestRecover_StoredLinkThenFileUnderSameName(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	outside := newOutsideDir(t)
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(tree, 0o755)
	if err := os.Symlink(outside.path, filepath.Join(tree, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	rec := filepath.Join(alice.Dir, "recovery", "t")
	if r := recoverNow(t, env, alice, "/t", 0); r.State != agent.RecoveryDone {
		t.Fatalf("recovering the link: %+v", r)
	}
	if fi := mustLstat(t, filepath.Join(rec, "a")); fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("/t/a recovered as %v, not a link", fi.Mode())
	}

	os.Remove(filepath.Join(tree, "a"))
	os.Mkdir(filepath.Join(tree, "a"), 0o750)
	os.Chmod(filepath.Join(tree, "a"), 0o750)
	os.WriteFile(filepath.Join(tree, "a", "passwd"), []byte("root::0:0::/:/bin/sh\n"), 0o644)
	old := time.Date(2004, 5, 6, 7, 8, 9, 0, time.UTC)
	os.Chtimes(filepath.Join(tree, "a"), old, old)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)

	// The file alone, under the recovered link: refused.
	if r := recoverNow(t, env, alice, "/t/a/passwd", 0); r.State != agent.RecoveryFailed || !strings.Contains(r.Error, "symlink") {
		t.Errorf("recovering a file under a recovered link: %+v, want failed for the link", r)
	}
	outside.unchanged(t, "after a file under the link")

	// Version 1 of the tree holds the link and the file: the file is refused again.
	if r := recoverNow(t, env, alice, "/t", 1); r.State != agent.RecoveryFailed || !strings.Contains(r.Error, "/t/a/passwd") {
		t.Errorf("version 1 of the tree: %+v, want failed for /t/a/passwd", r)
	}
	outside.unchanged(t, "after version 1 of the tree")

	// The newest tree: a is a directory again, a real one.
	if r := recoverNow(t, env, alice, "/t", 0); r.State != agent.RecoveryDone {
		t.Errorf("the newest tree: %+v", r)
	}
	outside.unchanged(t, "after the newest tree")
	sameTree(t, tree, rec)
}

// setuid, setgid and sticky bits are not applied to recovered files and directories;
// the recovery says which lost them.
func TestRecover_SpecialModeBitsDroppedAndReported(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(tree, "shared"), 0o755)
	os.WriteFile(filepath.Join(tree, "suid"), []byte("#!/bin/sh\nid\n"), 0o755)
	os.WriteFile(filepath.Join(tree, "plain"), []byte("plain\n"), 0o644)
	for p, m := range map[string]fs.FileMode{"suid": 0o755 | fs.ModeSetuid | fs.ModeSetgid, "shared": 0o777 | fs.ModeSticky | fs.ModeSetgid} {
		if err := os.Chmod(filepath.Join(tree, p), m); err != nil {
			t.Fatal(err)
		}
		if got := mustLstat(t, filepath.Join(tree, p)).Mode() &^ fs.ModeDir; got != m {
			t.Skipf("this filesystem keeps %v for %v", got, m)
		}
	}
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	r := recoverNow(t, env, alice, "/t", 0)
	if r.State != agent.RecoveryDone {
		t.Fatalf("recovery: %+v", r)
	}
	rec := filepath.Join(alice.Dir, "recovery", "t")
	for p, want := range map[string]fs.FileMode{"suid": 0o755, "shared": fs.ModeDir | 0o777, "plain": 0o644} {
		if got := mustLstat(t, filepath.Join(rec, p)).Mode(); got != want {
			t.Errorf("recovered %s: mode %v, want %v", p, got, want)
		}
	}
	if !strings.Contains(r.Error, "setuid/setgid/sticky") || !strings.Contains(r.Error, "/t/suid") || !strings.Contains(r.Error, "/t/shared") || strings.Contains(r.Error, "plain") {
		t.Errorf("recovery error %q does not name the two entries that lost their bits", r.Error)
	}
	if n := strings.Count(r.Error, "setuid/setgid/sticky"); n != 1 {
		t.Errorf("%d warnings about special bits, want one: %q", n, r.Error)
	}
}

// A peer that holds nothing for us answers recover_all first (FINISHED_RECOVER_ALL with
// count 0) while the peers that hold everything are still unreachable: that answer proves
// nothing about the others, so the job keeps waiting, and finishes with every file once
// they answer. It used to end at once with 0 objects.
func TestRecoverAll_EmptyAnswerFirstDoesNotEndTheWait(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	alice, bob := env.Node("alice"), env.Node("bob")
	tree := makeTree(t, 20, 300_000)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if k, err := bob.Forget("alice"); err != nil || k == 0 {
		t.Fatalf("bob forgets alice: %d, %v", k, err)
	}
	env.Settle(ctx, 10)
	var kit bytes.Buffer
	if err := alice.ExportRecoveryKit(&kit); err != nil {
		t.Fatal(err)
	}
	alice = env.Rebuild("alice", &kit)
	env.Cut("carol")
	env.Cut("dave")
	if err := alice.RecoverAll(); err != nil {
		t.Fatal(err)
	}
	settleAllowingErrors(env, 10)
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryWaiting {
		db, _ := alice.Database("recovery")
		t.Fatalf("only bob (holding nothing) answered, recover_all is %q: %+v", st, db["recovery"])
	}
	env.Mend("carol")
	env.Mend("dave")
	settleAllowingErrors(env, 20)
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryDone {
		db, _ := alice.Database("recovery")
		t.Fatalf("recover_all after carol and dave answered: %q %+v", st, db["recovery"])
	}
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))
}

// recoverAllFrom loses alice's disk, rebuilds her from her kit, and runs recover_all
// while the peers in cut never answer.
func recoverAllFrom(t *testing.T, env *testenv.Env, cut ...string) *testenv.Node {
	t.Helper()
	alice := loseAlice(t, env, cut...)
	if err := alice.RecoverAll(); err != nil {
		t.Fatal(err)
	}
	settleAllowingErrors(env, 20)
	return alice
}

// loseAlice rebuilds alice from her recovery kit alone, as after a disk loss, and cuts
// the named peers off for good.
func loseAlice(t *testing.T, env *testenv.Env, cut ...string) *testenv.Node {
	t.Helper()
	var kit bytes.Buffer
	if err := env.Node("alice").ExportRecoveryKit(&kit); err != nil {
		t.Fatal(err)
	}
	alice := env.Rebuild("alice", &kit)
	for _, name := range cut {
		env.Cut(name)
	}
	return alice
}

// RS 2+1 over three peers, and dave (one of the three) never answers: the pieces of
// bob and carol, exactly k of every segment, bring everything back without waiting for
// him.
func TestRecoverAll_ExactlyKPiecesSlowestPeerNeverAnswers(t *testing.T) {
	// One parity piece: over three peers the default two would make every piece a whole
	// copy (k = 1), and bob alone would bring everything back.
	env := fourNodes(t, map[string]string{"kbPerFile": "100", "redundantPieces": "1"})
	alice := env.Node("alice")
	tree := makeTree(t, 200, 700_000) // packs of small files and a file of several segments
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	alice = recoverAllFrom(t, env, "dave")
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryDone {
		db, _ := alice.Database("recovery")
		t.Fatalf("recover_all without dave: %q %+v", st, db["recovery"])
	}
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))
}

// Carol is gone, and the first answers dave sends alice are damaged in transit: each
// is refused (quarantined, never written), recover_all waits rather than end without
// them, asks dave again after resendAfter, and completes byte for byte from his second
// answers and bob's.
func TestRecoverAll_DamagedResponsesRefusedAndAskedAgain(t *testing.T) {
	// RS 2+1, as above: with whole copies (the default over three peers) bob's answers
	// alone complete the job whenever alice takes them all in before dave's first intact
	// one (FINISHED or a small piece), and the job is done, not waiting.
	env := fourNodes(t, map[string]string{"kbPerFile": "100", "resendAfter": "60", "redundantPieces": "1"})
	alice := env.Node("alice")
	tree := makeTree(t, 200, 700_000) // packs of small files and a file of several segments
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	dave := env.Node("dave")
	damage := true
	dave.Faults.SetRule(func(to string, m queue.Message) testenv.Fault {
		if damage && to == "alice" && m.Size > 20_000 { // the RECOVER_RESPONSEs, not FINISHED
			return testenv.Corrupt
		}
		return testenv.Pass
	})
	alice = recoverAllFrom(t, env, "carol")
	damaged := dave.Faults.Counts[testenv.Corrupt]
	if damaged == 0 {
		t.Fatal("dave sent alice no piece: the test tested nothing")
	}
	if q := alice.Quarantined(); len(q) < damaged {
		t.Errorf("%d damaged answers, %d quarantined: %v", damaged, len(q), q)
	}
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryWaiting {
		t.Fatalf("recover_all with dave's answers refused and carol gone: %q, want waiting", st)
	}
	damage = false
	later := time.Now().Add(2 * time.Minute)
	alice.Now = func() time.Time { return later }
	if n, err := alice.ResendRequests(); err != nil || n < 1 {
		t.Fatalf("asked again: %d requests, %v; want dave's RECOVER_ALL sent again", n, err)
	}
	settleAllowingErrors(env, 20)
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryDone {
		db, _ := alice.Database("recovery")
		t.Fatalf("recover_all after dave was asked again: %q %+v", st, db["recovery"])
	}
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))
}

// The pieces are opened and staged before the database batch: when dave, who never
// answered, answers after recover_all is done, his pieces are noted in the books but no
// shard or object of them is kept under recovery.tmp/, and nothing is left there of the
// finished job either.
func TestRecoverAll_LateAnswerLeavesNothingStaged(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	alice := env.Node("alice")
	tree := makeTree(t, 200, 700_000)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	alice = recoverAllFrom(t, env, "dave")
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryDone {
		t.Fatalf("recover_all without dave: %q", st)
	}
	env.Mend("dave")
	settleAllowingErrors(env, 20)
	var left []string
	filepath.WalkDir(filepath.Join(alice.Dir, "recovery.tmp"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("%d files left under recovery.tmp/ after dave's late answers: %v", len(left), left[:min(len(left), 5)])
	}
	if q := alice.Quarantined(); len(q) > 0 {
		t.Errorf("dave's late answers quarantined: %v", q)
	}
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))
}

// A large file is hard-linked out of its assembled object rather than copied. Two large
// files with the same content must still come back as files of their own, with their
// own mode and mtime, and neither is a link of the other or of the staging area once
// the job is done (a staged object left behind would show as a second link).
func TestRecoverAll_LinkedLargeFilesAreFilesOfTheirOwn(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	alice := env.Node("alice")
	tree := t.TempDir()
	data := bytes.Repeat([]byte("same content, twice; "), 30_000) // 630 kB: several segments
	for i, name := range []string{"a.bin", "b.bin"} {
		p := filepath.Join(tree, name)
		if err := os.WriteFile(p, data, 0o600+fs.FileMode(i)*0o40); err != nil {
			t.Fatal(err)
		}
		mt := time.Date(2020, 1, 1+i, 0, 0, 0, 0, time.UTC)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	alice = recoverAllFrom(t, env)
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryDone {
		t.Fatalf("recover_all: %q", st)
	}
	out := filepath.Join(alice.Dir, "recovery", "t")
	sameTree(t, tree, out)
	a, errA := os.Stat(filepath.Join(out, "a.bin"))
	b, errB := os.Stat(filepath.Join(out, "b.bin"))
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if os.SameFile(a, b) {
		t.Fatal("a.bin and b.bin came back as one inode")
	}
	for _, fi := range []fs.FileInfo{a, b} {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink != 1 {
			t.Errorf("%s has %d links once the job is done, want 1", fi.Name(), st.Nlink)
		}
	}
}

// The daemon repairs while recover_all still waits: carol is gone, so the rebuilt books
// show degraded objects as the answers come in, and a repair job fetches the same
// objects back. Whichever job ends first must leave the other's staged shards and
// assembled objects alone (a repair that ended first took the objects the recovery was
// about to write its files from, and the recovery failed on them).
func TestRecoverAll_RepairMeanwhileLeavesItsObjects(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100", "redundantPieces": "1"})
	alice := env.Node("alice")
	tree := makeTree(t, 200, 700_000)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	alice = loseAlice(t, env, "carol")
	// Dave's small messages (his FINISHED among them) wait: every object is assembled
	// while recover_all still waits to hear that dave sent all he holds.
	dave := env.Node("dave")
	dave.Faults.SetRule(func(to string, m queue.Message) testenv.Fault {
		if to == "alice" && m.Size < 4000 {
			return testenv.Hold
		}
		return testenv.Pass
	})
	if err := alice.RecoverAll(); err != nil {
		t.Fatal(err)
	}
	repairs := 0
	for range 10 {
		moved := false
		for _, n := range env.Nodes {
			moved = n.Cron(ctx).Moved() || moved
		}
		if res, err := alice.Repair(); err == nil {
			repairs += res.Fetching + res.Rebuilt
		}
		if !moved {
			break
		}
	}
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryWaiting {
		t.Fatalf("recover_all is %q before dave's FINISHED came", st)
	}
	dave.Faults.SetRule(nil)
	if err := dave.Faults.Release(ctx, false); err != nil {
		t.Fatal(err)
	}
	settleAllowingErrors(env, 20)
	if repairs == 0 {
		t.Fatal("no repair job started while recover_all ran: the test tested nothing")
	}
	if st := recoveryState(t, alice.Node, "*all*"); st != agent.RecoveryDone {
		db, _ := alice.Database("recovery")
		t.Fatalf("recover_all with repairs beside it: %q %+v", st, db["recovery"])
	}
	sameTree(t, tree, filepath.Join(alice.Dir, "recovery", "t"))
}
