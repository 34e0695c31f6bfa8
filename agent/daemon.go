package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

const (
	pidFile      = "daemon.pid"
	minBackoff   = 2 * time.Second
	maxBackoff   = 10 * time.Minute
	processEvery = 5 * time.Second
	sendEvery    = time.Second
	watchEvery   = time.Second // the stop file, dibsrc.toml
	// shutdownGrace is how long a stopping daemon waits for the uploads in flight to
	// the server (each is committed whole or not at all).
	shutdownGrace = 10 * time.Second
)

// ErrDaemonRunning means another daemon serves this DIBS_DIR.
var ErrDaemonRunning = errors.New("a daemon is already running for this DIBS_DIR (dibs stop_daemon stops it)")

// Daemon is a running start_daemon: it serves the peer protocol and runs send, poll,
// process and the periodic work on their schedules.
type Daemon struct {
	n     *Node
	ln    net.Listener
	srv   *http.Server
	lock  *os.File
	clock clock // realClock; tests move a fake one
	// The jobs (schedule.go), and the ones others wake: process when a file arrives,
	// send when replies were queued, poll when a backoff was reset.
	jobs                []*job
	process, send, poll *job
	sendBackoff         *backoff // per peer
	pollBackoff         *backoff // per poll source (pollSource.Key)
	pollRegular         time.Time
	maintained          maintained
	started             time.Time
	stop                context.CancelFunc // set by Run
	stopAt              time.Time          // a stop file asked to stop then (watch)
	optStamp            queue.Stamp        // dibsrc.toml as last loaded
	// status serves statusAddress (status.go); nil when statusAddress is empty or taken.
	status   *http.Server
	statusLn net.Listener
	// lan is the LAN discovery socket (lan.go); nil without lanDiscovery.
	lan *lanSocket
}

// StartDaemon takes the daemon lock and starts serving on ln (nil: daemonAddress:daemonPort,
// and the status on statusAddress: a bad statusAddress is an error, one that another
// program holds is logged and the daemon runs without its status). Run it with Run.
func (n *Node) StartDaemon(ln net.Listener) (*Daemon, error) {
	lock, err := os.OpenFile(filepath.Join(n.Dir, pidFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, ErrDaemonRunning
	}
	lock.Truncate(0)
	lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	lock.Sync()
	os.Remove(OptDaemonStopFile.Get(n.Opts)) // a stop left from before is no stop for this daemon
	var statusLn net.Listener
	var token string
	if ln == nil {
		statusLn, token, err = n.statusListen()
		if errors.Is(err, errStatusPortBusy) {
			n.Log.Error(err.Error())
		} else if err != nil {
			lock.Close()
			return nil, err
		}
		host := strings.TrimSuffix(strings.TrimPrefix(optDaemonAddress.Get(n.Opts), "["), "]") // [::1] is ::1
		addr := net.JoinHostPort(host, strconv.FormatInt(optDaemonPort.Get(n.Opts), 10))
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			lock.Close()
			if statusLn != nil {
				statusLn.Close()
			}
			return nil, fmt.Errorf("daemon: listen %s: %w (is daemonPort free, and daemonAddress one of this machine's?)", addr, err)
		}
	}
	n.KeepDB = false
	n.Close()
	d := &Daemon{n: n, ln: ln, lock: lock, clock: realClock{},
		sendBackoff: newBackoff(minBackoff, maxBackoff),
		pollBackoff: newBackoff(minBackoff, max(maxBackoff, optPollInterval.Get(n.Opts))),
		optStamp:    stampOf(filepath.Join(n.Dir, optionsFile)),
	}
	d.makeJobs()
	n.mu.Lock()
	n.reload.keep = true
	n.reload.changed = d.peersChanged
	n.mu.Unlock()
	store := &wakingStore{SpoolStore: &relay.SpoolStore{
		Spool:       n.Spool,
		Self:        n.Fingerprint(),
		SelfKeyIDs:  n.ID.EncryptionKeyIDs(),
		Peer:        n.peerForRelay,
		MaxFileSize: OptMaxMsgSize.Get(n.Opts),
		Strangers:   n.depositStranger,
		Answers:     n.openAnswer,
	}, wake: d.process.wake}
	handler := relay.NewServer(store, relay.ServerOptions{
		MaxFileSize: OptMaxMsgSize.Get(n.Opts),
		Version:     SoftwareVersion,
		Key:         n.Fingerprint(),
		OnError:     func(err error) { n.Log.Error("server", "err", err) },
	})
	d.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.Log.Error("serve", "err", err)
		}
	}()
	go handler.Run(context.Background())
	n.runs.mu.Lock()
	n.runs.started = n.Now()
	n.runs.mu.Unlock()
	if statusLn != nil {
		d.serveStatus(statusLn, token)
	}
	if optLANDiscovery.Get(n.Opts) {
		if d.lan, err = n.openLAN(optLANDiscoveryAddress.Get(n.Opts)); err != nil {
			n.Log.Error("LAN discovery is off", "err", err)
		} else {
			go d.lan.listen(d.hearLAN)
		}
	}
	return d, nil
}

