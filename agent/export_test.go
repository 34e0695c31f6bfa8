package agent

import (
	"context"
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

// RehearseBatches makes every message's transaction run once, rolled back, before it
// runs for real: the retry of a batch in which another message failed.
func (n *Node) RehearseBatches() { n.rehearse = true }

// QueueUnsealed records a HELLO to peer in the outbox without sealing it: what a command
// killed between its commit and its outbox flush leaves.
func (n *Node) QueueUnsealed(peer string) error {
	return n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error { return tx.AddOutbox(n.newOut(peer, TypeHello, nil, nil)) })
	})
}

// OutboxLen is how many messages wait in the outbox.
func (n *Node) OutboxLen() int {
	k := 0
	n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			return tx.EachOutbox(func(uint64, OutMessage) error { k++; return nil })
		})
	})
	return k
}

// SweepStaged exposes sweepStaged.
func (n *Node) SweepStaged() (int, error) { return n.sweepStaged() }

// StoreFileName is the spool name of a new STORE message of piece for peer.
func (n *Node) StoreFileName(peer, piece string) string {
	return storeFileName(n.newOut(peer, TypeStore, nil, nil), piece)
}

// SentPieces maps the pieces the books count as sent to their peers.
func (n *Node) SentPieces() map[string]string {
	out := map[string]string{}
	n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			return tx.EachObject(func(o *Object) error {
				for _, seg := range o.Segments {
					for _, p := range seg.Pieces {
						if p.ID != "" && p.State == PieceSent {
							out[p.ID] = p.Peer
						}
					}
				}
				return nil
			})
		})
	})
	return out
}

// WrapMessageReads makes processing read every message file through wrap until the test
// ends: a reader that fails as a full or failing disk does.
func WrapMessageReads(t testing.TB, wrap func(io.Reader) io.Reader) {
	old := messageReader
	messageReader = func(c *queue.Claim) io.Reader { return wrap(c.Reader()) }
	t.Cleanup(func() { messageReader = old })
}

// JobFailed exposes the daemon's report of a job's failure to the tests.
func (n *Node) JobFailed(ctx context.Context, job string, err error) { n.jobFailed(ctx, job, err) }

// SegmentNines is the durability estimate of every segment of every stored object, in
// nines.
func (n *Node) SegmentNines() ([]float64, error) {
	var out []float64
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			m, err := n.lossModelTx(tx)
			if err != nil {
				return err
			}
			return tx.EachObject(func(o *Object) error {
				if o.Refs <= 0 {
					return nil
				}
				for s := range o.Segments {
					out = append(out, Nines(m.segment(o, s)))
				}
				return nil
			})
		})
	})
	return out, err
}
