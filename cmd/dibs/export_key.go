package main

import (
	"bytes"
	"flag"

	"github.com/dibs-backup/dibs/agent"
)

func init() {
	register(&command{
		name:     "export_key",
		synopsis: "[--out FILE]",
		help:     "Print our public key, ASCII-armored (for a peer's add_peer --key_file, or gpg --import).",
		flags: func(fs *flag.FlagSet) {
			fs.String("out", "", "write the key to FILE instead of stdout")
		},
		run: func(a *App, fs *flag.FlagSet) error {
			return a.withNode(func(n *agent.Node) error {
				var b bytes.Buffer
				if err := n.ID.Public().WriteArmored(&b); err != nil {
					return err
				}
				if out := fs.Lookup("out").Value.String(); out != "" {
					return agent.WriteFileAtomic(out, b.Bytes(), 0o644)
				}
				_, err := a.Stdout.Write(b.Bytes())
				return err
			})
		},
	})
}
