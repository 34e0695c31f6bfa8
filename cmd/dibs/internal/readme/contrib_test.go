package readme

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestContrib_SystemdUnitsVerify: the units in contrib/systemd pass systemd-analyze
// verify without a word of complaint (it exits 0 on an unknown key or a bad value, so any
// output fails the test), with dibs at the path the units name; and every dibs command
// they run is one the binary has. Skipped where systemd-analyze is not installed.
func TestContrib_SystemdUnitsVerify(t *testing.T) {
	units, err := filepath.Glob(filepath.Join(root, "contrib", "systemd", "*"))
	if err != nil || len(units) < 2 {
		t.Fatalf("contrib/systemd holds %v (%v): want the daemon's unit and the cron node's", units, err)
	}
	commands := helpCommands(t)
	exec1 := regexp.MustCompile(`(?m)^Exec(?:Start|Stop)=-?%h/go/bin/dibs ([a-z_]+)`)
	dir := t.TempDir()
	var names []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range exec1.FindAllStringSubmatch(string(b), -1) {
			if !slices.Contains(commands, m[1]) {
				t.Errorf("%s runs dibs %s: no such command", filepath.Base(u), m[1])
			}
		}
		// systemd-analyze checks that the command exists: the one just built stands
		// for the installed one.
		text := strings.ReplaceAll(string(b), "%h/go/bin/dibs", dibsBin)
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(u)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(u))
	}
	for _, want := range []string{"dibs.service", "dibs-cron.service", "dibs-cron.timer"} {
		if !slices.Contains(names, want) {
			t.Errorf("contrib/systemd has no %s", want)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	cmd := exec.Command(sa, append([]string{"verify"}, names...)...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() > 0 {
		t.Errorf("systemd-analyze verify %v: %v\n%s", names, err, out.String())
	}
}
