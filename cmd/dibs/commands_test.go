package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every command is listed once, and the flags it requires are flags it declares.
func TestCommands_RequiredFlagsAreDeclared(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range commands {
		if seen[c.name] {
			t.Errorf("command %s is listed twice", c.name)
		}
		seen[c.name] = true
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.flags(fs)
		for _, r := range c.required {
			if fs.Lookup(r) == nil {
				t.Errorf("%s requires --%s, which it does not declare", c.name, r)
			}
		}
	}
	if len(commands) < 30 {
		t.Errorf("%d commands", len(commands))
	}
}

// A command's options are its own for each run: flags parsed for one run are not seen
// by the next.
func TestCommands_OptionsAreFreshPerRun(t *testing.T) {
	var got []storeOptions
	c := &command{name: "store", flags: withOptions((*storeOptions).declare, func(_ *App, o storeOptions) error {
		got = append(got, o)
		return nil
	})}
	for _, args := range [][]string{{"--name", "a", "--as", "b"}, {"--name", "c"}} {
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		run := c.flags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		run(nil)
	}
	if len(got) != 2 || got[0] != (storeOptions{name: "a", as: stringFlag{"b", true}}) || got[1] != (storeOptions{name: "c"}) {
		t.Errorf("runs saw %+v", got)
	}
}

// An obsolete option in dibsrc.toml is reported on stderr, once, and the command goes
// on; set_option refuses it as a wrong command line.
func TestCLI_ObsoleteOptionIsAWarning(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		a := &App{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Ctx: context.Background(),
			Getenv: func(k string) string {
				if k == "DIBS_DIR" {
					return dir
				}
				return ""
			}}
		code := a.Main(args)
		return out.String(), errb.String(), code
	}
	if _, errs, code := run("init", "--key", "n.dibs@cli.invalid"); code != exitOK {
		t.Fatalf("init: %d %s", code, errs)
	}
	f, err := os.OpenFile(filepath.Join(dir, "dibsrc.toml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("sleepTime = 10\nkbPerFile = 100\n")
	f.Close()
	out, errs, code := run("show_option", "--name", "kbPerFile")
	if code != exitOK || out != "100\n" {
		t.Errorf("show_option beside an obsolete option: exit %d, stdout %q", code, out)
	}
	if lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n"); len(lines) != 1 ||
		!strings.HasPrefix(lines[0], "dibs: warning: option sleepTime is obsolete (") ||
		!strings.HasSuffix(lines[0], "); remove it from dibsrc.toml") {
		t.Errorf("show_option's stderr %q; want one warning naming sleepTime", errs)
	}
	_, errs, code = run("set_option", "--name", "sleepTime", "--value", "5")
	if code != exitUsage || !strings.Contains(errs, "dibs: set_option: option sleepTime is obsolete (") {
		t.Errorf("set_option of an obsolete option: exit %d, stderr %q", code, errs)
	}
}
