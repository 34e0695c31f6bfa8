package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/testenv"
)

// drills is alice's drills table, newest first.
func drills(t *testing.T, n *agent.Node) []agent.DrillRow {
	t.Helper()
	db, err := n.Database("stats")
	if err != nil {
		t.Fatal(err)
	}
	return db["drills"].([]agent.DrillRow)
}

// storedTree stores a tree of small files and one of several segments on alice and
// settles the network.
func storedTree(t *testing.T, env *testenv.Env) string {
	t.Helper()
	tree := makeTree(t, 50, 700_000)
	if _, err := env.Node("alice").Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	return tree
}

func TestDrill_PassesAndLeavesRecoveryAlone(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	storedTree(t, env)
	alice := env.Node("alice")
	st, err := alice.Drill()
	if err != nil {
		t.Fatal(err)
	}
	if st.Files == 0 || st.Pieces == 0 || st.Peers != 3 {
		t.Fatalf("drill asked for %+v; want a sample, its pieces, from all three peers", st)
	}
	if st.Bytes > 64_000_000 {
		t.Errorf("drill fetches %d bytes, over the default drillBudget", st.Bytes)
	}
	if _, err := alice.Drill(); err == nil || !strings.Contains(err.Error(), "still waiting") {
		t.Errorf("second drill while the first waits: %v", err)
	}
	env.Settle(ctx, 20)
	rows := drills(t, alice.Node)
	if len(rows) != 1 {
		t.Fatalf("drills: %+v", rows)
	}
	d := rows[0]
	if d.State != agent.RecoveryDone || d.Checked != st.Files || d.BadPieces != 0 || d.Unanswered != 0 || d.Ended == nil {
		t.Fatalf("drill: %+v, want done with %d files checked", d, st.Files)
	}
	for _, dir := range []string{"recovery", "drill.tmp", "recovery.tmp"} {
		des, _ := os.ReadDir(filepath.Join(alice.Dir, dir))
		for _, de := range des {
			t.Errorf("%s/%s left after the drill", dir, de.Name())
		}
	}
	rep, err := alice.Status()
	if err != nil {
		t.Fatal(err)
	}
	if rep.LastGoodDrill == nil || rep.LastGoodDrill.Started != d.Started || rep.LastDrill == nil {
		t.Errorf("status: last drill %+v, last good %+v", rep.LastDrill, rep.LastGoodDrill)
	}
	if n := len(alice.Admin.Mails()); n != 0 {
		t.Errorf("a passed drill mailed dibsAdmin: %+v", alice.Admin.Mails())
	}
}

// A piece bob holds is damaged on his disk: the file is still rebuilt from the others,
// but the drill fails on the piece, names it, and reports to dibsAdmin.
func TestDrill_TamperedPieceFailsAndIsReported(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100", "drillBudget": "100000000"})
	storedTree(t, env)
	bob, alice := env.Node("bob"), env.Node("alice")
	var damaged int
	filepath.WalkDir(filepath.Join(bob.Dir, "storage", "alice"), func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() || damaged > 0 {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)/2] ^= 0x40
		damaged++
		return os.WriteFile(p, b, 0o600)
	})
	if damaged == 0 {
		t.Fatal("bob holds no piece of alice's")
	}
	if _, err := alice.Drill(); err != nil {
		t.Fatal(err)
	}
	settleAllowingErrors(env, 20)
	rows := drills(t, alice.Node)
	if len(rows) != 1 || rows[0].State != agent.RecoveryFailed || rows[0].BadPieces != 1 || !strings.Contains(rows[0].Error, "bob: ") {
		t.Fatalf("drill with one damaged piece at bob: %+v", rows)
	}
	if len(alice.Quarantined()) == 0 {
		t.Error("the damaged answer was not quarantined")
	}
	mails := alice.Admin.Mails()
	if len(mails) != 1 || !strings.Contains(mails[0].Subject, "drill failed") || !strings.Contains(mails[0].Body, "bob: ") {
		t.Errorf("dibsAdmin got %+v; want one drill failure naming bob", mails)
	}
}

