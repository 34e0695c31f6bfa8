package agent

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/queue"
)

// stopped reports whether the daemon's Run has returned.
func (e *schedEnv) stopped() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

func (e *schedEnv) waitStopped() {
	e.t.Helper()
	select {
	case <-e.done:
	case <-time.After(20 * time.Second):
		e.t.Fatal("the daemon did not stop")
	}
}

// The stop file is daemonStopFile; a number of seconds in it delays the stop, and the
// daemon runs its jobs meanwhile.
func TestStop_StopFileWithDelay(t *testing.T) {
	e := newSchedEnv(t, "", "", map[string]string{"daemonStopFile": "ctl/please_stop"})
	path := filepath.Join(e.n.Dir, "ctl", "please_stop")
	os.MkdirAll(filepath.Dir(path), 0o700)
	if err := os.WriteFile(filepath.Join(e.n.Dir, "stop_daemon"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.jump(time.Second)
	if e.stopped() {
		t.Fatal("the daemon stopped for DIBS_DIR/stop_daemon, which is not its daemonStopFile")
	}
	if err := os.WriteFile(path, []byte("30\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.jump(time.Second) // the watch reads it: the stop is at 32 s
	if _, err := os.Stat(path); err == nil {
		t.Error("the stop file is still there once read")
	}
	e.advance(29 * time.Second)
	if e.stopped() {
		t.Fatal("the daemon stopped before the 30 s the stop file asked for")
	}
	if last, _ := e.run("send"); last != 31*time.Second {
		t.Errorf("send last ran at %v during the delay; want 31s", last)
	}
	e.clock.Advance(time.Second)
	e.waitStopped()
	if !strings.Contains(e.log.String(), `msg="stop asked for"`) || !strings.Contains(e.log.String(), "in=30s") {
		t.Errorf("the log does not say the stop was asked for in 30s:\n%s", e.log.String())
	}
}

// An empty stop file, or one without a number, stops the daemon at the next watch.
func TestStop_StopFileNow(t *testing.T) {
	for _, content := range []string{"", "soon"} {
		e := newSchedEnv(t, "", "", nil)
		os.WriteFile(filepath.Join(e.n.Dir, "stop_daemon"), []byte(content), 0o600)
		e.clock.Advance(time.Second)
		e.waitStopped()
	}
}

// stop_daemon (StopDaemon) writes the configured daemonStopFile, not DIBS_DIR/stop_daemon
// (DIBS 0.93's stop_daemon ignored its option), and waits for the daemon to let go of
// its lock. The SIGTERM it sends too is caught here: the test is the daemon's process.
func TestStop_StopDaemonWritesTheConfiguredFile(t *testing.T) {
	e := newSchedEnv(t, "", "", map[string]string{"daemonStopFile": "elsewhere"})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	defer signal.Stop(sig)
	errc := make(chan error, 1)
	go func() { errc <- StopDaemon(e.n.Dir, 20*time.Second) }()
	waitFor(t, "the stop file", func() bool {
		_, err := os.Stat(filepath.Join(e.n.Dir, "elsewhere"))
		return err == nil
	})
	if _, err := os.Stat(filepath.Join(e.n.Dir, "stop_daemon")); err == nil {
		t.Error("stop_daemon wrote DIBS_DIR/stop_daemon too")
	}
	e.clock.Advance(time.Second)
	e.waitStopped()
	if err := <-errc; err != nil {
		t.Fatalf("stop_daemon: %v", err)
	}
	select {
	case <-sig:
	case <-time.After(5 * time.Second):
		t.Error("stop_daemon sent no SIGTERM")
	}
}

// A stop lets the file in hand finish: a poll that is halfway through a file when the
// stop comes commits it whole before Run returns, and leaves nothing in tmp/.
func TestStop_FinishesTheFileInHand(t *testing.T) {
	e := newSchedEnv(t, "active", "passive", map[string]string{"pollInterval": "600"})
	half := make(chan struct{})
	rest := make(chan struct{})
	body := bytes.Repeat([]byte("x"), 1<<16)
	e.n.Transports.Pollers[Passive] = pollerFunc(func(ctx context.Context, src queue.Endpoint, sink queue.Sink) (int, error) {
		r := io.MultiReader(bytes.NewReader(body[:1<<15]), &gate{half: half, rest: rest}, bytes.NewReader(body[1<<15:]))
		if err := sink("in-hand", r); err != nil {
			return 0, err
		}
		return 1, nil
	})
	e.clock.Advance(600 * time.Second)
	<-half
	os.WriteFile(filepath.Join(e.n.Dir, "stop_daemon"), nil, 0o600)
	e.clock.Advance(time.Second) // the watch asks the jobs to stop
	time.Sleep(100 * time.Millisecond)
	if e.stopped() {
		t.Fatal("Run returned while the poll was halfway through a file")
	}
	close(rest)
	e.waitStopped()
	es, _ := e.n.Spool.List(queue.Incoming)
	q, _ := e.n.Spool.List(queue.Quarantine)
	if len(es)+len(q) != 1 {
		t.Fatalf("incoming holds %d files, quarantine %d; want the one file in hand", len(es), len(q))
	}
	box, name := queue.Incoming, es
	if len(q) == 1 {
		box, name = queue.Quarantine, q
	}
	if b, err := os.ReadFile(filepath.Join(e.n.Spool.Dir(box), name[0].Name)); err != nil || !bytes.Equal(b, body) {
		t.Fatalf("the file in hand is %d bytes (%v); want %d", len(b), err, len(body))
	}
	if des, _ := os.ReadDir(e.n.TmpDir()); len(des) != 0 {
		t.Errorf("tmp/ holds %d files after the stop", len(des))
	}
}

type pollerFunc func(ctx context.Context, src queue.Endpoint, sink queue.Sink) (int, error)

func (f pollerFunc) Poll(ctx context.Context, src queue.Endpoint, sink queue.Sink) (int, error) {
	return f(ctx, src, sink)
}

// gate is a reader that says it was reached and waits until let through.
type gate struct {
	half, rest chan struct{}
	passed     bool
}

func (g *gate) Read(p []byte) (int, error) {
	if !g.passed {
		g.passed = true
		close(g.half)
		<-g.rest
	}
	return 0, io.EOF
}
