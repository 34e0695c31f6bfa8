package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

// Two daemons whose peers talk relay, with a relay that is down: once bob's daemon is
// heard on the LAN (a loopback UDP address here, which alice's daemon listens on), the
// HELLO alice queued goes to bob's daemon directly and bob processes it.
func TestCLI_LANDiscoveryPushesPastADownRelay(t *testing.T) {
	root := t.TempDir()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lan := pc.LocalAddr().String()
	pc.Close()
	deadRelay := fmt.Sprintf("http://127.0.0.1:%d", clirun.FreePort(t))
	alice, bob := newCLINode(t, root, "alice"), newCLINode(t, root, "bob")
	for _, n := range []*cliNode{alice, bob} {
		n.OK("set_option", "--name", "relayURL", "--value", deadRelay)
		n.OK("set_option", "--name", "lanDiscovery", "--value", "true")
		n.OK("set_option", "--name", "lanDiscoveryAddress", "--value", lan)
		n.OK("set_option", "--name", "lanAnnounceInterval", "--value", "1")
	}
	alice.addPeer(bob, "relay", "relay")
	bob.addPeer(alice, "relay", "relay")
	out, _, _ := alice.Run("send_hello", "--peer", "bob")
	if got := files(t, filepath.Join(alice.Dir, "outgoing", "bob")); len(got) != 1 {
		t.Fatalf("with the relay down the HELLO should wait in outgoing/bob, which holds %v (send_hello: %s)", got, out)
	}
	da := alice.startDaemon() // listens on the LAN address first: bob's daemon only announces
	db := bob.startDaemon()
	var heard string
	for range 100 {
		if heard = bob.lastHeard("alice"); heard != "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	alice.stopDaemon(da)
	bob.stopDaemon(db)
	if heard == "" {
		t.Fatalf("bob never got alice's HELLO over the LAN; alice's daemon said:\n%s\nbob's:\n%s", da.Stderr.String(), db.Stderr.String())
	}
	if got := files(t, filepath.Join(alice.Dir, "outgoing", "bob")); len(got) != 0 {
		t.Errorf("outgoing/bob still holds %v", got)
	}
	if q := files(t, filepath.Join(bob.Dir, "quarantine")); len(q) > 0 {
		t.Errorf("bob quarantined %v", q)
	}
	if !strings.Contains(alice.OK("show_database", "--json"), `"last_method": "lan"`) {
		t.Errorf("alice's show_database does not say the HELLO went by lan:\n%s", alice.OK("show_database", "--json"))
	}
}
