package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

// Two relay_server processes with --store on one JetStream server: alice deposits through
// one, bob collects through the other, and his answer goes back the other way.
func TestRelayServer_TwoInstancesOneJetStream(t *testing.T) {
	root := t.TempDir()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: clirun.FreePort(t), JetStream: true,
		StoreDir: filepath.Join(root, "nats"), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	alice, bob := newRelayNode(t, root, "alice"), newRelayNode(t, root, "bob")
	allow := filepath.Join(root, "allow.asc")
	concatFiles(t, allow, alice.key, bob.key)
	var urls []string
	for range 2 {
		port := clirun.FreePort(t)
		srv := startRelay(t, port, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--store", ns.ClientURL(), "--allow", allow)
		t.Cleanup(func() { stopRelay(t, srv) })
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d", port))
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(srv.Stdout.String(), "JetStream") && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		if out := srv.Stdout.String(); !strings.Contains(out, ns.ClientURL()+" (JetStream R1)") {
			t.Errorf("relay_server --store says %q", out)
		}
	}
	alice.OK("set_option", "--name", "relayURL", "--value", urls[0])
	bob.OK("set_option", "--name", "relayURL", "--value", urls[1])
	alice.link(bob, urls[0])
	bob.link(alice, urls[1])
	if out := alice.OK("send_hello", "--peer", "bob"); strings.Contains(out, "not delivered") {
		t.Fatalf("alice's HELLO through relay one: %q", out)
	}
	if out := bob.OK("poll_passives"); !strings.Contains(out, "received 1") {
		t.Fatalf("bob's poll_passives of relay two: %q", out)
	}
	if out := bob.OK("process_message"); !strings.Contains(out, "processed 1, quarantined 0") {
		t.Fatalf("bob's process_message: %q", out)
	}
	if out := bob.OK("send_message"); !strings.Contains(out, "sent 1") {
		t.Fatalf("bob's reply through relay two: %q", out)
	}
	if out := alice.OK("poll_passives"); !strings.Contains(out, "received 1") {
		t.Fatalf("alice's poll_passives of relay one: %q", out)
	}
	if out := bob.OK("poll_passives"); !strings.Contains(out, "received 0") {
		t.Fatalf("bob got the HELLO twice: %q", out)
	}
}
