package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/agent/contract"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

// The handshake (protocol.go has the two message types):
//
//  1. The proposer fetches the contract from the server, checks it (its signature, its
//     lifetime, the quotas asked against its range and multiplier, talk and listen), and
//     seals a PEER_CONTRACT_PROPOSAL to the poster's key, which carries its own public key.
//     It is delivered to the poster's daemon as a stranger's file (relay/strangers.go) by
//     propose_contract, or later by send_message.
//  2. The poster's process_message opens it with the key it carries (the one message
//     accepted from a key not in our peer list: it must still be signed by that key,
//     fresh, unseen and small), checks it against the contract as we posted it, and on
//     acceptance adds the proposer as a peer through add_peer's own path; the contract is
//     then taken. Accepted or refused, the PEER_CONTRACT_RESPONSE is sealed to the
//     proposer's key and left at our daemon under the proposal's Message-Id.
//  3. The proposer's poll_passives fetches it, and process_message opens it with the key
//     of the contract (no other signer will do), and on acceptance adds the poster as a
//     peer. A refusal, a forged answer or an expired contract adds no peer on either side.
//
// What strangers can make us write is bounded: at most maxStrangerWaiting of their files
// wait in incoming/ at once, at most maxStrangerPerHour arrive in an hour, each at most
// relay.MaxStrangerFile bytes; a stranger's file that fails any check is removed, not
// quarantined; at most maxAnswers answers are kept.

// Proposed contract states.
const (
	ProposalQueued   = "queued"   // sealed, not delivered yet: send_message retries
	ProposalSent     = "sent"     // at the poster's daemon; poll_passives looks for the answer
	ProposalAccepted = "accepted" // the poster is our peer
	ProposalRefused  = "refused"  // Reason says why
)

// Header fields of the contract messages.
const (
	fieldContract    = "Contract"     // the contract's name
	fieldLocalQuota  = "Local-Quota"  // bytes the poster grants the proposer (the poster's local_quota)
	fieldRemoteQuota = "Remote-Quota" // bytes the proposer grants the poster
	fieldTalk        = "Talk"         // how the poster reaches the proposer (the poster's talk)
	fieldListen      = "Listen"       // how the proposer reaches the poster
	fieldHost        = "Host"         // the proposer's daemon, if any
	fieldPort        = "Port"
	fieldEmail       = "Email"     // the proposer's e-mail
	fieldRelay       = "Relay"     // the proposer's relay, if any
	fieldPeerName    = "Peer-Name" // the name the proposer asks to be listed under
	fieldDecision    = "Decision"  // RESPONSE: accept or refuse
)

const (
	strangerPrefix     = "stranger-" // names of strangers' files in incoming/
	maxStrangerWaiting = 16
	maxStrangerPerHour = 64
	maxAnswers         = 64
	answersDir         = "contracts/answers"
)

// ProposedContract is a proposal we made, as we keep it. Quotas, talk and listen are the
// poster's view, as the proposal carries them.
type ProposedContract struct {
	Contract    contract.Contract `json:"contract"`
	Peer        string            `json:"peer"` // our name for the poster, once a peer
	LocalQuota  int64             `json:"local_quota"`
	RemoteQuota int64             `json:"remote_quota"`
	Talk        string            `json:"talk"`
	Listen      string            `json:"listen"`
	MessageID   string            `json:"message_id"`
	State       string            `json:"state"`
	Reason      string            `json:"reason,omitempty"`
	Proposed    time.Time         `json:"proposed"`
	Answered    time.Time         `json:"answered,omitzero"`
	LastError   string            `json:"last_error,omitempty"`
	Sealed      []byte            `json:"sealed,omitempty"` // the proposal, until delivered
}

