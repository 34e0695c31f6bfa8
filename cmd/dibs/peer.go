package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/dibs-backup/dibs/agent"
)

// The peer commands share their flags: add_peer requires some, edit_peer takes any.
func peerFlags(fs *flag.FlagSet) {
	fs.String("peer", "", "the peer's name in our list (e.g. bob or bob.dibs@example.org)")
	fs.String("email", "", "the peer's e-mail address (talk mail sends there)")
	fs.String("comment", "", "a note about the peer")
	sizeVar(fs, "local_quota", "how much we store for the peer (kilobytes, or with k/m/g/t)")
	sizeVar(fs, "remote_quota", "how much the peer stores for us")
	fs.String("talk", "", "how our messages reach the peer: active, passive, mail, relay, carry (or several in order: active,relay)")
	fs.String("listen", "", "how the peer's messages reach us: active, passive, mail, relay, carry")
	fs.String("host", "", "the peer daemon's host (talk active, listen passive)")
	fs.Int("port", 6363, "the peer daemon's port")
	fs.String("key_file", "", "the peer's armored public key (its export_key, or gpg --export --armor)")
	fs.String("relay", "", "relay URL where files for this peer are deposited (default: our relayURL)")
}

// peerEdit collects the peer flags that were given.
func peerEdit(fs *flag.FlagSet) (agent.PeerEdit, func(), error) {
	var e agent.PeerEdit
	set := given(fs)
	str := func(name string) *string {
		if !set[name] {
			return nil
		}
		v := fs.Lookup(name).Value.String()
		return &v
	}
	e.Email, e.Comment, e.Talk, e.Listen, e.Host, e.Relay = str("email"), str("comment"), str("talk"), str("listen"), str("host"), str("relay")
	if set["port"] {
		p, _ := strconv.Atoi(fs.Lookup("port").Value.String())
		e.Port = &p
	}
	if set["local_quota"] {
		q := fs.Lookup("local_quota").Value.(*sizeFlag).bytes
		e.LocalQuota = &q
	}
	if set["remote_quota"] {
		q := fs.Lookup("remote_quota").Value.(*sizeFlag).bytes
		e.RemoteQuota = &q
	}
	done := func() {}
	if set["key_file"] {
		f, err := os.Open(fs.Lookup("key_file").Value.String())
		if err != nil {
			return e, done, fmt.Errorf("--key_file: %w", err)
		}
		e.Key = f
		done = func() { f.Close() }
	}
	return e, done, nil
}

func init() {
	register(&command{
		name:     "add_peer",
		synopsis: "--peer NAME --email EMAIL --local_quota Q --remote_quota Q --talk T --listen L [--comment C --host H --port P --key_file F --relay URL]",
		help: `Add a peer. T and L are active, passive, mail, relay or carry, from our side: talk is how
our messages reach the peer, listen how its messages reach us (the peer sets the mirror image).
carry is for a peer met only by carried files (export_messages / import_messages): no --host.
--key_file is the peer's armored public key; without it nothing can be sent to the peer yet.`,
		flags: peerFlags,
		run: func(a *App, fs *flag.FlagSet) error {
			if err := need(fs, "peer", "email", "local_quota", "remote_quota", "talk", "listen"); err != nil {
				return err
			}
			e, done, err := peerEdit(fs)
			if err != nil {
				return err
			}
			defer done()
			name := fs.Lookup("peer").Value.String()
			return a.withNode(func(n *agent.Node) error {
				if err := n.AddPeer(name, e); err != nil {
					return err
				}
				fmt.Fprintf(a.Stdout, "added peer %s\n", name)
				if e.Key == nil {
					fmt.Fprintf(a.Stderr, "dibs: add_peer: note: %s has no key yet; give it with dibs edit_peer --peer %s --key_file F\n", name, name)
				}
				return nil
			})
		},
	})
	register(&command{
		name:     "edit_peer",
		synopsis: "--peer NAME [any add_peer flag]",
		help:     "Change a peer's entry. A quota cannot go below what is in use.",
		flags:    peerFlags,
		run: func(a *App, fs *flag.FlagSet) error {
			if err := need(fs, "peer"); err != nil {
				return err
			}
			if len(given(fs)) == 1 {
				return usagef("nothing to change: give at least one flag besides --peer (dibs help edit_peer)")
			}
			e, done, err := peerEdit(fs)
			if err != nil {
				return err
			}
			defer done()
			name := fs.Lookup("peer").Value.String()
			return a.withNode(func(n *agent.Node) error {
				if err := n.EditPeer(name, e); err != nil {
					return err
				}
				fmt.Fprintf(a.Stdout, "changed peer %s\n", name)
				return nil
			})
		},
	})
	register(&command{
		name:     "delete_peer",
		synopsis: "--peer NAME",
		help:     "Remove a peer; only when nothing is stored either way.",
		flags:    func(fs *flag.FlagSet) { fs.String("peer", "", "the peer to remove") },
		run: func(a *App, fs *flag.FlagSet) error {
			if err := need(fs, "peer"); err != nil {
				return err
			}
			name := fs.Lookup("peer").Value.String()
			return a.withNode(func(n *agent.Node) error {
				if err := n.DeletePeer(name); err != nil {
					return err
				}
				fmt.Fprintf(a.Stdout, "deleted peer %s\n", name)
				return nil
			})
		},
	})
}
