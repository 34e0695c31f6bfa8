package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

// What goes wrong with statusAddress says so in one line: a malformed one is refused by
// set_option, a non-loopback one without statusAllowRemote or without a token stops
// start_daemon, and one that another program holds is logged while the daemon serves its
// peers all the same.
func TestCLI_StatusAddressProblemsAreOneLine(t *testing.T) {
	n := newCLINode(t, t.TempDir(), "alice")
	oneLine := func(what, errs, want string) {
		t.Helper()
		lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "dibs: ") || !strings.Contains(lines[0], want) {
			t.Errorf("%s: stderr %q; want one line \"dibs: ...%s...\"", what, errs, want)
		}
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:99999", "127.0.0.1:port", ":6364", "local host:6364"} {
		_, errs, code := n.Run("set_option", "--name", "statusAddress", "--value", bad)
		if code == 0 {
			t.Errorf("set_option statusAddress %q was taken", bad)
		}
		oneLine("set_option statusAddress "+bad, errs, "statusAddress")
	}

	// 192.0.2.1 (TEST-NET-1) is never dialled or bound: start_daemon refuses it first.
	n.OK("set_option", "--name", "statusAddress", "--value", "192.0.2.1:6364")
	_, errs, code := n.Run("start_daemon")
	if code == 0 {
		t.Fatal("start_daemon served a non-loopback statusAddress without statusAllowRemote")
	}
	oneLine("non-loopback", errs, "statusAllowRemote")
	n.OK("set_option", "--name", "statusAllowRemote", "--value", "true")
	_, errs, code = n.Run("start_daemon")
	if code == 0 {
		t.Fatal("start_daemon served a non-loopback statusAddress without a token")
	}
	oneLine("no token", errs, "statusTokenFile")
	empty := filepath.Join(t.TempDir(), "token")
	os.WriteFile(empty, []byte("\n"), 0o600)
	n.OK("set_option", "--name", "statusTokenFile", "--value", empty)
	_, errs, code = n.Run("start_daemon")
	if code == 0 {
		t.Fatal("start_daemon took an empty token")
	}
	oneLine("empty token", errs, "first line is empty")

	// A port another program holds: one line in the log, and the daemon runs.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	n.OK("set_option", "--name", "statusAllowRemote", "--value", "false")
	n.OK("set_option", "--name", "statusTokenFile", "--value", "")
	n.OK("set_option", "--name", "statusAddress", "--value", busy.Addr().String())
	proc := clirun.StartProc(t, "start_daemon", n.Command("start_daemon"), n.port)
	var said []string
	for _, l := range strings.Split(proc.Stderr.String(), "\n") {
		if strings.Contains(l, "statusAddress") {
			said = append(said, l)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], busy.Addr().String()+" is in use by another program") {
		t.Errorf("the log says of statusAddress %q, want one line that its port is in use", said)
	}
	if strings.Contains(proc.Stdout.String(), "status on") {
		t.Errorf("start_daemon says it serves the status: %q", proc.Stdout.String())
	}
	if err := proc.Stop(t, os.Interrupt, 10*time.Second); err != nil {
		t.Errorf("start_daemon: %v", err)
	}
}

// By default the daemon serves its status on loopback, /, /status.json and /metrics;
// with statusTokenFile set, only to requests that bring the token.
func TestCLI_StartDaemonServesStatusWithToken(t *testing.T) {
	n := newCLINode(t, t.TempDir(), "alice")
	port := clirun.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	n.OK("set_option", "--name", "statusAddress", "--value", addr)
	proc := clirun.StartProc(t, "start_daemon", n.Command("start_daemon"), n.port)
	clirun.WaitPort(t, port)
	for _, path := range []string{"/", "/status.json", "/metrics"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Errorf("GET %s: %s %q", path, resp.Status, b)
		}
	}
	if err := proc.Stop(t, os.Interrupt, 10*time.Second); err != nil {
		t.Errorf("start_daemon: %v", err)
	}

	// With statusTokenFile set, every request brings the token.
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	n.OK("set_option", "--name", "statusTokenFile", "--value", tok)
	proc = clirun.StartProc(t, "start_daemon", n.Command("start_daemon"), n.port)
	clirun.WaitPort(t, port)
	for _, c := range []struct {
		header, query string
		want          int
	}{{"", "", 401}, {"Bearer wrong", "", 401}, {"", "?token=wrong", 401}, {"Bearer s3cret", "", 200}, {"", "?token=s3cret", 200}} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/status.json"+c.query, nil)
		if c.header != "" {
			req.Header.Set("Authorization", c.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("Authorization %q, query %q: %s, want %d", c.header, c.query, resp.Status, c.want)
		}
	}
	if err := proc.Stop(t, os.Interrupt, 10*time.Second); err != nil {
		t.Errorf("start_daemon: %v", err)
	}
}