// ProposeSpec is what propose_contract asks for; quotas, talk and listen are from the
// poster's point of view, as DIBS had them (local: what the poster gives us).
type ProposeSpec struct {
	Name                    string
	LocalQuota, RemoteQuota int64
	Talk, Listen            string
	Host                    string // our daemon, if the poster is to reach it
	Port                    int
	Peer                    string // our name for the poster
	URL                     string
	PeerHost, PeerEmail     string // instead of the contract's
	PeerPort                int
}

// ProposeContract fetches the named contract, checks the proposal against it, and sends
// it to the poster's daemon. It returns the record; its State is ProposalQueued if the
// poster could not be reached now (send_message tries again).
func (n *Node) ProposeContract(ctx context.Context, s ProposeSpec) (*ProposedContract, error) {
	url := n.ContractServerURL(s.URL)
	if url == NoServer {
		return nil, fmt.Errorf("propose_contract needs a contract server (--url, or defaultContractServerURL)")
	}
	c, err := (&contract.Client{URL: url}).Fetch(ctx, s.Name)
	if errors.Is(err, contract.ErrNotFound) {
		return nil, fmt.Errorf("contract %s is not posted on %s (expired, withdrawn, or never posted)", s.Name, url)
	}
	if err != nil {
		return nil, err
	}
	return n.proposeTo(ctx, c, s)
}

// proposeTo is ProposeContract for a contract at hand.
func (n *Node) proposeTo(ctx context.Context, c *contract.Contract, s ProposeSpec) (*ProposedContract, error) {
	key, err := c.Verify()
	if err != nil {
		return nil, err
	}
	if !n.Now().Before(c.ExpiresAt()) {
		return nil, fmt.Errorf("contract %s expired at %s", c.Name, c.ExpiresAt().UTC().Format(time.RFC3339))
	}
	if key.Fingerprint() == n.Fingerprint() {
		return nil, fmt.Errorf("contract %s is our own", c.Name)
	}
	if s.PeerHost != "" {
		c.Host = s.PeerHost
	}
	if s.PeerPort != 0 {
		c.Port = s.PeerPort
	}
	if s.PeerEmail != "" {
		c.Email = s.PeerEmail
	}
	talk, listen := s.Talk, s.Listen
	if talk == "" {
		talk = c.Talk
		if talk == contract.Any {
			talk = Passive // the poster keeps our files until we pull them: we need no daemon
			if s.Host != "" {
				talk = Active
			}
		}
	}
	if listen == "" {
		listen = c.Listen
		if listen == contract.Any {
			listen = Active
			if c.Host == "" {
				listen = Mail
			}
		}
	}
	if c.Host == "" && listen != Mail {
		return nil, fmt.Errorf("contract %s names no host: a proposal goes to the poster's daemon (--peer_host H --peer_port P), or by mail with --listen mail", c.Name)
	}
	if err := c.Match(s.LocalQuota, s.RemoteQuota, talk, listen); err != nil {
		r, _ := contract.IsRefusal(err)
		return nil, fmt.Errorf("the proposal does not fit contract %s: %s", c.Name, r.Text)
	}
	if p, _, ok := n.PeerByFingerprint(key.Fingerprint()); ok {
		return nil, fmt.Errorf("the poster of %s is our peer %s already", c.Name, p.Name)
	}
	peerName := s.Peer
	if peerName == "" {
		peerName = c.Email
	}
	if _, _, err := n.Peer(peerName); err == nil {
		return nil, fmt.Errorf("we have a peer %s already: name the poster with --peer NAME", peerName)
	}
	// Our record of the poster, as it will be: checked now, not after the poster agreed.
	ours := posterPeer(c, peerName, s.LocalQuota, s.RemoteQuota, talk, listen)
	if err := ours.validate(n.Opts); err != nil {
		return nil, fmt.Errorf("the poster as our peer: %w", err)
	}
	if old, err := n.proposedContract(c.Name); err == nil && (old.State == ProposalQueued || old.State == ProposalSent) {
		return nil, fmt.Errorf("we proposed to %s already (%s); poll_passives and process_message fetch the answer", c.Name, old.State)
	}
	pc, err := n.sealProposal(c, key, peerName, s, talk, listen)
	if err != nil {
		return nil, err
	}
	n.sendProposal(ctx, pc)
	return pc, nil
}