// ServeStatus serves the status page, /status.json and /metrics on ln, without a token
// (StartDaemon(nil) serves them on statusAddress).
func (d *Daemon) ServeStatus(ln net.Listener) { d.serveStatus(ln, "") }

func (d *Daemon) serveStatus(ln net.Listener, token string) {
	d.statusLn = ln
	d.status = &http.Server{Handler: d.n.statusServer(token), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := d.status.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.n.Log.Error("status", "err", err)
		}
	}()
}

// StatusAddr is where the daemon serves its status (nil: nowhere).
func (d *Daemon) StatusAddr() net.Addr {
	if d.statusLn == nil {
		return nil
	}
	return d.statusLn.Addr()
}

// Addr is where the daemon listens.
func (d *Daemon) Addr() net.Addr { return d.ln.Addr() }

func (n *Node) peerForRelay(fp pgpmsg.Fingerprint) (string, *pgpmsg.Key, bool) {
	p, k, ok := n.PeerByFingerprint(fp)
	if !ok || k == nil {
		return "", nil, false
	}
	return p.Name, k, true
}

// wakingStore tells the daemon when a peer pushed a file, so it is processed at once.
type wakingStore struct {
	*relay.SpoolStore
	wake chan struct{}
}

func (s *wakingStore) Deposit(from, to pgpmsg.Fingerprint, name string, size int64, r io.Reader) error {
	err := s.SpoolStore.Deposit(from, to, name, size, r)
	if err == nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return err
}

// DepositStranger wakes the daemon too, for a contract proposal.
func (s *wakingStore) DepositStranger(name string, size int64, r io.Reader) error {
	err := s.SpoolStore.DepositStranger(name, size, r)
	if err == nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return err
}

// Run runs the daemon's jobs, each on its own schedule (schedule.go), until ctx is done
// (SIGTERM or SIGINT in start_daemon) or the stop file appears (stop_daemon, or a user:
// daemonStopFile). Then each job finishes the file in hand and returns, the server
// finishes the uploads in flight (shutdownGrace), and Run returns.
func (d *Daemon) Run(ctx context.Context) error {
	n := d.n
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.stop = cancel
	d.started = d.clock.Now()
	n.Log.Info("daemon started", "addr", d.ln.Addr().String(), "key", string(n.Fingerprint()))
	if k, err := n.sweepLeftovers(n.Now()); err != nil {
		n.Log.Warn("leftovers of interrupted commands", "err", err)
	} else if k > 0 {
		n.Log.Info("leftovers of interrupted commands settled", "files", k)
	}
	var wg sync.WaitGroup
	for _, j := range d.jobs {
		wg.Add(1)
		go func() { defer wg.Done(); d.runJob(ctx, j) }()
	}
	<-ctx.Done()
	n.Log.Info("daemon stopping", "why", context.Cause(ctx))
	shut, cancelShut := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancelShut()
	d.srv.Shutdown(shut)
	if d.lan != nil {
		d.lan.close()
	}
	if d.status != nil {
		d.status.Shutdown(shut)
	}
	wg.Wait()
	n.Close()
	d.lock.Close()
	n.Log.Info("daemon stopped")
	return nil
}

