package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A command that fails prints its error and no summary: "looked at 0 entries" or
// "exported 0" read as a success.
func TestCLI_FailureHasNoSummary(t *testing.T) {
	root := t.TempDir()
	alice := newCLINode(t, root, "alice")
	file := filepath.Join(root, "f")
	os.WriteFile(file, []byte("data"), 0o644)
	for _, args := range [][]string{
		{"store", "--name", file}, // no peer yet
		{"export_messages", "--dir", filepath.Join(root, "stick"), "--peer", "unknown"},
		{"process_message", "--file", filepath.Join(root, "missing.pgp")},
		{"import_messages", "--dir", filepath.Join(root, "missing")},
	} {
		out, errs, code := alice.Run(args...)
		if code == 0 || out != "" || !strings.HasPrefix(errs, "dibs: ") {
			t.Errorf("dibs %s: exit %d, stdout %q, stderr %q; want an error and nothing on stdout", strings.Join(args, " "), code, out, errs)
		}
	}
	// store --as "" is a wrong command line, not "store under the absolute path".
	bob := newCLINode(t, root, "bob")
	alice.addPeer(bob, "active", "passive")
	out, errs, code := alice.Run("store", "--name", file, "--as", "")
	if code != exitUsage || out != "" || !strings.Contains(errs, "--as") {
		t.Errorf("store --as \"\": exit %d, stdout %q, stderr %q; want a usage error about --as", code, out, errs)
	}
	if rows := alice.Database("files"); len(rows) != 0 {
		t.Errorf("store --as \"\" stored %v", rows)
	}
}

// A peer added without --key_file cannot take pieces: store says the key is missing,
// not that no peer has room.
func TestCLI_StoreNamesAPeerWithoutKey(t *testing.T) {
	root := t.TempDir()
	alice := newCLINode(t, root, "alice")
	alice.OK("add_peer", "--peer", "bob", "--email", "bob@cli.invalid", "--local_quota", "1g", "--remote_quota", "1g",
		"--talk", "active", "--listen", "passive", "--host", "127.0.0.1", "--port", "1")
	file := filepath.Join(root, "f")
	os.WriteFile(file, []byte("data"), 0o644)
	out, errs, code := alice.Run("store", "--name", file)
	if code == 0 || out != "" || !strings.Contains(errs, "no key for bob") || !strings.Contains(errs, "edit_peer --peer bob --key_file") || strings.Contains(errs, "room") {
		t.Errorf("store with bob keyless: exit %d, stdout %q, stderr %q; want an error naming bob's missing key", code, out, errs)
	}
}

// With one peer, store warns once that losing it loses the files, and show_database says
// so under the files table.
func TestCLI_OnePeerIsWarnedOf(t *testing.T) {
	root := t.TempDir()
	alice, bob := newCLINode(t, root, "alice"), newCLINode(t, root, "bob")
	alice.addPeer(bob, "active", "passive")
	dir := filepath.Join(root, "d")
	os.MkdirAll(dir, 0o755)
	for _, f := range []string{"a", "b"} {
		os.WriteFile(filepath.Join(dir, f), []byte("content of "+f), 0o644)
	}
	out, errs, code := alice.Run("store", "--name", dir)
	if code != 0 || !strings.HasPrefix(out, "looked at 3 entries") {
		t.Fatalf("store: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if want := "dibs: warning: no redundancy: bob is the only peer that can take pieces, so losing bob loses what was stored (add peers)\n"; errs != want {
		t.Errorf("store's stderr %q; want %q", errs, want)
	}
	for _, r := range alice.Database("files") {
		if r["spares"] != 0.0 {
			t.Errorf("%v: spares %v; want 0", r["name"], r["spares"])
		}
	}
	text := alice.OK("show_database", "--only", "files")
	if strings.Count(text, "warning: 3 stored names without a spare piece (spares 0): losing one peer") != 1 {
		t.Errorf("show_database --only files does not warn once of the missing spares:\n%s", text)
	}
	// auto_check says what its upkeep did, after what it stored.
	out = alice.OK("auto_check")
	if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "looked at 0 entries") || !strings.HasPrefix(lines[1], "upkeep: 0 probes timed out, 0 requests sent again; repair: ") {
		t.Errorf("auto_check printed %q; want the store summary, then the upkeep", out)
	}
}
