package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

// contractPair is a poster (alice) with a contract posted locally and a proposer (bob),
// on one clock; files move between them by hand, as the daemon and poll_passives would.
type contractPair struct {
	t               *testing.T
	now             time.Time
	poster, propser *Node
	posted          *PostedContract
	key             *pgpmsg.Key // alice's
}

func newContractPair(t *testing.T) *contractPair {
	t.Helper()
	cp := &contractPair{t: t, now: time.Now()}
	mk := func(name string) *Node {
		n, err := Init(t.TempDir(), InitConfig{KeyName: name + ".dibs@example.org", Identity: pgpmsgtest.Identity(t, name)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		n.Now = func() time.Time { return cp.now }
		if err := n.SetOption("dibsAdmin", name+"-admin@example.org"); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cp.poster, cp.propser = mk("alice"), mk("bob")
	pc, err := cp.poster.PostContract(context.Background(), PostSpec{
		Name: "alice-1", MinQuota: 10e6, MaxQuota: 30e6, QuotaMult: 2, Lifetime: 3600,
		Talk: Passive, Listen: Active, Host: "alice-pc.example.org", HostGiven: true, Port: 6363, PortGiven: true, URL: NoServer,
	})
	if err != nil {
		t.Fatal(err)
	}
	cp.posted = pc
	if cp.key, err = pc.Verify(); err != nil {
		t.Fatal(err)
	}
	return cp
}

// propose seals bob's proposal without the proposer's own checks, so that the poster's
// are what is tested.
func (cp *contractPair) propose(local, remote int64, talk, listen string) *ProposedContract {
	cp.t.Helper()
	c := cp.posted.Contract
	pc, err := cp.propser.sealProposal(&c, cp.key, "alice", ProposeSpec{Name: c.Name, LocalQuota: local, RemoteQuota: remote}, talk, listen)
	if err != nil {
		cp.t.Fatal(err)
	}
	return pc
}

// deliver hands the proposal to the poster as its daemon takes a stranger's file, and
// the poster processes it.
func (cp *contractPair) deliver(pc *ProposedContract) ProcessResult {
	cp.t.Helper()
	if err := cp.poster.depositStranger(pc.MessageID+".pgp", int64(len(pc.Sealed)), bytes.NewReader(pc.Sealed)); err != nil {
		cp.t.Fatal(err)
	}
	res, err := cp.poster.ProcessIncoming(context.Background())
	if err != nil {
		cp.t.Fatal(err)
	}
	return res
}

// answer carries the poster's answer back, as poll_passives would, and bob processes it.
func (cp *contractPair) answer(pc *ProposedContract) *ProposedContract {
	cp.t.Helper()
	rc, size, err := cp.poster.openAnswer(pc.MessageID + ".pgp")
	if err != nil {
		cp.t.Fatalf("no answer to the proposal: %v", err)
	}
	defer rc.Close()
	if _, err := cp.propser.Spool.Put(queue.Incoming, "answer-"+pc.MessageID+".pgp", rc, size); err != nil {
		cp.t.Fatal(err)
	}
	if _, err := cp.propser.ProcessIncoming(context.Background()); err != nil {
		cp.t.Fatal(err)
	}
	got, err := cp.propser.proposedContract(pc.Contract.Name)
	if err != nil {
		cp.t.Fatal(err)
	}
	return got
}

func peerCount(t *testing.T, n *Node) int {
	t.Helper()
	ps, err := n.Peers()
	if err != nil {
		t.Fatal(err)
	}
	return len(ps)
}

// refused checks that the proposal was refused with reason, and nobody is a peer.
func (cp *contractPair) refused(pc *ProposedContract, reason string) {
	cp.t.Helper()
	cp.deliver(pc)
	got := cp.answer(pc)
	if got.State != ProposalRefused || !strings.HasPrefix(got.Reason, reason) {
		cp.t.Errorf("proposal: %s %q, want refused %s", got.State, got.Reason, reason)
	}
	if a, b := peerCount(cp.t, cp.poster), peerCount(cp.t, cp.propser); a != 0 || b != 0 {
		cp.t.Errorf("after a refusal the poster has %d peers, the proposer %d", a, b)
	}
	if _, _, err := cp.poster.Peer("bob.dibs@example.org"); err == nil {
		cp.t.Errorf("a refused proposer is the poster's peer")
	}
	if cp.posted.State != ContractPosted {
		cp.t.Errorf("contract state %s", cp.posted.State)
	}
}

func TestContract_AcceptedOnceReplayChangesNothing(t *testing.T) {
	cp := newContractPair(t)
	pc := cp.propose(10e6, 25e6, Passive, Active)
	data := bytes.Clone(pc.Sealed)
	if res := cp.deliver(pc); res.Processed != 1 {
		t.Fatalf("poster: %+v", res)
	}
	got := cp.answer(pc)
	if got.State != ProposalAccepted {
		t.Fatalf("proposal %s %q", got.State, got.Reason)
	}
	bob, bobKey, err := cp.poster.Peer("bob.dibs@example.org")
	if err != nil || bobKey == nil || bob.LocalQuota != 10e6 || bob.RemoteQuota != 25e6 || bob.Talk != Passive || bob.Listen != Active || bob.Email != "bob-admin@example.org" {
		t.Fatalf("the poster's record of bob: %+v %v", bob, err)
	}
	alice, aliceKey, err := cp.propser.Peer("alice")
	if err != nil || aliceKey == nil || aliceKey.Fingerprint() != cp.key.Fingerprint() || alice.LocalQuota != 25e6 || alice.RemoteQuota != 10e6 ||
		alice.Talk != Active || alice.Listen != Passive || alice.Host != "alice-pc.example.org" || alice.Email != "alice-admin@example.org" {
		t.Fatalf("the proposer's record of alice: %+v %v", alice, err)
	}
	posted, _ := cp.poster.postedContract("alice-1")
	if posted.State != ContractTaken || posted.TakenBy != "bob.dibs@example.org" {
		t.Errorf("posted contract after acceptance: %+v", posted)
	}
	// The same proposal again (a replay, or a copy delivered twice): no second peer.
	pc.Sealed = data
	cp.deliver(pc)
	if n := peerCount(t, cp.poster); n != 1 {
		t.Errorf("after a replayed proposal the poster has %d peers", n)
	}
	if q, _ := cp.poster.Spool.List(queue.Quarantine); len(q) != 0 {
		t.Errorf("a stranger's file was quarantined (it should be dropped): %v", q)
	}
	if in, _ := cp.poster.Spool.List(queue.Incoming); len(in) != 0 {
		t.Errorf("incoming/ keeps %v", in)
	}
	// Even with the replay table emptied (a crash between the handler and the record of
	// its Message-Id), the same proposal and the same answer make no second peer.
	cp.poster.ForgetSeen()
	cp.propser.ForgetSeen()
	cp.deliver(pc)
	if got := cp.answer(pc); got.State != ProposalAccepted {
		t.Errorf("the answer handled twice: %s %q", got.State, got.Reason)
	}
	if a, b := peerCount(t, cp.poster), peerCount(t, cp.propser); a != 1 || b != 1 {
		t.Errorf("handled twice, the poster has %d peers, the proposer %d", a, b)
	}
	if q, _ := cp.propser.Spool.List(queue.Quarantine); len(q) != 0 {
		t.Errorf("the proposer quarantined %v", q)
	}
	// A fresh proposal by someone else to the taken contract is refused.
	carol, err := Init(t.TempDir(), InitConfig{KeyName: "carol.dibs@example.org", Identity: pgpmsgtest.Identity(t, "carol")})
	if err != nil {
		t.Fatal(err)
	}
	defer carol.Close()
	carol.Now = cp.propser.Now
	c := cp.posted.Contract
	pc2, err := carol.sealProposal(&c, cp.key, "alice", ProposeSpec{LocalQuota: 10e6, RemoteQuota: 25e6}, Passive, Active)
	if err != nil {
		t.Fatal(err)
	}
	cp.deliver(pc2)
	rc, _, err := cp.poster.openAnswer(pc2.MessageID + ".pgp")
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if n := peerCount(t, cp.poster); n != 1 {
		t.Errorf("a second proposal to a taken contract made %d peers", n)
	}
}

func TestContract_Refusals(t *testing.T) {
	t.Run("quota out of range", func(t *testing.T) {
		cp := newContractPair(t)
		cp.refused(cp.propose(10e6, 50e6, Passive, Active), "remote_quota_range")
	})
	t.Run("bad multiplier", func(t *testing.T) {
		cp := newContractPair(t)
		cp.refused(cp.propose(20e6, 25e6, Passive, Active), "bad_quota_mult")
	})
	t.Run("wrong talk type", func(t *testing.T) {
		cp := newContractPair(t)
		cp.refused(cp.propose(10e6, 25e6, Mail, Active), "bad_talk_type")
	})
	t.Run("expired contract", func(t *testing.T) {
		cp := newContractPair(t)
		pc := cp.propose(10e6, 25e6, Passive, Active)
		cp.now = cp.now.Add(2 * time.Hour) // within maxMsgAge: the message is fresh, the contract is not
		cp.refused(pc, "expired")
	})
	t.Run("unposted contract", func(t *testing.T) {
		cp := newContractPair(t)
		pc := cp.propose(10e6, 25e6, Passive, Active)
		if err := cp.poster.UnpostContract(context.Background(), "alice-1", NoServer); err != nil {
			t.Fatal(err)
		}
		cp.refused(pc, "unknown_contract")
	})
}

// The proposer refuses, before sending anything, a proposal that does not fit, and a
// contract whose lifetime is over.
func TestContract_ProposerChecksFirst(t *testing.T) {
	cp := newContractPair(t)
	c := cp.posted.Contract
	for _, tc := range []struct {
		s    ProposeSpec
		want string
	}{
		{ProposeSpec{LocalQuota: 10e6, RemoteQuota: 50e6}, "outside"},
		{ProposeSpec{LocalQuota: 20e6, RemoteQuota: 25e6}, "times"},
		{ProposeSpec{LocalQuota: 10e6, RemoteQuota: 25e6, Talk: Mail}, "talk"},
	} {
		if _, err := cp.propser.proposeTo(context.Background(), &c, tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.s, err, tc.want)
		}
	}
	cp.now = cp.now.Add(2 * time.Hour)
	if _, err := cp.propser.proposeTo(context.Background(), &c, ProposeSpec{LocalQuota: 10e6, RemoteQuota: 25e6}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("proposing to an expired contract: %v", err)
	}
	if pcs, _ := cp.propser.ProposedContracts(); len(pcs) != 0 {
		t.Errorf("refused proposals were kept: %v", pcs)
	}
	// A contract whose fields were changed after signing is refused too.
	c.MaxQuota = 100e6
	if _, err := cp.propser.proposeTo(context.Background(), &c, ProposeSpec{LocalQuota: 10e6, RemoteQuota: 25e6}); err == nil {
		t.Errorf("a contract whose signature does not cover it was answered")
	}
}

// An answer not signed by the contract's key makes nobody a peer.
func TestContract_ForgedAnswer(t *testing.T) {
	cp := newContractPair(t)
	pc := cp.propose(10e6, 25e6, Passive, Active)
	mallory := pgpmsgtest.Identity(t, "mallory")
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, ProtocolVersion)
	h.Set(pgpmsg.FieldType, TypeContractResponse)
	h.Set(pgpmsg.FieldFrom, string(mallory.Fingerprint()))
	h.Set(pgpmsg.FieldTo, string(cp.propser.Fingerprint()))
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, cp.now.UTC().Format(time.RFC3339))
	h.Set(pgpmsg.FieldInReplyTo, pc.MessageID)
	h.Set(fieldContract, "alice-1")
	h.Set(fieldDecision, "accept")
	var forged bytes.Buffer
	if err := pgpmsg.Seal(&forged, h, bytes.NewReader(nil), mallory, cp.propser.ID.Public()); err != nil {
		t.Fatal(err)
	}
	cp.propser.Spool.Put(queue.Incoming, "answer-forged.pgp", bytes.NewReader(forged.Bytes()), 0)
	res, err := cp.propser.ProcessIncoming(context.Background())
	if err != nil || res.Processed != 0 || res.Quarantined != 1 {
		t.Fatalf("forged answers: %+v, %v", res, err)
	}
	if n := peerCount(t, cp.propser); n != 0 {
		t.Errorf("a forged answer made %d peers", n)
	}
	if got, _ := cp.propser.proposedContract("alice-1"); got.State != ProposalQueued {
		t.Errorf("after forged answers the proposal is %s", got.State)
	}
	// The real answer still works.
	cp.deliver(pc)
	if got := cp.answer(pc); got.State != ProposalAccepted {
		t.Errorf("the real answer after forged ones: %s %q", got.State, got.Reason)
	}
}

