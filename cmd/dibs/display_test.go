package main

// Black-box tests of how dibs prints things: counts, sizes, tables, help and option values.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A count of one takes the singular: store of one file says "1 entry", "1 new version",
// "1 object"; unstore says "1 version of 1 name".
func TestCLI_OneIsSingular(t *testing.T) {
	root := t.TempDir()
	alice, bob := newCLINode(t, root, "alice"), newCLINode(t, root, "bob")
	alice.addPeer(bob, "active", "active")
	file := filepath.Join(root, "one.txt")
	if err := os.WriteFile(file, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := alice.OK("store", "--name", file, "--as", "one")
	if !strings.HasPrefix(out, "looked at 1 entry: 0 unchanged, 1 new version (4B in 1 object, 1 piece), 0 deleted locally\n") {
		t.Errorf("store of one file with one peer printed %q", out)
	}
	if out := alice.OK("unstore_file", "--file", "one"); out != "unstored 1 version of 1 name\n" {
		t.Errorf("unstore_file printed %q", out)
	}
}
