package testenv_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/testenv"
)

// fatalTB records a Fatalf instead of ending the test, so that a test can see Settle fail.
type fatalTB struct {
	testing.TB
	fatal string
}

type fatalled struct{}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	panic(fatalled{})
}

func settle(env *testenv.Env, tb *fatalTB) (fatal string) {
	tb.fatal = ""
	defer func() {
		if r := recover(); r != nil && r != (fatalled{}) {
			panic(r)
		}
		fatal = tb.fatal
	}()
	env.Settle(tb.TB.Context(), 5)
	return ""
}

// A round in which a send failed moves nothing, yet the grid is not settled while the
// file waits for a peer that can be reached: Settle says so, with the send's error.
// Files for a cut peer do not hold it up.
func TestSettle_FailedSendIsNotSettled(t *testing.T) {
	tb := &fatalTB{TB: t}
	env := testenv.New(tb, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}})
	alice := env.Node("alice")
	alice.Faults.Always(testenv.Drop)
	alice.Post("bob", agent.TypeHello)
	fatal := settle(env, tb)
	if !strings.Contains(fatal, "alice queues 1 for bob") || !strings.Contains(fatal, testenv.ErrDropped.Error()) {
		t.Fatalf("Settle with a send that always fails: %q; want it not settled, with the error", fatal)
	}
	env.Cut("bob")
	if fatal := settle(env, tb); fatal != "" {
		t.Fatalf("Settle with the file for a cut peer: %q", fatal)
	}
	env.Mend("bob")
	alice.Faults.Clear()
	if fatal := settle(env, tb); fatal != "" || env.Node("bob").LastHeard("alice").IsZero() {
		t.Fatalf("Settle once the send passes: %q, bob heard alice at %v", fatal, env.Node("bob").LastHeard("alice"))
	}
}
