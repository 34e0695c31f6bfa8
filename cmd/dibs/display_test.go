package main

// Black-box tests of how dibs prints things: counts, sizes, tables, help and option values.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rivo/uniseg"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
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

// show_database prints every byte count in DIBS units, the stats section's too (it
// printed bytes_there as 2.1136432e+07), and other numbers as whole numbers.
func TestShowDatabase_SizesAndNumbers(t *testing.T) {
	var b strings.Builder
	printSection(&b, "stats", []agent.StatsRow{{Peer: "bob", PiecesThere: 12345678, BytesThere: 21136432, BytesHere: 999}}, false)
	lines := strings.Split(b.String(), "\n")
	if len(lines) < 3 {
		t.Fatalf("stats:\n%s", b.String())
	}
	header, row := strings.Fields(lines[1]), strings.Fields(lines[2])
	got := map[string]string{}
	for i, h := range header {
		got[h] = row[i]
	}
	for field, want := range map[string]string{"pieces_there": "12345678", "bytes_there": "21.14M", "bytes_here": "999B", "avg_response_ms": "0", "last_heard": "-"} {
		if got[field] != want {
			t.Errorf("stats %s = %q, want %q\n%s", field, got[field], want, b.String())
		}
	}
}

// The peers table fits a terminal unless --wide asks for every field; the JSON has
// every field either way.
func TestCLI_ShowDatabasePeersNarrowAndWide(t *testing.T) {
	root := t.TempDir()
	alice, bob := newCLINode(t, root, "alice"), newCLINode(t, root, "bob")
	alice.addPeer(bob, "active", "passive")
	alice.OK("edit_peer", "--peer", "bob", "--talk", "active,relay", "--relay", "https://relay.example.org/dibs",
		"--comment", "Bob's machine in the cellar")
	narrow := alice.OK("show_database", "--only", "peers")
	lines := strings.Split(strings.TrimSpace(narrow), "\n")
	if len(lines) != 3 {
		t.Fatalf("show_database --only peers:\n%s", narrow)
	}
	for _, l := range lines {
		if len(l) > 100 {
			t.Errorf("a line of the peers table is %d columns wide:\n%s", len(l), narrow)
		}
	}
	if f := strings.Fields(lines[2]); len(f) != 7 || f[0] != "bob" || f[3] != "0B/1G" || f[4] != "0B/1G" {
		t.Errorf("peers row %q; want bob, talk, listen, local 0B/1G, remote 0B/1G, last_heard, queue_depth", lines[2])
	}
	wide := alice.OK("show_database", "--only", "peers", "--wide")
	for _, field := range []string{"email", "comment", "fingerprint", "host", "port", "relay", "local_quota", "local_used", "remote_quota", "remote_used", "last_method", "last_error"} {
		if !strings.Contains(strings.SplitN(wide, "\n", 3)[1], field) {
			t.Errorf("--wide has no column %s:\n%s", field, wide)
		}
	}
	if !strings.Contains(wide, "https://relay.example.org/dibs") {
		t.Errorf("--wide does not show the relay:\n%s", wide)
	}
	if js := alice.OK("show_database", "--only", "peers", "--json"); !strings.Contains(js, `"fingerprint"`) || !strings.Contains(js, `"local_quota": 1000000000`) {
		t.Errorf("--json lost fields:\n%s", js)
	}
}

// Columns line up on a terminal whatever the names hold: a wide East Asian character
// takes two cells, a combining accent none.
func TestShowDatabase_PadsByDisplayWidth(t *testing.T) {
	var b strings.Builder
	printSection(&b, "files", []agent.FileRow{
		{Name: "/docs/plain.txt", Version: 1, Size: 10, Pieces: 3, Status: "stored", Kind: "file"},
		{Name: "/docs/東京.txt", Version: 2, Size: 20, Pieces: 3, Status: "stored", Kind: "file"},
		{Name: "/docs/Jose\u0301.txt", Version: 3, Size: 30, Pieces: 3, Status: "stored", Kind: "file"},
	}, false)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")[1:]
	// The version column starts at the same screen column on every line.
	at := func(l string) int {
		i := strings.Index(l, "  ")
		j := len(l) - len(strings.TrimLeft(l[i:], " "))
		return uniseg.StringWidth(l[:j])
	}
	want := at(lines[0])
	for _, l := range lines[1:] {
		if got := at(l); got != want {
			t.Errorf("line %q: its second column starts at screen column %d, the header's at %d\n%s", l, got, want, b.String())
		}
	}
}

