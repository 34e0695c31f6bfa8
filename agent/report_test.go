package agent_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
	"github.com/dibs-backup/dibs/mailbox/mailtest"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// reportNode is a node that mails its owner, owner@dibs.test, through ms.
func reportNode(t *testing.T, ms *mailtest.Server, opts map[string]string) *agent.Node {
	t.Helper()
	n, err := agent.Init(filepath.Join(t.TempDir(), "alice"), agent.InitConfig{KeyName: "alice.dibs@dibs.test", Identity: pgpmsgtest.Identity(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	set := map[string]string{
		"smtpServer": ms.SMTPAddr, "smtpUser": "alice@dibs.test", "smtpPassword": "alice-pw", "smtpTLS": "starttls",
		"mailCAFile": ms.CAFile, "dibsAdmin": "owner@dibs.test", "hostname": "alice.example",
	}
	for k, v := range opts {
		set[k] = v
	}
	for k, v := range set {
		if err := n.SetOption(k, v); err != nil {
			t.Fatal(err)
		}
	}
	n.Transports = transports.Default(n)
	return n
}

func startOwnerMail(t *testing.T) *mailtest.Server {
	return mailtest.Start(t, mailtest.User{Addr: "alice@dibs.test", Password: "alice-pw"}, mailtest.User{Addr: "owner@dibs.test", Password: "owner-pw"})
}

func subjects(t *testing.T, ms *mailtest.Server) []string {
	t.Helper()
	var out []string
	for _, m := range ms.Messages(t, "owner@dibs.test", "INBOX") {
		for _, l := range strings.Split(string(m.Raw), "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// Each report is a file in errorDir and a mail to dibsAdmin, through the in-process
// SMTP server; the report that takes errorDir past errWarnCount brings a warning mail,
// and past errMaxCount reports are kept but no longer mailed, until the owner empties
// errorDir.
func TestReportError_MailsAreCapped(t *testing.T) {
	ms := startOwnerMail(t)
	n := reportNode(t, ms, map[string]string{"errWarnCount": "2", "errMaxCount": "4"})
	var reps []agent.Report
	for i := range 6 {
		r := n.ReportError(t.Context(), "send_message", errors.New("boom "+string(rune('a'+i))))
		if r.Err != nil && r.Mailed {
			t.Errorf("report %d: mailed, and %v", i+1, r.Err)
		}
		reps = append(reps, r)
	}
	for i, r := range reps {
		if r.Count != i+1 || r.Mailed != (i < 4) || r.Warned != (i == 2) {
			t.Errorf("report %d: count %d mailed %v warned %v; want mailed only up to errMaxCount 4, warned at 3", i+1, r.Count, r.Mailed, r.Warned)
		}
		b, err := os.ReadFile(r.Path)
		if err != nil || !strings.Contains(string(b), "dibs send_message failed on alice.example") || !strings.Contains(string(b), "boom "+string(rune('a'+i))) {
			t.Errorf("report %d in %s: %q, %v", i+1, r.Path, b, err)
		}
		if filepath.Dir(r.Path) != filepath.Join(n.Dir, "errorDir") || !strings.HasPrefix(filepath.Base(r.Path), "error_") {
			t.Errorf("report %d at %s", i+1, r.Path)
		}
	}
	want := []string{"send_message failed", "send_message failed", "send_message failed", "3 error reports", "send_message failed"}
	got := subjects(t, ms)
	if len(got) != len(want) {
		t.Fatalf("mails to the owner: %q; want %d", got, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], "dibs on alice.example: ") || !strings.HasSuffix(got[i], want[i]) {
			t.Errorf("mail %d: %q, want it to end %q", i+1, got[i], want[i])
		}
	}
	// The owner read them and cleared errorDir: mails start again.
	des, _ := os.ReadDir(filepath.Join(n.Dir, "errorDir"))
	if len(des) != 6 {
		t.Errorf("errorDir holds %d entries, want the 6 reports", len(des))
	}
	for _, de := range des {
		os.Remove(filepath.Join(n.Dir, "errorDir", de.Name()))
	}
	if r := n.ReportError(t.Context(), "process_message", errors.New("again")); !r.Mailed || r.Count != 1 {
		t.Errorf("after errorDir was emptied: %+v", r)
	}
}

// A mail that the server refuses, or a server that cannot be reached, leaves the report
// in errorDir.
func TestReportError_MailFailureKeepsTheFile(t *testing.T) {
	ms := startOwnerMail(t)
	n := reportNode(t, ms, nil)
	ms.FailNextData(451)
	r := n.ReportError(t.Context(), "auto_check", errors.New("disk full"))
	if r.Mailed || r.Err == nil {
		t.Errorf("a refused mail: %+v", r)
	}
	if b, err := os.ReadFile(r.Path); err != nil || !strings.Contains(string(b), "disk full") {
		t.Errorf("the report after a refused mail: %q, %v", b, err)
	}
	gone := reportNode(t, ms, map[string]string{"smtpServer": "127.0.0.1:1", "daemonTimeout": "5"})
	r = gone.ReportError(t.Context(), "auto_check", errors.New("disk full"))
	if r.Mailed || r.Err == nil || r.Count != 1 {
		t.Errorf("no mail server: %+v", r)
	}
	if len(subjects(t, ms)) != 0 {
		t.Errorf("mailed %q", subjects(t, ms))
	}
}

// The daemon reports a job's failure once, not on every round it fails again the same
// way: a new failure, or the same after a day, is reported again.
func TestJobFailed_ReportsARepeatOncePerDay(t *testing.T) {
	ms := startOwnerMail(t)
	n := reportNode(t, ms, nil)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	n.Now = func() time.Time { return now }
	for range 3 {
		n.JobFailed(t.Context(), "poll", errors.New("listen relay: refused"))
		now = now.Add(time.Minute)
	}
	n.JobFailed(t.Context(), "poll", errors.New("listen relay: timeout"))
	now = now.Add(25 * time.Hour)
	n.JobFailed(t.Context(), "poll", errors.New("listen relay: timeout"))
	des, _ := os.ReadDir(filepath.Join(n.Dir, "errorDir"))
	if len(des) != 3 || len(subjects(t, ms)) != 3 {
		t.Errorf("%d reports, %d mails; want 3: the first, the changed one, the one a day later", len(des), len(subjects(t, ms)))
	}
	for _, s := range subjects(t, ms) {
		if !strings.Contains(s, "start_daemon's poll job failed") {
			t.Errorf("subject %q does not name the daemon's job", s)
		}
	}
}

// With mailUserOnRecovery (the default) the owner gets a mail when a recovery is over,
// saying how it went; without it, none.
func TestRecover_MailsTheOwnerWhenDone(t *testing.T) {
	env := fourNodes(t, nil)
	alice := env.Node("alice")
	if err := alice.SetOption("hostname", "alice.example"); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "f"), []byte("some content"), 0o644)
	if _, err := alice.Store(ctx, tree, "/t"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if r := recoverNow(t, env, alice, "/t", 0); r.State != agent.RecoveryDone {
		t.Fatalf("recover: %+v", r)
	}
	mails := alice.Admin.Mails()
	if len(mails) != 1 || mails[0].Subject != "dibs on alice.example: recover_file /t done" ||
		!strings.Contains(mails[0].Body, "2 entries written into "+filepath.Join(alice.Dir, "recovery")) {
		t.Fatalf("mails to the owner: %+v", mails)
	}
	if err := alice.SetOption("mailUserOnRecovery", "false"); err != nil {
		t.Fatal(err)
	}
	recoverNow(t, env, alice, "/t", 0)
	if k := len(alice.Admin.Mails()); k != 1 {
		t.Errorf("with mailUserOnRecovery off: %d mails", k)
	}
}
