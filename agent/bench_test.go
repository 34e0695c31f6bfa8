package agent_test

import (
	"testing"

	"github.com/dibs-backup/dibs/testenv"
)

// BenchmarkReopenDB is the cost of one database use by a node that does not keep the
// database open (the daemon, so that cron commands get their turn): open, read, close.
func BenchmarkReopenDB(b *testing.B) {
	env := testenv.New(b, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}})
	alice := env.Node("alice")
	alice.Close()
	alice.KeepDB = false
	for b.Loop() {
		st, err := alice.PeerStates()
		if err != nil || st == nil {
			b.Fatal(st, err)
		}
	}
}
