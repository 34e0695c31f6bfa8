package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/testenv"
)

var ctx = context.Background()

func nodes(specs ...testenv.NodeSpec) testenv.Setup { return testenv.Setup{Nodes: specs} }

// helloBothWays greets a from b and b from a, settles, and checks both heard both.
func helloBothWays(t *testing.T, env *testenv.Env, a, b string) {
	t.Helper()
	na, nb := env.Node(a), env.Node(b)
	na.Post(b, agent.TypeHello)
	nb.Post(a, agent.TypeHello)
	env.Settle(ctx, 10)
	if nb.LastHeard(a).IsZero() {
		t.Errorf("%s never heard from %s", b, a)
	}
	if na.LastHeard(b).IsZero() {
		t.Errorf("%s never heard from %s", a, b)
	}
	for _, n := range []*testenv.Node{na, nb} {
		if q := n.Quarantined(); len(q) > 0 {
			t.Errorf("%s quarantined %v", n.Spec.Name, q)
		}
		if es, _ := n.Spool.List("incoming"); len(es) > 0 {
			t.Errorf("%s left %d files in incoming", n.Spec.Name, len(es))
		}
	}
}

func TestHello_ActivePush(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
	helloBothWays(t, env, "alice", "bob")
}

func TestHello_NATNodePushesAndPolls(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob", NAT: true}))
	alice, bob := env.Node("alice"), env.Node("bob")
	// Alice cannot reach bob: her HELLO waits in outgoing/bob until bob pulls it.
	alice.Post("bob", agent.TypeHello)
	if r := alice.Cron(ctx); r.Send.Sent != 0 || r.Send.Waiting != 1 {
		t.Fatalf("alice's send to a NAT'd peer: %+v, want it waiting", r.Send)
	}
	helloBothWays(t, env, "alice", "bob")
	if bob.LastHeard("alice").IsZero() || alice.LastHeard("bob").IsZero() {
		t.Fatal("no liveness across NAT")
	}
}

func TestHello_TwoNATNodesThroughRelay(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice", NAT: true}, testenv.NodeSpec{Name: "bob", NAT: true}))
	if env.Relay == nil {
		t.Fatal("two NAT'd nodes got no relay")
	}
	helloBothWays(t, env, "alice", "bob")
}

func TestHello_ByMail(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice", Mail: true}, testenv.NodeSpec{Name: "bob", Mail: true}))
	helloBothWays(t, env, "alice", "bob")
}

