package agent

import (
	"path/filepath"

	"github.com/dibs-backup/dibs/agent/books"
)

// The node database is package books: one file, db/dibs.db, whose schema books lists.
//
// A daemon and cron commands sharing a DIBS_DIR take its two waited-for locks in one
// order: the database (the flock on db/dibs.db), then the outbox lock (db/outbox.lock,
// outbox.go). So the outbox is flushed only with the database held: a process holding the
// outbox lock while it waited for the database would wait on one that held the database
// and flushed, until the database's timeout (ErrDBBusy). Spool claims are never waited
// for (a busy file is left to its holder), so they take no part.

// ErrDBBusy means another process held the database for too long.
var ErrDBBusy = books.ErrDBBusy

// withDB runs fn with the database open. Unless KeepDB is set, the database is closed
// again when the last concurrent user is done, so other processes get their turn.
func (n *Node) withDB(fn func(*books.DB) error) error {
	n.dbMu.Lock()
	if n.db == nil {
		db, err := books.Open(filepath.Join(n.Dir, dbFile))
		if err != nil {
			n.dbMu.Unlock()
			return err
		}
		n.db = db
	}
	n.dbRefs++
	db := n.db
	n.dbMu.Unlock()
	defer func() {
		n.dbMu.Lock()
		n.dbRefs--
		if n.dbRefs == 0 && !n.KeepDB && n.db != nil {
			n.db.Close()
			n.db = nil
		}
		n.dbMu.Unlock()
	}()
	return fn(db)
}

// PeerState is what the node knows of a peer beyond the peer list: usage and liveness.
type PeerState = books.PeerState

// updatePeerState applies fn to a peer's state in its own transaction.
func (n *Node) updatePeerState(name string, fn func(*PeerState)) error {
	return n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			ps, err := tx.Peer(name)
			if err != nil {
				return err
			}
			fn(&ps)
			return tx.PutPeer(name, ps)
		})
	})
}

// PeerStates returns the state of every peer that has one.
func (n *Node) PeerStates() (map[string]PeerState, error) {
	out := map[string]PeerState{}
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			return tx.EachPeer(func(name string, ps PeerState) error {
				out[name] = ps
				return nil
			})
		})
	})
	return out, err
}
