package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
	"github.com/dibs-backup/dibs/mailbox/mailtest"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

// Setup declares a grid of nodes.
type Setup struct {
	Nodes []NodeSpec
	// Daemons runs every reachable node's full daemon loops (send, poll, process on their
	// own). Without it the daemons only serve the protocol and the test drives the rest
	// (Node.Cron, Env.Settle).
	Daemons bool
	// Options are set on every node (set_option names).
	Options map[string]string
}

// NodeSpec is one node. Name must be one of pgpmsgtest.Names (its fixed key is used).
type NodeSpec struct {
	Name string
	// NAT nodes accept no connections.
	NAT bool
	// Mail nodes are reached, and reach others, only by mail.
	Mail bool
	// Quota is what each pair of peers grants each other; 0 means 1 GB.
	Quota int64
}

// Env is a running grid.
type Env struct {
	T     testing.TB
	Nodes []*Node
	// Relay is the relay server two NAT'd nodes talk through (nil if none was needed).
	Relay *httptest.Server
	// RelayStore is what Relay keeps: the files waiting there.
	RelayStore *relay.DirStore
	// Mail is the mail server of Mail nodes (nil if none).
	Mail  *mailtest.Server
	net   *network
	setup Setup
}

// Node is one node of the grid.
type Node struct {
	*agent.Node
	Spec   NodeSpec
	Daemon *agent.Daemon
	// URL is the node's daemon base URL.
	URL string
	// Faults decorates every sender of the node.
	Faults *Faults
	// Admin holds what a node not reached by mail mailed dibsAdmin (error reports,
	// recovery summaries); a Mail node mails its dibsAdmin on Env.Mail for real.
	Admin  *AdminBox
	cancel context.CancelFunc
	done   chan struct{}
}

// network is the environment's firewall: connections to or from a cut address fail
// with "connection refused", as they would behind NAT or with a cable pulled.
type network struct {
	mu      sync.Mutex
	blocked map[string]bool   // daemon addresses no one may reach
	down    map[string]bool   // nodes that may not dial out
	lan     map[string]bool   // nodes at home on one LAN: they reach each other's daemons
	owner   map[string]string // daemon address -> node name
}

func (nw *network) dialer(from string) func(ctx context.Context, netw, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, netw, addr string) (net.Conn, error) {
		nw.mu.Lock()
		home := nw.lan[from] && nw.lan[nw.owner[addr]]
		refused := nw.blocked[addr] && !home || nw.down[from]
		nw.mu.Unlock()
		if refused {
			return nil, &net.OpError{Op: "dial", Net: netw, Err: syscall.ECONNREFUSED}
		}
		return d.DialContext(ctx, netw, addr)
	}
}