// Dave is gone: his pieces never come back, and the drill ends on drillTimeout, failed
// on them, though every file was rebuilt from bob's and carol's.
func TestDrill_SilentPeerEndsOnTimeout(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100", "drillTimeout": "3600"})
	storedTree(t, env)
	alice := env.Node("alice")
	env.Node("dave").Faults.Always(testenv.Hold) // dave's answers never leave him
	if _, err := alice.Drill(); err != nil {
		t.Fatal(err)
	}
	settleAllowingErrors(env, 20)
	if rows := drills(t, alice.Node); len(rows) != 1 || rows[0].State != agent.RecoveryWaiting || rows[0].Unanswered == 0 {
		t.Fatalf("drill with dave gone, before drillTimeout: %+v", rows)
	}
	later := time.Now().Add(2 * time.Hour)
	alice.Now = func() time.Time { return later }
	if n, err := alice.ExpireDrills(); err != nil || n != 1 {
		t.Fatalf("ExpireDrills: %d, %v", n, err)
	}
	rows := drills(t, alice.Node)
	if rows[0].State != agent.RecoveryFailed || rows[0].Checked != rows[0].Files || !strings.Contains(rows[0].Error, "dave: no answer within drillTimeout") {
		t.Fatalf("drill after drillTimeout: %+v", rows[0])
	}
}

func TestDrill_BudgetTooSmallSaysSo(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100", "drillBudget": "1"})
	storedTree(t, env)
	_, err := env.Node("alice").Drill()
	if err == nil || !strings.Contains(err.Error(), "drillBudget") {
		t.Fatalf("drill with a 1-byte budget: %v", err)
	}
}

// One answer the kit's node gets is a piece damaged on bob's disk: its recover_all
// waits for bob's piece, as recover_all after a disaster would, and on drillTimeout the
// drill from the kit fails, with the refused answer and the files it did not get back.
func TestDrillFromKit_DamagedPieceFailsIt(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100", "resendAfter": "60", "drillTimeout": "3600"})
	storedTree(t, env)
	alice, bob := env.Node("alice"), env.Node("bob")
	var kit bytes.Buffer
	if err := alice.ExportRecoveryKit(&kit); err != nil {
		t.Fatal(err)
	}
	damaged := false
	filepath.WalkDir(filepath.Join(bob.Dir, "storage", "alice"), func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() || damaged {
			return err
		}
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0x10
		damaged = true
		return os.WriteFile(p, b, 0o600)
	})
	st, err := alice.DrillFromKit(bytes.NewReader(kit.Bytes()))
	if err != nil || st.Peers != 3 {
		t.Fatalf("DrillFromKit: %+v, %v", st, err)
	}
	settleAllowingErrors(env, 30)
	if rows := drills(t, alice.Node); len(rows) != 1 || rows[0].State != agent.RecoveryWaiting {
		t.Fatalf("drill from the kit, bob's piece refused, before resendAfter: %+v", rows)
	}
	later := time.Now().Add(2 * time.Minute)
	alice.Now = func() time.Time { return later }
	before := len(alice.Quarantined())
	settleAllowingErrors(env, 30) // the kit's node asks bob again: his piece is damaged still
	if q := len(alice.Quarantined()); q != before {
		t.Errorf("alice's own node quarantined %d files: the answers were the kit node's", q-before)
	}
	later = later.Add(2 * time.Hour)
	if n, err := alice.ExpireDrills(); err != nil || n != 1 {
		t.Fatalf("ExpireDrills: %d, %v", n, err)
	}
	rows := drills(t, alice.Node)
	if len(rows) != 1 || !rows[0].FromKit || rows[0].State != agent.RecoveryFailed || rows[0].Files == 0 ||
		!strings.Contains(rows[0].Error, "the first from bob: incoming: RECOVER_RESPONSE from bob: piece: ") || !strings.Contains(rows[0].Error, "did not end within drillTimeout") {
		t.Fatalf("drill from the kit with a damaged piece at bob: %+v", rows)
	}
	if _, err := os.Stat(filepath.Join(alice.Dir, "drill.tmp", "kit")); err == nil {
		t.Error("the kit's node is left in drill.tmp/kit")
	}
}