// sealProposal seals the proposal of s, talk and listen to c, and keeps it, queued.
func (n *Node) sealProposal(c *contract.Contract, key *pgpmsg.Key, peerName string, s ProposeSpec, talk, listen string) (*ProposedContract, error) {
	var armored bytes.Buffer
	if err := n.ID.Public().WriteArmored(&armored); err != nil {
		return nil, err
	}
	m := n.newOut(peerName, TypeContractProposal, [][2]string{
		{fieldContract, c.Name},
		{fieldLocalQuota, strconv.FormatInt(s.LocalQuota, 10)},
		{fieldRemoteQuota, strconv.FormatInt(s.RemoteQuota, 10)},
		{fieldTalk, talk}, {fieldListen, listen},
		{fieldHost, s.Host}, {fieldPort, strconv.Itoa(s.Port)},
		{fieldEmail, OptDibsAdmin.Get(n.Opts)}, {fieldRelay, optRelayURL.Get(n.Opts)},
		{fieldPeerName, n.selfPeerName()},
	}, armored.Bytes())
	var sealed bytes.Buffer
	if err := pgpmsg.Seal(&sealed, n.header(m, key), bytes.NewReader(m.Payload), n.ID, key); err != nil {
		return nil, err
	}
	pc := &ProposedContract{
		Contract: *c, Peer: peerName, LocalQuota: s.LocalQuota, RemoteQuota: s.RemoteQuota,
		Talk: talk, Listen: listen, MessageID: m.ID, State: ProposalQueued, Proposed: m.Date, Sealed: sealed.Bytes(),
	}
	return pc, n.saveProposed(pc)
}

// posterPeer is the proposer's record of the poster of c, for a proposal of those
// quotas, talk and listen (the poster's view: mirrored here).
func posterPeer(c *contract.Contract, name string, local, remote int64, talk, listen string) *Peer {
	return &Peer{
		Name: name, Email: c.Email, Comment: "contract " + c.Name, Fingerprint: c.Fingerprint,
		Talk: listen, Listen: talk, Host: c.Host, Port: c.Port, Relay: c.Relay,
		LocalQuota: remote, RemoteQuota: local,
	}
}

// selfPeerName is the name we ask a poster to list us under: our key's e-mail, or a
// prefix of our fingerprint.
func (n *Node) selfPeerName() string {
	name := n.ID.Name()
	if i := strings.LastIndexByte(name, '<'); i >= 0 {
		name = strings.TrimSuffix(name[i+1:], ">")
	}
	if queue.ValidPeer(name) {
		return name
	}
	return string(n.Fingerprint())[:16]
}

