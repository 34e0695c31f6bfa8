package agent

import (
	"context"
	"errors"
	"os"
	"time"
)

// schedule remembers when the daemon last ran each periodic task. (The storage-list
// exchange, which auto_check runs too, keeps its time in the books: see syncIfDue.)
type schedule struct {
	probe, cleanup time.Time
}

// housekeeping is the daemon's periodic batch beyond polling: auto_check (when
// autoBackupDir has entries), probes every probePeriod, re-sending unanswered requests,
// repair, a storage-list exchange and cleanup once a day. Errors are logged: one failing
// task does not stop the others.
func (n *Node) housekeeping(ctx context.Context, s *schedule) {
	now := n.Now()
	logErr := func(task string, err error) {
		if err != nil {
			n.jobFailed(ctx, task, err)
		} else {
			n.jobSucceeded(task)
		}
	}
	if des, err := os.ReadDir(optAutoBackupDir.Get(n.Opts)); err == nil && len(des) > 0 {
		res, err := n.AutoCheck(ctx) // stores, then maintains
		logErr("auto_check", err)
		if res.Stored > 0 {
			n.runs.noteStore(n.Now())
			n.Log.Info("auto_check", "stored", res.Stored, "bytes", res.Bytes)
		}
	} else {
		_, err := n.maintain()
		logErr("maintain", err)
	}
	if now.Sub(s.probe) >= optProbePeriod.Get(n.Opts) {
		if _, err := n.Probe(""); err == nil {
			s.probe = now
			n.runs.job("probe", now, now.Add(optProbePeriod.Get(n.Opts)))
		} else {
			n.Log.Info("probe", "skipped", err)
		}
	}
	sent, ran, err := n.syncIfDue() // not due if auto_check just did it
	logErr("storage list", err)
	if ran {
		n.Log.Info("storage list", "peers", sent)
	}
	if now.Sub(s.cleanup) >= 24*time.Hour {
		_, err := n.Cleanup()
		logErr("cleanup", err)
		s.cleanup = now
		n.runs.job("cleanup", now, now.Add(24*time.Hour))
	}
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
// unstored are rewritten (tidyPacks).
func (n *Node) maintain() (Upkeep, error) {
	var u Upkeep
	var err1, err2, err3 error
	u.ProbesExpired, err1 = n.ExpireProbes()
	u.Resent, err2 = n.ResendRequests()
	u.Repair, err3 = n.Repair()
	if err3 == nil {
		n.runs.noteRepair(n.Now(), u.Repair)
	}
	if res := u.Repair; res.Rebuilt+res.Fetching+res.MarkedLost > 0 {
		n.Log.Info("repair", "lost", res.MarkedLost, "rebuilt", res.Rebuilt, "fetching", res.Fetching, "short", res.Short)
	}
	err4 := n.tidyPacks(context.Background())
	return u, errors.Join(err1, err2, err3, err4)
}
