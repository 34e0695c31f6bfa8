package agent

import (
	"context"
	"sync"
	"time"
)

// The daemon's schedules: each job (send, poll, process, auto_check, ...) is a loop of
// its own that runs the job, then sleeps on the daemon's clock until the job is due
// again or something wakes it. One loop per job is the no-overlap rule: a job runs
// again only after its last run returned. Against a command run from cron beside the
// daemon, the work locks as commands do: spool files by claim (send, process), the
// database per step, and maintain and auto_check by their job locks (joblock.go).

// A job is one of the daemon's schedules.
type job struct {
	name string
	// next is when the job is due, given when its last run started (zero: it has not
	// run yet) and the time now.
	next func(last, now time.Time) time.Time
	run  func(ctx context.Context) error
	// wake runs the job now (a file arrived; replies were queued); resched has it
	// compute next again (the options changed; a backoff was reset).
	wake, resched chan struct{}
	hidden        bool // not shown on the status page (the daemon's own watch)
}

func newJob(name string, next func(last, now time.Time) time.Time, run func(context.Context) error) *job {
	return &job{name: name, next: next, run: run, wake: make(chan struct{}, 1), resched: make(chan struct{}, 1)}
}

// every is a job's next for a job due interval() after its last run, and at once when
// it has not run yet.
func every(interval func() time.Duration) func(last, now time.Time) time.Time {
	return func(last, now time.Time) time.Time {
		if last.IsZero() {
			return now
		}
		return last.Add(interval())
	}
}

// poke sends on a channel of one that may be full already.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// runJob is a job's loop, until ctx is done. A run that fails is logged here, once per
// run: the job tries again when it is next due.
func (d *Daemon) runJob(ctx context.Context, j *job) {
	var last time.Time
	for {
		now := d.clock.Now()
		at := j.next(last, now)
		if !j.hidden {
			d.n.runs.job(j.name, last, at)
		}
		t := d.clock.NewTimer(at.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-j.resched:
			t.Stop()
			continue
		case <-j.wake:
			t.Stop()
		case <-t.C():
		}
		if ctx.Err() != nil {
			return
		}
		start := d.clock.Now()
		if err := j.run(ctx); err != nil {
			d.n.jobFailed(ctx, j.name, err) // logs, and reports the first of a kind (report.go)
		} else {
			d.n.jobSucceeded(j.name)
		}
		last = start
	}
}

// backoff spaces out the tries of what keeps failing, each key (a peer, a poll source)
// on its own: min after the first failure, doubling up to max. A success, or a reset
// (the peer's entry was edited; Daemon.Kick), forgets the failures.
type backoff struct {
	min, max time.Duration
	mu       sync.Mutex
	m        map[string]*retry
}

type retry struct {
	at    time.Time
	delay time.Duration
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, m: map[string]*retry{}}
}

// waiting reports whether key failed and its retry is not due at now.
func (b *backoff) waiting(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.m[key]
	return r != nil && now.Before(r.at)
}

// failed records a failure of key at now and returns how long it waits.
func (b *backoff) failed(key string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.m[key]
	if r == nil {
		r = &retry{}
		b.m[key] = r
	}
	r.delay = min(max(2*r.delay, b.min), b.max)
	r.at = now.Add(r.delay)
	return r.delay
}

// ok forgets key's failures.
func (b *backoff) ok(key string) {
	b.mu.Lock()
	delete(b.m, key)
	b.mu.Unlock()
}

// reset forgets the failures of keys (all when none are given), and reports whether
// there were any.
func (b *backoff) reset(keys ...string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	had := false
	if len(keys) == 0 {
		had = len(b.m) > 0
		clear(b.m)
	}
	for _, k := range keys {
		if _, ok := b.m[k]; ok {
			had = true
			delete(b.m, k)
		}
	}
	return had
}

// earliest is when the first retry falls due (zero: nothing failed).
func (b *backoff) earliest() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	var at time.Time
	for _, r := range b.m {
		if at.IsZero() || r.at.Before(at) {
			at = r.at
		}
	}
	return at
}

// delay is key's current wait (0: it did not fail).
func (b *backoff) delay(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.m[key]; r != nil {
		return r.delay
	}
	return 0
}

// setMax changes the longest wait (pollInterval changed).
func (b *backoff) setMax(d time.Duration) {
	b.mu.Lock()
	b.max = d
	b.mu.Unlock()
}
