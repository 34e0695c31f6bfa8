package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/dibs-backup/dibs/agent"
)

var postContractCmd = &command{
	name:     "post_contract",
	synopsis: "--min_quota Q --max_quota Q --quota_mult X --lifetime S [--talk T --listen L --contract_name N --url U --host H --port P]",
	help: `Advertise a trade on the contract server: we want between --min_quota and --max_quota
of space, and give back one byte for every X we get (--quota_mult 2 asks twice what it
gives). The contract is signed with our key and lapses after --lifetime seconds. --talk
and --listen (active, passive, mail, relay, or any: default) are how we would reach the
new peer and it us; --host and --port (default: our hostname and daemonPort options)
are where our daemon answers. --url (default: defaultContractServerURL; none: post
nowhere) is the server. Someone answers with propose_contract; a fitting proposal makes
them our peer without add_peer.`,
	required: []string{"min_quota", "max_quota", "quota_mult", "lifetime"},
	flags:    withOptions((*postContractOptions).declare, runPostContract),
}

type postContractOptions struct {
	minQuota, maxQuota sizeFlag
	mult               float64
	lifetime           int64
	talk, listen, name string
	url                string
	host               stringFlag
	port               intFlag
}

func (o *postContractOptions) declare(fs *flag.FlagSet) {
	fs.Var(&o.minQuota, "min_quota", "the least space we want from the peer")
	fs.Var(&o.maxQuota, "max_quota", "the most space we want from the peer")
	fs.Float64Var(&o.mult, "quota_mult", 1, "what we get divided by what we give, at least")
	fs.Int64Var(&o.lifetime, "lifetime", 86400, "seconds the contract stays posted")
	fs.StringVar(&o.talk, "talk", "any", "how we reach the peer: active, passive, mail, relay or any")
	fs.StringVar(&o.listen, "listen", "any", "how the peer reaches us: active, passive, mail, relay or any")
	fs.StringVar(&o.name, "contract_name", "", "the contract's name (default: generated)")
	fs.StringVar(&o.url, "url", "", "the contract server (default: defaultContractServerURL; none: keep it local)")
	fs.Var(&o.host, "host", "where our daemon answers (default: our hostname option)")
	fs.Var(&o.port, "port", "our daemon's port (default: our daemonPort option)")
}

func runPostContract(a *App, o postContractOptions) error {
	return a.withNode(func(n *agent.Node) error {
		pc, err := n.PostContract(a.Ctx, agent.PostSpec{
			Name: o.name, MinQuota: o.minQuota.bytes, MaxQuota: o.maxQuota.bytes, QuotaMult: o.mult,
			Lifetime: o.lifetime, Talk: o.talk, Listen: o.listen, URL: o.url,
			Host: o.host.value, HostGiven: o.host.given, Port: o.port.value, PortGiven: o.port.given,
		})
		if err != nil {
			return err
		}
		where := "on " + pc.URL
		if pc.URL == agent.NoServer {
			where = "locally only (--url none)"
		}
		fmt.Fprintf(a.Stdout, "posted contract %s %s, until %s\n", pc.Name, where, pc.ExpiresAt().UTC().Format(time.RFC3339))
		return nil
	})
}

var unpostContractCmd = &command{
	name:     "unpost_contract",
	synopsis: "--contract_name N [--url U]",
	help: `Withdraw a contract we posted: the server removes it (only a request signed by the key
that posted it can), and we forget it. --url is the server (default: where it was posted);
--url none only forgets it here.`,
	required: []string{"contract_name"},
	flags:    withOptions((*unpostContractOptions).declare, runUnpostContract),
}

type unpostContractOptions struct{ name, url string }

func (o *unpostContractOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.name, "contract_name", "", "the contract to withdraw (show_database --only posted_contracts lists ours)")
	fs.StringVar(&o.url, "url", "", "the contract server (default: where it was posted; none: only forget it here)")
}

func runUnpostContract(a *App, o unpostContractOptions) error {
	return a.withNode(func(n *agent.Node) error {
		if err := n.UnpostContract(a.Ctx, o.name, o.url); err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "unposted contract %s\n", o.name)
		return nil
	})
}

var proposeContractCmd = &command{
	name:     "propose_contract",
	synopsis: "--contract_name N --local_quota Q --remote_quota Q [--talk T --listen L --host H --peer NAME --url U --peer_host H --peer_port P --peer_email E]",
	help: `Answer a posted contract. The quotas, talk and listen are the poster's view, as it would
give them to add_peer: --local_quota is what the poster stores for us, --remote_quota what
we store for it, --talk how the poster reaches us (default passive: it keeps our files
until we pull them, so we need no daemon; active if --host names ours), --listen how we
reach it (default active: we push to its daemon). The contract is fetched from --url
(default defaultContractServerURL), checked, and the proposal sent to the poster's daemon
(send_message tries again if it is away). poll_passives and process_message fetch the
answer; on acceptance the poster is our peer --peer (default: its e-mail), and we are its.
show_database --only proposed_contracts shows each proposal's state.`,
	required: []string{"contract_name", "local_quota", "remote_quota"},
	flags:    withOptions((*proposeContractOptions).declare, runProposeContract),
}

type proposeContractOptions struct {
	name                    string
	localQuota, remoteQuota sizeFlag
	talk, listen, host      string
	peer, url               string
	peerHost, peerEmail     string
	peerPort                int
}

func (o *proposeContractOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.name, "contract_name", "", "the contract to answer (the server lists them at /)")
	fs.Var(&o.localQuota, "local_quota", "what the poster stores for us")
	fs.Var(&o.remoteQuota, "remote_quota", "what we store for the poster")
	fs.StringVar(&o.talk, "talk", "", "how the poster reaches us: active, passive, mail or relay")
	fs.StringVar(&o.listen, "listen", "", "how we reach the poster: active, passive, mail or relay")
	fs.StringVar(&o.host, "host", "", "our daemon's host, if the poster is to connect to it (its port: our daemonPort)")
	fs.StringVar(&o.peer, "peer", "", "our name for the poster once it is our peer (default: its e-mail)")
	fs.StringVar(&o.url, "url", "", "the contract server (default: defaultContractServerURL)")
	fs.StringVar(&o.peerHost, "peer_host", "", "the poster's daemon host, instead of the contract's")
	fs.IntVar(&o.peerPort, "peer_port", 0, "the poster's daemon port, instead of the contract's")
	fs.StringVar(&o.peerEmail, "peer_email", "", "the poster's e-mail, instead of the contract's")
}

func runProposeContract(a *App, o proposeContractOptions) error {
	return a.withNode(func(n *agent.Node) error {
		s := agent.ProposeSpec{
			Name: o.name, LocalQuota: o.localQuota.bytes, RemoteQuota: o.remoteQuota.bytes,
			Talk: o.talk, Listen: o.listen, Host: o.host, Peer: o.peer, URL: o.url,
			PeerHost: o.peerHost, PeerPort: o.peerPort, PeerEmail: o.peerEmail,
		}
		if o.host != "" {
			s.Port = n.DaemonPort()
		}
		pc, err := n.ProposeContract(a.Ctx, s)
		if err != nil {
			return err
		}
		if pc.State == agent.ProposalQueued {
			fmt.Fprintf(a.Stdout, "proposal to %s queued: the poster's daemon is not reachable now (%s); send_message tries again\n", pc.Contract.Name, pc.LastError)
			return nil
		}
		fmt.Fprintf(a.Stdout, "proposed to %s; poll_passives and process_message fetch the answer\n", pc.Contract.Name)
		return nil
	})
}
