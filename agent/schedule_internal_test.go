package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
)

// The daemon's schedules, on a fake clock: each test moves time by hand and waits until
// every job's loop sleeps again (fakeClock.Waiting), so nothing sleeps for real
// intervals and what ran when is exact.

const testJobs = 11 // process, send, poll, auto_check, repair, probe, stats, storage_list, cleanup, drill, watch

var t0 = time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC)

// fakeNet is a transport of the tests: what it is asked to do, and when, on the fake
// clock. A send or poll fails while fail is set; block holds a call until closed.
type fakeNet struct {
	clock *fakeClock
	mu    sync.Mutex
	fail  bool
	block chan struct{}
	sends []time.Time
	polls []time.Time
	busy  int // calls in progress
	most  int // the most calls ever in progress at once
	files [][]byte
}

var errFakeDown = errors.New("fake network: peer down")

func (f *fakeNet) enter(log *[]time.Time) (bool, chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*log = append(*log, f.clock.Now())
	f.busy++
	f.most = max(f.most, f.busy)
	return f.fail, f.block
}

func (f *fakeNet) leave() { f.mu.Lock(); f.busy--; f.mu.Unlock() }

func (f *fakeNet) set(fn func(*fakeNet)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

func (f *fakeNet) times(log *[]time.Time) []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Duration
	for _, at := range *log {
		out = append(out, at.Sub(t0))
	}
	return out
}

func (f *fakeNet) Send(ctx context.Context, dst queue.Endpoint, msg queue.Message) error {
	fail, block := f.enter(&f.sends)
	defer f.leave()
	if block != nil {
		<-block
	}
	if fail {
		return errFakeDown
	}
	return nil
}

func (f *fakeNet) Poll(ctx context.Context, src queue.Endpoint, sink queue.Sink) (int, error) {
	fail, _ := f.enter(&f.polls)
	defer f.leave()
	if fail {
		return 0, errFakeDown
	}
	f.mu.Lock()
	files := f.files
	f.files = nil
	f.mu.Unlock()
	for i, b := range files {
		if err := sink("fake-"+string(rune('a'+i)), bytes.NewReader(b)); err != nil {
			return i, err
		}
	}
	return len(files), nil
}

