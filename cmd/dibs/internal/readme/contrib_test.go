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

// TestContrib_TimersRunTheCrontab: the systemd services the timers start run the
// commands of the README's crontab lines, in the same order.
func TestContrib_TimersRunTheCrontab(t *testing.T) {
	readme := readDoc(t, "README.md")
	cmdName := regexp.MustCompile(`dibs ([a-z_]+)`)
	for schedule, unit := range map[string]string{"*/15 * * * *": "dibs-cron.service", "30 2 * * *": "dibs-daily.service"} {
		var cron []string
		for _, l := range strings.Split(readme, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), schedule); ok {
				for _, m := range cmdName.FindAllStringSubmatch(rest, -1) {
					cron = append(cron, m[1])
				}
			}
		}
		if len(cron) == 0 {
			t.Errorf("README.md has no crontab line %q", schedule)
			continue
		}
		var service []string
		b := readDoc(t, filepath.Join("contrib", "systemd", unit))
		for _, m := range regexp.MustCompile(`(?m)^ExecStart=-?%h/go/bin/dibs ([a-z_]+)`).FindAllStringSubmatch(b, -1) {
			service = append(service, m[1])
		}
		if !slices.Equal(cron, service) {
			t.Errorf("%s runs %v; the README's crontab line %q runs %v", unit, service, schedule, cron)
		}
	}
}
