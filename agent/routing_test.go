package agent_test

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
	"github.com/dibs-backup/dibs/mailbox/mailtest"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
	"github.com/dibs-backup/dibs/testenv"
)

// offsetClock is the real time moved by an offset that the test sets.
type offsetClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *offsetClock) Set(d time.Duration) {
	c.mu.Lock()
	c.off = d
	c.mu.Unlock()
}

// peerRow is n's show_database row of peer.
func peerRow(t *testing.T, n *testenv.Node, peer string) agent.PeerRow {
	t.Helper()
	db, err := n.Database("peers")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range db["peers"].([]agent.PeerRow) {
		if r.Peer == peer {
			return r
		}
	}
	t.Fatalf("%s's show_database has no peer %s", n.Spec.Name, peer)
	return agent.PeerRow{}
}

// A peer with talk active,relay,mail whose daemon is down gets its file by relay once
// the file has waited talkRetryDelay, and by mail once it has waited twice that with the
// relay down too. show_database tells, per peer, the method that last worked and how
// many files wait.
func TestRouting_FallbackActiveRelayMail(t *testing.T) {
	const delay = 600 * time.Second
	// A relay_server and a mail server of our own: testenv starts them only for NAT'd
	// or mail-only grids.
	root := t.TempDir()
	var pubs bytes.Buffer
	for _, name := range []string{"alice", "bob"} {
		pgpmsgtest.Key(t, name).WriteArmored(&pubs)
	}
	allow := filepath.Join(root, "allow.asc")
	if err := os.WriteFile(allow, pubs.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := relay.OpenDirStore(filepath.Join(root, "relay"), relay.DirOptions{AllowFile: allow})
	if err != nil {
		t.Fatal(err)
	}
	relaySrv := httptest.NewServer(relay.NewServer(store, relay.ServerOptions{Version: "test"}))
	t.Cleanup(relaySrv.Close)
	mail := mailtest.Start(t, mailtest.User{Addr: "alice@dibs.test", Password: "alice-pw"}, mailtest.User{Addr: "bob@dibs.test", Password: "bob-pw"})

	env := testenv.New(t, testenv.Setup{
		Nodes:   []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}},
		Options: map[string]string{"talkRetryDelay": "600", "relayURL": relaySrv.URL},
	})
	alice, bob := env.Node("alice"), env.Node("bob")
	for _, n := range []*testenv.Node{alice, bob} {
		name := n.Spec.Name
		for k, v := range map[string]string{
			"smtpServer": mail.SMTPAddr, "smtpUser": name + "@dibs.test", "smtpPassword": name + "-pw", "smtpTLS": "starttls",
			"imapServer": mail.IMAPAddr, "imapUser": name + "@dibs.test", "imapPassword": name + "-pw", "imapTLS": "starttls",
			"mailCAFile": mail.CAFile, "dibsAdmin": name + "@dibs.test",
		} {
			if err := n.SetOption(k, v); err != nil {
				t.Fatal(err)
			}
		}
		mt := transports.Default(n.Node) // the mail transports, now that mail is set up
		n.Transports.Senders[agent.Mail] = n.Faults.Wrap(mt.Senders[agent.Mail])
		n.Transports.Pollers[agent.Mail] = mt.Pollers[agent.Mail]
	}
	talk, relayURL := "active,relay,mail", relaySrv.URL
	if err := alice.EditPeer("bob", agent.PeerEdit{Talk: &talk, Relay: &relayURL}); err != nil {
		t.Fatal(err)
	}
	listen := agent.Mail // bob polls his mailbox (and his relay: relayURL is set)
	if err := bob.EditPeer("alice", agent.PeerEdit{Listen: &listen}); err != nil {
		t.Fatal(err)
	}
	clock := &offsetClock{}
	alice.Now = clock.Now
	bobKey := pgpmsgtest.Identity(t, "bob").Fingerprint()
	atRelay := func() int {
		es, err := store.List(bobKey)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	send := func(wantSent int) {
		t.Helper()
		r, _ := alice.SendOutgoing(ctx, "bob")
		if r.Sent != wantSent || r.Sent+r.Waiting != 1 || r.Quarantined != 0 {
			t.Fatalf("at +%v: SendOutgoing = %+v; want %d sent, the rest waiting", clock.Now().Sub(time.Now()).Round(time.Second), r, wantSent)
		}
	}

	// Bob's daemon is down: the push fails, and the relay is not tried yet.
	env.Cut("bob")
	alice.Post("bob", agent.TypeHello)
	send(0)
	clock.Set(delay - 5*time.Second)
	send(0)
	if row := peerRow(t, alice, "bob"); row.QueueDepth != 1 || row.LastMethod != "" || !strings.HasPrefix(row.LastError, "active: ") {
		t.Fatalf("after failed pushes: queue_depth %d, last_method %q, last_error %q", row.QueueDepth, row.LastMethod, row.LastError)
	}
	if n := atRelay(); n != 0 {
		t.Fatalf("the relay holds %d files before talkRetryDelay passed", n)
	}
	// talkRetryDelay passed: the push fails again, the relay takes the file.
	clock.Set(delay + 5*time.Second)
	send(1)
	if row := peerRow(t, alice, "bob"); row.QueueDepth != 0 || row.LastMethod != agent.Relay {
		t.Fatalf("after the relay took the file: queue_depth %d, last_method %q", row.QueueDepth, row.LastMethod)
	}
	if n := atRelay(); n != 1 {
		t.Fatalf("the relay holds %d files for bob, want 1", n)
	}
	if msgs := mail.Messages(t, "bob@dibs.test", "INBOX"); len(msgs) != 0 {
		t.Fatalf("a file went by mail too: %d mails", len(msgs))
	}
	env.Mend("bob") // back online, bob collects it from the relay
	if r := bob.Cron(ctx); r.Received != 1 || r.Process.Processed != 1 || bob.LastHeard("alice").IsZero() {
		t.Fatalf("bob's round after the relay delivery: %+v", r)
	}

	// Now the relay is down too: the next file goes by mail after twice talkRetryDelay.
	env.Cut("bob")
	relaySrv.Close()
	clock.Set(0)
	alice.Post("bob", agent.TypeHello)
	send(0)
	clock.Set(delay + 5*time.Second)
	send(0)
	if row := peerRow(t, alice, "bob"); row.QueueDepth != 1 || row.LastMethod != agent.Relay || !strings.HasPrefix(row.LastError, "relay: ") {
		t.Fatalf("with push and relay down: queue_depth %d, last_method %q, last_error %q", row.QueueDepth, row.LastMethod, row.LastError)
	}
	clock.Set(2*delay + 5*time.Second)
	send(1)
	if row := peerRow(t, alice, "bob"); row.QueueDepth != 0 || row.LastMethod != agent.Mail {
		t.Fatalf("after the mail delivery: queue_depth %d, last_method %q", row.QueueDepth, row.LastMethod)
	}
	if r := bob.Cron(ctx); r.Received != 1 || r.Process.Processed != 1 || r.Process.Quarantined != 0 {
		t.Fatalf("bob's round after the mail delivery: %+v", r)
	}
	for _, n := range []*testenv.Node{alice, bob} {
		if q := n.Quarantined(); len(q) > 0 {
			t.Errorf("%s quarantined %v", n.Spec.Name, q)
		}
	}
	if es, _ := alice.Spool.List(queue.Outgoing("bob")); len(es) != 0 {
		t.Errorf("alice's outgoing/bob holds %d files", len(es))
	}
}

