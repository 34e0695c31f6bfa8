package books

import "time"

// LastRun returns when the named periodic task last ran, and whether it ever did. Tasks
// that a daemon and cron commands both run (the storage-list exchange) keep their time
// here, so that each knows when the next run is due.
func (t *Tx) LastRun(task string) (time.Time, bool, error) {
	var at time.Time
	ok, err := t.get(bucketSchedule, []byte(task), &at)
	return at, ok, err
}

// PutLastRun records that the named periodic task ran at at.
func (t *Tx) PutLastRun(task string, at time.Time) error {
	return t.put(bucketSchedule, []byte(task), at)
}
