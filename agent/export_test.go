package agent

import "github.com/dibs-backup/dibs/agent/books"

// CodeFor exposes codeFor to the tests.
var CodeFor = codeFor

// ForgetSeen empties the replay table, so a benchmark can process the same files again.
func (n *Node) ForgetSeen() {
	n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error { return tx.ClearSeen() })
	})
}

// RehearseBatches makes every message's transaction run once, rolled back, before it
// runs for real: the retry of a batch in which another message failed.
func (n *Node) RehearseBatches() { n.rehearse = true }
