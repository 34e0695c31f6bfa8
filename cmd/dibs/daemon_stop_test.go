package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// start_daemon stops gracefully on SIGTERM and on SIGINT: it exits 0, says so, and
// lets go of the node (stop_daemon then finds no daemon).
func TestCLI_DaemonStopsOnSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			n := newCLINode(t, t.TempDir(), "alice")
			n.OK("set_option", "--name", "printLogLevel", "--value", "-10") // INFO on stderr
			d := n.startDaemon()
			if err := d.Cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-d.Done():
			case <-time.After(30 * time.Second):
				t.Fatalf("the daemon still runs 30 s after %v", sig)
			}
			if d.Err() != nil {
				t.Fatalf("the daemon exited with %v after %v: %s", d.Err(), sig, d.Stderr.String())
			}
			if errs := d.Stderr.String(); !strings.Contains(errs, "daemon stopped") {
				t.Errorf("the daemon's log does not say it stopped:\n%s", errs)
			}
			if _, _, code := n.Run("stop_daemon"); code == 0 {
				t.Errorf("stop_daemon found a daemon after %v", sig)
			}
		})
	}
}

// stop_daemon writes the configured daemonStopFile; a stop file the daemon did not read
// (the SIGTERM came first) does not stop the next daemon.
func TestCLI_StopDaemonUsesDaemonStopFile(t *testing.T) {
	n := newCLINode(t, t.TempDir(), "alice")
	stopFile := filepath.Join(t.TempDir(), "stop-alice")
	n.OK("set_option", "--name", "daemonStopFile", "--value", stopFile)
	n.OK("set_option", "--name", "printLogLevel", "--value", "-10") // INFO on stderr
	d := n.startDaemon()
	n.stopDaemon(d)
	if _, err := os.Stat(filepath.Join(n.Dir, "stop_daemon")); err == nil {
		t.Errorf("stop_daemon wrote DIBS_DIR/stop_daemon, not daemonStopFile")
	}
	d = n.startDaemon()
	time.Sleep(2 * time.Second) // two watches of the stop file
	select {
	case <-d.Done():
		t.Fatalf("the new daemon stopped by itself: %s", d.Stderr.String())
	default:
	}
	if err := os.WriteFile(stopFile, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Done():
		if d.Err() != nil {
			t.Fatalf("the daemon exited with %v: %s", d.Err(), d.Stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon still runs 30 s after daemonStopFile appeared:\n%s", d.Stderr.String())
	}
	if errs := d.Stderr.String(); !strings.Contains(errs, `stop asked for`) || !strings.Contains(errs, "in=1s") {
		t.Errorf("the log does not say a stop was asked for in 1s:\n%s", errs)
	}
}
