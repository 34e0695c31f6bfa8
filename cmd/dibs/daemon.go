package main

import (
	"fmt"
	"time"

	"github.com/dibs-backup/dibs/agent"
)

var startDaemonCmd = &command{
	name: "start_daemon",
	help: `Serve daemonPort for our peers (they push files, passive peers pull theirs), and run
send, poll and process on their schedules, in the foreground, until stop_daemon or a signal.
Logs go to daemonLogFile (records at logLevel and up, rotated past maxLogSize) and
to stderr (printLogLevel and up).

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
	name:  "stop_daemon",
	help:  "Stop the running daemon gracefully and wait for it to exit.",
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