// SendProposals delivers the proposals not delivered yet; it returns how many went.
// It also withdraws from their servers the contracts of ours a proposal took.
func (n *Node) SendProposals(ctx context.Context) (int, error) {
	pcs, err := n.ProposedContracts()
	if err != nil {
		return 0, err
	}
	sent := 0
	var errs []error
	if _, err := n.WithdrawTaken(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.sendMailouts(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, pc := range pcs {
		if pc.State != ProposalQueued {
			continue
		}
		if err := n.sendProposal(ctx, pc); err != nil {
			errs = append(errs, fmt.Errorf("proposal to %s: %w", pc.Contract.Name, err))
			continue
		}
		sent++
	}
	return sent, errors.Join(errs...)
}

// sendProposal delivers pc to the poster, to its daemon or by mail as we would reach it
// (pc.Listen), and records the outcome.
func (n *Node) sendProposal(ctx context.Context, pc *ProposedContract) error {
	var err error
	if pc.Listen == Mail {
		err = n.mailStranger(ctx, pc.Contract.Email, pc.Contract.Fingerprint, strangerPrefix+pc.MessageID+".pgp", pc.Sealed)
	} else {
		addr := (&Peer{Host: pc.Contract.Host, Port: pc.Contract.Port}).DaemonURL()
		err = n.strangerClient().SendStranger(ctx, addr, pc.MessageID+".pgp", pc.Sealed)
	}
	if err != nil {
		pc.LastError = err.Error()
		n.saveProposed(pc)
		return err
	}
	pc.State, pc.Sealed, pc.LastError = ProposalSent, nil, ""
	return n.saveProposed(pc)
}

// mailStranger mails data, sealed to the key fp, to addr by our mail transport.
func (n *Node) mailStranger(ctx context.Context, addr, fp, name string, data []byte) error {
	s, ok := n.Transports.Senders[Mail]
	if !ok {
		return fmt.Errorf("no mail transport is configured")
	}
	return s.Send(ctx, queue.Endpoint{Key: fp, Addr: addr}, queue.Message{Name: name, Size: int64(len(data)),
		Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }})
}

// awaitsMail reports whether a contract message may come by mail, though no peer
// listens mail: a proposal to a contract of ours that listens mail, or the answer to a
// proposal of ours whose poster talks mail. Only with a mailbox to poll.
func (n *Node) awaitsMail() bool {
	if OptIMAPServer.Get(n.Opts) == "" {
		return false
	}
	if pcs, err := n.PostedContracts(); err == nil {
		for _, pc := range pcs {
			if pc.State == ContractPosted && n.Now().Before(pc.ExpiresAt()) && (pc.Listen == Mail || pc.Listen == contract.Any) {
				return true
			}
		}
	}
	if pcs, err := n.ProposedContracts(); err == nil {
		for _, pc := range pcs {
			if pc.State == ProposalSent && pc.Talk == Mail {
				return true
			}
		}
	}
	return false
}

// mailout is an answer to mail to a stranger (contracts/answers/<id>.mail).
type mailout struct {
	Email string `json:"email"`
	Key   string `json:"key"`
}

// sendMailouts mails the answers waiting for proposers whose poster (we) talks mail.
func (n *Node) sendMailouts(ctx context.Context) error {
	dir := filepath.Join(n.Dir, answersDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".mail")
		if !ok {
			continue
		}
		var mo mailout
		if err := loadJSON(filepath.Join(dir, e.Name()), &mo); err != nil {
			errs = append(errs, err)
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, id+".pgp"))
		if err == nil {
			err = n.mailStranger(ctx, mo.Email, mo.Key, "answer-"+id+".pgp", data)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("answer to proposal %s by mail: %w", id, err))
			continue
		}
		removeDurable(filepath.Join(dir, e.Name()))
	}
	return errors.Join(errs...)
}

func (n *Node) strangerClient() *relay.Client {
	if rc, ok := n.Transports.Senders[Active].(*relay.Client); ok {
		return rc // the one the options built (relayCAFile, proxies)
	}
	return &relay.Client{ID: n.ID}
}

// pollAnswers fetches the answers to our proposals waiting at the posters' daemons into
// incoming/; it returns how many came.
func (n *Node) pollAnswers(ctx context.Context) (int, error) {
	pcs, err := n.ProposedContracts()
	if err != nil {
		return 0, err
	}
	got := 0
	var errs []error
	for _, pc := range pcs {
		if pc.State != ProposalSent || pc.Contract.Host == "" {
			continue // a poster with no daemon mails its answer
		}
		addr := (&Peer{Host: pc.Contract.Host, Port: pc.Contract.Port}).DaemonURL()
		b, err := n.strangerClient().FetchAnswer(ctx, addr, pc.MessageID+".pgp")
		if errors.Is(err, relay.ErrNotFound) {
			continue // not processed there yet
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("answer to the proposal to %s: %w", pc.Contract.Name, err))
			continue
		}
		if _, err := n.Spool.Put(queue.Incoming, "answer-"+pc.MessageID+".pgp", bytes.NewReader(b), relay.MaxStrangerFile); err != nil {
			errs = append(errs, err)
			continue
		}
		got++
	}
	return got, errors.Join(errs...)
}