// New starts the grid; everything stops in t.Cleanup.
func New(t testing.TB, s Setup) *Env {
	t.Helper()
	e := &Env{T: t, net: &network{blocked: map[string]bool{}, down: map[string]bool{}, lan: map[string]bool{}, owner: map[string]string{}}, setup: s}
	root := t.TempDir()
	needRelay, needMail := false, false
	for i, a := range s.Nodes {
		if a.Mail {
			needMail = true
		}
		for _, b := range s.Nodes[i+1:] {
			if a.NAT && b.NAT && !a.Mail && !b.Mail {
				needRelay = true
			}
		}
	}
	var pubs bytes.Buffer
	for _, spec := range s.Nodes {
		pgpmsgtest.Key(t, spec.Name).WriteArmored(&pubs)
	}
	if needRelay {
		allow := filepath.Join(root, "relay-allow.asc")
		if err := os.WriteFile(allow, pubs.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		store, err := relay.OpenDirStore(filepath.Join(root, "relay"), relay.DirOptions{AllowFile: allow})
		if err != nil {
			t.Fatal(err)
		}
		e.RelayStore = store
		e.Relay = httptest.NewServer(relay.NewServer(store, relay.ServerOptions{Version: "test"}))
		t.Cleanup(e.Relay.Close)
	}
	if needMail {
		var users []mailtest.User
		for _, spec := range s.Nodes {
			users = append(users, mailtest.User{Addr: spec.Name + "@dibs.test", Password: spec.Name + "-pw"})
		}
		e.Mail = mailtest.Start(t, users...)
	}
	for _, spec := range s.Nodes {
		e.Nodes = append(e.Nodes, e.startNode(root, spec, s))
	}
	for _, a := range e.Nodes {
		for _, b := range e.Nodes {
			if a != b {
				e.link(a, b)
			}
		}
	}
	if s.Daemons {
		for _, n := range e.Nodes {
			n.run()
		}
	}
	return e
}

func (e *Env) startNode(root string, spec NodeSpec, s Setup) *Node {
	t := e.T
	dir := filepath.Join(root, spec.Name)
	an, err := agent.Init(dir, agent.InitConfig{KeyName: spec.Name + ".dibs@example.org", Admin: spec.Name + "@dibs.test", Identity: pgpmsgtest.Identity(t, spec.Name)})
	if err != nil {
		t.Fatal(err)
	}
	return e.serveNode(an, spec, s, "127.0.0.1:0")
}

// serveNode sets a node's options and transports and starts its daemon on addr.
func (e *Env) serveNode(an *agent.Node, spec NodeSpec, s Setup, addr string) *Node {
	t := e.T
	opts := map[string]string{"pollInterval": "3600", "talkRetryDelay": "0"}
	if e.Relay != nil {
		opts["relayURL"] = e.Relay.URL
	}
	if spec.Mail {
		opts["smtpServer"] = e.Mail.SMTPAddr
		opts["smtpUser"] = spec.Name + "@dibs.test"
		opts["smtpPassword"] = spec.Name + "-pw"
		opts["smtpTLS"] = "starttls"
		opts["imapServer"] = e.Mail.IMAPAddr
		opts["imapUser"] = spec.Name + "@dibs.test"
		opts["imapPassword"] = spec.Name + "-pw"
		opts["imapTLS"] = "starttls"
		opts["mailCAFile"] = e.Mail.CAFile
		opts["dibsAdmin"] = spec.Name + "@dibs.test"
	}
	for k, v := range s.Options {
		opts[k] = v
	}
	for k, v := range opts {
		if err := an.SetOption(k, v); err != nil {
			t.Fatalf("testenv: %s: %v", spec.Name, err)
		}
	}
	n := &Node{Node: an, Spec: spec, Faults: &Faults{}, Admin: &AdminBox{}}
	n.Transports = e.transports(n)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	n.URL = "http://" + ln.Addr().String()
	e.net.mu.Lock()
	e.net.owner[ln.Addr().String()] = spec.Name
	e.net.mu.Unlock()
	if spec.NAT || spec.Mail {
		e.net.blocked[ln.Addr().String()] = true
	}
	n.Daemon, err = an.StartDaemon(ln)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	t.Cleanup(func() {
		n.cancel() // Start replaces the context: stop the one that runs
		if n.done != nil {
			<-n.done
		} else {
			n.Daemon.Run(ctx) // already cancelled: just shuts the server down
		}
		n.Close()
	})
	return n
}

// transports are the node's real transports, with its own firewall rules and faults.
func (e *Env) transports(n *Node) agent.Transports {
	t := transports.Default(n.Node)
	// As the daemon's own client does, a deposit waits for the server's go-ahead before
	// its body: a refusal (an old session token after a Rebuild) is answered, not reset.
	hc := &http.Client{Transport: &http.Transport{DialContext: e.net.dialer(n.Spec.Name), Proxy: nil,
		ExpectContinueTimeout: 2 * time.Second}}
	rc := &relay.Client{ID: n.ID, HTTP: hc}
	t.Senders[agent.Active], t.Senders[agent.Relay] = rc, rc
	t.Pollers[agent.Passive], t.Pollers[agent.Relay] = rc, rc
	for m, s := range t.Senders {
		t.Senders[m] = n.Faults.Wrap(s)
	}
	if !n.Spec.Mail {
		t.Admin = n.Admin
	}
	return t
}

// An AdminBox keeps the mails a node sent its dibsAdmin.
type AdminBox struct {
	mu    sync.Mutex
	mails []AdminMail
}

// AdminMail is one mail to dibsAdmin.
type AdminMail struct{ Subject, Body string }

var _ agent.AdminMailer = (*AdminBox)(nil)

// MailAdmin keeps the mail.
func (b *AdminBox) MailAdmin(_ context.Context, subject, body string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mails = append(b.mails, AdminMail{subject, body})
	return nil
}

// Mails are the mails kept so far, oldest first.
func (b *AdminBox) Mails() []AdminMail {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]AdminMail(nil), b.mails...)
}

