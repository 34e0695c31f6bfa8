package main

import (
	"flag"
	"io"
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
	if len(got) != 2 || got[0] != (storeOptions{"a", "b"}) || got[1] != (storeOptions{"c", ""}) {
		t.Errorf("runs saw %+v", got)
	}
}
