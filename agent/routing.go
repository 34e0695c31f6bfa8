package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/queue"
)

// Transports are the ways spool files move, by method name (Active, Relay, Mail for
// talk; Passive, Relay, Mail for listen). cmd builds them from the options
// (package agent/transports); testenv builds its own, wrapped with faults.
type Transports struct {
	Senders map[string]queue.Sender
	Pollers map[string]queue.Poller
	// MailPayload is the largest file that a mail of mailLimit bytes carries: store
	// sizes the pieces for peers who talk mail with it, from mailMaxSize. Nil leaves
	// them to maxMsgSize alone.
	MailPayload func(mailLimit int64) int64
	// Admin mails dibsAdmin (error reports, recovery summaries); nil: nothing is mailed.
	Admin AdminMailer
}

// SendResult counts what one delivery run did.
type SendResult struct {
	Sent        int
	Waiting     int // left queued: passive and carried peers, unreachable peers, retry not yet due
	Quarantined int // no method can ever deliver them
}

// endpoint is where method delivers files for p.
func (n *Node) endpoint(p *Peer, method string) (queue.Endpoint, error) {
	_, key, err := n.Peer(p.Name)
	if err != nil {
		return queue.Endpoint{}, err
	}
	ep := queue.Endpoint{Peer: p.Name}
	if key != nil {
		ep.Key = string(key.Fingerprint())
	}
	switch method {
	case Active:
		ep.Addr = p.DaemonURL()
	case Relay:
		ep.Addr = p.Relay
		if ep.Addr == "" {
			ep.Addr = optRelayURL.Get(n.Opts)
		}
	case Mail:
		ep.Addr = p.Email
	default:
		return ep, fmt.Errorf("talk method %q cannot send", method)
	}
	return ep, nil
}

// SendOutgoing delivers the files in outgoing/ by each peer's talk methods (only peer's, if
// peer is not ""). A file is removed only after its transport reports it stored durably at
// the next hop. A peer's later talk methods are tried for a file once it has waited
// talkRetryDelay per earlier method. Temporary failures leave files queued; a file that
// every method refuses for good goes to quarantine/ with the reasons. The outbox is
// flushed first: replies that a killed command committed but did not seal go too.
func (n *Node) SendOutgoing(ctx context.Context, peer string) (SendResult, error) {
	var res SendResult
	flushErr := n.FlushOutbox()
	names, err := n.Spool.Peers()
	if err != nil {
		return res, errors.Join(flushErr, err)
	}
	prog := n.progress()
	prog.Start(n.outgoingSize(names, peer))
	defer prog.Done()
	errs := []error{flushErr}
	if peer == "" {
		k, err := n.SendProposals(ctx) // contract proposals, to posters not yet peers (proposals.go)
		res.Sent += k
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range names {
		if peer != "" && name != peer {
			continue
		}
		p, _, err := n.Peer(name)
		if err != nil {
			es, _ := n.Spool.List(queue.Outgoing(name))
			res.Waiting += len(es)
			for _, e := range es {
				prog.Add(e.Size, 1)
			}
			continue // files for a deleted peer stay until someone decides
		}
		r, err := n.sendPeer(ctx, p, "")
		res.Sent += r.Sent
		res.Waiting += r.Waiting
		res.Quarantined += r.Quarantined
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", name, err))
		}
	}
	return res, errors.Join(errs...)
}

// outgoingSize is the bytes and the count of the files waiting in outgoing/ for the
// peers names (only peer, if it is not ""): the totals of send_message's progress.
func (n *Node) outgoingSize(names []string, peer string) (bytes int64, files int) {
	for _, name := range names {
		if peer != "" && name != peer {
			continue
		}
		es, _ := n.Spool.List(queue.Outgoing(name))
		for _, e := range es {
			bytes += e.Size
		}
		files += len(es)
	}
	return bytes, files
}

// SendFile delivers one file of outgoing/<peer>/ now (after flushing the outbox, as
// SendOutgoing does).
func (n *Node) SendFile(ctx context.Context, peer, name string) error {
	p, _, err := n.Peer(peer)
	if err != nil {
		return err
	}
	flushErr := n.FlushOutbox()
	r, err := n.sendPeer(ctx, p, name)
	if err != nil {
		return errors.Join(flushErr, err)
	}
	if r.Sent == 0 {
		return errors.Join(flushErr, fmt.Errorf("%s was not sent (talk %s)", name, p.Talk))
	}
	return flushErr
}

