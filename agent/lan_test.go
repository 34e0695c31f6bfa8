package agent_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// lanGrid is alice and bob, both NAT'd, so that each talks to the other through the
// relay, with LAN discovery on a loopback UDP port: alice's daemon listens there (bob's
// finds it taken and only announces).
func lanGrid(t *testing.T) (*testenv.Env, *testenv.Node, *testenv.Node) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	env := testenv.New(t, testenv.Setup{
		Nodes:   []testenv.NodeSpec{{Name: "alice", NAT: true}, {Name: "bob", NAT: true}},
		Options: map[string]string{"lanDiscovery": "true", "lanDiscoveryAddress": addr},
	})
	if env.Relay == nil {
		t.Fatal("two NAT'd nodes got no relay")
	}
	alice, bob := env.Node("alice"), env.Node("bob")
	for _, n := range []*testenv.Node{alice, bob} {
		p, _, err := n.Peer(map[string]string{"alice": "bob", "bob": "alice"}[n.Spec.Name])
		if err != nil {
			t.Fatal(err)
		}
		if p.Talk != agent.Relay {
			t.Fatalf("%s talks %q to its peer, want relay", n.Spec.Name, p.Talk)
		}
	}
	return env, alice, bob
}

// hearOnLAN has from announce itself until n has heard it on the LAN (the datagrams go
// over the loopback UDP socket), and returns the URL n heard.
func hearOnLAN(t *testing.T, n, from *testenv.Node) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := from.Daemon.AnnounceLAN(); err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if u := n.LANPeers()[from.Spec.Name]; u != "" {
				return u
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Fatalf("%s never heard %s on the LAN", n.Spec.Name, from.Spec.Name)
	return ""
}

