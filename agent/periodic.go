package agent

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
)

// The daemon's periodic jobs beyond send, poll and process (daemon.go): auto_check and
// repair every pollInterval, probe every probePeriod, the probe statistics (timeouts)
// every pollInterval or probeTimeout if shorter, the storage-list exchange when the
// books say it is due (syncIfDue), and cleanup once a day, the first a day after start.
// Errors go back to runJob, which logs them: one failing job does not stop the others.

// maintained is when maintain last ran in the daemon, by its repair job or inside an
// auto_check: the repair job is due a pollInterval after either.
type maintained struct {
	mu sync.Mutex
	at time.Time
}

func (m *maintained) note(at time.Time) {
	m.mu.Lock()
	if at.After(m.at) {
		m.at = at
	}
	m.mu.Unlock()
}

func (m *maintained) last() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.at
}

// periodicJobs are the daemon's jobs of periodic.go.
func (d *Daemon) periodicJobs() []*job {
	n := d.n
	poll := func() time.Duration { return optPollInterval.Get(n.Opts) }
	var repair *job
	autoCheck := newJob("auto_check", every(poll), func(ctx context.Context) error {
		des, err := os.ReadDir(optAutoBackupDir.Get(n.Opts))
		if err != nil || len(des) == 0 {
			return nil // nothing to store: the repair job keeps the backups healthy
		}
		start := d.clock.Now()
		res, err := n.AutoCheck(ctx) // stores, then maintains
		d.maintained.note(start)
		poke(repair.resched)
		if res.Stored > 0 {
			n.runs.noteStore(n.Now())
			n.Log.Info("auto_check", "stored", res.Stored, "bytes", res.Bytes)
		}
		return err
	})
	repair = newJob("repair", func(last, now time.Time) time.Time {
		if m := d.maintained.last(); m.After(last) {
			last = m
		}
		return every(poll)(last, now)
	}, func(ctx context.Context) error {
		d.maintained.note(d.clock.Now())
		_, err := n.maintain(ctx)
		return err
	})
	probe := newJob("probe", every(func() time.Duration { return optProbePeriod.Get(n.Opts) }), func(ctx context.Context) error {
		if _, err := n.Probe(""); err != nil {
			n.Log.Info("probe", "skipped", err) // nothing stored to probe yet
		}
		return nil
	})
	stats := newJob("stats", every(func() time.Duration { return min(poll(), optProbeTimeout.Get(n.Opts)) }), func(ctx context.Context) error {
		k, err := n.ExpireProbes()
		if k > 0 {
			n.Log.Info("probes timed out", "probes", k)
		}
		if d, derr := n.ExpireDrills(); derr != nil || d > 0 {
			n.Log.Info("drills ended on drillTimeout", "drills", d, "err", derr)
			err = errors.Join(err, derr)
		}
		return err
	})
	drill := newJob("drill", func(last, now time.Time) time.Time {
		period := optDrillPeriod.Get(n.Opts)
		if period <= 0 {
			return now.Add(day) // off: looked at again daily, or when the options change
		}
		if at, known, err := n.lastDrill(); err == nil && known {
			return at.Add(period)
		}
		if last.IsZero() { // no drill yet: one poll after start, and each poll until one starts
			return d.started.Add(poll())
		}
		return last.Add(poll())
	}, func(ctx context.Context) error {
		if optDrillPeriod.Get(n.Opts) <= 0 {
			return nil
		}
		st, err := n.Drill()
		if err != nil {
			n.Log.Info("drill", "skipped", err) // nothing stored yet, or one still waiting
			return nil
		}
		n.Log.Info("drill started", "files", st.Files, "pieces", st.Pieces, "bytes", st.Bytes)
		return nil
	})
	storageList := newJob("storage_list", func(last, now time.Time) time.Time {
		at, known, err := n.lastRun(taskSync)
		if err != nil || !known {
			return now // syncIfDue starts the clock
		}
		return at.Add(syncPeriod - syncSlack)
	}, func(ctx context.Context) error {
		sent, ran, err := n.syncIfDue()
		if ran {
			n.Log.Info("storage list", "peers", sent)
		}
		return err
	})
	cleanup := newJob("cleanup", func(last, now time.Time) time.Time {
		if last.IsZero() {
			return d.started.Add(day) // a daily chore: not at start
		}
		return last.Add(day)
	}, func(ctx context.Context) error {
		_, err := n.Cleanup()
		return err
	})
	return []*job{autoCheck, repair, probe, stats, storageList, cleanup, drill}
}

// lastRun is when the named task last ran, as the books keep it.
func (n *Node) lastRun(task string) (at time.Time, known bool, err error) {
	err = n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) (err error) {
			at, known, err = tx.LastRun(task)
			return err
		})
	})
	return at, known, err
}

// Upkeep says what maintain did.
type Upkeep struct {
	ProbesExpired int // probes unanswered for probeTimeout, counted as timeouts
	Resent        int // requests unanswered for resendAfter, sent again
	Repair        RepairResult
}

// maintain is the upkeep that follows every auto_check (so a node run from cron keeps its
// backups healthy too): probes unanswered too long count as timeouts, unanswered
// requests are sent again, segments that lost pieces are repaired, and packs mostly
// unstored are rewritten (tidyPacks). It holds the maintain job lock: a cron auto_check
// and the daemon's repair job take turns.
func (n *Node) maintain(ctx context.Context) (Upkeep, error) {
	var u Upkeep
	unlock, err := n.lockJob(ctx, "maintain")
	if err != nil {
		return u, err
	}
	defer unlock()
	var err1, err2, err3 error
	u.ProbesExpired, err1 = n.ExpireProbes()
	u.Resent, err2 = n.ResendRequests()
	u.Repair, err3 = n.Repair()
	if err3 == nil {
		n.runs.noteRepair(n.Now(), u.Repair)
	}
	if res := u.Repair; res.Rebuilt+res.Fetching+res.MarkedLost+res.Moved > 0 {
		n.Log.Info("repair", "lost", res.MarkedLost, "rebuilt", res.Rebuilt, "fetching", res.Fetching, "short", res.Short, "moved", res.Moved)
	}
	err4 := n.tidyPacks(context.Background())
	return u, errors.Join(err1, err2, err3, err4)
}
