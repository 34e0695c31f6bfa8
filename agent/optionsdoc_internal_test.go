package agent

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/options.md from the option table")

// TestOptionReference_UpToDate: docs/options.md is what the option table writes (go
// generate ./agent, or this test with -update, rewrites it).
func TestOptionReference_UpToDate(t *testing.T) {
	path := filepath.Join("..", "docs", "options.md")
	want := optionReference()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("docs/options.md is not what the option table writes: run go generate ./agent")
	}
}

// The reference has a row for each option and each obsolete one, and the machine's
// user and host names stand as USER and HOST, so the file is the same on every machine.
func TestOptionReference_RowsAndPlaceholders(t *testing.T) {
	ref := string(optionReference())
	for _, d := range optionDefs {
		if !strings.Contains(ref, "\n| `"+d.name+"` | ") {
			t.Errorf("no row for %s", d.name)
		}
	}
	for name := range obsoleteOptions {
		if !strings.Contains(ref, "\n| `"+name+"` | ") {
			t.Errorf("no row for the obsolete %s", name)
		}
	}
	for name := range dibs093Options {
		if _, ok := findDef(name); !ok {
			t.Errorf("dibs093Options names %s, which the table does not have", name)
		}
	}
	for _, want := range []string{
		"| `dibsPublicKey` | `USER.dibs@HOST` |", "| `dibsAdmin` | `USER@HOST` |", "| `hostname` | `HOST` |",
		"| `repairAfter` | `604800` (7 days) | seconds, at least 60 |",
		"| `maxMsgSize` | `128000000` (128M) | size, at least 10000 bytes |",
		"| `smtpTLS` | `starttls` | `none`, `starttls` or `tls` |",
		"| `redundantPieces` | `2` | whole number, 1 to 200 |",
		"| `daemonAddress` | — | text |", "| old name `daemonHost` |",
	} {
		if !strings.Contains(ref, want) {
			t.Errorf("the reference lacks %q", want)
		}
	}
	if u, h := userHost(); h != "localhost" && h != "HOST" && strings.Contains(ref, h) {
		t.Errorf("the reference holds this machine's host name %q (user %q)", h, u)
	}
}