// talk is how a sends to b.
func talk(a, b NodeSpec) string {
	switch {
	case a.Mail || b.Mail:
		return agent.Mail
	case !b.NAT:
		return agent.Active
	case !a.NAT:
		return agent.Passive
	default:
		return agent.Relay
	}
}

// listen is how a hears from b: the mirror of b's talk to a.
func listen(a, b NodeSpec) string {
	switch talk(b, a) {
	case agent.Active:
		return agent.Active
	case agent.Passive:
		return agent.Passive
	case agent.Mail:
		return agent.Mail
	default:
		return agent.Relay
	}
}

func (e *Env) link(a, b *Node) {
	t := e.T
	q := b.Spec.Quota
	if q == 0 {
		q = 1_000_000_000
	}
	_, port, _ := net.SplitHostPort(b.Daemon.Addr().String())
	var pn int
	fmt.Sscan(port, &pn)
	tk, ls := talk(a.Spec, b.Spec), listen(a.Spec, b.Spec)
	host := "127.0.0.1"
	var key bytes.Buffer
	b.ID.Public().WriteArmored(&key)
	edit := agent.PeerEdit{
		Email: ptr(b.Spec.Name + "@dibs.test"), Talk: &tk, Listen: &ls, Host: &host, Port: &pn,
		LocalQuota: &q, RemoteQuota: &q, Key: &key,
	}
	if err := a.AddPeer(b.Spec.Name, edit); err != nil {
		t.Fatalf("testenv: %s adds %s: %v", a.Spec.Name, b.Spec.Name, err)
	}
}

func ptr[T any](v T) *T { return &v }

func (n *Node) run() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.done = make(chan struct{})
	go func() {
		defer close(n.done)
		n.Daemon.Run(ctx)
	}()
}

// Node returns the named node.
func (e *Env) Node(name string) *Node {
	for _, n := range e.Nodes {
		if n.Spec.Name == name {
			return n
		}
	}
	e.T.Fatalf("testenv: no node %s", name)
	return nil
}

// Cut takes a node off the network: nobody reaches it, and it reaches nobody.
func (e *Env) Cut(name string) {
	n := e.Node(name)
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	e.net.blocked[n.Daemon.Addr().String()] = true
	e.net.down[name] = true
}

// Mend puts a cut node back (a NAT node stays unreachable from outside).
func (e *Env) Mend(name string) {
	n := e.Node(name)
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	if !n.Spec.NAT && !n.Spec.Mail {
		delete(e.net.blocked, n.Daemon.Addr().String())
	}
	delete(e.net.down, name)
}

// JoinLAN puts nodes on one LAN, as at home behind one router: they reach each other's
// daemons, NAT'd or not (a cut node stays cut). The LAN announcements themselves go by
// the nodes' lanDiscoveryAddress.
func (e *Env) JoinLAN(names ...string) {
	for _, name := range names {
		e.Node(name)
	}
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	for _, name := range names {
		e.net.lan[name] = true
	}
}

// LeaveLAN takes nodes off the LAN: a NAT'd node is unreachable again.
func (e *Env) LeaveLAN(names ...string) {
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	for _, name := range names {
		delete(e.net.lan, name)
	}
}