func (n *Node) sendPeer(ctx context.Context, p *Peer, only string) (SendResult, error) {
	var res SendResult
	entries, err := n.Spool.List(queue.Outgoing(p.Name))
	if err != nil {
		return res, err
	}
	var methods []string
	for _, m := range p.TalkMethods() {
		if delivers(m) {
			methods = append(methods, m)
		}
	}
	down := map[string]error{}           // methods that failed temporarily in this run: the peer is away
	budget := n.budgetRunFor(p, entries) // budgets and window (budget.go)
	lanURL := n.lanURL(p.Name)           // found on the LAN (lan.go): pushed to there first
	held := methods
	if lanURL != "" {
		held = append([]string{LAN}, methods...)
	}
	var lastErr error
	prog := n.progress()
	for _, e := range entries {
		if only != "" && e.Name != only {
			continue
		}
		prog.Add(e.Size, 1) // sent, waiting or undeliverable: gone through
		if len(held) == 0 || ctx.Err() != nil {
			res.Waiting++
			continue
		}
		if budget.holdsAll(held, e) {
			res.Waiting++
			continue
		}
		c, err := n.Spool.Claim(e.Box, e.Name)
		if err != nil {
			continue // being sent or pulled by someone else
		}
		age := n.Now().Sub(e.ModTime)
		var refusals []string
		sent := false
		tried := 0
		if lanURL != "" && budget.hold(LAN, e) == "" {
			fctx, done := finishing(ctx, sendGrace)
			err := n.sendLAN(fctx, p, lanURL, c)
			done()
			if err == nil {
				sent = true
				n.updatePeerState(p.Name, func(ps *PeerState) { ps.LastMethod, ps.LastSent = LAN, n.Now().UTC() })
				n.Log.Info("sent", "peer", p.Name, "msg", e.Name, "transport", LAN, "url", lanURL)
			} else {
				// Gone from the LAN, or not taking pushes there: its talk methods carry
				// this file and the rest until it announces itself again.
				n.Log.Warn("send on the LAN failed; using the talk methods", "peer", p.Name, "msg", e.Name, "url", lanURL, "err", err)
				n.lanFailed(p.Name)
				lanURL = ""
			}
		}
		for i, m := range methods {
			if sent {
				break
			}
			if i > 0 && age < time.Duration(i)*optTalkRetryDelay.Get(n.Opts) {
				break
			}
			if err := down[m]; err != nil {
				tried++
				continue
			}
			if why := budget.hold(m, e); why != "" {
				n.Log.Debug("held", "peer", p.Name, "msg", e.Name, "transport", m, "why", why)
				continue
			}
			tried++
			fctx, done := finishing(ctx, sendGrace)
			err := n.sendVia(fctx, p, m, c)
			done()
			if err == nil {
				sent = true
				budget.sent(m, e)
				n.updatePeerState(p.Name, func(ps *PeerState) {
					ps.LastMethod, ps.LastSent = m, n.Now().UTC()
					budget.record(ps, m, e)
				})
				n.Log.Info("sent", "peer", p.Name, "msg", e.Name, "transport", m)
				break
			}
			lastErr = err
			n.runs.noteTransportError(m)
			n.Log.Warn("send failed", "peer", p.Name, "msg", e.Name, "transport", m, "err", err)
			n.updatePeerState(p.Name, func(ps *PeerState) {
				ps.LastError, ps.LastErrorAt = m+": "+err.Error(), n.Now().UTC()
			})
			if queue.IsPermanent(err) && fileRefused(err) {
				refusals = append(refusals, m+": "+err.Error())
			} else {
				// Away, or refusing us rather than this file (a relay whose allow file
				// lacks our key yet, a transport not configured): the file waits
				// until that changes, and the other files do not knock again.
				down[m] = err
			}
		}
		switch {
		case sent:
			c.Ack()
			res.Sent++
		case len(methods) > 0 && len(refusals) == len(methods) && tried == len(methods):
			c.Quarantine("undeliverable to " + p.Name + ": " + strings.Join(refusals, "; "))
			res.Quarantined++
		default:
			c.Release()
			res.Waiting++
		}
	}
	if res.Sent == 0 && lastErr != nil {
		return res, lastErr
	}
	return res, nil
}

// fileRefused reports whether a transport refused the file itself, which no retry and no
// change of configuration will send: too large for it, or a name it cannot carry.
func fileRefused(err error) bool {
	return errors.Is(err, queue.ErrTooLarge) || errors.Is(err, queue.ErrBadName)
}

// sendGrace is how long a file already on its way may take to finish once a stop is asked
// for (stop_daemon, SIGTERM, Ctrl-C): the send loop takes no new file, but the one in hand
// goes through rather than being cut off and sent again from the start.
const sendGrace = 30 * time.Second