// strangerGate bounds what strangers deposit: arrivals in the last hour.
type strangerGate struct {
	mu    sync.Mutex
	times []time.Time
}

var strangerGates sync.Map // node directory → *strangerGate

// depositStranger takes a stranger's file into incoming/, within the bounds.
func (n *Node) depositStranger(name string, size int64, r io.Reader) error {
	if size > relay.MaxStrangerFile {
		return relay.ErrTooLarge
	}
	es, err := n.Spool.List(queue.Incoming)
	if err != nil {
		return err
	}
	waiting := 0
	for _, e := range es {
		if strings.HasPrefix(e.Name, strangerPrefix) {
			waiting++
		}
	}
	if waiting >= maxStrangerWaiting {
		return fmt.Errorf("%d strangers' files wait already: %w", waiting, relay.ErrOverQuota)
	}
	now := n.Now()
	g, _ := strangerGates.LoadOrStore(n.Dir, &strangerGate{})
	strangers := g.(*strangerGate)
	strangers.mu.Lock()
	kept := strangers.times[:0]
	for _, t := range strangers.times {
		if now.Sub(t) < time.Hour {
			kept = append(kept, t)
		}
	}
	strangers.times = kept
	if len(kept) >= maxStrangerPerHour {
		strangers.mu.Unlock()
		return fmt.Errorf("%d strangers' files came in the last hour: %w", len(kept), relay.ErrOverQuota)
	}
	strangers.times = append(strangers.times, now)
	strangers.mu.Unlock()
	_, err = n.Spool.Put(queue.Incoming, strangerPrefix+name, r, relay.MaxStrangerFile)
	return err
}