// makeJobs builds the daemon's jobs: process, send and poll here, the rest in
// periodic.go, and the daemon's own watch of its stop file and dibsrc.toml.
func (d *Daemon) makeJobs() {
	n := d.n
	d.process = newJob("process", every(func() time.Duration { return processEvery }), func(ctx context.Context) error {
		res, err := n.ProcessIncoming(ctx) // a file in hand is finished when ctx ends
		n.runs.noteProcess(res)
		if res.Processed > 0 {
			poke(d.send.wake) // replies were queued
		}
		return err
	})
	d.send = newJob("send", every(func() time.Duration { return sendEvery }), d.sendDue)
	d.poll = newJob("poll", d.pollNext, d.pollDue)
	watch := newJob("watch", every(func() time.Duration { return watchEvery }), func(ctx context.Context) error {
		d.watchStop()
		d.reloadOptions()
		_, err := n.Peers() // a changed peers.toml is read again (reload.go)
		return err
	})
	watch.hidden = true
	d.jobs = append([]*job{d.process, d.send, d.poll}, d.periodicJobs()...)
	d.jobs = append(d.jobs, watch)
	if optLANDiscovery.Get(n.Opts) {
		announce := newJob("lan", every(func() time.Duration { return optLANAnnounceInterval.Get(n.Opts) }), func(context.Context) error {
			return d.AnnounceLAN()
		})
		d.jobs = append(d.jobs, announce)
	}
}

// sendDue delivers what is queued for the peers we talk to actively (push, relay, mail),
// each peer on its own backoff after failures.
func (d *Daemon) sendDue(ctx context.Context) error {
	n := d.n
	peers, err := n.Spool.Peers()
	if err != nil {
		return err
	}
	for _, name := range peers {
		if ctx.Err() != nil {
			return nil
		}
		es, err := n.Spool.List(queue.Outgoing(name))
		if err != nil || len(es) == 0 {
			continue
		}
		p, _, err := n.Peer(name)
		if err != nil || !sendsActively(p) && n.lanURL(name) == "" {
			continue // a passive peer pulls its files, a carried one waits for export_messages: unless on the LAN
		}
		if d.sendBackoff.waiting(name, d.clock.Now()) {
			continue
		}
		res, err := n.SendOutgoing(ctx, name)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && res.Sent == 0:
			delay := d.sendBackoff.failed(name, d.clock.Now())
			n.Log.Warn("peer unreachable; will retry", "peer", name, "retry_in", delay, "err", err)
		default:
			d.sendBackoff.ok(name)
		}
	}
	return nil
}

// pollNext is when the poll job is due: pollInterval after its last full round, or
// when a failed source's backoff ends, if that is sooner.
func (d *Daemon) pollNext(last, now time.Time) time.Time {
	at := now
	if !d.pollRegular.IsZero() {
		at = d.pollRegular.Add(optPollInterval.Get(d.n.Opts))
	}
	if r := d.pollBackoff.earliest(); !r.IsZero() && r.Before(at) {
		at = r
	}
	return at
}

// pollDue is the poll job: contract proposals and their answers, then every poll source
// in a full round (pollInterval) or only those whose backoff ended, each source on its
// own backoff. Files that arrive wake the process job.
func (d *Daemon) pollDue(ctx context.Context) error {
	n := d.n
	now := d.clock.Now()
	full := d.pollRegular.IsZero() || !now.Before(d.pollRegular.Add(optPollInterval.Get(n.Opts)))
	var errs []error
	got := 0
	if full {
		d.pollRegular = now
		if _, err := n.SendProposals(ctx); err != nil {
			errs = append(errs, fmt.Errorf("contract proposals: %w", err))
		}
		k, err := n.pollAnswers(ctx)
		got += k
		errs = append(errs, err)
		n.Spool.CleanTmp(time.Hour, n.Now())
	}
	if err := n.FlushOutbox(); err != nil {
		errs = append(errs, err)
	}
	srcs, err := n.pollSources()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, s := range srcs {
		if ctx.Err() != nil {
			break
		}
		retry := d.pollBackoff.delay(s.Key) > 0
		if d.pollBackoff.waiting(s.Key, now) || !full && !retry {
			continue
		}
		k, err := n.pollSource(ctx, s)
		got += k
		switch {
		case ctx.Err() != nil:
		case err != nil:
			delay := d.pollBackoff.failed(s.Key, d.clock.Now())
			n.Log.Warn("poll failed; will retry", "peer", s.Key, "retry_in", delay, "err", err)
		default:
			d.pollBackoff.ok(s.Key)
		}
	}
	if got > 0 {
		poke(d.process.wake)
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(errs...)
}

// Kick forgets the backoff of peer (all peers when peer is ""), for sending and polling,
// and has the daemon try it now: for when the peer is known to be back.
func (d *Daemon) Kick(peer string) {
	var keys []string
	if peer != "" {
		keys = []string{peer}
	}
	d.sendBackoff.reset(keys...)
	d.pollBackoff.reset(keys...)
	poke(d.send.wake)
	poke(d.poll.resched)
}

// peersChanged is told of a new peer list: a peer whose entry changed (its address,
// its talk) is tried again at once, whatever its backoff. relay and mail are polled
// again too when any entry changed.
func (d *Daemon) peersChanged(old, cur []*Peer) {
	was := map[string]Peer{}
	for _, p := range old {
		was[p.Name] = *p
	}
	kicked := false
	for _, p := range cur {
		if o, ok := was[p.Name]; !ok || !reflect.DeepEqual(o, *p) {
			d.sendBackoff.reset(p.Name)
			d.pollBackoff.reset(p.Name, Relay, Mail)
			kicked = true
		}
	}
	if kicked {
		poke(d.send.wake)
		poke(d.poll.resched)
	}
}

// sendsActively reports whether any of p's talk methods delivers files: all but passive
// and carry, as sendPeer chooses them.
func sendsActively(p *Peer) bool {
	for _, m := range p.TalkMethods() {
		if delivers(m) {
			return true
		}
	}
	return false
}

// StopDaemon asks the daemon of dir to stop and waits up to timeout for it to exit.
func StopDaemon(dir string, timeout time.Duration) error {
	path := filepath.Join(dir, pidFile)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("no daemon is running for %s", dir)
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		return fmt.Errorf("no daemon is running for %s", dir)
	}
	// The stop file works for any daemon; the signal makes it immediate.
	if err := queue.WriteFileAtomic(stopFilePath(dir), nil, 0o600); err != nil {
		return err
	}
	if b, err := os.ReadFile(path); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the daemon did not stop within %s", timeout)
}

