package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// rewritePeers edits alice's peers.toml with fn and returns what agent.Open says of it.
func rewritePeers(t *testing.T, n *testenv.Node, fn func(string) string) error {
	t.Helper()
	path := filepath.Join(n.Dir, "peers.toml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(fn(string(b))), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := agent.Open(n.Dir)
	if err == nil {
		o.Close()
	}
	return err
}

// peers.toml is held to add_peer's rules when it is read: a bad value is one line that
// names the file, the line and the peer, before any command acts on it.
func TestPeerList_BadEntryRefusedWithItsLine(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}, testenv.NodeSpec{Name: "carol"}))
	alice := env.Node("alice")
	orig, err := os.ReadFile(filepath.Join(alice.Dir, "peers.toml"))
	if err != nil {
		t.Fatal(err)
	}
	fp := func(name string) string { return string(pgpmsgtest.Key(t, name).Fingerprint()) }
	for _, c := range []struct {
		name, old, new, want string
	}{
		{"fingerprint of another peer", fp("carol"), fp("bob"), `fingerprint ` + fp("bob") + ` is peer bob's already`},
		{"bad fingerprint", fp("carol"), "C0FFEE", `fingerprint "C0FFEE" is not 40 upper-case hex digits`},
		{"unknown talk", `talk = "active"`, `talk = "pigeon"`, `talk must be one of active, passive, mail, relay, carry`},
		{"negative quota", `local_quota = 1000000000`, `local_quota = -5`, `quotas cannot be negative`},
		{"bad email", `email = "carol@dibs.test"`, `email = "carol"`, `is not an e-mail address`},
		{"unknown field", `talk = "active"`, `tallk = "active"`, `unknown field "peer.tallk"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := rewritePeers(t, alice, func(s string) string {
				// the last entry (carol's), so the line number is not the first entry's
				i := strings.LastIndex(string(orig), c.old)
				if i < 0 {
					t.Fatalf("peers.toml has no %q:\n%s", c.old, orig)
				}
				return string(orig[:i]) + c.new + string(orig[i+len(c.old):])
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open with %s: %v, want %q", c.new, err, c.want)
			}
			lines := strings.Split(string(orig), "\n")
			m := regexp.MustCompile(`^peers\.toml:(\d+): `).FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error does not start with peers.toml:LINE: %v", err)
			}
			var line int
			for i, l := range lines {
				if strings.Contains(l, c.old) {
					line = i + 1 // the last one: carol's entry or a line in it
				}
			}
			got := 0
			for _, d := range m[1] {
				got = got*10 + int(d-'0')
			}
			if got == 0 || got > line {
				t.Fatalf("error names line %d; the entry at fault is at or before line %d: %v", got, line, err)
			}
			if c.name != "unknown field" && !strings.Contains(err.Error(), `peer "carol"`) {
				t.Fatalf("error does not name the peer: %v", err)
			}
		})
	}
}

// A peers.toml that lost entries the database still knows (truncated, emptied,
// deleted) stops every command with what to do, instead of showing fewer peers while
// pieces sit on the missing ones.
func TestPeerList_MissingPeersRefused(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}, testenv.NodeSpec{Name: "carol"}))
	helloBothWays(t, env, "alice", "bob")
	helloBothWays(t, env, "alice", "carol")
	alice := env.Node("alice")
	for _, c := range []struct {
		name string
		fn   func(string) string
	}{
		{"truncated", func(s string) string { return s[:strings.LastIndex(s, "[[peer]]")] }},
		{"emptied", func(string) string { return "" }},
	} {
		name, fn := c.name, c.fn
		t.Run(name, func(t *testing.T) {
			err := rewritePeers(t, alice, fn)
			if err == nil || !strings.Contains(err.Error(), "import_recovery_kit") || !strings.Contains(err.Error(), "carol") {
				t.Fatalf("Open with a %s peers.toml: %v", name, err)
			}
		})
	}
	os.Remove(filepath.Join(alice.Dir, "peers.toml"))
	if _, err := agent.Open(alice.Dir); err == nil || !strings.Contains(err.Error(), "bob, carol") {
		t.Fatalf("Open without peers.toml: %v", err)
	}
}

// The fingerprint in peers.toml is the peer's identity (issue 17 item 8). A key file
// swapped for a stranger's is refused with one line that names it, by a node already
// running as well as by one opened afresh: nothing the stranger signs passes for the
// peer's, and nothing the peer sent meanwhile is lost. Putting the key back is noticed
// without peers.toml changing.
func TestPeerList_KeyFileMustMatchFingerprint(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
	helloBothWays(t, env, "alice", "bob") // the running node has read the peer list
	alice := env.Node("alice")
	keyPath := filepath.Join(alice.Dir, "keys", "peers", "bob.asc")
	bobsKey, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	stranger := pgpmsgtest.Identity(t, "mallory")
	var armored bytes.Buffer
	if err := stranger.Public().WriteArmored(&armored); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, armored.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = alice.Peers()
	if err == nil || !strings.HasPrefix(err.Error(), "keys/peers/bob.asc: ") || !strings.Contains(err.Error(), "is not peer bob's") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("running node with a stranger's key as bob's: %v", err)
	}
	if o, err := agent.Open(alice.Dir); err == nil {
		o.Close()
		t.Fatal("Open took a stranger's key as bob's")
	}
	now := time.Now()
	fromStranger := seal(t, hello(stranger, alice.ID, now), stranger, alice.ID.Public())
	bob := pgpmsgtest.Identity(t, "bob")
	fromBob := seal(t, hello(bob, alice.ID, now), bob, alice.ID.Public())
	put(t, alice, queue.NewName(now, ".pgp"), fromStranger)
	put(t, alice, queue.NewName(now, ".pgp"), fromBob)
	heard := alice.LastHeard("bob")
	r, _ := alice.ProcessIncoming(ctx)
	if r.Processed != 0 || r.Quarantined != 0 || r.Left != 2 {
		t.Fatalf("processing with bob's key file swapped: %+v, want both left for later", r)
	}
	if err := os.WriteFile(keyPath, bobsKey, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err = alice.ProcessIncoming(ctx)
	if err != nil || r.Processed != 1 || r.Quarantined != 1 {
		t.Fatalf("processing with bob's key back: %+v, %v; want bob's processed, the stranger's quarantined", r, err)
	}
	if !alice.LastHeard("bob").After(heard) {
		t.Fatal("bob's HELLO, sent while his key file was swapped, was not taken")
	}
	for _, reason := range alice.Quarantined() {
		if !strings.Contains(reason, "signer") && !strings.Contains(reason, "key") {
			t.Fatalf("the stranger's HELLO quarantined for %q", reason)
		}
	}

	// edit_peer does not give one peer another's key either.
	carol := pgpmsgtest.Key(t, "bob")
	armored.Reset()
	carol.WriteArmored(&armored)
	if err := alice.AddPeer("carol", agent.PeerEdit{Email: ptr("carol@dibs.test"), Talk: ptr(agent.Carry), Listen: ptr(agent.Carry)}); err != nil {
		t.Fatal(err)
	}
	err = alice.EditPeer("carol", agent.PeerEdit{Key: &armored})
	if err == nil || !strings.Contains(err.Error(), "key of peer bob already") {
		t.Fatalf("edit_peer --key_file with bob's key for carol: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