// show_option prints a boolean as true or false, as dibsrc.toml holds it (it printed 1);
// set_option still takes DIBS 0.93's 1 and 0.
func TestCLI_ShowOptionBoolean(t *testing.T) {
	n := newCLINode(t, t.TempDir(), "alice")
	if out := n.OK("show_option", "--name", "mailUserOnRecovery"); out != "true\n" {
		t.Errorf("show_option of a boolean defaulting to true printed %q", out)
	}
	if out := n.OK("set_option", "--name", "mailUserOnRecovery", "--value", "0"); out != "mailUserOnRecovery = false\n" {
		t.Errorf("set_option --value 0 printed %q", out)
	}
	if out := n.OK("show_option"); !regexp.MustCompile(`(?m)^\* mailUserOnRecovery +false +# `).MatchString(out) {
		t.Errorf("show_option lists:\n%s", out)
	}
	if _, errs, code := n.Run("set_option", "--name", "mailUserOnRecovery", "--value", "maybe"); code != exitUsage ||
		!strings.Contains(errs, `"maybe" is not true or false`) {
		t.Errorf("set_option --value maybe: exit %d, %q", code, errs)
	}
}

// dibs help sums each command up in the first sentence of its help, whole (it cut the
// help's first line, mid-sentence), wrapped under the summary column.
func TestCLI_HelpSummariesAreWholeSentences(t *testing.T) {
	run := func(args ...string) string {
		out, err := exec.Command(dibsBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dibs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	summaries := map[string]string{}
	last := ""
	for _, l := range strings.Split(run("help"), "\n") {
		if len(l) > 100 {
			t.Errorf("dibs help has a line %d columns wide: %q", len(l), l)
		}
		if m := regexp.MustCompile(`^  ([a-z_]+) +(.*)$`).FindStringSubmatch(l); m != nil {
			last = m[1]
			summaries[last] = m[2]
		} else if strings.HasPrefix(l, strings.Repeat(" ", 23)) && last != "" {
			summaries[last] += " " + strings.TrimSpace(l)
		}
	}
	if len(summaries) < 30 {
		t.Fatalf("dibs help lists %d commands", len(summaries))
	}
	for name, sum := range summaries {
		if !strings.HasSuffix(sum, ".") {
			t.Errorf("dibs help sums %s up as %q, not a whole sentence", name, sum)
		}
		_, body, _ := strings.Cut(run("help", name), "\n\n")
		if text := strings.Join(strings.Fields(body), " "); !strings.HasPrefix(text, sum) {
			t.Errorf("dibs help sums %s up as %q; dibs help %s says %q", name, sum, name, text)
		}
	}
	if want := "Create DIBS_DIR with a default dibsrc.toml and a new OpenPGP key (no passphrase) whose user id is NAME (e.g. alice.dibs@example.org)."; summaries["init"] != want {
		t.Errorf("init's summary %q, want %q", summaries["init"], want)
	}
}

// send_hello --host checks a daemon, and its error says so (it said "relay:").
func TestCLI_SendHelloErrorNamesTheDaemon(t *testing.T) {
	n := newCLINode(t, t.TempDir(), "alice")
	port := clirun.FreePort(t) // nothing listens there
	_, errs, code := n.Run("send_hello", "--host", "127.0.0.1", "--port", fmt.Sprint(port))
	want := fmt.Sprintf("dibs: send_hello: daemon: hello http://127.0.0.1:%d: ", port)
	if code != exitError || !strings.HasPrefix(errs, want) || strings.Contains(errs, "relay") {
		t.Errorf("send_hello to a closed port: exit %d, stderr %q; want it to start %q", code, errs, want)
	}
}