// Round is what one Cron did.
type Round struct {
	Send     agent.SendResult
	Received int
	Process  agent.ProcessResult
	Err      error
}

// Moved reports whether anything happened.
func (r Round) Moved() bool {
	return r.Send.Sent > 0 || r.Send.Quarantined > 0 || r.Received > 0 || r.Process.Processed > 0 || r.Process.Quarantined > 0
}

// Cron runs what a cron job of a NAT'd node runs: send_message, poll_passives, process_message.
func (n *Node) Cron(ctx context.Context) Round {
	var r Round
	var err1, err2, err3 error
	r.Send, err1 = n.SendOutgoing(ctx, "")
	r.Received, err2 = n.PollPassives(ctx)
	r.Process, err3 = n.ProcessIncoming(ctx)
	if err3 != nil {
		r.Err = err3
	} else if err1 != nil {
		r.Err = err1
	} else {
		r.Err = err2
	}
	return r
}

// Settle runs Cron on every node, round after round, until a round moves nothing and
// leaves no file queued for a peer that can be reached (not Cut) and is sent to (not
// pulled by it), and fails the test if that takes more than rounds rounds. A round in
// which a send failed moves nothing, but it is not the end: cron runs again, and a file
// that never leaves fails the test with what its node's cron returned.
func (e *Env) Settle(ctx context.Context, rounds int) {
	e.T.Helper()
	var stuck []string
	for i := 0; i < rounds; i++ {
		moved := false
		stuck = nil
		for _, n := range e.Nodes {
			r := n.Cron(ctx)
			if r.Moved() {
				moved = true
			}
			if q := e.queued(n); q != "" {
				stuck = append(stuck, fmt.Sprintf("%s queues %s (cron: sent %d, waiting %d, error %v)",
					n.Spec.Name, q, r.Send.Sent, r.Send.Waiting, r.Err))
			}
		}
		if !moved {
			if len(stuck) == 0 {
				return
			}
			e.T.Logf("testenv: round %d moved nothing, but %s: cron again", i+1, strings.Join(stuck, "; "))
		}
	}
	if len(stuck) > 0 {
		e.T.Fatalf("testenv: not settled after %d rounds: %s", rounds, strings.Join(stuck, "; "))
	}
	e.T.Fatalf("testenv: still moving after %d rounds", rounds)
}

// queued says how many files n's outgoing/ holds for each peer that n delivers to and
// that can be reached ("" if none): what a settled grid has sent.
func (e *Env) queued(n *Node) string {
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	if e.net.down[n.Spec.Name] {
		return ""
	}
	var out []string
	for _, p := range e.Nodes {
		if p == n || e.net.down[p.Spec.Name] || talk(n.Spec, p.Spec) == agent.Passive {
			continue
		}
		if es, _ := n.Spool.List(queue.Outgoing(p.Spec.Name)); len(es) > 0 {
			out = append(out, fmt.Sprintf("%d for %s", len(es), p.Spec.Name))
		}
	}
	return strings.Join(out, ", ")
}

// Post queues a message of typ from n to peer.
func (n *Node) Post(peer, typ string) string {
	id, err := n.Node.Post(peer, typ, nil, nil)
	if err != nil {
		panic(err)
	}
	return id
}

// LastHeard is when n last heard from peer (zero if never).
func (n *Node) LastHeard(peer string) time.Time {
	st, err := n.PeerStates()
	if err != nil {
		return time.Time{}
	}
	return st[peer].LastHeard
}

// Quarantined lists n's quarantined files with their reasons.
func (n *Node) Quarantined() map[string]string {
	out := map[string]string{}
	es, _ := n.Spool.List(queue.Quarantine)
	for _, e := range es {
		r, _ := n.Spool.Reason(e.Name)
		out[e.Name] = r
	}
	return out
}

// Start runs the node's full daemon loops (send, poll, process on their own schedules)
// until the test ends.
func (n *Node) Start() { n.run() }
