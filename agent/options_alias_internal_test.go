package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// daemonHost, the name dibs gave daemonAddress first, keeps working: in an old
// dibsrc.toml, in set_option and show_option; a rewritten dibsrc.toml has the new name.
func TestOptions_OldNameIsAnAlias(t *testing.T) {
	dir, n := newTestNode(t, "daemonHost = \"127.0.0.2\"\n")
	if got := optDaemonAddress.Get(n.Opts); got != "127.0.0.2" {
		t.Errorf("daemonHost in dibsrc.toml: daemonAddress reads %q", got)
	}
	if len(n.Warnings) != 0 {
		t.Errorf("an old name alone is no warning: %q", n.Warnings)
	}
	for _, name := range []string{"daemonHost", "daemonAddress"} {
		if v, set, err := n.Opts.Show(name); err != nil || v != "127.0.0.2" || !set {
			t.Errorf("Show(%s) = %q, %v, %v", name, v, set, err)
		}
	}
	if err := n.SetOption("daemonHost", "127.0.0.3"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, optionsFile))
	if err != nil {
		t.Fatal(err)
	}
	if toml := string(b); !strings.Contains(toml, "\ndaemonAddress = \"127.0.0.3\"") || strings.Contains(toml, "daemonHost") {
		t.Errorf("set_option --name daemonHost wrote:\n%s", toml)
	}
	if got := optDaemonAddress.Get(n.Opts); got != "127.0.0.3" {
		t.Errorf("after set_option --name daemonHost: daemonAddress reads %q", got)
	}
	for _, name := range OptionNames() {
		if name == "daemonHost" {
			t.Errorf("show_option lists the old name daemonHost")
		}
	}
}

// A dibsrc.toml with both names reads the new one and says so.
func TestOptions_OldAndNewNameBoth(t *testing.T) {
	_, n := newTestNode(t, "daemonHost = \"127.0.0.2\"\ndaemonAddress = \"127.0.0.3\"\n")
	if got := optDaemonAddress.Get(n.Opts); got != "127.0.0.3" {
		t.Errorf("daemonAddress reads %q, want the new name's 127.0.0.3", got)
	}
	if len(n.Warnings) != 1 || !strings.Contains(n.Warnings[0], "daemonAddress is read; remove daemonHost") {
		t.Errorf("warnings %q", n.Warnings)
	}
}

// daemonAddress is an address without a port: daemonPort is the port.
func TestOptions_DaemonAddressHasNoPort(t *testing.T) {
	_, n := newTestNode(t, "")
	for _, bad := range []string{"127.0.0.1:6363", "[::1]:6363", "my host"} {
		if err := n.SetOption("daemonAddress", bad); err == nil {
			t.Errorf("set_option daemonAddress %q is taken", bad)
		}
	}
	for _, good := range []string{"", "127.0.0.1", "::1", "[::1]", "0.0.0.0", "backup.example.org"} {
		if err := n.SetOption("daemonAddress", good); err != nil {
			t.Errorf("set_option daemonAddress %q: %v", good, err)
		}
	}
}