// Strangers can make us write only a bounded amount: a few small files at a time, and
// any other kind of message from a stranger is dropped, not kept.
func TestContract_StrangersBounded(t *testing.T) {
	cp := newContractPair(t)
	big := make([]byte, relay.MaxStrangerFile+1)
	if err := cp.poster.depositStranger("big.pgp", int64(len(big)), bytes.NewReader(big)); !errors.Is(err, relay.ErrTooLarge) {
		t.Errorf("an oversized stranger's file: %v", err)
	}
	for i := range maxStrangerWaiting {
		name := "junk-" + string(rune('a'+i)) + ".pgp"
		if err := cp.poster.depositStranger(name, 5, strings.NewReader("junk!")); err != nil {
			t.Fatal(err)
		}
	}
	if err := cp.poster.depositStranger("one-more.pgp", 5, strings.NewReader("junk!")); !errors.Is(err, relay.ErrOverQuota) {
		t.Errorf("a stranger's file past %d waiting: %v", maxStrangerWaiting, err)
	}
	// A HELLO from a stranger, well sealed, is no proposal.
	m := cp.propser.newOut("alice", TypeHello, nil, nil)
	var hello bytes.Buffer
	pgpmsg.Seal(&hello, cp.propser.header(m, cp.key), bytes.NewReader(nil), cp.propser.ID, cp.key)
	cp.poster.Spool.Put(queue.Incoming, strangerPrefix+"hello.pgp", bytes.NewReader(hello.Bytes()), 0)
	res, err := cp.poster.ProcessIncoming(context.Background())
	if err != nil || res.Processed != 0 {
		t.Fatalf("junk from strangers: %+v %v", res, err)
	}
	if q, _ := cp.poster.Spool.List(queue.Quarantine); len(q) != 0 {
		t.Errorf("strangers' junk is kept in quarantine: %d files", len(q))
	}
	if in, _ := cp.poster.Spool.List(queue.Incoming); len(in) != 0 {
		t.Errorf("strangers' junk is left in incoming: %d files", len(in))
	}
	if _, err := os.Stat(filepath.Join(cp.poster.Dir, answersDir)); err == nil {
		t.Errorf("junk was answered")
	}
}