func TestHello_CarriedDirectory(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice", NAT: true}, testenv.NodeSpec{Name: "bob", NAT: true}))
	env.Cut("alice")
	env.Cut("bob") // no network at all: only the USB stick
	alice, bob := env.Node("alice"), env.Node("bob")
	stick := t.TempDir()
	alice.Post("bob", agent.TypeHello)
	if r, err := alice.ExportMessages(stick, "", false); err != nil || r.Exported != 1 {
		t.Fatalf("export: %+v %v", r, err)
	}
	if es, _ := alice.Spool.List("outgoing/bob"); len(es) != 0 {
		t.Fatal("export without --keep left the file in the spool")
	}
	// A file for someone else on the stick stays there.
	other := filepath.Join(stick, "0123456789ABCDEF0123456789ABCDEF01234567", "x.pgp")
	os.MkdirAll(filepath.Dir(other), 0o700)
	os.WriteFile(other, []byte("not for bob"), 0o600)
	if r, err := bob.ImportMessages(stick); err != nil || r.Imported != 1 {
		t.Fatalf("import: %+v %v", r, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatal("import took a file addressed to someone else")
	}
	if r, _ := bob.ProcessIncoming(ctx); r.Processed != 1 {
		t.Fatalf("bob processed %+v", r)
	}
	if r, err := bob.ExportMessages(stick, "alice", true); err != nil || r.Exported != 1 {
		t.Fatalf("bob's export: %+v %v", r, err)
	}
	if es, _ := bob.Spool.List("outgoing/alice"); len(es) != 1 {
		t.Fatal("--keep did not keep the file")
	}
	alice.ImportMessages(stick)
	if r, _ := alice.ProcessIncoming(ctx); r.Processed != 1 {
		t.Fatalf("alice processed %+v", r)
	}
	if alice.LastHeard("bob").IsZero() || bob.LastHeard("alice").IsZero() {
		t.Fatal("the carried HELLO round trip did not update last_heard")
	}
}

// A peer reached only by carried files says so (talk carry, listen carry, no host): the
// cron commands leave its files to export_messages without an error, and the carried
// HELLO round trip works as for any peer.
func TestHello_CarryPeersNeedNoHost(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice", NAT: true}, testenv.NodeSpec{Name: "bob", NAT: true}))
	alice, bob := env.Node("alice"), env.Node("bob")
	carry, none, zero := agent.Carry, "", 0
	for _, pair := range [][2]*testenv.Node{{alice, bob}, {bob, alice}} {
		e := agent.PeerEdit{Talk: &carry, Listen: &carry, Host: &none, Port: &zero}
		if err := pair[0].EditPeer(pair[1].Spec.Name, e); err != nil {
			t.Fatalf("%s: talk/listen carry without a host: %v", pair[0].Spec.Name, err)
		}
	}
	alice.Post("bob", agent.TypeHello)
	r := alice.Cron(ctx)
	if r.Err != nil || r.Send.Sent != 0 || r.Send.Waiting != 1 {
		t.Fatalf("cron of a carry-only node: %+v", r)
	}
	stick := t.TempDir()
	for _, hop := range [][2]*testenv.Node{{alice, bob}, {bob, alice}} {
		if x, err := hop[0].ExportMessages(stick, "", false); err != nil || x.Exported != 1 {
			t.Fatalf("%s exports: %+v %v", hop[0].Spec.Name, x, err)
		}
		if _, err := hop[1].ImportMessages(stick); err != nil {
			t.Fatal(err)
		}
		if r := hop[1].Cron(ctx); r.Err != nil || r.Process.Processed != 1 {
			t.Fatalf("%s's cron after the import: %+v", hop[1].Spec.Name, r)
		}
	}
	if alice.LastHeard("bob").IsZero() || bob.LastHeard("alice").IsZero() {
		t.Fatal("the carried HELLO round trip did not update last_heard")
	}
}

func TestHello_FaultyNetworkChangesNothing(t *testing.T) {
	for _, fault := range []testenv.Fault{testenv.Drop, testenv.Duplicate, testenv.Corrupt, testenv.Truncate} {
		t.Run(faultName(fault), func(t *testing.T) {
			env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
			alice, bob := env.Node("alice"), env.Node("bob")
			alice.Faults.Always(fault)
			alice.Post("bob", agent.TypeHello)
			alice.Cron(ctx)
			bob.Cron(ctx)
			alice.Faults.Clear()
			env.Settle(ctx, 10)
			q := bob.Quarantined()
			switch fault {
			case testenv.Drop:
				if len(q) != 0 || bob.LastHeard("alice").IsZero() {
					t.Fatalf("a dropped transfer was not retried: quarantine %v", q)
				}
			case testenv.Duplicate:
				if len(q) > 1 {
					t.Fatalf("a duplicate did more than one quarantine: %v", q)
				}
				for _, r := range q {
					if !strings.Contains(r, "replay") {
						t.Fatalf("duplicate quarantined for %q", r)
					}
				}
			case testenv.Corrupt, testenv.Truncate:
				if len(q) != 1 {
					t.Fatalf("damaged file: quarantine %v, want one entry", q)
				}
			}
			if fault != testenv.Corrupt && fault != testenv.Truncate && alice.LastHeard("bob").IsZero() {
				t.Fatal("alice never got bob's reply")
			}
		})
	}
}

func faultName(f testenv.Fault) string {
	return map[testenv.Fault]string{testenv.Drop: "Drop", testenv.Duplicate: "Duplicate", testenv.Corrupt: "Corrupt", testenv.Truncate: "Truncate"}[f]
}

func TestHello_ReorderedAndDelayedReplies(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
	alice, bob := env.Node("alice"), env.Node("bob")
	alice.Faults.Always(testenv.Hold)
	for range 5 {
		alice.Post("bob", agent.TypeHello)
	}
	alice.Cron(ctx)
	if alice.Faults.Held() != 5 {
		t.Fatalf("held %d", alice.Faults.Held())
	}
	alice.Faults.Clear()
	if err := alice.Faults.Release(ctx, true); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	if r := bob.Quarantined(); len(r) != 0 {
		t.Fatalf("reordering quarantined %v", r)
	}
	if es, _ := alice.Spool.List("incoming"); len(es) != 0 {
		t.Fatal("replies left unprocessed")
	}
}

func TestPeerDisappears_FilesWaitAndGoWhenItReturns(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
	alice, bob := env.Node("alice"), env.Node("bob")
	env.Cut("bob")
	alice.Post("bob", agent.TypeHello)
	r := alice.Cron(ctx)
	if r.Send.Waiting != 1 || r.Err == nil {
		t.Fatalf("send to an unreachable peer: %+v", r)
	}
	env.Mend("bob")
	env.Settle(ctx, 10)
	if bob.LastHeard("alice").IsZero() {
		t.Fatal("the queued HELLO was lost")
	}
}