func atRelayFor(t *testing.T, env *testenv.Env, n *testenv.Node) int {
	t.Helper()
	es, err := env.RelayStore.List(n.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func incomingOf(t *testing.T, n *testenv.Node) int {
	t.Helper()
	es, err := n.Spool.List(queue.Incoming)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// Two nodes whose configured talk is relay: while both are on the LAN, alice's pieces
// go to bob's daemon directly, and none through the relay.
func TestLAN_RelayPeersSendDirectOnTheLAN(t *testing.T) {
	env, alice, bob := lanGrid(t)

	// Before bob is heard on the LAN, alice's HELLO goes through the relay.
	alice.Post("bob", agent.TypeHello)
	if r, err := alice.SendOutgoing(ctx, "bob"); err != nil || r.Sent != 1 {
		t.Fatalf("send before the LAN: %+v, %v", r, err)
	}
	if k := atRelayFor(t, env, bob); k != 1 {
		t.Fatalf("%d files at the relay for bob, want the HELLO", k)
	}
	if row := peerRow(t, alice, "bob"); row.LastMethod != agent.Relay {
		t.Fatalf("last_method %q, want relay", row.LastMethod)
	}
	env.Settle(ctx, 10)

	env.JoinLAN("alice", "bob")
	if u := hearOnLAN(t, alice, bob); u != bob.URL {
		t.Fatalf("alice heard bob on the LAN at %s, want his daemon %s", u, bob.URL)
	}
	rep, err := alice.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Peers {
		if p.Peer == "bob" && p.LANAddress != bob.URL {
			t.Errorf("status: bob's lan_address %q, want %s", p.LANAddress, bob.URL)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	alice.Daemon.ServeStatus(ln)
	if body, _ := get(t, "http://"+ln.Addr().String()+"/metrics"); !strings.Contains(body, `dibs_lan_announcements_total{result="accepted"}`) {
		t.Errorf("/metrics counts no accepted LAN announcement:\n%s", body)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("pieces that go over the LAN\n"), 0o644)
	if _, err := alice.Store(ctx, filepath.Join(dir, "f"), "/f"); err != nil {
		t.Fatal(err)
	}
	queued, _ := alice.Spool.List(queue.Outgoing("bob"))
	if len(queued) == 0 {
		t.Fatal("the store queued nothing for bob")
	}
	before := incomingOf(t, bob)
	r, err := alice.SendOutgoing(ctx, "bob")
	if err != nil || r.Sent != len(queued) || r.Waiting != 0 {
		t.Fatalf("send on the LAN: %+v, %v; want all %d sent", r, err, len(queued))
	}
	if k := atRelayFor(t, env, bob); k != 0 {
		t.Fatalf("%d files went through the relay while bob was on the LAN", k)
	}
	if k := incomingOf(t, bob) - before; k != len(queued) {
		t.Fatalf("bob's daemon took %d files, want the %d pieces", k, len(queued))
	}
	if row := peerRow(t, alice, "bob"); row.LastMethod != agent.LAN || row.QueueDepth != 0 {
		t.Fatalf("last_method %q, queue_depth %d; want lan, 0", row.LastMethod, row.QueueDepth)
	}
	env.Settle(ctx, 10)
	if held := piecesOn(t, bob, "alice"); len(held) == 0 {
		t.Fatal("bob stores no piece of alice's")
	}
	for _, n := range []*testenv.Node{alice, bob} {
		if q := n.Quarantined(); len(q) > 0 {
			t.Errorf("%s quarantined %v", n.Spec.Name, q)
		}
	}
}

// Bob leaves the LAN without a word: the push to his LAN address fails and alice's
// files go through the relay in the same round. His next announcement brings the LAN
// back.
func TestLAN_FailedDirectPushFallsBackToRelay(t *testing.T) {
	env, alice, bob := lanGrid(t)
	env.JoinLAN("alice", "bob")
	hearOnLAN(t, alice, bob)
	env.LeaveLAN("bob")
	alice.Post("bob", agent.TypeHello)
	alice.Post("bob", agent.TypeHello)
	r, err := alice.SendOutgoing(ctx, "bob")
	if err != nil || r.Sent != 2 || r.Waiting != 0 {
		t.Fatalf("send with bob gone from the LAN: %+v, %v; want both sent by relay", r, err)
	}
	if k := atRelayFor(t, env, bob); k != 2 {
		t.Fatalf("%d files at the relay, want 2", k)
	}
	if row := peerRow(t, alice, "bob"); row.LastMethod != agent.Relay {
		t.Fatalf("last_method %q, want relay", row.LastMethod)
	}
	if u, ok := alice.LANPeers()["bob"]; ok {
		t.Fatalf("bob still pushed to on the LAN at %s after the push there failed", u)
	}
	env.Settle(ctx, 10)
	if q := bob.Quarantined(); len(q) > 0 {
		t.Fatalf("bob quarantined %v", q)
	}

	env.JoinLAN("bob")
	hearOnLAN(t, alice, bob)
	alice.Post("bob", agent.TypeHello)
	if r, err := alice.SendOutgoing(ctx, "bob"); err != nil || r.Sent != 1 {
		t.Fatalf("send with bob back on the LAN: %+v, %v", r, err)
	}
	if k, row := atRelayFor(t, env, bob), peerRow(t, alice, "bob"); k != 0 || row.LastMethod != agent.LAN {
		t.Fatalf("bob back on the LAN: %d at the relay, last_method %q; want 0, lan", k, row.LastMethod)
	}
}

// A node whose lanDiscoveryAddress another program holds still announces itself; a
// node without lanDiscovery announces nothing and hears nothing.
func TestLAN_DiscoveryOffHearsNothing(t *testing.T) {
	env, alice, bob := lanGrid(t)
	env.JoinLAN("alice", "bob")
	if err := alice.SetOption("lanDiscovery", "false"); err != nil {
		t.Fatal(err)
	}
	hear := func() bool {
		for range 20 {
			bob.Daemon.AnnounceLAN()
			time.Sleep(5 * time.Millisecond)
		}
		_, ok := alice.LANPeers()["bob"]
		return ok
	}
	if hear() {
		t.Fatal("alice, lanDiscovery off, pushes to bob on the LAN")
	}
	alice.Post("bob", agent.TypeHello)
	alice.SendOutgoing(ctx, "bob")
	if k := atRelayFor(t, env, bob); k != 1 {
		t.Fatalf("%d files at the relay with lanDiscovery off, want 1", k)
	}
}
