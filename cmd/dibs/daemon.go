package main

import (
	"fmt"
	"time"

	"github.com/dibs-backup/dibs/agent"
)

var startDaemonCmd = &command{
	name: "start_daemon",
	help: `Serve daemonPort for our peers (they push files, passive peers pull theirs), and run
each job on its own timer, in the foreground: send within a second, process what arrives
at once, poll, auto_check and repair every pollInterval, probe every probePeriod, probe
timeouts (probeTimeout), the storage-list exchange and cleanup daily. A job never runs
twice at once; a peer that fails is tried again after 2 s, 4 s, ... up to 10 minutes.
Edits of dibsrc.toml and peers.toml are taken without a restart (a bad edit is logged and
the old configuration kept). Logs go to daemonLogFile (records at logLevel and up,
rotated past maxLogSize) and to stderr (printLogLevel and up).

It stops gracefully on stop_daemon, SIGTERM or SIGINT, or when daemonStopFile appears (a
number of seconds in it delays the stop): each job finishes the file in hand first.

What it exposes: plain HTTP on daemonPort at daemonAddress, by default on every interface
(what active peers need). Anyone who reaches it can ask who it is (GET /dibs/v1/hello: the
software, its version and our key's fingerprint) and start a sign-in; only a peer's key can
sign in, and then only deposit files for us or collect the files waiting for it. Someone on
the network path sees the files' sizes and timing, but cannot use a peer's session (each
request is signed by the peer's key, once), and the files are encrypted and signed: it can
neither read nor forge them. To serve one interface only, set daemonAddress (e.g.
127.0.0.1, or a VPN address).

Its status is on statusAddress (127.0.0.1:6364 by default, loopback only unless
statusAllowRemote, and then with the token of statusTokenFile): a page to read at a glance
(/), the same for scripts (/status.json) and Prometheus metrics (/metrics).`,
	flags:   noFlags(runStartDaemon),
	reports: true,
}

func runStartDaemon(a *App) error {
	n, err := a.node()
	if err != nil {
		return err
	}
	defer n.Close()
	a.logTo(n, agent.OptDaemonLogFile.Get(n.Opts))
	d, err := n.StartDaemon(nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "dibs daemon serving %s\n", d.Addr())
	if sa := d.StatusAddr(); sa != nil {
		fmt.Fprintf(a.Stdout, "status on http://%s/\n", sa)
	}
	return d.Run(a.Ctx)
}

var stopDaemonCmd = &command{
	name: "stop_daemon",
	help: `Stop the running daemon gracefully and wait for it to exit: write daemonStopFile and
send the daemon SIGTERM. To stop it later, write a number of seconds into daemonStopFile
instead (echo 600 > $DIBS_DIR/stop_daemon).`,
	flags: noFlags(runStopDaemon),
}

func runStopDaemon(a *App) error {
	dir, err := a.dibsDir()
	if err != nil {
		return err
	}
	if err := agent.StopDaemon(dir, 30*time.Second); err != nil {
		return err
	}
	fmt.Fprintln(a.Stdout, "daemon stopped")
	return nil
}
