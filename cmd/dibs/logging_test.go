package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
)

// inProcess runs dibs commands in this process on the node in dir.
func inProcess(t *testing.T, dir string) func(args ...string) (string, string, int) {
	return func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		a := &App{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Ctx: context.Background(),
			Getenv: func(k string) string {
				if k == "DIBS_DIR" {
					return dir
				}
				return ""
			}}
		code := a.Main(args)
		return out.String(), errb.String(), code
	}
}

func newInProcessNode(t *testing.T, opts ...string) (string, func(args ...string) (string, string, int)) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "n")
	run := inProcess(t, dir)
	if _, errs, code := run("init", "--key", "n.dibs@cli.invalid"); code != exitOK {
		t.Fatalf("init: %d %s", code, errs)
	}
	for i := 0; i+1 < len(opts); i += 2 {
		if _, errs, code := run("set_option", "--name", opts[i], "--value", opts[i+1]); code != exitOK {
			t.Fatalf("set_option %s: %d %s", opts[i], code, errs)
		}
	}
	return dir, run
}

// logFiles are the log and its rotated backups, by name.
func logFiles(t *testing.T, log string) map[string][]byte {
	t.Helper()
	des, err := os.ReadDir(filepath.Dir(log))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	base := filepath.Base(log)
	for _, de := range des {
		if de.Name() == base || strings.HasPrefix(de.Name(), base+"-") {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(log), de.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[de.Name()] = b
		}
	}
	return out
}

// The log is rotated before a record would take it past maxLogSize (in bytes, although
// lumberjack counts MiB), no record is split or lost across the files, and at most
// logBackups old logs are kept.
func TestLog_RotatesAtMaxLogSize(t *testing.T) {
	dir, _ := newInProcessNode(t, "maxLogSize", "2k", "logLevel", "-10")
	n, err := agent.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var errb bytes.Buffer
	a := &App{Stderr: &errb}
	file := agent.OptLogFile.Get(n.Opts)
	a.logTo(n, file)
	defer a.closeNodeLog()
	pad := strings.Repeat("x", 60)
	for i := range 100 {
		n.Log.Info("record", "i", i, "pad", pad)
	}
	files := logFiles(t, file)
	if len(files) < 4 {
		t.Fatalf("100 records of about 100 bytes under maxLogSize 2000: %d files, want at least 4", len(files))
	}
	seen := map[string]int{}
	for name, b := range files {
		if len(b) > 2000 {
			t.Errorf("%s: %d bytes, past maxLogSize", name, len(b))
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if !strings.Contains(l, " msg=record i=") || !strings.HasSuffix(l, pad) {
				t.Errorf("%s: a split or foreign line %q", name, l)
			}
			seen[strings.Fields(l[strings.Index(l, " i="):])[0]]++
		}
	}
	if len(seen) != 100 {
		t.Errorf("%d records of 100 in the files", len(seen))
	}
	for i := range 300 {
		n.Log.Info("record", "i", 100+i, "pad", pad)
	}
	// lumberjack removes old backups in a goroutine of its own.
	deadline := time.Now().Add(5 * time.Second)
	for len(logFiles(t, file)) > logBackups+1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if k := len(logFiles(t, file)); k != logBackups+1 {
		t.Errorf("after 400 records: %d files, want the log and %d backups", k, logBackups)
	}
}

