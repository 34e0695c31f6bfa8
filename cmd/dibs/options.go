package main

import (
	"flag"
	"fmt"

	"github.com/dibs-backup/dibs/agent"
)

var setOptionCmd = &command{
	name:     "set_option",
	synopsis: "--name OPTION --value V",
	help:     "Write one option into dibsrc.toml. Unknown names and bad values are refused.",
	required: []string{"name", "value"},
	flags:    withOptions((*setOptionOptions).declare, runSetOption),
}

type setOptionOptions struct{ name, value string }

func (o *setOptionOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.name, "name", "", "the option (dibs show_option lists them)")
	fs.StringVar(&o.value, "value", "", "its new value; sizes in DIBS units (5000 = 5M = 5,000,000 bytes)")
}

func runSetOption(a *App, o setOptionOptions) error {
	return a.withNode(func(n *agent.Node) error {
		if err := n.SetOption(o.name, o.value); err != nil {
			return usagef("%s", err)
		}
		v, _, _ := n.Opts.Show(o.name)
		fmt.Fprintf(a.Stdout, "%s = %s\n", o.name, v)
		return nil
	})
}

var showOptionCmd = &command{
	name:     "show_option",
	synopsis: "[--name OPTION]",
	help:     "Print one option's value, or all of them (a * marks values set in dibsrc.toml).",
	flags:    withOptions((*showOptionOptions).declare, runShowOption),
}

type showOptionOptions struct{ name string }

func (o *showOptionOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.name, "name", "", "the option to print")
}

func runShowOption(a *App, o showOptionOptions) error {
	return a.withNode(func(n *agent.Node) error {
		if o.name != "" {
			v, _, err := n.Opts.Show(o.name)
			if err != nil {
				return usagef("%s", err)
			}
			fmt.Fprintln(a.Stdout, v)
			return nil
		}
		var table [][]string
		for _, name := range agent.OptionNames() {
			v, set, _ := n.Opts.Show(name)
			mark := " "
			if set {
				mark = "*"
			}
			table = append(table, []string{mark + " " + name, v, "# " + agent.OptionDoc(name)})
		}
		writeTable(a.Stdout, table)
		return nil
	})
}
