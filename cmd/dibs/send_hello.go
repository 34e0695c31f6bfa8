package main

import (
	"flag"
	"fmt"

	"github.com/dibs-backup/dibs/agent"
)

var sendHelloCmd = &command{
	name:     "send_hello",
	synopsis: "--host H --port P | --peer NAME",
	help: `With --host and --port: check that a dibs daemon answers there and print its version.
With --peer: queue a HELLO message for that peer by its talk method (and try to deliver it
now); the peer's reply updates its last_heard once process_message has run.`,
	flags: withOptions((*sendHelloOptions).declare, runSendHello),
}

type sendHelloOptions struct {
	host, peer stringFlag // exactly one
	port       int
}

func (o *sendHelloOptions) declare(fs *flag.FlagSet) {
	fs.Var(&o.host, "host", "a daemon's host")
	fs.IntVar(&o.port, "port", 6363, "a daemon's port")
	fs.Var(&o.peer, "peer", "a peer to greet through the message spine")
}

func runSendHello(a *App, o sendHelloOptions) error {
	if o.peer.given == o.host.given {
		return usagef("give either --host (with --port) or --peer (dibs help send_hello)")
	}
	return a.withNode(func(n *agent.Node) error {
		if o.host.given {
			info, err := n.Hello(a.Ctx, o.host.value, o.port)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "%s %s (protocol %d) key %s\n", info.Software, info.Version, info.Protocol, info.Key)
			return nil
		}
		peer := o.peer.value
		id, err := n.Post(peer, agent.TypeHello, nil, nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "queued HELLO %s for %s\n", id, peer)
		if _, err := n.SendOutgoing(a.Ctx, peer); err != nil {
			fmt.Fprintf(a.Stdout, "not delivered yet (%s); send_message retries\n", oneLine(err.Error()))
		}
		return nil
	})
}
