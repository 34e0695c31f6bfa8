package agent_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
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
	for _, c := range []struct {
		name, old, new, want string
	}{
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
