package main

import (
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/dibs-backup/dibs/agent"
)

func init() {
	register(&command{
		name:     "set_option",
		synopsis: "--name OPTION --value V",
		help:     "Write one option into dibsrc.toml. Unknown names and bad values are refused.",
		flags: func(fs *flag.FlagSet) {
			fs.String("name", "", "the option (dibs show_option lists them)")
			fs.String("value", "", "its new value; sizes in DIBS units (5000 = 5M = 5,000,000 bytes)")
		},
		run: func(a *App, fs *flag.FlagSet) error {
			if err := need(fs, "name", "value"); err != nil {
				return err
			}
			name, value := fs.Lookup("name").Value.String(), fs.Lookup("value").Value.String()
			return a.withNode(func(n *agent.Node) error {
				if err := n.SetOption(name, value); err != nil {
					return usagef("%s", err)
				}
				v, _, _ := n.Opts.Show(name)
				fmt.Fprintf(a.Stdout, "%s = %s\n", name, v)
				return nil
			})
		},
	})
	register(&command{
		name:     "show_option",
		synopsis: "[--name OPTION]",
		help:     "Print one option's value, or all of them (a * marks values set in dibsrc.toml).",
		flags:    func(fs *flag.FlagSet) { fs.String("name", "", "the option to print") },
		run: func(a *App, fs *flag.FlagSet) error {
			name := fs.Lookup("name").Value.String()
			return a.withNode(func(n *agent.Node) error {
				if name != "" {
					v, _, err := n.Opts.Show(name)
					if err != nil {
						return usagef("%s", err)
					}
					fmt.Fprintln(a.Stdout, v)
					return nil
				}
				tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
				for _, o := range agent.OptionNames() {
					v, set, _ := n.Opts.Show(o)
					mark := " "
					if set {
						mark = "*"
					}
					fmt.Fprintf(tw, "%s %s\t%s\t# %s\n", mark, o, v, agent.OptionDoc(o))
				}
				return tw.Flush()
			})
		},
	})
}
