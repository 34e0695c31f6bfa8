package agent

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
)

// Two drills started within one second (the table shows starts to the second) still
// list newest first: a drill that ends fast and the next one begun right after it.
func TestDrillRows_NewestFirstWithinASecond(t *testing.T) {
	db, err := books.Open(filepath.Join(t.TempDir(), "books.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	first := time.Date(2026, 12, 4, 20, 50, 22, 100_000_000, time.UTC)
	err = db.Update(func(tx *books.Tx) error {
		for i, state := range []string{RecoveryDone, RecoveryFailed} {
			at := first.Add(time.Duration(i) * 700 * time.Millisecond)
			j := &RecoveryJob{Name: drillPrefix + at.Format("2006-01-02T15:04:05.000000000Z"), Kind: books.JobDrill,
				State: state, Started: at, Ended: at.Add(100 * time.Millisecond),
				Objects: map[string]bool{}, Pieces: map[string]bool{}, Bad: map[string]string{}, Sample: map[string]int{}}
			if err := tx.PutJob(j); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var rows []DrillRow
	if err := db.View(func(tx *books.Tx) (err error) { rows, err = drillRows(tx); return err }); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].State != RecoveryFailed || rows[1].State != RecoveryDone {
		t.Fatalf("drills %+v; want the second (failed) first", rows)
	}
}
