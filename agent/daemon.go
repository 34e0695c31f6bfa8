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
	stopFile     = "stop_daemon"
	minBackoff   = 2 * time.Second
	maxBackoff   = 10 * time.Minute
	processEvery = 5 * time.Second
	sendEvery    = time.Second
)

// ErrDaemonRunning means another daemon serves this DIBS_DIR.
var ErrDaemonRunning = errors.New("a daemon is already running for this DIBS_DIR (dibs stop_daemon stops it)")

// Daemon is a running start_daemon: it serves the peer protocol and runs send, poll,
// process and the periodic work on their schedules.
type Daemon struct {
	n    *Node
	ln   net.Listener
	srv  *http.Server
	wake chan struct{} // a file arrived: process now
	sent chan struct{} // replies were queued: send now
	lock *os.File
	// status serves statusAddress (status.go); nil when statusAddress is empty or taken.
	status   *http.Server
	statusLn net.Listener
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
	os.Remove(filepath.Join(n.Dir, stopFile))
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
	d := &Daemon{n: n, ln: ln, wake: make(chan struct{}, 1), sent: make(chan struct{}, 1), lock: lock}
	store := &wakingStore{SpoolStore: &relay.SpoolStore{
		Spool:       n.Spool,
		Self:        n.Fingerprint(),
		SelfKeyIDs:  n.ID.EncryptionKeyIDs(),
		Peer:        n.peerForRelay,
		MaxFileSize: OptMaxMsgSize.Get(n.Opts),
		Strangers:   n.depositStranger,
		Answers:     n.openAnswer,
	}, wake: d.wake}
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

// Run runs the daemon's loops until ctx is done or a stop is asked for (stop_daemon),
// then shuts the server down gracefully.
func (d *Daemon) Run(ctx context.Context) error {
	n := d.n
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.Log.Info("daemon started", "addr", d.ln.Addr().String(), "key", string(n.Fingerprint()))
	if k, err := n.sweepLeftovers(n.Now()); err != nil {
		n.Log.Warn("leftovers of interrupted commands", "err", err)
	} else if k > 0 {
		n.Log.Info("leftovers of interrupted commands settled", "files", k)
	}
	start := time.Now()
	n.runs.job("poll and auto_check", time.Time{}, start) // the periodic batch runs at once
	n.runs.job("cleanup", time.Time{}, start.Add(24*time.Hour))
	var wg sync.WaitGroup
	loop := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	loop(func() { d.processLoop(ctx) })
	loop(func() { d.sendLoop(ctx) })
	loop(func() { d.periodicLoop(ctx) })
	stopPath := filepath.Join(n.Dir, stopFile)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
			if _, err := os.Stat(stopPath); err == nil {
				os.Remove(stopPath)
				n.Log.Info("stop asked for")
				cancel()
			}
		}
	}
	shut, cancelShut := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelShut()
	d.srv.Shutdown(shut)
	if d.status != nil {
		d.status.Shutdown(shut)
	}
	wg.Wait()
	n.Close()
	d.lock.Close()
	n.Log.Info("daemon stopped")
	return nil
}

func (d *Daemon) processLoop(ctx context.Context) {
	t := time.NewTicker(processEvery)
	defer t.Stop()
	for {
		res, err := d.n.ProcessIncoming(ctx)
		d.n.runs.noteProcess(res)
		if err != nil {
			d.n.jobFailed(ctx, "process_message", err)
		} else {
			d.n.jobSucceeded("process_message")
		}
		if res.Processed > 0 {
			select {
			case d.sent <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-t.C:
		}
	}
}

// sendLoop delivers what is queued for peers we talk to actively (push, relay, mail),
// each peer on its own backoff after failures.
func (d *Daemon) sendLoop(ctx context.Context) {
	type backoff struct {
		next  time.Time
		delay time.Duration
	}
	state := map[string]*backoff{}
	t := time.NewTicker(sendEvery)
	defer t.Stop()
	for {
		peers, _ := d.n.Spool.Peers()
		for _, name := range peers {
			if ctx.Err() != nil {
				return
			}
			es, err := d.n.Spool.List(queue.Outgoing(name))
			if err != nil || len(es) == 0 {
				continue
			}
			p, _, err := d.n.Peer(name)
			if err != nil || !sendsActively(p) {
				continue // a passive peer pulls its files; a carried one waits for export_messages
			}
			b := state[name]
			if b == nil {
				b = &backoff{}
				state[name] = b
			}
			if time.Now().Before(b.next) {
				continue
			}
			res, err := d.n.SendOutgoing(ctx, name)
			if err != nil && res.Sent == 0 {
				b.delay = min(max(2*b.delay, minBackoff), maxBackoff)
				b.next = time.Now().Add(b.delay)
				d.n.Log.Warn("peer unreachable; will retry", "peer", name, "retry_in", b.delay, "err", err)
			} else {
				b.delay, b.next = 0, time.Time{}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.sent:
		case <-t.C:
		}
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

// periodicLoop runs the batch DIBS ran every pollInterval: poll, then housekeeping. It
// runs once at start (DIBS waited a whole interval first).
func (d *Daemon) periodicLoop(ctx context.Context) {
	n := d.n
	sched := schedule{cleanup: time.Now()} // a daily chore: not at start
	for {
		if _, err := n.SendProposals(ctx); err != nil && ctx.Err() == nil {
			n.Log.Warn("contract proposals", "err", err)
		}
		if k, err := n.PollPassives(ctx); err != nil {
			n.jobFailed(ctx, "poll_passives", err)
		} else if n.jobSucceeded("poll_passives"); k > 0 {
			select {
			case d.wake <- struct{}{}:
			default:
			}
		}
		n.Spool.CleanTmp(time.Hour, time.Now())
		// The chores take the database per step (FlushOutbox takes it before the outbox
		// lock), so a long auto_check does not shut cron commands out.
		n.housekeeping(ctx, &sched)
		now := time.Now()
		n.runs.job("poll and auto_check", now, now.Add(optPollInterval.Get(n.Opts)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(optPollInterval.Get(n.Opts)):
		}
	}
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
	if err := queue.WriteFileAtomic(filepath.Join(dir, stopFile), nil, 0o600); err != nil {
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