// A relay that refuses us (its allow file lacks our key) is a matter of configuration,
// not of the file: the file waits, the refusal shows in show_database, and it goes once
// the relay's operator adds our key. Only a refusal of the file itself (too large)
// quarantines it.
func TestRouting_RelayRefusalWaitsUntilAllowed(t *testing.T) {
	root := t.TempDir()
	allow := filepath.Join(root, "allow.asc")
	writeKeys := func(names ...string) {
		t.Helper()
		var pubs bytes.Buffer
		for _, name := range names {
			pgpmsgtest.Key(t, name).WriteArmored(&pubs)
		}
		if err := os.WriteFile(allow, pubs.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys("bob") // alice is not allowed yet
	store, err := relay.OpenDirStore(filepath.Join(root, "relay"), relay.DirOptions{AllowFile: allow, MaxFileSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	relaySrv := httptest.NewServer(relay.NewServer(store, relay.ServerOptions{Version: "test"}))
	t.Cleanup(relaySrv.Close)
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}})
	alice := env.Node("alice")
	talk, relayURL := "relay", relaySrv.URL
	if err := alice.EditPeer("bob", agent.PeerEdit{Talk: &talk, Relay: &relayURL}); err != nil {
		t.Fatal(err)
	}
	alice.Post("bob", agent.TypeHello)
	alice.Post("bob", agent.TypeHello)
	for range 2 { // cron runs: nothing is lost however often it is tried
		r, _ := alice.SendOutgoing(ctx, "bob")
		if r.Sent != 0 || r.Waiting != 2 || r.Quarantined != 0 {
			t.Fatalf("refused by the relay: %+v; want both files waiting", r)
		}
	}
	if q := alice.Quarantined(); len(q) != 0 {
		t.Fatalf("quarantined: %v", q)
	}
	if row := peerRow(t, alice, "bob"); !strings.Contains(row.LastError, "forbidden") || row.QueueDepth != 2 {
		t.Fatalf("peer row %+v; want the relay's refusal and 2 waiting", row)
	}
	// The operator adds alice's key: the relay reads its allow file again, the files go.
	writeKeys("bob", "alice")
	later := time.Now().Add(time.Minute)
	os.Chtimes(allow, later, later)
	if r, err := alice.SendOutgoing(ctx, "bob"); r.Sent != 2 || err != nil {
		t.Fatalf("after the relay allows alice: %+v, %v", r, err)
	}
	// A file larger than the relay takes can never go that way: quarantined, with why.
	big := bytes.Repeat([]byte{0x0d, 0x0a}, 40<<10)
	if _, err := alice.Spool.Put(queue.Outgoing("bob"), queue.NewName(time.Now(), "pgp"), bytes.NewReader(big), 0); err != nil {
		t.Fatal(err)
	}
	if r, _ := alice.SendOutgoing(ctx, "bob"); r.Quarantined != 1 {
		t.Fatalf("oversized for the relay: %+v; want it quarantined", r)
	}
	for _, reason := range alice.Quarantined() {
		if !strings.Contains(reason, "too large") {
			t.Fatalf("quarantined because %q", reason)
		}
	}
}
