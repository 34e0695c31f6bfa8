package agent

import (
	"io"
	"testing"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/queue"
)

// CodeFor exposes codeFor to the tests.
var CodeFor = codeFor

// ForgetSeen empties the replay table, so a benchmark can process the same files again.
func (n *Node) ForgetSeen() {
	n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error { return tx.ClearSeen() })
	})
}

// WrapMessageReads makes processing read every message file through wrap until the test
// ends: a reader that fails as a full or failing disk does.
func WrapMessageReads(t testing.TB, wrap func(io.Reader) io.Reader) {
	old := messageReader
	messageReader = func(c *queue.Claim) io.Reader { return wrap(c.Reader()) }
	t.Cleanup(func() { messageReader = old })
}
