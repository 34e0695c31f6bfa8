package agent

import (
	"os"
	"strconv"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
)

// syncPeriod is how often the storage lists are exchanged, by the daemon and by
// auto_check alike, give or take syncSlack: a daily cron job's runs are a day apart to
// within minutes, and must not find the exchange due only every other day. taskSync
// names the exchange in the books' schedule; taskStore the last store that succeeded.
const (
	syncPeriod = 24 * time.Hour
	syncSlack  = time.Hour
	taskSync   = "storage_list"
	taskStore  = "store"
)

// SyncPeers sends every peer the list of pieces we count there (an empty list too: after
// recover_all from a peer that did not answer, it may hold pieces our books do not know),
// and records when, so that syncIfDue knows when the next exchange is due. While
// recoveries run it sends nothing, and the exchange stays due.
func (n *Node) SyncPeers() (int, error) {
	peers, err := n.Peers()
	if err != nil {
		return 0, err
	}
	sent := 0
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			if jobs, err := tx.ActiveJobs(); err != nil || len(jobs) > 0 {
				return err // books being rebuilt or fetched: not the time to free anything
			}
			lists := map[string][]string{}
			err := tx.EachObject(func(o *Object) error {
				for _, seg := range o.Segments {
					for _, p := range seg.Pieces {
						if p.Healthy() {
							lists[p.Peer] = append(lists[p.Peer], p.ID)
						}
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, p := range peers {
				if _, key, err := n.Peer(p.Name); err != nil || key == nil {
					continue
				}
				if err := tx.AddOutbox(n.newOut(p.Name, TypeStorageList, nil, writeIDs(lists[p.Name]))); err != nil {
					return err
				}
				sent++
			}
			return tx.PutLastRun(taskSync, n.Now())
		})
	})
	if err != nil {
		return sent, err
	}
	return sent, n.FlushOutbox()
}

// syncIfDue runs SyncPeers when the last exchange is about syncPeriod old, so that a node run
// from cron exchanges its lists as a daemon does. It reports whether it ran. A node with
// no exchange recorded starts the clock instead, as a daemon waits a period after its
// start: a node set up from a recovery kit, whose books are still empty, must not tell
// its peers at once that it stores nothing with them.
func (n *Node) syncIfDue() (sent int, ran bool, err error) {
	now := n.Now()
	due := false
	err = n.withDB(func(db *books.DB) error {
		var last time.Time
		var known bool
		err := db.View(func(tx *books.Tx) (err error) {
			last, known, err = tx.LastRun(taskSync)
			return err
		})
		if err != nil || known {
			due = now.Sub(last) >= syncPeriod-syncSlack
			return err
		}
		return db.Update(func(tx *books.Tx) error { return tx.PutLastRun(taskSync, now) })
	})
	if err != nil || !due {
		return 0, false, err
	}
	sent, err = n.SyncPeers()
	return sent, true, err
}

// handleStorageList is the peer's side of the reconciliation.
func handleStorageList(r *Request) error {
	ids, err := r.idList()
	if err != nil {
		return err
	}
	date, err := r.Header.Date()
	if err != nil {
		return reject("STORAGE_LIST: %v", err)
	}
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		listed[id] = true
	}
	var drop []string
	for _, id := range r.Tx.HeldIDs(r.Peer.Name) {
		if listed[id] {
			if _, err := os.Stat(r.Node.storagePath(r.Peer.Name, id)); err == nil {
				delete(listed, id) // held, and still on disk
			} else {
				drop = append(drop, id) // the books say held, the disk lost it
			}
			continue
		}
		hp, _, err := r.Tx.Held(r.Peer.Name, id)
		if err != nil {
			return err
		}
		if hp.Sent.Before(date) {
			drop = append(drop, id)
		}
	}
	if err := r.Node.dropHeld(r.Tx, r.Peer.Name, drop); err != nil {
		return err
	}
	var missing []string
	for _, id := range ids {
		if listed[id] {
			missing = append(missing, id)
		}
	}
	r.Node.Log.Info("storage list", "peer", r.Peer.Name, "dropped", len(drop), "missing", len(missing))
	return r.Reply(TypeAck, [][2]string{{fieldOp, TypeStorageList}, {fieldCount, strconv.Itoa(len(drop))}}, writeIDs(missing))
}

// handleStorageListAck marks lost the acknowledged pieces the peer says it lacks, and
// closes the books on the pieces we were unstoring there: the list left them out, so
// the peer dropped them.
func handleStorageListAck(r *Request) error {
	ids, err := r.idList()
	if err != nil {
		return err
	}
	var unstoring []string
	err = r.Tx.EachObject(func(o *Object) error {
		for _, seg := range o.Segments {
			for _, p := range seg.Pieces {
				if p.ID != "" && p.Peer == r.Peer.Name && p.State == PieceUnstoring {
					unstoring = append(unstoring, p.ID)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := r.Node.piecesUnstored(r.Tx, r.Peer.Name, unstoring); err != nil {
		return err
	}
	for _, id := range ids {
		o, s, i, err := r.Tx.FindPiece(id)
		if err != nil {
			return err
		}
		if o == nil {
			continue
		}
		p := &o.Segments[s].Pieces[i]
		if p.Peer != r.Peer.Name || p.State != PieceStored {
			continue // a piece still on its way is not lost
		}
		p.State, p.Why = PieceLost, "the peer's storage list lacks it"
		if err := r.Tx.PutObject(o); err != nil { // usage is given back when repair drops it
			return err
		}
	}
	if len(ids) > 0 {
		r.Node.Log.Warn("pieces missing at peer", "peer", r.Peer.Name, "count", len(ids), "in-reply-to", r.Header.Get(pgpmsg.FieldInReplyTo))
	}
	return nil
}