// A post names what to fix when a default it took is no address.
func TestContract_PostSaysWhichOptionToFix(t *testing.T) {
	cp := newContractPair(t)
	n := cp.poster
	if err := n.SetOption("dibsAdmin", "root@bad_host"); err != nil {
		t.Fatal(err)
	}
	_, err := n.PostContract(context.Background(), PostSpec{MinQuota: 1e6, MaxQuota: 2e6, QuotaMult: 1, Lifetime: 600, Host: "h.example.org", HostGiven: true, URL: NoServer})
	if err == nil || !strings.Contains(err.Error(), "dibsAdmin") {
		t.Errorf("post with a bad dibsAdmin: %v", err)
	}
	n.SetOption("dibsAdmin", "root@good-host.example.org")
	n.SetOption("hostname", "bad_host")
	_, err = n.PostContract(context.Background(), PostSpec{MinQuota: 1e6, MaxQuota: 2e6, QuotaMult: 1, Lifetime: 600, URL: NoServer})
	if err == nil || !strings.Contains(err.Error(), "hostname") {
		t.Errorf("post with a bad hostname option: %v", err)
	}
}

// A proposal handled twice, once in a batch that was rolled back and once for real,
// is accepted once.
func TestContract_AcceptedThoughTheBatchRanTwice(t *testing.T) {
	cp := newContractPair(t)
	cp.poster.rehearse = true
	pc := cp.propose(10e6, 25e6, Passive, Active)
	if res := cp.deliver(pc); res.Processed != 1 {
		t.Fatalf("poster: %+v", res)
	}
	if got := cp.answer(pc); got.State != ProposalAccepted {
		t.Fatalf("proposal %s %q after a rehearsed batch", got.State, got.Reason)
	}
	if a, b := peerCount(t, cp.poster), peerCount(t, cp.propser); a != 1 || b != 1 {
		t.Errorf("the poster has %d peers, the proposer %d", a, b)
	}
}

