package main

import (
	"bytes"
	"flag"

	"github.com/dibs-backup/dibs/agent"
)

var exportKeyCmd = &command{
	name:     "export_key",
	synopsis: "[--out FILE]",
	help:     "Print our public key, ASCII-armored (for a peer's add_peer --key_file, or gpg --import).",
	flags:    withOptions((*exportKeyOptions).declare, runExportKey),
}

type exportKeyOptions struct{ out string }

func (o *exportKeyOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.out, "out", "", "write the key to FILE instead of stdout")
}

func runExportKey(a *App, o exportKeyOptions) error {
	return a.withNode(func(n *agent.Node) error {
		var b bytes.Buffer
		if err := n.ID.Public().WriteArmored(&b); err != nil {
			return err
		}
		if o.out != "" {
			return agent.WriteFileAtomic(o.out, b.Bytes(), 0o644)
		}
		_, err := a.Stdout.Write(b.Bytes())
		return err
	})
}
