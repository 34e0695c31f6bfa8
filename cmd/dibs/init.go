package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/dibs-backup/dibs/agent"
)

var initCmd = &command{
	name:     "init",
	synopsis: "--key NAME [--admin EMAIL] [--secret_key_file F]",
	help: `Create DIBS_DIR with a default dibsrc.toml and a new OpenPGP key (no passphrase)
whose user id is NAME (e.g. alice.dibs@example.org). With --secret_key_file, use an
existing unprotected secret key (gpg --export-secret-keys --armor) instead.
Refuses if DIBS_DIR already has a key.`,
	flags: withOptions((*initOptions).declare, runInit),
}

type initOptions struct {
	key, secretKeyFile stringFlag // one of them is needed
	admin              string
}

func (o *initOptions) declare(fs *flag.FlagSet) {
	fs.Var(&o.key, "key", "the key's name (user id), e.g. alice.dibs@example.org")
	fs.StringVar(&o.admin, "admin", "", "the owner's real e-mail address (dibsAdmin)")
	fs.Var(&o.secretKeyFile, "secret_key_file", "use this armored secret key instead of making one")
}

func runInit(a *App, o initOptions) error {
	if !o.key.given && !o.secretKeyFile.given {
		return usagef("--key NAME is required, e.g. --key alice.dibs@example.org (dibs help init)")
	}
	dir, err := a.dibsDir()
	if err != nil {
		return err
	}
	cfg := agent.InitConfig{KeyName: o.key.value, Admin: o.admin}
	if f := o.secretKeyFile.value; f != "" {
		kf, err := os.Open(f)
		if err != nil {
			return fmt.Errorf("--secret_key_file: %w", err)
		}
		defer kf.Close()
		cfg.SecretKey = kf
	}
	n, err := agent.Init(dir, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	a.printWarnings(n)
	fmt.Fprintf(a.Stdout, "initialized %s\nkey %s %s\n", n.Dir, n.ID.Name(), n.Fingerprint())
	return nil
}