// stopFilePath is the daemonStopFile of dir's dibsrc.toml (the default if it does not
// load: the signal stops the daemon anyway).
func stopFilePath(dir string) string {
	if opts, err := loadOptions(dir); err == nil {
		return OptDaemonStopFile.Get(opts)
	}
	return filepath.Join(dir, OptDaemonStopFile.row().def.(string))
}

// watchStop stops the daemon when daemonStopFile appears: at once, or as many seconds
// later as the file says. The file is removed when it is read; a second one may bring
// the stop closer, not put it off.
func (d *Daemon) watchStop() {
	n := d.n
	now := d.clock.Now()
	path := OptDaemonStopFile.Get(n.Opts)
	if b, err := os.ReadFile(path); err == nil {
		os.Remove(path)
		delay := time.Duration(0)
		if s := strings.TrimSpace(string(b)); s != "" {
			secs, err := strconv.ParseInt(s, 10, 32)
			if err != nil || secs < 0 {
				n.Log.Warn("the stop file holds no number of seconds: stopping now", "file", path, "content", s)
			} else {
				delay = time.Duration(secs) * time.Second
			}
		}
		at := now.Add(delay)
		if d.stopAt.IsZero() || at.Before(d.stopAt) {
			d.stopAt = at
		}
		n.Log.Info("stop asked for", "file", path, "in", d.stopAt.Sub(now).String())
	}
	if !d.stopAt.IsZero() && !now.Before(d.stopAt) {
		d.stop()
	}
}

// reloadOptions loads dibsrc.toml again when it changed, and has the jobs compute when
// they are due with the new options. A file that does not load is logged, and the
// options in use are kept.
func (d *Daemon) reloadOptions() {
	n := d.n
	path := filepath.Join(n.Dir, optionsFile)
	st := stampOf(path)
	if st == d.optStamp {
		return
	}
	d.optStamp = st
	opts, err := loadOptions(n.Dir)
	if err != nil {
		n.Log.Error("dibsrc.toml not reloaded: the options in use are kept", "err", err)
		return
	}
	changed := n.Opts.replace(opts)
	if len(changed) == 0 {
		return
	}
	n.Log.Info("dibsrc.toml reloaded", "changed", strings.Join(changed, " "))
	for _, name := range changed {
		if slices.Contains(restartOptions, name) {
			n.Log.Warn("option takes effect when the daemon starts again", "option", name)
		}
	}
	d.pollBackoff.setMax(max(maxBackoff, optPollInterval.Get(n.Opts)))
	for _, j := range d.jobs {
		poke(j.resched)
	}
}

// restartOptions are read once, when the daemon starts: its listeners and server.
var restartOptions = []string{
	optDaemonPort.Name(), optDaemonAddress.Name(), optStatusAddress.Name(),
	optStatusAllowRemote.Name(), optStatusTokenFile.Name(), OptMaxMsgSize.Name(),
	OptDaemonLogFile.Name(),
}
