package main

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
)

func init() {
	register(&command{
		name:     "send_message",
		synopsis: "[--file F --peer NAME]",
		help: `Deliver the files in outgoing/ by each peer's talk method; files for passive peers wait
for them to pull. With --file and --peer, send that one file of outgoing/NAME/ now.`,
		flags: func(fs *flag.FlagSet) {
			fs.String("file", "", "one file of outgoing/NAME/ (its name or path)")
			fs.String("peer", "", "the peer the file is for")
		},
		run: func(a *App, fs *flag.FlagSet) error {
			set := given(fs)
			if set["file"] != set["peer"] {
				return usagef("--file and --peer go together (dibs help send_message)")
			}
			return a.withNode(func(n *agent.Node) error {
				if set["file"] {
					name := filepath.Base(fs.Lookup("file").Value.String())
					peer := fs.Lookup("peer").Value.String()
					if err := n.SendFile(a.Ctx, peer, name); err != nil {
						return err
					}
					fmt.Fprintf(a.Stdout, "sent %s to %s\n", name, peer)
					return nil
				}
				res, err := n.SendOutgoing(a.Ctx, "")
				fmt.Fprintf(a.Stdout, "sent %d, waiting %d, undeliverable %d\n", res.Sent, res.Waiting, res.Quarantined)
				return err
			})
		},
	})
	register(&command{
		name:     "poll_passives",
		synopsis: "",
		help:     "Pull the files addressed to us: from peers we listen to passively, our IMAP mailbox, our relay.",
		run: func(a *App, fs *flag.FlagSet) error {
			return a.withNode(func(n *agent.Node) error {
				k, err := n.PollPassives(a.Ctx)
				fmt.Fprintf(a.Stdout, "received %d\n", k)
				return err
			})
		},
	})
	register(&command{
		name:     "process_message",
		synopsis: "[--file F]",
		help: `Open, verify and act on every file in incoming/ (or just F). A file that fails a check
goes to quarantine/ with its reason, and processing goes on.`,
		flags: func(fs *flag.FlagSet) { fs.String("file", "", "process this message file only") },
		run: func(a *App, fs *flag.FlagSet) error {
			return a.withNode(func(n *agent.Node) error {
				var res agent.ProcessResult
				var err error
				if f := fs.Lookup("file").Value.String(); f != "" {
					res, err = n.ProcessFile(f)
				} else {
					res, err = n.ProcessIncoming(a.Ctx)
				}
				fmt.Fprintf(a.Stdout, "processed %d, quarantined %d, left %d\n", res.Processed, res.Quarantined, res.Left)
				return err
			})
		},
	})
	register(&command{
		name:     "export_messages",
		synopsis: "--dir D [--peer NAME] [--keep]",
		help: `Move outgoing files into D/<recipient key fingerprint>/ for carrying (sneakernet).
--keep leaves a copy in the spool too.`,
		flags: func(fs *flag.FlagSet) {
			fs.String("dir", "", "the carried directory (e.g. on a USB stick)")
			fs.String("peer", "", "only the files for this peer")
			fs.Bool("keep", false, "leave a copy in outgoing/")
		},
		run: func(a *App, fs *flag.FlagSet) error {
			if err := need(fs, "dir"); err != nil {
				return err
			}
			return a.withNode(func(n *agent.Node) error {
				res, err := n.ExportMessages(fs.Lookup("dir").Value.String(), fs.Lookup("peer").Value.String(), fs.Lookup("keep").Value.String() == "true")
				fmt.Fprintf(a.Stdout, "exported %d\n", res.Exported)
				return err
			})
		},
	})
	register(&command{
		name:     "import_messages",
		synopsis: "--dir D | --maildir M",
		help: `Take from D the files addressed to us (D/<our fingerprint>/) into incoming/ and leave
the rest; or take the dibs mails out of Maildir M. Then process_message acts on them.`,
		flags: func(fs *flag.FlagSet) {
			fs.String("dir", "", "a carried directory")
			fs.String("maildir", "", "a Maildir that receives our mail")
		},
		run: func(a *App, fs *flag.FlagSet) error {
			set := given(fs)
			if set["dir"] == set["maildir"] {
				return usagef("give exactly one of --dir and --maildir (dibs help import_messages)")
			}
			return a.withNode(func(n *agent.Node) error {
				if set["maildir"] {
					k, err := transports.ImportMaildir(n, fs.Lookup("maildir").Value.String())
					fmt.Fprintf(a.Stdout, "imported %d\n", k)
					return err
				}
				res, err := n.ImportMessages(fs.Lookup("dir").Value.String())
				fmt.Fprintf(a.Stdout, "imported %d, left %d not sealed to us\n", res.Imported, res.Left)
				return err
			})
		},
	})
}
