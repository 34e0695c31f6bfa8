package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// show_database --only files --json carries each version's durability estimate in
// nines, and a directory's is its tree's; the text table has the column. With two new
// peers on a 1+1 code (a mirror), each file keeps -log10(q^2) nines, q being the prior
// of docs/durability.md.
func TestCLI_ShowDatabaseDurability(t *testing.T) {
	root := t.TempDir()
	alice, bob, carol := newCLINode(t, root, "alice"), newCLINode(t, root, "bob"), newCLINode(t, root, "carol")
	alice.addPeer(bob, "active", "passive")
	alice.addPeer(carol, "active", "passive")
	dir := filepath.Join(root, "d")
	os.MkdirAll(dir, 0o755)
	for _, f := range []string{"a", "b"} {
		os.WriteFile(filepath.Join(dir, f), []byte("content of "+f), 0o644)
	}
	alice.OK("store", "--name", dir, "--as", "/d")
	q := 30 / (3652.5 + 30)
	want := math.Round(-math.Log10(q*q)*100) / 100
	rows := alice.Database("files")
	if len(rows) != 3 {
		t.Fatalf("files: %v", rows)
	}
	for _, r := range rows {
		if got, ok := r["durability"].(float64); !ok || got != want {
			t.Errorf("%v (%v): durability %v, want %v", r["name"], r["kind"], r["durability"], want)
		}
	}
	text := alice.OK("show_database", "--only", "files")
	if lines := strings.Split(text, "\n"); len(lines) < 3 || !strings.Contains(lines[1], "durability") || !strings.Contains(text, " 4.18\n") {
		t.Errorf("the files table has no durability column with %v:\n%s", want, text)
	}
	if got := alice.OK("show_option", "--name", "durabilityTarget"); got != "6\n" {
		t.Errorf("durabilityTarget defaults to %q", got)
	}
}