// A poster killed after it added the proposer as a peer (peers.toml) but before it
// marked its contract taken handles the proposal again on the next run: it must finish
// the acceptance, not refuse the proposer as "already our peer" while keeping it (a
// half-made peer on the poster's side only).
func TestContract_AcceptanceFinishedAfterACrash(t *testing.T) {
	cp := newContractPair(t)
	pc := cp.propose(10e6, 25e6, Passive, Active)
	data := bytes.Clone(pc.Sealed)
	cp.deliver(pc)
	// The crash: the contract is still posted, the Message-Id not recorded, no answer.
	posted, err := cp.poster.postedContract("alice-1")
	if err != nil {
		t.Fatal(err)
	}
	posted.State, posted.TakenBy = ContractPosted, ""
	if err := cp.poster.savePosted(posted); err != nil {
		t.Fatal(err)
	}
	cp.poster.ForgetSeen()
	pc.Sealed = data
	cp.deliver(pc)
	if got := cp.answer(pc); got.State != ProposalAccepted {
		t.Fatalf("proposal %s %q after the poster's crash", got.State, got.Reason)
	}
	if a, b := peerCount(t, cp.poster), peerCount(t, cp.propser); a != 1 || b != 1 {
		t.Errorf("the poster has %d peers, the proposer %d", a, b)
	}
	if posted, _ := cp.poster.postedContract("alice-1"); posted.State != ContractTaken {
		t.Errorf("posted contract: %+v", posted)
	}
}