// openAnswer returns the answer we left for a stranger under name.
func (n *Node) openAnswer(name string) (io.ReadCloser, int64, error) {
	if !strings.HasSuffix(name, ".pgp") {
		return nil, 0, relay.ErrNotFound // the .mail notes beside them are ours
	}
	f, err := os.Open(filepath.Join(n.Dir, answersDir, filepath.Base(name)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, relay.ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// openStranger opens a message whose signer is not a peer: a proposal, with the key it
// carries, or the answer to one of our proposals, with the key of its contract. Any
// other message of a stranger is refused, as is one whose key does not verify it.
func (n *Node) openStranger(c *queue.Claim) (*pgpmsg.Opened, *pgpmsg.Key, error) {
	data, err := io.ReadAll(io.LimitReader(c.Reader(), relay.MaxStrangerFile+1))
	if err != nil {
		return nil, nil, err
	}
	h, payload, err := pgpmsg.PeekUnverified(data, n.ID, relay.MaxStrangerFile)
	if err != nil {
		return nil, nil, err
	}
	var key *pgpmsg.Key
	switch h.Get(pgpmsg.FieldType) {
	case TypeContractProposal:
		key, err = pgpmsg.ReadKey(bytes.NewReader(payload))
		if err != nil {
			return nil, nil, fmt.Errorf("contract proposal: the key it carries: %w", err)
		}
	case TypeContractResponse:
		pc, err := n.proposalByID(h.Get(pgpmsg.FieldInReplyTo))
		if err != nil {
			return nil, nil, err
		}
		key, err = pgpmsg.ReadKey(strings.NewReader(pc.Contract.Key))
		if err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("signer %s is not a peer", h.From())
	}
	msg, err := pgpmsg.Open(bytes.NewReader(data), n.ID, pgpmsg.NewKeyring(key), pgpmsg.OpenOptions{MaxSize: relay.MaxStrangerFile, TempDir: n.TmpDir()})
	if err != nil {
		return nil, nil, err
	}
	return msg, key, nil
}

// handleContractProposal is the poster's side: check the proposal against our contract
// and answer it. A proposal that cannot be read is rejected; one that does not fit is
// refused, with an answer saying why.
func handleContractProposal(r *Request) error {
	n := r.Node
	if r.Stranger == nil {
		// A peer's proposal is one we accepted already (a copy delivered again), or one
		// we were killed in the middle of accepting: the peer was added for it, the
		// contract not yet marked taken. Both are answered as the acceptance they are.
		_, key, err := n.Peer(r.Peer.Name)
		if err != nil || key == nil || r.Peer.Comment != "contract "+r.Header.Get(fieldContract) {
			return reject("contract proposal from %s, who is our peer already", r.Peer.Name)
		}
		r.Stranger = key
	}
	h := r.Header
	name := h.Get(fieldContract)
	local, err1 := strconv.ParseInt(h.Get(fieldLocalQuota), 10, 64)
	remote, err2 := strconv.ParseInt(h.Get(fieldRemoteQuota), 10, 64)
	port, err3 := strconv.Atoi(h.Get(fieldPort))
	if err1 != nil || err2 != nil || err3 != nil || local < 0 || remote < 0 {
		return reject("contract proposal: bad quotas or port")
	}
	refuse := func(reason, text string) error {
		n.Log.Info("contract proposal refused", "contract", name, "from", string(r.Stranger.Fingerprint()), "reason", reason, "why", text)
		return n.answerStranger(r, name, false, reason+": "+text)
	}
	if contract.CheckName(name) != nil {
		return refuse("unknown_contract", "no such contract")
	}
	pc, err := n.postedContract(name)
	if err != nil {
		return refuse("unknown_contract", "we have no contract "+name+" posted")
	}
	peerName := h.Get(fieldPeerName)
	fp := string(r.Stranger.Fingerprint())
	if pc.State == ContractTaken {
		if p, _, err := n.Peer(pc.TakenBy); err == nil && p.Fingerprint == fp {
			return n.answerStranger(r, name, true, "") // our answer was lost: the same again
		}
		return refuse("taken", "contract "+name+" was taken by another proposal")
	}
	if !r.Now.Before(pc.ExpiresAt()) {
		return refuse("expired", "contract "+name+" expired at "+pc.ExpiresAt().UTC().Format(time.RFC3339))
	}
	if err := pc.Match(local, remote, h.Get(fieldTalk), h.Get(fieldListen)); err != nil {
		rf, _ := contract.IsRefusal(err)
		return refuse(rf.Reason, rf.Text)
	}
	if p, _, ok := n.PeerByFingerprint(r.Stranger.Fingerprint()); ok {
		if p.Name != peerName || p.Comment != "contract "+name {
			return refuse("already_peer", "the proposer is our peer "+p.Name+" already")
		}
		// We added it for this very proposal and stopped before marking the contract
		// taken (killed in between): finish the acceptance.
	} else {
		if _, _, err := n.Peer(peerName); err == nil {
			return refuse("name_taken", "we have a peer named "+peerName+" already")
		}
		e := PeerEdit{Email: ptrTo(h.Get(fieldEmail)), Comment: ptrTo("contract " + name), Talk: ptrTo(h.Get(fieldTalk)),
			Listen: ptrTo(h.Get(fieldListen)), Host: ptrTo(h.Get(fieldHost)), Port: &port, Relay: ptrTo(h.Get(fieldRelay)),
			LocalQuota: &local, RemoteQuota: &remote}
		if err := n.addStrangerPeer(peerName, e, r.Stranger); err != nil {
			return refuse("bad_peer", err.Error())
		}
	}
	pc.State, pc.TakenBy = ContractTaken, peerName
	if err := n.savePosted(pc); err != nil {
		return err
	}
	n.Log.Info("contract proposal accepted", "contract", name, "peer", peerName)
	return n.answerStranger(r, name, true, "")
}

// addStrangerPeer adds a peer met through a contract, with its key, by add_peer's path.
func (n *Node) addStrangerPeer(name string, e PeerEdit, key *pgpmsg.Key) error {
	var armored bytes.Buffer
	if err := key.WriteArmored(&armored); err != nil {
		return err
	}
	e.Key = &armored
	return n.AddPeer(name, e)
}

func ptrTo(s string) *string { return &s }

// answerStranger seals our answer to a proposal to the proposer's key and leaves it
// where the proposer fetches it (our daemon's answer path, under the proposal's
// Message-Id), keeping at most maxAnswers.
func (n *Node) answerStranger(r *Request, name string, accept bool, reason string) error {
	decision := "refuse"
	if accept {
		decision = "accept"
	}
	fields := [][2]string{{fieldContract, name}, {fieldDecision, decision}}
	if reason != "" {
		fields = append(fields, [2]string{fieldReason, oneLineText(reason)})
	}
	m := n.newOut("", TypeContractResponse, fields, nil)
	m.InReplyTo = r.Header.Get(pgpmsg.FieldMessageID)
	var sealed bytes.Buffer
	if err := pgpmsg.Seal(&sealed, n.header(m, r.Stranger), bytes.NewReader(nil), n.ID, r.Stranger); err != nil {
		return err
	}
	dir := filepath.Join(n.Dir, answersDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := queue.WriteFileAtomic(filepath.Join(dir, m.InReplyTo+".pgp"), sealed.Bytes(), 0o600); err != nil {
		return err
	}
	if r.Header.Get(fieldTalk) == Mail && contract.CheckEmail(r.Header.Get(fieldEmail)) == nil {
		// We talk mail to the proposer: the answer goes by mail too (SendProposals).
		if err := saveJSON(filepath.Join(dir, m.InReplyTo+".mail"), mailout{Email: r.Header.Get(fieldEmail), Key: string(r.Stranger.Fingerprint())}); err != nil {
			return err
		}
	}
	pruneOldest(dir, 2*maxAnswers)
	return nil
}

func oneLineText(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400]
	}
	return s
}

// pruneOldest removes the oldest files of dir beyond keep.
func pruneOldest(dir string, keep int) {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) <= keep {
		return
	}
	type f struct {
		name string
		mod  time.Time
	}
	var files []f
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			files = append(files, f{e.Name(), info.ModTime()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	for _, x := range files[:max(0, len(files)-keep)] {
		os.Remove(filepath.Join(dir, x.name))
	}
}

// handleContractResponse is the proposer's side: on acceptance the poster becomes our
// peer; a refusal is recorded with its reason.
func handleContractResponse(r *Request) error {
	n := r.Node
	pc, err := n.proposalByID(r.Header.Get(pgpmsg.FieldInReplyTo))
	if err != nil {
		return reject("%v", err)
	}
	if r.Stranger == nil {
		// The poster is a peer already: this answer was handled, and its Message-Id
		// not recorded (a crash between the two), or it is a copy.
		if pc.State == ProposalAccepted && r.Peer.Fingerprint == pc.Contract.Fingerprint {
			return nil
		}
		return reject("contract answer from our peer %s, not the poster of %s", r.Peer.Name, pc.Contract.Name)
	}
	if pc.State == ProposalAccepted {
		if p, _, err := n.Peer(pc.Peer); err == nil && p.Fingerprint == string(r.Stranger.Fingerprint()) {
			return nil // handled once already, its Message-Id not recorded: run again (Batch), or a crash
		}
	}
	if pc.State != ProposalSent && pc.State != ProposalQueued {
		return reject("answer to the proposal to %s, which is %s already", pc.Contract.Name, pc.State)
	}
	pc.Answered = r.Now.UTC()
	switch r.Header.Get(fieldDecision) {
	case "accept":
		p := posterPeer(&pc.Contract, pc.Peer, pc.LocalQuota, pc.RemoteQuota, pc.Talk, pc.Listen)
		e := PeerEdit{Email: &p.Email, Comment: &p.Comment, Talk: &p.Talk, Listen: &p.Listen, Host: &p.Host,
			Port: &p.Port, Relay: &p.Relay, LocalQuota: &p.LocalQuota, RemoteQuota: &p.RemoteQuota}
		if err := n.addStrangerPeer(pc.Peer, e, r.Stranger); err != nil {
			pc.State, pc.Reason = ProposalRefused, "accepted, but we could not add the peer: "+err.Error()
			n.saveProposed(pc)
			return reject("%s", pc.Reason)
		}
		pc.State, pc.Reason = ProposalAccepted, ""
	case "refuse":
		pc.State, pc.Reason = ProposalRefused, r.Header.Get(fieldReason)
	default:
		return reject("contract answer: Decision %q", r.Header.Get(fieldDecision))
	}
	n.Log.Info("contract answer", "contract", pc.Contract.Name, "state", pc.State, "reason", pc.Reason)
	return n.saveProposed(pc)
}

func (n *Node) proposedContract(name string) (*ProposedContract, error) {
	if err := contract.CheckName(name); err != nil {
		return nil, err
	}
	var pc ProposedContract
	if err := loadJSON(filepath.Join(n.Dir, proposedDir, name+".json"), &pc); err != nil {
		return nil, err
	}
	return &pc, nil
}

func (n *Node) saveProposed(pc *ProposedContract) error {
	return saveJSON(filepath.Join(n.Dir, proposedDir, pc.Contract.Name+".json"), pc)
}

// proposalByID is our proposal whose Message-Id is id.
func (n *Node) proposalByID(id string) (*ProposedContract, error) {
	pcs, err := n.ProposedContracts()
	if err != nil {
		return nil, err
	}
	for _, pc := range pcs {
		if id != "" && pc.MessageID == id {
			return pc, nil
		}
	}
	return nil, fmt.Errorf("contract answer to %q, which is no proposal of ours", id)
}

// ProposedContracts returns our proposals, by contract name.
func (n *Node) ProposedContracts() ([]*ProposedContract, error) {
	var out []*ProposedContract
	err := eachJSON(filepath.Join(n.Dir, proposedDir), func(name string) error {
		pc, err := n.proposedContract(name)
		if err == nil {
			out = append(out, pc)
		}
		return err
	})
	return out, err
}

// ProposedRow is one of our proposals as show_database prints it.
type ProposedRow struct {
	Name        string  `json:"name"`
	State       string  `json:"state"` // queued, sent, accepted, refused
	Reason      string  `json:"reason"`
	Peer        string  `json:"peer"`
	LocalQuota  int64   `json:"local_quota"`  // the poster's: what it gives us
	RemoteQuota int64   `json:"remote_quota"` // what we give it
	Talk        string  `json:"talk"`         // the poster's
	Listen      string  `json:"listen"`
	Proposed    string  `json:"proposed"`
	Answered    *string `json:"answered"`
	Expires     string  `json:"expires"`
	LastError   string  `json:"last_error"`
}

func (n *Node) proposedRows() ([]ProposedRow, error) {
	pcs, err := n.ProposedContracts()
	if err != nil {
		return nil, err
	}
	rows := []ProposedRow{}
	for _, pc := range pcs {
		r := ProposedRow{Name: pc.Contract.Name, State: pc.State, Reason: pc.Reason, Peer: pc.Peer,
			LocalQuota: pc.LocalQuota, RemoteQuota: pc.RemoteQuota, Talk: pc.Talk, Listen: pc.Listen,
			Proposed: pc.Proposed.UTC().Format(time.RFC3339), Expires: pc.Contract.ExpiresAt().UTC().Format(time.RFC3339),
			LastError: pc.LastError}
		if !pc.Answered.IsZero() {
			s := pc.Answered.UTC().Format(time.RFC3339)
			r.Answered = &s
		}
		rows = append(rows, r)
	}
	return rows, nil
}
