package main

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
)

var sendMessageCmd = &command{
	name:     "send_message",
	synopsis: "[--file F --peer NAME]",
	help: `Deliver the files in outgoing/ by each peer's talk method; files for passive peers wait
for them to pull. With --file and --peer, send that one file of outgoing/NAME/ now.`,
	flags:   withOptions((*sendMessageOptions).declare, runSendMessage),
	reports: true,
}

type sendMessageOptions struct{ file, peer stringFlag } // both or neither

func (o *sendMessageOptions) declare(fs *flag.FlagSet) {
	fs.Var(&o.file, "file", "one file of outgoing/NAME/ (its name or path)")
	fs.Var(&o.peer, "peer", "the peer the file is for")
}

func runSendMessage(a *App, o sendMessageOptions) error {
	if o.file.given != o.peer.given {
		return usagef("--file and --peer go together (dibs help send_message)")
	}
	return a.withNode(func(n *agent.Node) error {
		if o.file.given {
			name := filepath.Base(o.file.value)
			if err := n.SendFile(a.Ctx, o.peer.value, name); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "sent %s to %s\n", name, o.peer.value)
			return nil
		}
		res, err := n.SendOutgoing(a.Ctx, "")
		fmt.Fprintf(a.Stdout, "sent %d, waiting %d, undeliverable %d\n", res.Sent, res.Waiting, res.Quarantined)
		return err
	})
}

var pollPassivesCmd = &command{
	name:     "poll_passives",
	synopsis: "",
	help:     "Pull the files addressed to us: from peers we listen to passively, our IMAP mailbox, our relay.",
	flags:    noFlags(runPollPassives),
	reports:  true,
}

func runPollPassives(a *App) error {
	return a.withNode(func(n *agent.Node) error {
		k, err := n.PollPassives(a.Ctx)
		fmt.Fprintf(a.Stdout, "received %d\n", k)
		return err
	})
}

var processMessageCmd = &command{
	name:     "process_message",
	synopsis: "[--file F]",
	help: `Open, verify and act on every file in incoming/ (or just F). A file that fails a check
goes to quarantine/ with its reason, and processing goes on. A file that cannot be read
for now (a full disk, an I/O error) stays in incoming/ for the next run, and the output
says why.`,
	flags:   withOptions((*processMessageOptions).declare, runProcessMessage),
	reports: true,
}

type processMessageOptions struct{ file string }

func (o *processMessageOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "file", "", "process this message file only")
}

func runProcessMessage(a *App, o processMessageOptions) error {
	return a.withNode(func(n *agent.Node) error {
		var res agent.ProcessResult
		var err error
		if o.file != "" {
			res, err = n.ProcessFile(o.file)
		} else {
			res, err = n.ProcessIncoming(a.Ctx)
		}
		if err != nil {
			return err // a summary of nothing done would read as a success
		}
		fmt.Fprintf(a.Stdout, "processed %d, quarantined %d, left %d\n", res.Processed, res.Quarantined, res.Left)
		if res.Why != "" {
			fmt.Fprintf(a.Stdout, "left in incoming/ for the next run: %s\n", res.Why)
		}
		return nil
	})
}

var exportMessagesCmd = &command{
	name:     "export_messages",
	synopsis: "--dir D [--peer NAME] [--keep]",
	help: `Move outgoing files into D/<recipient key fingerprint>/ for carrying (sneakernet).
--keep leaves a copy in the spool too.`,
	required: []string{"dir"},
	flags:    withOptions((*exportMessagesOptions).declare, runExportMessages),
}

type exportMessagesOptions struct {
	dir, peer string
	keep      bool
}

func (o *exportMessagesOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.dir, "dir", "", "the carried directory (e.g. on a USB stick)")
	fs.StringVar(&o.peer, "peer", "", "only the files for this peer")
	fs.BoolVar(&o.keep, "keep", false, "leave a copy in outgoing/")
}

func runExportMessages(a *App, o exportMessagesOptions) error {
	return a.withNode(func(n *agent.Node) error {
		res, err := n.ExportMessages(o.dir, o.peer, o.keep)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "exported %d\n", res.Exported)
		return nil
	})
}

var importMessagesCmd = &command{
	name:     "import_messages",
	synopsis: "--dir D | --maildir M",
	help: `Take from D the files addressed to us (D/<our fingerprint>/) into incoming/ and leave
the rest; or take the dibs mails out of Maildir M. Then process_message acts on them.`,
	flags: withOptions((*importMessagesOptions).declare, runImportMessages),
}

type importMessagesOptions struct{ dir, maildir stringFlag } // exactly one

func (o *importMessagesOptions) declare(fs *flag.FlagSet) {
	fs.Var(&o.dir, "dir", "a carried directory")
	fs.Var(&o.maildir, "maildir", "a Maildir that receives our mail")
}

func runImportMessages(a *App, o importMessagesOptions) error {
	if o.dir.given == o.maildir.given {
		return usagef("give exactly one of --dir and --maildir (dibs help import_messages)")
	}
	return a.withNode(func(n *agent.Node) error {
		if o.maildir.given {
			k, err := transports.ImportMaildir(n, o.maildir.value)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "imported %d\n", k)
			return nil
		}
		res, err := n.ImportMessages(o.dir.value)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "imported %d, left %d not sealed to us\n", res.Imported, res.Left)
		return nil
	})
}
