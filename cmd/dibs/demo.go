package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/dibs-backup/dibs/agent/demo"
)

var demoCmd = &command{
	name:     "demo",
	synopsis: "[--dir D]",
	help: `Run a small local grid on embedded servers (four nodes with their own keys and daemons
on loopback, one behind NAT), back a tree up, lose a peer and the owner's whole directory,
recover everything from the recovery kit, and report. Exits 0 only if every byte came back.
Without --dir it works in a temporary directory and removes it.`,
	flags: withOptions((*demoOptions).declare, runDemo),
}

type demoOptions struct{ dir string }

func (o *demoOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.dir, "dir", "", "keep the grid in D (must be empty or absent)")
}

func runDemo(a *App, o demoOptions) error {
	dir := o.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "dibs-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if des, err := os.ReadDir(dir); err == nil && len(des) > 0 {
		return usagef("--dir %s is not empty: give a new or empty directory", dir)
	}
	fmt.Fprintf(a.Stdout, "dibs demo in %s\n", dir)
	return demo.Run(a.Ctx, dir, a.Stdout)
}
