package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dibs-backup/dibs/agent/books"
)

// autoPrefix is the stored-name prefix of what auto_check backs up.
const autoPrefix = "/autoBackup"

// AutoResult is what one auto_check did: the stores, then the upkeep.
type AutoResult struct {
	StoreResult
	Upkeep Upkeep
	// StorageLists is how many peers were sent our storage list (when the daily
	// exchange was due).
	StorageLists int
}

// AutoCheck stores every entry of autoBackupDir (users put symlinks there; they are
// followed) as /autoBackup/<entry>, incrementally. An entry that was removed from
// autoBackupDir has its stored files marked deleted: they stay recoverable until
// keepDeleted says otherwise. Then it maintains what is stored (see maintain), and
// exchanges storage lists with the peers when the last exchange is a day old (syncIfDue):
// a node run from cron needs no daemon for that.
func (n *Node) AutoCheck(ctx context.Context) (AutoResult, error) {
	var total AutoResult
	unlock, err := n.lockJob(ctx, "auto_check") // the daemon's auto_check and cron's take turns
	if err != nil {
		return total, err
	}
	defer unlock()
	dir := optAutoBackupDir.Get(n.Opts)
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return total, fmt.Errorf("autoBackupDir: %w", err)
	}
	var errs []error
	present := map[string]bool{}
	for _, de := range des {
		sname := autoPrefix + "/" + de.Name()
		present[sname] = true
		res, err := n.Store(ctx, filepath.Join(dir, de.Name()), sname)
		total.Entries += res.Entries
		total.Unchanged += res.Unchanged
		total.Stored += res.Stored
		total.Bytes += res.Bytes
		total.Objects += res.Objects
		total.Pieces += res.Pieces
		total.Deleted += res.Deleted
		for _, w := range res.Warnings {
			if !slices.Contains(total.Warnings, w) { // "no redundancy" once, not per entry
				total.Warnings = append(total.Warnings, w)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", de.Name(), err))
		}
	}
	gone, err := n.markGone(autoPrefix, present)
	total.Deleted += gone
	up, uerr := n.maintain(ctx)
	total.Upkeep = up
	sent, _, serr := n.syncIfDue()
	total.StorageLists = sent
	return total, errors.Join(append(errs, err, uerr, serr)...)
}

// markGone marks deleted the live versions under prefix/<entry> whose entry is not in
// present.
func (n *Node) markGone(prefix string, present map[string]bool) (int, error) {
	now := n.Now().UTC()
	gone := 0
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			latest := map[string]FileVersion{}
			err := tx.EachVersionUnder(prefix, func(fv FileVersion) error {
				if fv.Name != prefix { // the entries below it
					latest[fv.Name] = fv
				}
				return nil
			})
			if err != nil {
				return err
			}
			for name, fv := range latest {
				top := name
				if rest := name[len(prefix)+1:]; rest != "" {
					if i := strings.IndexByte(rest, '/'); i >= 0 {
						top = prefix + "/" + rest[:i]
					}
				}
				if present[top] || !fv.Deleted.IsZero() {
					continue
				}
				fv.Deleted = now
				if err := tx.PutVersion(fv); err != nil {
					return err
				}
				if err := tx.DeleteStat(name); err != nil {
					return err
				}
				gone++
			}
			return nil
		})
	})
	return gone, err
}
