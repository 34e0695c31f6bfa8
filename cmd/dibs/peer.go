package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/dibs-backup/dibs/agent"
)

// peerOptions are the flags add_peer and edit_peer share: add_peer requires some,
// edit_peer changes what is given.
type peerOptions struct {
	peer                                           string
	email, comment, talk, listen, host, key, relay stringFlag
	localQuota, remoteQuota                        sizeFlag
	port                                           intFlag
}

func (o *peerOptions) declare(fs *flag.FlagSet) {
	o.port.value = 6363
	fs.StringVar(&o.peer, "peer", "", "the peer's name in our list (e.g. bob or bob.dibs@example.org)")
	fs.Var(&o.email, "email", "the peer's e-mail address (talk mail sends there)")
	fs.Var(&o.comment, "comment", "a note about the peer")
	fs.Var(&o.localQuota, "local_quota", "how much we store for the peer (kilobytes, or with k/m/g/t)")
	fs.Var(&o.remoteQuota, "remote_quota", "how much the peer stores for us")
	fs.Var(&o.talk, "talk", "how our messages reach the peer: active, passive, mail, relay, carry (or several in order: active,relay)")
	fs.Var(&o.listen, "listen", "how the peer's messages reach us: active, passive, mail, relay, carry")
	fs.Var(&o.host, "host", "the peer daemon's host (talk active, listen passive)")
	fs.Var(&o.port, "port", "the peer daemon's port")
	fs.Var(&o.key, "key_file", "the peer's armored public key (its export_key, or gpg --export --armor)")
	fs.Var(&o.relay, "relay", "relay URL where files for this peer are deposited (default: our relayURL)")
}

// changes reports whether any flag besides --peer was given.
func (o *peerOptions) changes() bool {
	for _, given := range []bool{o.email.given, o.comment.given, o.talk.given, o.listen.given, o.host.given,
		o.key.given, o.relay.given, o.localQuota.given, o.remoteQuota.given, o.port.given} {
		if given {
			return true
		}
	}
	return false
}

// edit is the change the given flags make; done closes the key file.
func (o *peerOptions) edit() (agent.PeerEdit, func(), error) {
	e := agent.PeerEdit{Email: o.email.ptr(), Comment: o.comment.ptr(), Talk: o.talk.ptr(),
		Listen: o.listen.ptr(), Host: o.host.ptr(), Relay: o.relay.ptr()}
	if o.port.given {
		p := o.port.value
		e.Port = &p
	}
	if o.localQuota.given {
		q := o.localQuota.bytes
		e.LocalQuota = &q
	}
	if o.remoteQuota.given {
		q := o.remoteQuota.bytes
		e.RemoteQuota = &q
	}
	done := func() {}
	if o.key.given {
		f, err := os.Open(o.key.value)
		if err != nil {
			return e, done, fmt.Errorf("--key_file: %w", err)
		}
		e.Key = f
		done = func() { f.Close() }
	}
	return e, done, nil
}

var addPeerCmd = &command{
	name:     "add_peer",
	synopsis: "--peer NAME --email EMAIL --local_quota Q --remote_quota Q --talk T --listen L [--comment C --host H --port P --key_file F --relay URL]",
	help: `Add a peer. T and L are active, passive, mail, relay or carry, from our side: talk is how
our messages reach the peer, listen how its messages reach us (the peer sets the mirror image).
carry is for a peer met only by carried files (export_messages / import_messages): no --host.
--key_file is the peer's armored public key; without it nothing can be sent to the peer yet.`,
	required: []string{"peer", "email", "local_quota", "remote_quota", "talk", "listen"},
	flags:    withOptions((*peerOptions).declare, runAddPeer),
}

func runAddPeer(a *App, o peerOptions) error {
	e, done, err := o.edit()
	if err != nil {
		return err
	}
	defer done()
	return a.withNode(func(n *agent.Node) error {
		if err := n.AddPeer(o.peer, e); err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "added peer %s\n", o.peer)
		if e.Key == nil {
			fmt.Fprintf(a.Stderr, "dibs: add_peer: note: %s has no key yet; give it with dibs edit_peer --peer %s --key_file F\n", o.peer, o.peer)
		}
		return nil
	})
}

var editPeerCmd = &command{
	name:     "edit_peer",
	synopsis: "--peer NAME [any add_peer flag]",
	help:     "Change a peer's entry. A quota cannot go below what is in use.",
	required: []string{"peer"},
	flags:    withOptions((*peerOptions).declare, runEditPeer),
}

func runEditPeer(a *App, o peerOptions) error {
	if !o.changes() {
		return usagef("nothing to change: give at least one flag besides --peer (dibs help edit_peer)")
	}
	e, done, err := o.edit()
	if err != nil {
		return err
	}
	defer done()
	return a.withNode(func(n *agent.Node) error {
		if err := n.EditPeer(o.peer, e); err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "changed peer %s\n", o.peer)
		return nil
	})
}

var deletePeerCmd = &command{
	name:     "delete_peer",
	synopsis: "--peer NAME",
	help:     "Remove a peer; only when nothing is stored either way.",
	required: []string{"peer"},
	flags:    withOptions((*deletePeerOptions).declare, runDeletePeer),
}

type deletePeerOptions struct{ peer string }

func (o *deletePeerOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.peer, "peer", "", "the peer to remove")
}

func runDeletePeer(a *App, o deletePeerOptions) error {
	return a.withNode(func(n *agent.Node) error {
		if err := n.DeletePeer(o.peer); err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "deleted peer %s\n", o.peer)
		return nil
	})
}
