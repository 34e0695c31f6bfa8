package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/dibs-backup/dibs/agent"
)

func init() {
	register(&command{
		name:     "export_recovery_kit",
		synopsis: "--out FILE",
		help: `Write one armored file with the secret key and the peer list: all recover_all needs.
Keep it somewhere safe that is not this machine.`,
		flags: func(fs *flag.FlagSet) { fs.String("out", "", "the kit file to write") },
		run: func(a *App, fs *flag.FlagSet) error {
			if err := need(fs, "out"); err != nil {
				return err
			}
			out := fs.Lookup("out").Value.String()
			return a.withNode(func(n *agent.Node) error {
				var b bytes.Buffer
				if err := n.ExportRecoveryKit(&b); err != nil {
					return err
				}
				if err := agent.WriteFileAtomic(out, b.Bytes(), 0o600); err != nil {
					return err
				}
				fmt.Fprintf(a.Stdout, "wrote recovery kit %s (it holds your secret key)\n", out)
				return nil
			})
		},
	})
	register(&command{
		name:     "import_recovery_kit",
		synopsis: "--file FILE",
		help:     "Set up an empty DIBS_DIR from a recovery kit; then recover_all brings the files back.",
		flags:    func(fs *flag.FlagSet) { fs.String("file", "", "the kit file") },
		run: func(a *App, fs *flag.FlagSet) error {
			if err := need(fs, "file"); err != nil {
				return err
			}
			dir, err := a.dibsDir()
			if err != nil {
				return err
			}
			f, err := os.Open(fs.Lookup("file").Value.String())
			if err != nil {
				return fmt.Errorf("--file: %w", err)
			}
			defer f.Close()
			n, err := agent.ImportRecoveryKit(dir, f)
			if err != nil {
				return err
			}
			defer n.Close()
			peers, _ := n.Peers()
			fmt.Fprintf(a.Stdout, "imported key %s %s and %d peers into %s\n", n.ID.Name(), n.Fingerprint(), len(peers), n.Dir)
			return nil
		},
	})
}