// finishing returns the context of one transfer under ctx: it ends grace after ctx does,
// or when done is called.
func finishing(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var t *time.Timer
	var mu sync.Mutex
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		t = time.AfterFunc(grace, cancel)
	})
	return fctx, func() {
		stop()
		mu.Lock()
		if t != nil {
			t.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

func (n *Node) sendVia(ctx context.Context, p *Peer, method string, c *queue.Claim) error {
	s, ok := n.Transports.Senders[method]
	if !ok {
		return queue.Permanent(fmt.Errorf("no %s transport is configured", method))
	}
	ep, err := n.endpoint(p, method)
	if err != nil {
		return queue.Permanent(err)
	}
	if ep.Addr == "" {
		return queue.Permanent(fmt.Errorf("no address for talk %s", method))
	}
	return n.sendTo(ctx, p, s, ep, c)
}

// sendTo sends the claimed file to ep by s, at p's bandwidthLimit.
func (n *Node) sendTo(ctx context.Context, p *Peer, s queue.Sender, ep queue.Endpoint, c *queue.Claim) error {
	path := c.Path()
	body := func() (io.ReadCloser, error) { return os.Open(path) }
	if pc := n.pacerFor(p); pc != nil { // bandwidthLimit (budget.go)
		body = func() (io.ReadCloser, error) {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			return pc.reader(ctx, f), nil
		}
	}
	msg := queue.Message{Name: c.Name(), Size: c.Size(), Body: body}
	return s.Send(ctx, ep, msg)
}

// Sink commits a received file into incoming/, refusing files over maxMsgSize. A file
// waiting there under the same name is never replaced: a copy of it is dropped, and a
// different file goes in under a new name beside it.
func (n *Node) Sink() queue.Sink {
	return func(name string, r io.Reader) error {
		if !queue.ValidName(name) {
			name = queue.NewName(n.Now(), ".pgp")
		}
		as, size, err := n.Spool.Receive(name, r, OptMaxMsgSize.Get(n.Opts))
		if err == nil {
			n.progress().Add(size, 1)
		}
		if err == nil && as != name {
			n.Log.Warn("a different file of that name is waiting: both kept", "msg", name, "as", as)
		}
		return err
	}
}

// PollPassives pulls the files addressed to us: from each peer we listen to passively,
// from our relay, and from our mailbox. It returns how many files arrived; one source
// failing does not stop the others. The outbox is flushed first, as by every command
// that moves messages: replies a killed command committed but did not seal then wait in
// outgoing/ for the peers that pull them.
func (n *Node) PollPassives(ctx context.Context) (int, error) {
	flushErr := n.FlushOutbox()
	srcs, err := n.pollSources()
	if err != nil {
		return 0, errors.Join(flushErr, err)
	}
	prog := n.progress()
	prog.Start(0, 0) // what is waiting for us is known once it has arrived (Sink counts it)
	defer prog.Done()
	total := 0
	errs := []error{flushErr}
	for _, s := range srcs {
		k, err := n.pollSource(ctx, s)
		total += k
		errs = append(errs, err)
	}
	k, err := n.pollAnswers(ctx) // answers to our contract proposals (proposals.go)
	total += k
	if err != nil {
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// A pollSource is one place PollPassives pulls files from: a passive peer, our relay,
// our mailbox. The daemon backs off each on its own (Key names it).
type pollSource struct {
	Key    string // the peer's name, "relay" or "mail"
	method string
	ep     queue.Endpoint
}

// pollSources lists where our files wait: each peer we listen to passively, our relay
// and our mailbox.
func (n *Node) pollSources() ([]pollSource, error) {
	peers, err := n.Peers()
	if err != nil {
		return nil, err
	}
	var out []pollSource
	me := string(n.Fingerprint())
	relay, mail := false, false
	for _, p := range peers {
		switch p.Listen {
		case Passive:
			out = append(out, pollSource{p.Name, Passive, queue.Endpoint{Peer: p.Name, Key: me, Addr: p.DaemonURL()}})
		case Relay:
			relay = true
		case Mail:
			mail = true
		case Carry:
			// nothing to poll: its files arrive by import_messages
		}
	}
	if relay || optRelayURL.Get(n.Opts) != "" {
		if u := optRelayURL.Get(n.Opts); u != "" {
			out = append(out, pollSource{Relay, Relay, queue.Endpoint{Key: me, Addr: u}})
		}
	}
	if mail || n.awaitsMail() {
		out = append(out, pollSource{Mail, Mail, queue.Endpoint{Key: me, Addr: OptIMAPServer.Get(n.Opts)}})
	}
	return out, nil
}

// pollSource pulls the files waiting at s and returns how many arrived.
func (n *Node) pollSource(ctx context.Context, s pollSource) (int, error) {
	p, ok := n.Transports.Pollers[s.method]
	if !ok {
		return 0, fmt.Errorf("listen %s: no transport is configured", s.method)
	}
	k, err := p.Poll(ctx, s.ep, n.Sink())
	if err != nil {
		n.Log.Warn("poll failed", "transport", s.method, "peer", s.ep.Peer, "err", err)
		return k, fmt.Errorf("listen %s %s: %w", s.method, s.ep.Addr, err)
	}
	if k > 0 {
		n.Log.Info("polled", "transport", s.method, "peer", s.ep.Peer, "files", k)
	}
	return k, nil
}
