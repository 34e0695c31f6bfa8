package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/dibs-backup/dibs/agent"
)

var exportRecoveryKitCmd = &command{
	name:     "export_recovery_kit",
	synopsis: "--out FILE",
	help: `Write one armored file with the secret key and the peer list: all recover_all needs.
Keep it somewhere safe that is not this machine.`,
	required: []string{"out"},
	flags:    withOptions((*exportKitOptions).declare, runExportRecoveryKit),
}

type exportKitOptions struct{ out string }

func (o *exportKitOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.out, "out", "", "the kit file to write")
}

func runExportRecoveryKit(a *App, o exportKitOptions) error {
	return a.withNode(func(n *agent.Node) error {
		var b bytes.Buffer
		if err := n.ExportRecoveryKit(&b); err != nil {
			return err
		}
		if err := agent.WriteFileAtomic(o.out, b.Bytes(), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "wrote recovery kit %s (it holds your secret key)\n", o.out)
		return nil
	})
}

var importRecoveryKitCmd = &command{
	name:     "import_recovery_kit",
	synopsis: "--file FILE",
	help:     "Set up an empty DIBS_DIR from a recovery kit; then recover_all brings the files back.",
	required: []string{"file"},
	flags:    withOptions((*importKitOptions).declare, runImportRecoveryKit),
}

type importKitOptions struct{ file string }

func (o *importKitOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "file", "", "the kit file")
}

func runImportRecoveryKit(a *App, o importKitOptions) error {
	dir, err := a.dibsDir()
	if err != nil {
		return err
	}
	f, err := os.Open(o.file)
	if err != nil {
		return fmt.Errorf("--file: %w", err)
	}
	defer f.Close()
	n, err := agent.ImportRecoveryKit(dir, f)
	if err != nil {
		return err
	}
	defer n.Close()
	a.printWarnings(n)
	peers, _ := n.Peers()
	fmt.Fprintf(a.Stdout, "imported key %s %s and %s into %s\n", n.ID.Name(), n.Fingerprint(), agent.Count(len(peers), "peer"), n.Dir)
	return nil
}
