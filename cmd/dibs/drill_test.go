package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// drillRows is show_database --only stats --json's drills table.
func drillRows(n *cliNode) []map[string]any {
	n.T.Helper()
	var db struct {
		Drills []map[string]any `json:"drills"`
	}
	out := n.OK("show_database", "--only", "stats", "--json")
	if err := json.Unmarshal([]byte(out), &db); err != nil {
		n.T.Fatalf("show_database --only stats --json: %v\n%s", err, out)
	}
	return db.Drills
}

// drillFixture: real processes, alice pushes to three peers' daemons and pulls their
// answers; a tree is stored. cron runs alice's three cron commands until until holds.
func drillFixture(t *testing.T) (root string, alice *cliNode, peers []*cliNode, cron func(until func() bool)) {
	root = t.TempDir()
	alice = newCLINode(t, root, "alice")
	peers = []*cliNode{newCLINode(t, root, "bob"), newCLINode(t, root, "carol"), newCLINode(t, root, "dave")}
	for _, p := range peers {
		alice.addPeer(p, "active", "passive")
		p.addPeer(alice, "passive", "active")
		p.OK("set_option", "--name", "kbPerFile", "--value", "100")
	}
	alice.OK("set_option", "--name", "kbPerFile", "--value", "100")
	alice.OK("set_option", "--name", "drillBudget", "--value", "1g") // the whole tree: bob's damaged piece is in the sample
	for _, p := range peers {
		d := p.startDaemon()
		t.Cleanup(func() { d.Stop(t, syscall.SIGTERM, 30*time.Second) })
	}
	tree := filepath.Join(root, "tree")
	writeTree(t, tree)
	alice.OK("store", "--name", tree, "--as", "docs")
	cron = func(until func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !until() {
			if time.Now().After(deadline) {
				t.Fatal("cron rounds never got there")
			}
			alice.Run("send_message")
			alice.Run("poll_passives")
			alice.OK("process_message")
			time.Sleep(100 * time.Millisecond)
		}
	}
	cron(func() bool {
		rows := alice.Database("files")
		for _, r := range rows {
			if r["status"] != "stored" {
				return false
			}
		}
		return len(rows) > 120
	})
	return root, alice, peers, cron
}

func drillEnded(alice *cliNode, count int) func() bool {
	return func() bool {
		rows := drillRows(alice)
		return len(rows) == count && rows[0]["state"] != "waiting"
	}
}

// A drill passes and leaves recovery/ alone; after one of bob's pieces is damaged on his
// disk, the next drill fails on it and writes an error report naming bob.
func TestCLI_DrillPassesThenFailsOnATamperedPiece(t *testing.T) {
	_, alice, peers, cron := drillFixture(t)

	if out := alice.OK("drill"); !strings.Contains(out, "asked 3 peers for") {
		t.Fatalf("drill: %q", out)
	}
	if _, errs, code := alice.Run("drill"); code == 0 || !strings.Contains(errs, "still waiting") || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
		t.Errorf("a second drill while one waits: exit %d, %q; want one line saying so", code, errs)
	}
	cron(drillEnded(alice, 1))
	d := drillRows(alice)[0]
	if d["state"] != "done" || d["checked"] != d["files"] || d["bad_pieces"].(float64) != 0 {
		t.Fatalf("first drill: %v", d)
	}
	if text := alice.OK("show_database", "--only", "stats"); !strings.Contains(text, "== drills (1)") {
		t.Errorf("show_database --only stats has no drills table:\n%s", text)
	}
	if des, _ := os.ReadDir(filepath.Join(alice.Dir, "recovery")); len(des) > 0 {
		t.Errorf("a drill wrote into recovery/: %v", des)
	}

	var damaged string
	filepath.WalkDir(filepath.Join(peers[0].Dir, "storage", "alice"), func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || damaged != "" {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil {
			b[len(b)/2] ^= 1
			err = os.WriteFile(p, b, 0o600)
		}
		damaged = filepath.Base(p)
		return err
	})
	if damaged == "" {
		t.Fatal("bob holds no piece of alice's")
	}
	alice.OK("drill", "--json")
	cron(drillEnded(alice, 2))
	d = drillRows(alice)[0]
	if d["state"] != "failed" || d["bad_pieces"].(float64) != 1 || !strings.Contains(fmt.Sprint(d["error"]), damaged+" (bob: ") {
		t.Fatalf("drill after bob's piece %s was damaged: %v", damaged, d)
	}
	reports, _ := filepath.Glob(filepath.Join(alice.Dir, "errorDir", "error_*"))
	found := false
	for _, r := range reports {
		b, _ := os.ReadFile(r)
		found = found || strings.Contains(string(b), "dibs drill failed") && strings.Contains(string(b), "bob: ")
	}
	if !found {
		t.Errorf("no error report of the failed drill in errorDir (%v)", reports)
	}
	if des, _ := os.ReadDir(filepath.Join(alice.Dir, "recovery")); len(des) > 0 {
		t.Errorf("a drill wrote into recovery/: %v", des)
	}
}

// drill --from_kit: a kit of another node's key, or no kit, is one line; alice's own kit
// rebuilds every stored file in a node of its own, checked against alice's books, and
// leaves nothing behind.
func TestCLI_DrillFromKit(t *testing.T) {
	root, alice, peers, cron := drillFixture(t)
	bobKit := filepath.Join(root, "bob-kit.asc")
	peers[0].OK("export_recovery_kit", "--out", bobKit)
	if _, errs, code := alice.Run("drill", "--from_kit", bobKit); code == 0 || !strings.Contains(errs, "would not recover this node") || strings.Count(strings.TrimSpace(errs), "\n") > 0 {
		t.Errorf("drill --from_kit with bob's kit: exit %d, %q", code, errs)
	}
	if _, errs, code := alice.Run("drill", "--from_kit", filepath.Join(root, "nothing.asc")); code == 0 || !strings.Contains(errs, "--from_kit") {
		t.Errorf("drill --from_kit with no such file: exit %d, %q", code, errs)
	}
	kit := filepath.Join(root, "kit.asc")
	alice.OK("export_recovery_kit", "--out", kit)
	if out := alice.OK("drill", "--from_kit", kit); !strings.Contains(out, "asked 3 peers") {
		t.Fatalf("drill --from_kit: %q", out)
	}
	cron(drillEnded(alice, 1))
	d := drillRows(alice)[0]
	files := 0
	for _, r := range alice.Database("files") {
		if r["kind"] == "file" {
			files++
		}
	}
	if d["state"] != "done" || d["from_kit"] != true || d["checked"].(float64) != float64(files) || d["files"] != d["checked"] || d["bytes"].(float64) <= 0 {
		t.Fatalf("drill --from_kit: %v; want done, all %d files checked", d, files)
	}
	for _, dir := range []string{"recovery", "drill.tmp"} {
		if des, _ := os.ReadDir(filepath.Join(alice.Dir, dir)); len(des) > 0 {
			t.Errorf("%s/ holds %v after the drill", dir, des)
		}
	}
	if q, _ := os.ReadDir(filepath.Join(alice.Dir, "quarantine")); len(q) > 0 {
		t.Errorf("alice quarantined %d files", len(q))
	}
}
