package books

import (
	"testing"
	"time"
)

// A task's last run survives closing the database: the next cron command reads it.
func TestLastRun_Persists(t *testing.T) {
	db, path := open(t)
	view(t, db, func(tx *Tx) error {
		if _, ok, err := tx.LastRun("storage_list"); ok || err != nil {
			t.Errorf("LastRun of a task never run: %v, %v", ok, err)
		}
		return nil
	})
	at := time.Date(2026, 12, 3, 2, 30, 0, 0, time.UTC)
	update(t, db, func(tx *Tx) error { return tx.PutLastRun("storage_list", at) })
	db.Close()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	view(t, db, func(tx *Tx) error {
		got, ok, err := tx.LastRun("storage_list")
		if !ok || err != nil || !got.Equal(at) {
			t.Errorf("LastRun = %v, %v, %v; want %v", got, ok, err, at)
		}
		return nil
	})
}
