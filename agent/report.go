package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/queue"
)

// An AdminMailer mails the node's owner, dibsAdmin: error reports, recovery summaries.
// agent/transports builds it on the SMTP settings.
type AdminMailer interface {
	// MailAdmin returns nil once the submission server accepted the mail.
	MailAdmin(ctx context.Context, subject, body string) error
}

// reportPrefix begins the names of error reports in errorDir (DIBS: error_<time>).
const reportPrefix = "error_"

// A Report says what ReportError did with one error.
type Report struct {
	Path   string // the report file in errorDir ("" if it could not be written)
	Count  int    // report files in errorDir, this one included
	Mailed bool   // the report went to dibsAdmin
	Warned bool   // and so did the warning that errorDir holds more than errWarnCount
	Err    error  // writing or mailing failed (a mail failure never loses the file)
}

// ReportError keeps an error that needs a person: it writes errorDir/error_<time> and
// mails it to dibsAdmin, as DIBS did. The reports in errorDir count towards the caps:
// the report that takes errorDir past errWarnCount also sends a warning mail, and past
// errMaxCount reports are only written, not mailed; removing reports from errorDir
// resets the count. what names the command or daemon job that failed. Failures to
// write or mail are logged and returned in the Report, never raised.
func (n *Node) ReportError(ctx context.Context, what string, failure error) Report {
	now := n.Now()
	dir := optErrorDir.Get(n.Opts)
	body := fmt.Sprintf("dibs %s failed on %s (key %s), %s:\n\n%s\n",
		what, optHostname.Get(n.Opts), n.Fingerprint(), now.UTC().Format(time.RFC3339), failure)
	var r Report
	r.Path, r.Err = writeReport(dir, now, body)
	if r.Err != nil {
		n.Log.Error("error report not written", "dir", dir, "err", r.Err)
	}
	r.Count = countReports(dir)
	warnAt, maxCount := int(optErrWarnCount.Get(n.Opts)), int(optErrMaxCount.Get(n.Opts))
	if r.Count > maxCount {
		n.Log.Warn("error report not mailed: errorDir holds more than errMaxCount", "report", r.Path, "count", r.Count, "errMaxCount", maxCount)
		return r
	}
	m := n.Transports.Admin
	if m == nil {
		r.Err = errors.Join(r.Err, errors.New("no mail transport for dibsAdmin"))
		return r
	}
	subject := fmt.Sprintf("dibs on %s: %s failed", optHostname.Get(n.Opts), what)
	if err := m.MailAdmin(ctx, subject, body+reportFooter(r.Path, r.Count, maxCount)); err != nil {
		n.Log.Warn("error report not mailed", "report", r.Path, "err", err)
		r.Err = errors.Join(r.Err, err)
		return r
	}
	r.Mailed = true
	if r.Count == warnAt+1 {
		warn := fmt.Sprintf("errorDir (%s) holds %d error reports, more than errWarnCount (%d).\n"+
			"Past errMaxCount (%d) they are no longer mailed. Read them, fix what they report,\n"+
			"and remove them to reset the count.\n", dir, r.Count, warnAt, maxCount)
		if err := m.MailAdmin(ctx, fmt.Sprintf("dibs on %s: %d error reports", optHostname.Get(n.Opts), r.Count), warn); err != nil {
			n.Log.Warn("error count warning not mailed", "err", err)
			r.Err = errors.Join(r.Err, err)
		} else {
			r.Warned = true
		}
	}
	return r
}

func reportFooter(path string, count, maxCount int) string {
	return fmt.Sprintf("\nThis report is kept in %s (%d in errorDir; mails stop past errMaxCount, %d).\n", path, count, maxCount)
}

// writeReport commits body as a new errorDir/error_<time> (a suffix keeps two reports
// of one instant apart).
func writeReport(dir string, now time.Time, body string) (string, error) {
	base := reportPrefix + now.UTC().Format("20060102T150405.000000000Z")
	path := filepath.Join(dir, base)
	for i := 2; ; i++ {
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			break
		}
		path = filepath.Join(dir, fmt.Sprintf("%s-%d", base, i))
	}
	return path, queue.WriteFileAtomic(path, []byte(body), 0o600)
}

// countReports counts the error reports in dir.
func countReports(dir string) int {
	des, _ := os.ReadDir(dir)
	k := 0
	for _, de := range des {
		if strings.HasPrefix(de.Name(), reportPrefix) && de.Type().IsRegular() {
			k++
		}
	}
	return k
}

// jobReports keeps the daemon from reporting one job's same failure over and over: a
// job that fails on every round reports again only when its error changes, or once a
// day.
type jobReports struct {
	mu   sync.Mutex
	last map[string]jobFailure
}

type jobFailure struct {
	text string
	at   time.Time
}

// jobFailed logs a daemon job's failure and reports it (ReportError) unless the same
// failure of the same job was reported in the last day. A failure while the daemon
// stops (ctx done) is neither. The report names the daemon and the job as the status
// page does ("start_daemon's poll job"), so that it is not taken for a cron command's.
func (n *Node) jobFailed(ctx context.Context, job string, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	n.Log.Error(job, "err", err)
	now := n.Now()
	j := &n.reports
	j.mu.Lock()
	if j.last == nil {
		j.last = map[string]jobFailure{}
	}
	prev, seen := j.last[job]
	again := !seen || prev.text != err.Error() || now.Sub(prev.at) >= day
	if again {
		j.last[job] = jobFailure{err.Error(), now}
	}
	j.mu.Unlock()
	if again {
		n.ReportError(ctx, "start_daemon's "+job+" job", err)
	}
}

// jobSucceeded forgets a job's last failure: the next one is reported.
func (n *Node) jobSucceeded(job string) {
	n.reports.mu.Lock()
	delete(n.reports.last, job)
	n.reports.mu.Unlock()
}
