package agent_test

// What the user is told: refusals, missing redundancy, late answers, upkeep.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/testenv"
)

func writeFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A piece refused over quota shows why, at the peer and at the file: sending worked,
// so last_error stays empty.
func TestStore_OverQuotaRefusalIsShown(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	alice := env.Node("alice")
	small := int64(1000)
	if err := env.Node("dave").EditPeer("alice", agent.PeerEdit{LocalQuota: &small}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Store(ctx, writeFile(t, 150_000), "/g"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	dave := peerRow(t, alice, "dave")
	if !strings.HasPrefix(dave.LastRefusal, "STORE: over quota: ") || dave.LastError != "" {
		t.Errorf("dave's row: last_refusal %q, last_error %q; want the over-quota NACK and no send error", dave.LastRefusal, dave.LastError)
	}
	if bob := peerRow(t, alice, "bob"); bob.LastRefusal != "" {
		t.Errorf("bob refused nothing, last_refusal %q", bob.LastRefusal)
	}
	f := fileRows(t, alice.Node)[0]
	if f.Status != agent.StatusDegraded || !strings.HasPrefix(f.LastRefusal, "dave refused STORE: over quota: ") {
		t.Errorf("file row: status %s, last_refusal %q; want degraded, refused by dave over quota", f.Status, f.LastRefusal)
	}
	if f.Spares == nil || *f.Spares != 1 {
		t.Errorf("spares %v; want 1 (k=1, 3 pieces, one refused)", f.Spares)
	}
	// The stats count each peer's answers and, among them, its refusals.
	db, err := alice.Database("stats")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range db["stats"].([]agent.StatsRow) {
		if refused := r.Refusals > 0; r.Answers < max(1, r.Refusals) || refused != (r.Peer == "dave") {
			t.Errorf("stats of %s: %d answers, %d refusals; want answers, and refusals from dave only", r.Peer, r.Answers, r.Refusals)
		}
	}
}

// A store on one peer says once that losing it loses the files, and show_database's
// spares say 0; on two peers (a mirror) there is no warning and one spare.
func TestStore_OnePeerHasNoRedundancy(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}})
	alice := env.Node("alice")
	dir := t.TempDir()
	for _, f := range []string{"a", "b"} {
		os.WriteFile(filepath.Join(dir, f), []byte("content of "+f), 0o644)
	}
	res, err := alice.Store(ctx, dir, "/d")
	if err != nil {
		t.Fatal(err)
	}
	want := "no redundancy: bob is the only peer that can take pieces, so losing bob loses what was stored (add peers)"
	if len(res.Warnings) != 1 || res.Warnings[0] != want {
		t.Errorf("warnings %q; want just %q", res.Warnings, want)
	}
	env.Settle(ctx, 10)
	rows := fileRows(t, alice.Node)
	for _, f := range rows { // the directory's metadata travels in the files' pack
		if f.Spares == nil || *f.Spares != 0 {
			t.Errorf("%s: spares %v; want 0", f.Name, f.Spares)
		}
	}
	if len(rows) != 3 {
		t.Errorf("%d rows; want the directory and its 2 files", len(rows))
	}

	env = testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}}})
	res, err = env.Node("alice").Store(ctx, writeFile(t, 10), "/f")
	if err != nil || len(res.Warnings) != 0 {
		t.Fatalf("store on two peers: %v, warnings %q", err, res.Warnings)
	}
	if f := fileRows(t, env.Node("alice").Node)[0]; f.Spares == nil || *f.Spares != 1 {
		t.Errorf("spares %v on two peers; want 1", f.Spares)
	}
}

// A peer that answers a recover_all after it ended (it was not waited for) drops out of
// the job's "no answer from".
func TestRecoverAll_LateAnswerLeavesNoAnswerList(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "100"})
	alice := env.Node("alice")
	if _, err := alice.Store(ctx, writeFile(t, 50_000), "/f"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
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
	settleAllowingErrors(env, 20)
	if r := recoveryRow(t, alice.Node, "*all*"); r.State != agent.RecoveryDone || r.Error != "no answer from carol, dave" {
		t.Fatalf("recover_all with carol and dave away: %+v", r)
	}
	env.Mend("carol")
	settleAllowingErrors(env, 20)
	if r := recoveryRow(t, alice.Node, "*all*"); r.State != agent.RecoveryDone || r.Error != "no answer from dave" {
		t.Fatalf("after carol answered late: %+v; want only dave left unanswered", r)
	}
	env.Mend("dave")
	env.Settle(ctx, 20)
	checkQuiet(t, env)
	if r := recoveryRow(t, alice.Node, "*all*"); r.State != agent.RecoveryDone || r.Error != "" {
		t.Fatalf("after everyone answered: %+v; want no error", r)
	}
}

// auto_check says what its upkeep did: here, a peer forgot us and repair placed the
// lost pieces elsewhere.
func TestAutoCheck_ReportsUpkeep(t *testing.T) {
	env := sixNodes(t, map[string]string{"kbPerFile": "100"})
	alice, bob := env.Node("alice"), env.Node("bob")
	auto := filepath.Join(alice.Dir, "autoBackup")
	os.MkdirAll(auto, 0o755)
	if err := os.Symlink(writeFile(t, 150_000), filepath.Join(auto, "f")); err != nil {
		t.Fatal(err)
	}
	res, err := alice.AutoCheck(ctx)
	if err != nil || res.Stored != 1 || res.Upkeep.Repair.Rebuilt != 0 {
		t.Fatalf("first auto_check: %+v, %v", res, err)
	}
	env.Settle(ctx, 20)
	if k, err := bob.Forget("alice"); err != nil || k == 0 {
		t.Fatalf("bob forgets alice: %d, %v", k, err)
	}
	env.Settle(ctx, 10)
	res, err = alice.AutoCheck(ctx)
	if err != nil || res.Stored != 0 || res.Upkeep.Repair.Rebuilt == 0 {
		t.Fatalf("auto_check after bob forgot alice: %+v, %v; want pieces placed again", res, err)
	}
	env.Settle(ctx, 20)
	if st := fileRows(t, alice.Node)[0].Status; st != agent.StatusStored {
		t.Fatalf("after repair: %s", st)
	}
}
