package main

import (
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

// daemonAddress binds the daemon to one address: set to 127.0.0.2, it answers there and
// not on 127.0.0.1; empty (the default), it answers on both. daemonHost, its old name,
// still sets it.
func TestCLI_DaemonAddressBindsOneInterface(t *testing.T) {
	n := newCLINode(t, t.TempDir(), "alice")
	// serving starts the daemon and checks where it says it serves: one of want.
	serving := func(want ...string) *exec.Cmd {
		t.Helper()
		cmd := n.Command("start_daemon")
		out := &clirun.SafeBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "dibs daemon serving "); {
			if time.Now().After(deadline) {
				t.Fatalf("start_daemon printed %q", out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		got, _, _ := strings.Cut(out.String(), "\n")
		if !slices.Contains(want, strings.TrimPrefix(got, "dibs daemon serving ")) {
			t.Errorf("start_daemon printed %q, want it to serve %q", got, want)
		}
		return cmd
	}
	answers := func(host string) bool {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(n.port)), 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	stop := func(cmd *exec.Cmd) {
		t.Helper()
		n.OK("stop_daemon")
		if err := cmd.Wait(); err != nil {
			t.Errorf("the daemon exited with %v", err)
		}
	}

	n.OK("set_option", "--name", "daemonAddress", "--value", "127.0.0.2")
	p := serving(fmt.Sprintf("127.0.0.2:%d", n.port))
	if !answers("127.0.0.2") || answers("127.0.0.1") {
		t.Errorf("daemonAddress 127.0.0.2: answers on 127.0.0.2 %v, on 127.0.0.1 %v; want only 127.0.0.2", answers("127.0.0.2"), answers("127.0.0.1"))
	}
	if out := n.OK("send_hello", "--host", "127.0.0.2", "--port", fmt.Sprint(n.port)); !strings.HasPrefix(out, "dibs ") {
		t.Errorf("send_hello to 127.0.0.2: %q", out)
	}
	stop(p)

	n.OK("set_option", "--name", "daemonHost", "--value", "") // the old name, back to the default
	if out := n.OK("show_option", "--name", "daemonAddress"); out != "\n" {
		t.Errorf("daemonAddress after set_option --name daemonHost --value '': %q", out)
	}
	p = serving(fmt.Sprintf("[::]:%d", n.port), fmt.Sprintf("0.0.0.0:%d", n.port)) // 0.0.0.0 without IPv6
	if !answers("127.0.0.1") || !answers("127.0.0.2") {
		t.Errorf("daemonAddress empty: answers on 127.0.0.1 %v, on 127.0.0.2 %v; want both", answers("127.0.0.1"), answers("127.0.0.2"))
	}
	stop(p)
}
