package main

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/dibs-backup/dibs/agent"
)

func init() {
	register(&command{
		name:     "send_hello",
		synopsis: "--host H --port P | --peer NAME",
		help: `With --host and --port: check that a dibs daemon answers there and print its version.
With --peer: queue a HELLO message for that peer by its talk method (and try to deliver it
now); the peer's reply updates its last_heard once process_message has run.`,
		flags: func(fs *flag.FlagSet) {
			fs.String("host", "", "a daemon's host")
			fs.Int("port", 6363, "a daemon's port")
			fs.String("peer", "", "a peer to greet through the message spine")
		},
		run: func(a *App, fs *flag.FlagSet) error {
			set := given(fs)
			if set["peer"] == set["host"] {
				return usagef("give either --host (with --port) or --peer (dibs help send_hello)")
			}
			return a.withNode(func(n *agent.Node) error {
				if set["host"] {
					port, _ := strconv.Atoi(fs.Lookup("port").Value.String())
					info, err := n.Hello(a.Ctx, fs.Lookup("host").Value.String(), port)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.Stdout, "%s %s (protocol %d) key %s\n", info.Software, info.Version, info.Protocol, info.Key)
					return nil
				}
				peer := fs.Lookup("peer").Value.String()
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
		},
	})
}