type schedEnv struct {
	t     *testing.T
	n     *Node
	d     *Daemon
	clock *fakeClock
	net   *fakeNet
	log   *syncBuffer
	done  chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// newSchedEnv is alice's daemon on a fake clock, with peer bob (talk and listen as given)
// behind the fake network; opts are set before the daemon starts.
func newSchedEnv(t *testing.T, talk, listen string, opts map[string]string) *schedEnv {
	t.Helper()
	n, err := Init(filepath.Join(t.TempDir(), "alice"), InitConfig{KeyName: "alice.dibs@example.org", Identity: pgpmsgtest.Identity(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"statusAddress": "", "talkRetryDelay": "0"} {
		if err := n.SetOption(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range opts {
		if err := n.SetOption(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if talk != "" {
		var key bytes.Buffer
		pgpmsgtest.Key(t, "bob").WriteArmored(&key)
		host, port, q, email := "127.0.0.1", 9, int64(1e9), "bob@dibs.test"
		if err := n.AddPeer("bob", PeerEdit{Email: &email, Talk: &talk, Listen: &listen, Host: &host, Port: &port, LocalQuota: &q, RemoteQuota: &q, Key: &key}); err != nil {
			t.Fatal(err)
		}
	}
	e := &schedEnv{t: t, n: n, clock: newFakeClock(t0), log: &syncBuffer{}, done: make(chan struct{})}
	e.net = &fakeNet{clock: e.clock}
	n.Transports = Transports{
		Senders: map[string]queue.Sender{Active: e.net},
		Pollers: map[string]queue.Poller{Passive: e.net},
	}
	n.Now = e.clock.Now
	n.Log = slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.d, err = n.StartDaemon(ln)
	if err != nil {
		t.Fatal(err)
	}
	e.d.clock = e.clock
	ctx, cancel := context.WithCancel(context.Background())
	go func() { defer close(e.done); e.d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-e.done
		if t.Failed() {
			t.Logf("alice's daemon said:\n%s", e.log.String())
		}
	})
	e.idle()
	return e
}

// idle waits until every job's loop sleeps on the clock.
func (e *schedEnv) idle() {
	e.t.Helper()
	ok := make(chan struct{})
	go func() { e.clock.Waiting(testJobs); close(ok) }()
	select {
	case <-ok:
	case <-time.After(20 * time.Second):
		e.t.Fatalf("the daemon's jobs are not all waiting after 20 s")
	}
}

// advance moves the clock by d in steps of at most a second (the send and watch
// ticks), waiting for the jobs after each.
func (e *schedEnv) advance(d time.Duration) {
	e.t.Helper()
	for d > 0 {
		s := min(d, time.Second)
		e.clock.Advance(s)
		e.idle()
		d -= s
	}
}

// jump moves the clock by d at once: each job due on the way runs once, at the end.
func (e *schedEnv) jump(d time.Duration) {
	e.t.Helper()
	e.clock.Advance(d)
	e.idle()
}

// run is a job's last and next run as the status page has them, since t0.
func (e *schedEnv) run(job string) (last, next time.Duration) {
	e.n.runs.mu.Lock()
	defer e.n.runs.mu.Unlock()
	r, ok := e.n.runs.jobs[job]
	if !ok {
		e.t.Fatalf("no job %q on the status page: %v", job, e.n.runs.jobs)
	}
	if !r[0].IsZero() {
		last = r[0].Sub(t0)
	} else {
		last = -1
	}
	return last, r[1].Sub(t0)
}

func (e *schedEnv) wantRun(job string, last, next time.Duration) {
	e.t.Helper()
	if l, n := e.run(job); l != last || n != next {
		e.t.Errorf("%s: last run %v, next %v (since t0); want %v, %v", job, l, n, last, next)
	}
}

// Every job runs on its own timer: pollInterval (poll, auto_check, repair), probePeriod,
// the probe statistics every probeTimeout when that is shorter than pollInterval, the
// storage-list exchange when the books say so, cleanup daily from a day after start, a
// drill each poll until one starts (then every drillPeriod);
// and the status page knows each one's next run.
func TestSchedule_EachJobOnItsTimer(t *testing.T) {
	e := newSchedEnv(t, "active", "passive", map[string]string{"pollInterval": "600", "probePeriod": "1800", "probeTimeout": "300"})
	e.wantRun("poll", 0, 600*time.Second)
	e.wantRun("auto_check", 0, 600*time.Second)
	e.wantRun("repair", 0, 600*time.Second)
	e.wantRun("probe", 0, 1800*time.Second)
	e.wantRun("stats", 0, 300*time.Second)
	e.wantRun("storage_list", 0, 23*time.Hour) // the first run starts the exchange's clock
	e.wantRun("cleanup", -1, 24*time.Hour)
	e.wantRun("drill", -1, 600*time.Second) // no drill yet: one poll after start
	e.wantRun("send", 0, time.Second)
	e.wantRun("process", 0, 5*time.Second)
	if got := e.net.times(&e.net.polls); len(got) != 1 {
		t.Fatalf("bob polled at %v; want once, at start", got)
	}

	e.jump(300 * time.Second)
	e.wantRun("stats", 300*time.Second, 600*time.Second)
	e.wantRun("poll", 0, 600*time.Second)
	e.wantRun("send", 300*time.Second, 301*time.Second)
	e.jump(300 * time.Second)
	e.wantRun("poll", 600*time.Second, 1200*time.Second)
	e.wantRun("auto_check", 600*time.Second, 1200*time.Second)
	e.wantRun("repair", 600*time.Second, 1200*time.Second)
	e.wantRun("probe", 0, 1800*time.Second)
	e.wantRun("drill", 600*time.Second, 1200*time.Second) // nothing stored: tried again each poll
	if got := e.net.times(&e.net.polls); len(got) != 2 || got[1] != 600*time.Second {
		t.Fatalf("bob polled at %v; want at 0 and 10m0s", got)
	}
	e.jump(1200 * time.Second)
	e.wantRun("probe", 1800*time.Second, 3600*time.Second)
	e.jump(23*time.Hour - 1800*time.Second)
	e.wantRun("storage_list", 23*time.Hour, 46*time.Hour)
	e.wantRun("cleanup", -1, 24*time.Hour)
	e.jump(time.Hour)
	e.wantRun("cleanup", 24*time.Hour, 48*time.Hour)
}

// A file that a poll brings is processed at once, not at the next process tick: the
// clock does not move while the test waits.
func TestSchedule_ProcessRunsOnArrival(t *testing.T) {
	e := newSchedEnv(t, "active", "passive", map[string]string{"pollInterval": "600"})
	e.net.set(func(f *fakeNet) { f.files = [][]byte{[]byte("not a dibs message")} })
	e.jump(600 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if q, _ := e.n.Spool.List(queue.Quarantine); len(q) == 1 {
			if last, _ := e.run("process"); last != 600*time.Second {
				t.Errorf("processed at %v; want 10m0s, when the file arrived", last)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the polled file was not processed (quarantined) without a tick of the clock")
}

// A peer that fails is tried again after 2 s, 4 s, 8 s ... up to 10 min; a success
// resets the wait, and so do Kick and an edit of the peer's entry.
func TestSchedule_SendBackoff(t *testing.T) {
	e := newSchedEnv(t, "active", "active", nil)
	e.net.set(func(f *fakeNet) { f.fail = true })
	if _, err := e.n.Post("bob", TypeHello, nil, nil); err != nil {
		t.Fatal(err)
	}
	start := e.clock.Now().Sub(t0)
	e.advance(31 * time.Second)
	var want []time.Duration
	for _, at := range []time.Duration{1, 3, 7, 15, 31} { // the send tick after the post, then +2, +4, +8, +16
		want = append(want, start+at*time.Second)
	}
	if got := e.net.times(&e.net.sends); !equalDurations(got, want) {
		t.Fatalf("sends at %v; want %v", got, want)
	}
	if d := e.d.sendBackoff.delay("bob"); d != 32*time.Second {
		t.Fatalf("bob's wait after 5 failures: %v; want 32s", d)
	}
	for range 6 { // 64 s ... 2048 s: capped at 10 min
		e.d.sendBackoff.failed("bob", e.clock.Now())
	}
	if d := e.d.sendBackoff.delay("bob"); d != maxBackoff {
		t.Fatalf("wait after 11 failures: %v; want the cap %v", d, maxBackoff)
	}

	// Kick: bob is tried at once, without the clock moving.
	k := len(e.net.times(&e.net.sends))
	e.d.Kick("bob")
	waitFor(t, "a send after Kick", func() bool { return len(e.net.times(&e.net.sends)) == k+1 })
	e.idle()
	if d := e.d.sendBackoff.delay("bob"); d != minBackoff {
		t.Fatalf("bob's wait after Kick and one failure: %v; want %v", d, minBackoff)
	}

	// Success forgets the failures: the next failure waits 2 s again.
	e.net.set(func(f *fakeNet) { f.fail = false })
	e.advance(2 * time.Second)
	if es, _ := e.n.Spool.List(queue.Outgoing("bob")); len(es) != 0 || e.d.sendBackoff.delay("bob") != 0 {
		t.Fatalf("after bob is back: %d files queued, wait %v", len(es), e.d.sendBackoff.delay("bob"))
	}

	// An edit of bob's entry (a command beside the daemon) resets his wait.
	e.net.set(func(f *fakeNet) { f.fail = true })
	e.n.Post("bob", TypeHello, nil, nil)
	e.advance(8 * time.Second) // fails at +1, +3, +7: waits 8 s now
	if d := e.d.sendBackoff.delay("bob"); d != 8*time.Second {
		t.Fatalf("wait after 3 failures: %v", d)
	}
	cron, err := Open(e.n.Dir)
	if err != nil {
		t.Fatal(err)
	}
	port := 10
	if err := cron.EditPeer("bob", PeerEdit{Port: &port}); err != nil {
		t.Fatal(err)
	}
	cron.Close()
	k = len(e.net.times(&e.net.sends))
	e.jump(time.Second) // the watch reads peers.toml again: bob is tried at once
	waitFor(t, "a send after bob's entry changed", func() bool { return len(e.net.times(&e.net.sends)) >= k+1 })
	if p, _, _ := e.n.Peer("bob"); p.Port != 10 {
		t.Errorf("the daemon's bob has port %d; want the edited 10", p.Port)
	}
}

// A poll source that fails is tried again on its own backoff, sooner than the next
// pollInterval, until it answers; then it is polled every pollInterval again.
func TestSchedule_PollBackoff(t *testing.T) {
	e := newSchedEnv(t, "active", "passive", map[string]string{"pollInterval": "3600"})
	e.net.set(func(f *fakeNet) { f.fail = true })
	e.jump(3600 * time.Second) // the full round fails
	e.advance(14 * time.Second)
	want := []time.Duration{0, 3600 * time.Second, 3602 * time.Second, 3606 * time.Second, 3614 * time.Second}
	if got := e.net.times(&e.net.polls); !equalDurations(got, want) {
		t.Fatalf("polls at %v; want %v", got, want)
	}
	e.wantRun("poll", 3614*time.Second, 3630*time.Second)
	e.net.set(func(f *fakeNet) { f.fail = false })
	e.jump(16 * time.Second)
	e.jump(3600*time.Second - 30*time.Second - time.Second)
	if got := e.net.times(&e.net.polls); len(got) != 6 {
		t.Fatalf("polls at %v: want none between the success and the next round", got)
	}
	e.jump(time.Second)
	if got := e.net.times(&e.net.polls); len(got) != 7 || got[6] != 7200*time.Second {
		t.Fatalf("polls at %v; want the next round at 2h0m0s", got)
	}
}

// A job never runs twice at once: a send that hangs is not started again by ticks or
// wakes meanwhile; and the repair job waits for the maintain lock a cron auto_check
// holds.
func TestSchedule_NoOverlap(t *testing.T) {
	e := newSchedEnv(t, "active", "active", map[string]string{"pollInterval": "600"})
	block := make(chan struct{})
	e.net.set(func(f *fakeNet) { f.block = block })
	e.n.Post("bob", TypeHello, nil, nil)
	e.clock.Advance(time.Second)
	waitFor(t, "the send to start", func() bool { return len(e.net.times(&e.net.sends)) == 1 })
	for range 5 {
		poke(e.d.send.wake)
		e.clock.Waiting(testJobs - 1) // all but the hanging send
		e.clock.Advance(time.Second)
	}
	e.clock.Waiting(testJobs - 1)
	if got := e.net.times(&e.net.sends); len(got) != 1 {
		t.Fatalf("sends while the first hangs: %v", got)
	}
	close(block)
	e.idle()
	if e.net.most != 1 {
		t.Fatalf("%d sends at once", e.net.most)
	}

	cron, err := Open(e.n.Dir) // a cron auto_check holds the maintain lock
	if err != nil {
		t.Fatal(err)
	}
	cron.Close() // it holds the database only per step
	unlock, err := cron.lockJob(context.Background(), "maintain")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(600*time.Second - e.clock.Now().Sub(t0))
	e.clock.Waiting(testJobs - 1)      // all but repair, which waits for the lock
	time.Sleep(200 * time.Millisecond) // it would have run by now
	e.n.runs.mu.Lock()
	repaired := e.n.runs.repairAt
	e.n.runs.mu.Unlock()
	if repaired.Sub(t0) != 0 {
		t.Fatalf("repair ran at %v while cron held the maintain lock", repaired.Sub(t0))
	}
	unlock()
	e.idle()
	e.n.runs.mu.Lock()
	repaired = e.n.runs.repairAt
	e.n.runs.mu.Unlock()
	if repaired.Sub(t0) != 600*time.Second {
		t.Fatalf("repair ran at %v; want 10m0s, once the lock was free", repaired.Sub(t0))
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
