package agent_test

import (
	"net/http/httptest"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/contract"
	"github.com/dibs-backup/dibs/agent/transports"
	"github.com/dibs-backup/dibs/mailbox/mailtest"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// A poster without a daemon, reached only by mail, and a proposer reached only by mail:
// the proposal and its answer travel as mails (in-process SMTP and IMAP servers), and
// both end up peers.
func TestContract_HandshakeByMail(t *testing.T) {
	ctx := t.Context()
	ms := mailtest.Start(t, mailtest.User{Addr: "alice@dibs.test", Password: "alice-pw"}, mailtest.User{Addr: "bob@dibs.test", Password: "bob-pw"})
	cs, err := contract.OpenServer(t.TempDir(), contract.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(cs)
	t.Cleanup(hs.Close)
	node := func(name string) *agent.Node {
		n, err := agent.Init(t.TempDir(), agent.InitConfig{KeyName: name + ".dibs@dibs.test", Identity: pgpmsgtest.Identity(t, name)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		for k, v := range map[string]string{
			"smtpServer": ms.SMTPAddr, "smtpUser": name + "@dibs.test", "smtpPassword": name + "-pw", "smtpTLS": "starttls",
			"imapServer": ms.IMAPAddr, "imapUser": name + "@dibs.test", "imapPassword": name + "-pw", "imapTLS": "starttls",
			"mailCAFile": ms.CAFile, "dibsAdmin": name + "@dibs.test", "defaultContractServerURL": hs.URL,
		} {
			if err := n.SetOption(k, v); err != nil {
				t.Fatal(err)
			}
		}
		n.Transports = transports.Default(n)
		return n
	}
	alice, bob := node("alice"), node("bob")
	if _, err := alice.PostContract(ctx, agent.PostSpec{Name: "alice-mail", MinQuota: 1e6, MaxQuota: 10e6, QuotaMult: 1,
		Lifetime: 3600, Talk: agent.Mail, Listen: agent.Mail, HostGiven: true}); err != nil {
		t.Fatal(err)
	}
	pc, err := bob.ProposeContract(ctx, agent.ProposeSpec{Name: "alice-mail", LocalQuota: 5e6, RemoteQuota: 5e6})
	if err != nil {
		t.Fatal(err)
	}
	if pc.State != agent.ProposalSent || pc.Talk != agent.Mail || pc.Listen != agent.Mail {
		t.Fatalf("proposal: %s (%s), talk %s listen %s", pc.State, pc.LastError, pc.Talk, pc.Listen)
	}
	if k, err := alice.PollPassives(ctx); err != nil || k != 1 {
		t.Fatalf("alice's poll: %d, %v", k, err)
	}
	if res, err := alice.ProcessIncoming(ctx); err != nil || res.Processed != 1 {
		t.Fatalf("alice's process: %+v, %v", res, err)
	}
	if _, err := alice.SendOutgoing(ctx, ""); err != nil { // the answer goes by mail
		t.Fatal(err)
	}
	if k, err := bob.PollPassives(ctx); err != nil || k != 1 {
		t.Fatalf("bob's poll: %d, %v", k, err)
	}
	if res, err := bob.ProcessIncoming(ctx); err != nil || res.Processed != 1 {
		t.Fatalf("bob's process: %+v, %v", res, err)
	}
	a, _, err := bob.Peer("alice@dibs.test")
	if err != nil || a.Talk != agent.Mail || a.Listen != agent.Mail || a.LocalQuota != 5e6 {
		t.Fatalf("bob's record of alice: %+v, %v", a, err)
	}
	b, _, ok := alice.PeerByFingerprint(bob.Fingerprint())
	if !ok || b.Talk != agent.Mail || b.Email != "bob@dibs.test" || b.RemoteQuota != 5e6 {
		t.Fatalf("alice's record of bob: %+v", b)
	}
	// They talk now: a HELLO by mail each way.
	if _, err := bob.Post("alice@dibs.test", agent.TypeHello, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendOutgoing(ctx, ""); err != nil {
		t.Fatal(err)
	}
	alice.PollPassives(ctx)
	if res, _ := alice.ProcessIncoming(ctx); res.Processed != 1 {
		t.Errorf("alice did not take bob's HELLO: %+v", res)
	}
}
