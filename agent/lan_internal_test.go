package agent

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// lanTrio is alice, who has bob as a peer, bob, and carol, whom alice does not know,
// on one fake clock.
type lanTrio struct {
	now               time.Time
	alice, bob, carol *Node
}

func newLANTrio(t *testing.T) *lanTrio {
	t.Helper()
	lt := &lanTrio{now: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	mk := func(name string) *Node {
		n, err := Init(t.TempDir(), InitConfig{KeyName: name + ".dibs@example.org", Identity: pgpmsgtest.Identity(t, name)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		n.Now = func() time.Time { return lt.now }
		return n
	}
	lt.alice, lt.bob, lt.carol = mk("alice"), mk("bob"), mk("carol")
	if err := lt.alice.SetOption("relayURL", "https://relay.example.org"); err != nil {
		t.Fatal(err)
	}
	if err := lt.alice.SetOption("lanDiscovery", "true"); err != nil {
		t.Fatal(err)
	}
	var key bytes.Buffer
	lt.bob.ID.Public().WriteArmored(&key)
	talk, listen, host, port, q, email := Relay, Relay, "bob.example.org", 6363, int64(1e9), "bob@example.org"
	if err := lt.alice.AddPeer("bob", PeerEdit{Email: &email, Talk: &talk, Listen: &listen, Host: &host, Port: &port, LocalQuota: &q, RemoteQuota: &q, Key: &key}); err != nil {
		t.Fatal(err)
	}
	return lt
}

func (lt *lanTrio) announce(t *testing.T, n *Node, port int) []byte {
	t.Helper()
	pkt, err := n.lanAnnouncement(port)
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

var home = netip.MustParseAddr("192.168.1.20")

func TestLAN_AnnouncementFindsPeerUntilItExpires(t *testing.T) {
	lt := newLANTrio(t)
	a := lt.alice
	if u := a.lanURL("bob"); u != "" {
		t.Fatalf("bob on the LAN before any announcement: %q", u)
	}
	if res, peer, fresh := a.hearLAN(lt.announce(t, lt.bob, 7000), home); res != lanAccepted || peer != "bob" || !fresh {
		t.Fatalf("bob's announcement: %s %q fresh=%v, want accepted, bob, fresh", res, peer, fresh)
	}
	if u := a.lanURL("bob"); u != "http://192.168.1.20:7000" {
		t.Fatalf("bob's LAN URL = %q, want the packet's source and the announced port", u)
	}
	interval := optLANAnnounceInterval.Get(a.Opts)
	lt.now = lt.now.Add(interval)
	if res, _, fresh := a.hearLAN(lt.announce(t, lt.bob, 7000), home); res != lanAccepted || fresh {
		t.Fatalf("bob's next announcement: %s fresh=%v, want accepted, not fresh", res, fresh)
	}
	lt.now = lt.now.Add(3 * interval)
	if u := a.lanURL("bob"); u != "http://192.168.1.20:7000" {
		t.Fatalf("bob gone from the LAN after three intervals exactly: %q", u)
	}
	lt.now = lt.now.Add(time.Second)
	if u := a.lanURL("bob"); u != "" {
		t.Fatalf("bob still on the LAN three intervals after his last announcement: %q", u)
	}
	if got := a.LANPeers(); len(got) != 0 {
		t.Fatalf("LANPeers after expiry = %v", got)
	}
	if res, _, fresh := a.hearLAN(lt.announce(t, lt.bob, 7001), home); res != lanAccepted || !fresh {
		t.Fatalf("bob back on the LAN: %s fresh=%v, want accepted and fresh", res, fresh)
	}
	lt.now = lt.now.Add(time.Second)
	if res, _, _ := a.hearLAN(lt.announce(t, lt.bob, 7001), netip.MustParseAddr("fe80::1%eth0")); res != lanAccepted || a.lanURL("bob") != "http://[fe80::1%25eth0]:7001" {
		t.Fatalf("bob from a link-local IPv6 address: %s at %q", res, a.lanURL("bob"))
	}
	lt.now = lt.now.Add(time.Second)
	if res, _, _ := a.hearLAN(lt.announce(t, lt.bob, 7001), netip.MustParseAddr("::ffff:192.168.1.20")); res != lanAccepted {
		t.Fatalf("bob from a v4-mapped address: %s", res)
	}
	if got := a.LANPeers(); got["bob"] != "http://192.168.1.20:7001" || len(got) != 1 {
		t.Fatalf("LANPeers = %v, want bob at his new port", got)
	}
	a.lanFailed("bob")
	if u := a.lanURL("bob"); u != "" {
		t.Fatalf("bob's LAN URL after a failed push = %q, want none until he announces", u)
	}
	lt.now = lt.now.Add(time.Second)
	if res, _, fresh := a.hearLAN(lt.announce(t, lt.bob, 7001), home); res != lanAccepted || !fresh || a.lanURL("bob") == "" {
		t.Fatalf("bob announcing after a failed push: %s fresh=%v url=%q", res, fresh, a.lanURL("bob"))
	}
	if err := a.SetOption("lanDiscovery", "false"); err != nil {
		t.Fatal(err)
	}
	if u := a.lanURL("bob"); u != "" {
		t.Fatalf("lanDiscovery off, yet bob is pushed to on the LAN at %q", u)
	}
}

func TestLAN_ForgedAndReplayedAnnouncementsIgnored(t *testing.T) {
	lt := newLANTrio(t)
	a := lt.alice
	interval := optLANAnnounceInterval.Get(a.Opts)
	old := lt.announce(t, lt.bob, 7000)
	lt.now = lt.now.Add(time.Second)
	good := lt.announce(t, lt.bob, 7000)
	lt.now = lt.now.Add(time.Second)

	// bob's announcement with another port in it: the signature no longer holds.
	moved := bytes.Replace(good, []byte("port 7000\n"), []byte("port 7009\n"), 1)
	// carol signs an announcement that says it is bob's.
	claimed, err := sealAnnouncement(lt.carol.ID, lanAnnouncement{From: lt.bob.Fingerprint(), Port: 7000, Time: lt.now, Nonce: "00112233445566778899aabbccddeeff"})
	if err != nil {
		t.Fatal(err)
	}
	// The statement of good, and the signature of another of bob's.
	cut := func(pkt []byte) int { return bytes.Index(pkt, []byte("\n\n")) + 2 }
	spliced := append(append([]byte(nil), good[:cut(good)]...), old[cut(old):]...)
	// A field written otherwise than bob's node writes it.
	padded := bytes.Replace(good, []byte("port 7000\n"), []byte("port 07000\n"), 1)

	for _, c := range []struct {
		name string
		pkt  []byte
		want string
	}{
		{"garbage", []byte("hello"), lanMalformed},
		{"truncated", good[:40], lanMalformed},
		{"empty", nil, lanMalformed},
		{"non-canonical", padded, lanMalformed},
		{"stranger", lt.announce(t, lt.carol, 7000), lanUnknown},
		{"own", lt.announce(t, a, 7000), lanSelf},
		{"changed port", moved, lanForged},
		{"signed by another key", claimed, lanForged},
		{"spliced signature", spliced, lanForged},
	} {
		if res, _, _ := a.hearLAN(c.pkt, home); res != c.want {
			t.Errorf("%s: %s, want %s", c.name, res, c.want)
		}
		if u := a.lanURL("bob"); u != "" {
			t.Fatalf("%s: bob is on the LAN at %q", c.name, u)
		}
	}

	if res, _, _ := a.hearLAN(good, home); res != lanAccepted {
		t.Fatalf("bob's good announcement: %s", res)
	}
	evil := netip.MustParseAddr("192.168.1.66")
	if res, _, _ := a.hearLAN(good, evil); res != lanReplayed {
		t.Errorf("bob's announcement again, from another address: %s, want replayed", res)
	}
	if res, _, _ := a.hearLAN(old, evil); res != lanReplayed {
		t.Errorf("an older announcement of bob's: %s, want replayed", res)
	}
	if u := a.lanURL("bob"); u != "http://192.168.1.20:7000" {
		t.Fatalf("after the replays bob is at %q", u)
	}

	// Dated too far back, or ahead.
	lt.now = lt.now.Add(2*interval + lanSkew + time.Second)
	lt.bob.Now = func() time.Time { return lt.now.Add(-2*interval - lanSkew - time.Second) }
	if res, _, _ := a.hearLAN(lt.announce(t, lt.bob, 7000), evil); res != lanStale {
		t.Errorf("a stale announcement: %s, want stale", res)
	}
	lt.bob.Now = func() time.Time { return lt.now.Add(lanSkew + time.Second) }
	if res, _, _ := a.hearLAN(lt.announce(t, lt.bob, 7000), evil); res != lanStale {
		t.Errorf("an announcement from the future: %s, want stale", res)
	}
	lt.bob.Now = func() time.Time { return lt.now.Add(lanSkew) }
	if res, _, _ := a.hearLAN(lt.announce(t, lt.bob, 7000), home); res != lanAccepted {
		t.Errorf("an announcement dated within the skew: %s, want accepted", res)
	}
	want := map[string]int64{lanMalformed: 4, lanUnknown: 1, lanSelf: 1, lanForged: 3, lanAccepted: 2, lanReplayed: 2, lanStale: 2}
	got := a.lanCounts()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("count %s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}