// Records go to the log at logLevel and up, to stderr at printLogLevel and up, both
// on DIBS's scale; a failing command's error goes into logFile too.
func TestLog_Levels(t *testing.T) {
	dir, run := newInProcessNode(t, "logLevel", "0", "printLogLevel", "-10")
	n, err := agent.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	a := &App{Stderr: &errb}
	file := agent.OptLogFile.Get(n.Opts)
	a.logTo(n, file)
	n.Log.Debug("a debug record")
	n.Log.Info("an info record")
	n.Log.Warn("a warning record")
	n.Log.Log(context.Background(), slog.LevelError+4, "a critical record")
	a.closeNodeLog()
	n.Close()
	log, _ := os.ReadFile(file)
	for _, c := range []struct {
		where, text string
		want        bool
	}{
		{"log", "level=INFO msg=\"an info record\"", false},
		{"log", "level=WARNING msg=\"a warning record\"", true},
		{"log", "level=CRITICAL msg=\"a critical record\"", true},
		{"stderr", "debug", false},
		{"stderr", "level=INFO msg=\"an info record\"", true},
		{"stderr", "level=WARNING msg=\"a warning record\"", true},
	} {
		got := strings.Contains(string(log), c.text)
		if c.where == "stderr" {
			got = strings.Contains(errb.String(), c.text)
		}
		if got != c.want {
			t.Errorf("%s has %q: %v, want %v\nlog:\n%s\nstderr:\n%s", c.where, c.text, got, c.want, log, errb.String())
		}
	}

	if _, errs, code := run("recover_file", "--file", "/not/stored"); code != exitError {
		t.Fatalf("recover_file of nothing stored: exit %d, stderr %q", code, errs)
	}
	log, _ = os.ReadFile(file)
	if !strings.Contains(string(log), "level=ERROR msg=recover_file err=") {
		t.Errorf("the log after a failed recover_file:\n%s", log)
	}
}

func TestSlogLevel_KeepsDIBSOrder(t *testing.T) {
	for _, c := range []struct {
		dibs int64
		in   []slog.Level
		out  []slog.Level
	}{
		{-20, []slog.Level{slog.LevelDebug, slog.LevelInfo}, nil},
		{-15, []slog.Level{slog.LevelInfo}, []slog.Level{slog.LevelDebug}},
		{-10, []slog.Level{slog.LevelInfo, slog.LevelWarn}, []slog.Level{slog.LevelDebug}},
		{0, []slog.Level{slog.LevelWarn, slog.LevelError}, []slog.Level{slog.LevelInfo}},
		{10, []slog.Level{slog.LevelError}, []slog.Level{slog.LevelWarn}},
		{20, []slog.Level{slog.LevelError + 4}, []slog.Level{slog.LevelError}},
	} {
		th := slogLevel(c.dibs)
		for _, l := range c.in {
			if l < th {
				t.Errorf("DIBS level %d (slog %v) drops %v", c.dibs, th, l)
			}
		}
		for _, l := range c.out {
			if l >= th {
				t.Errorf("DIBS level %d (slog %v) keeps %v", c.dibs, th, l)
			}
		}
	}
	if got := fmt.Sprint(megabytesAbove(1_000_000), megabytesAbove(1000), megabytesAbove(3<<20+1)); got != "1 1 4" {
		t.Errorf("megabytesAbove: %s", got)
	}
}

// A failure of one of the commands DIBS reported (poll_passives here) leaves a report in
// errorDir even when no mail server answers; other commands' failures (recover_file)
// leave none.
func TestCLI_FailureReportedToErrorDir(t *testing.T) {
	dir, run := newInProcessNode(t, "smtpServer", "127.0.0.1:1", "smtpTLS", "none", "daemonTimeout", "5",
		"relayURL", "http://127.0.0.1:1/")
	reports := func() []os.DirEntry {
		des, _ := os.ReadDir(filepath.Join(dir, "errorDir"))
		return des
	}
	if _, errs, code := run("recover_file", "--file", "/not/stored"); code != exitError || len(reports()) != 0 {
		t.Fatalf("recover_file: exit %d, stderr %q, %d reports", code, errs, len(reports()))
	}
	_, errs, code := run("poll_passives")
	if code != exitError || len(reports()) != 1 {
		t.Fatalf("poll_passives of a relay that is down: exit %d, stderr %q, %d reports", code, errs, len(reports()))
	}
	if strings.Contains(errs, "report not mailed") {
		t.Errorf("poll_passives's stderr %q tells of the report's mail: the log file is for that", errs)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "errorDir", reports()[0].Name()))
	if !strings.Contains(string(b), "dibs poll_passives failed") || !strings.Contains(string(b), "127.0.0.1:1") {
		t.Errorf("the report: %q", b)
	}
}
