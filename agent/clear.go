package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/queue"
)

// Clear asks every peer to drop everything it stores for us and empties our books. A
// peer that is down today gets the request when it is reachable: it waits in the spool.
func (n *Node) Clear() (int, error) {
	peers, err := n.Peers()
	if err != nil {
		return 0, err
	}
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			if err := tx.ClearStored(); err != nil {
				return err
			}
			for _, p := range peers {
				ps, err := tx.Peer(p.Name)
				if err != nil {
					return err
				}
				ps.RemoteUsed, ps.RemotePending = 0, 0
				if err := tx.PutPeer(p.Name, ps); err != nil {
					return err
				}
				if err := n.requestTx(tx, p.Name, TypeClearDB, nil, nil); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	return len(peers), n.FlushOutbox()
}

// handleClearDB drops everything we hold for the sender.
func handleClearDB(r *Request) error {
	ids := r.Tx.HeldIDs(r.Peer.Name)
	if err := r.Node.dropHeld(r.Tx, r.Peer.Name, ids); err != nil {
		return err
	}
	return r.ack(TypeClearDB, [2]string{fieldCount, fmt.Sprint(len(ids))})
}

// Forget drops everything we store for peer and tells it so (FORGET_YOU).
func (n *Node) Forget(peer string) (int, error) {
	if _, _, err := n.Peer(peer); err != nil {
		return 0, err
	}
	var dropped int
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			ids := tx.HeldIDs(peer)
			dropped = len(ids)
			if err := n.dropHeld(tx, peer, ids); err != nil {
				return err
			}
			return n.requestTx(tx, peer, TypeForgetYou, nil, nil)
		})
	})
	if err != nil {
		return 0, err
	}
	os.RemoveAll(filepath.Join(n.Dir, storageDir, peer)) // what is left is empty directories
	return dropped, n.FlushOutbox()
}

// handleForgetYou records that the sender dropped everything it held for us: all our
// pieces there are lost, and repair places them elsewhere.
func handleForgetYou(r *Request) error {
	tx := r.Tx
	var touched []*Object
	err := tx.EachObject(func(o *Object) error {
		changed := false
		for s := range o.Segments {
			for i := range o.Segments[s].Pieces {
				p := &o.Segments[s].Pieces[i]
				if p.Peer == r.Peer.Name && p.Healthy() {
					p.State, p.Why = PieceLost, "the peer forgot us"
					changed = true
				}
			}
		}
		if changed {
			touched = append(touched, o)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, o := range touched {
		if err := tx.PutObject(o); err != nil {
			return err
		}
	}
	ps, err := tx.Peer(r.Peer.Name)
	if err != nil {
		return err
	}
	ps.RemoteUsed, ps.RemotePending, ps.Forgotten = 0, 0, r.Now
	if err := tx.PutPeer(r.Peer.Name, ps); err != nil {
		return err
	}
	return r.ack(TypeForgetYou)
}

// CleanupResult says what cleanup removed.
type CleanupResult struct {
	EmptyDirs   int
	Quarantined int // quarantined files older than maxMsgAge
	Temp        int // leftovers of interrupted writes
	Staging     int // shards of recoveries no longer running
	Versions    int // versions of files deleted locally longer ago than keepDeleted
	Probes      int // probes counted as timeouts
}

// Cleanup removes empty storage directories, expired quarantine and temporary files,
// the staging area of finished recoveries, and versions of locally deleted files older
// than keepDeleted (0 keeps them forever).
func (n *Node) Cleanup() (CleanupResult, error) {
	var res CleanupResult
	var errs []error
	now := n.Now()
	var err error
	if res.Quarantined, err = n.Spool.ExpireQuarantine(optMaxMsgAge.Get(n.Opts), now); err != nil {
		errs = append(errs, err)
	}
	if _, err := n.Spool.TrimQuarantine(optQuarantineMaxBytes.Get(n.Opts)); err != nil {
		errs = append(errs, err)
	}
	n.forgetQuarantine()
	if res.Temp, err = n.Spool.CleanTmp(time.Hour, now); err != nil {
		errs = append(errs, err)
	}
	k, err := n.sweepLeftovers(now)
	res.Temp += k
	if err != nil {
		errs = append(errs, err)
	}
	if res.Probes, err = n.ExpireProbes(); err != nil {
		errs = append(errs, err)
	}
	active := map[string]bool{}
	keep := optKeepDeleted.Get(n.Opts)
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			jobs, err := tx.ActiveJobs()
			if err != nil {
				return err
			}
			for _, j := range jobs {
				for id := range j.Objects {
					active[id] = true
				}
			}
			if keep <= 0 {
				return nil
			}
			var old []FileVersion
			err = tx.EachVersion(func(fv FileVersion) error {
				if !fv.Deleted.IsZero() && now.Sub(fv.Deleted) > keep {
					old = append(old, fv)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, fv := range old {
				// Every version of a name deleted that long ago goes.
				vs, err := tx.Versions(fv.Name)
				if err != nil {
					return err
				}
				for _, v := range vs {
					if err := n.dropVersionTx(tx, v); err != nil {
						return err
					}
					res.Versions++
				}
			}
			return nil
		})
	})
	if err != nil {
		errs = append(errs, err)
	}
	if err := n.tidyPacks(context.Background()); err != nil { // before staging goes: packs fetched back
		errs = append(errs, err)
	}
	if des, err := os.ReadDir(filepath.Join(n.Dir, stagingDir)); err == nil {
		for _, de := range des {
			if !active[de.Name()] {
				if err := os.RemoveAll(filepath.Join(n.Dir, stagingDir, de.Name())); err == nil {
					res.Staging++
				}
			}
		}
	}
	res.EmptyDirs = removeEmptyDirs(filepath.Join(n.Dir, storageDir))
	if err := n.FlushOutbox(); err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// sweepLeftovers settles what killed commands left outside tmp/: the staged pieces of a
// store (released into outgoing/ if the books know them, else removed) and, anywhere in
// the node's directory, the temp files of atomic writes older than an hour (a held piece
// under storage/<peer>/, a configuration file). It runs at cleanup and when the daemon
// starts, and returns how many files it settled or removed.
func (n *Node) sweepLeftovers(now time.Time) (int, error) {
	staged, err1 := n.sweepStaged()
	temps, err2 := queue.CleanTemps(n.Dir, time.Hour, now)
	return staged + temps, errors.Join(err1, err2)
}

// removeEmptyDirs removes the empty directories below root (not root), deepest first.
func removeEmptyDirs(root string) int {
	var dirs []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != root {
			dirs = append(dirs, p)
		}
		return nil
	})
	removed := 0
	for i := len(dirs) - 1; i >= 0; i-- {
		if os.Remove(dirs[i]) == nil { // fails unless empty
			removed++
		}
	}
	return removed
}
