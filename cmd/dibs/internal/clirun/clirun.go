// Package clirun runs the dibs binary in tests as a user, a cron job or a script does:
// one process per command, DIBS_DIR in the environment. The black-box tests of cmd/dibs
// (cli_test.go, relay_server_test.go) use it.
package clirun

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Build builds the dibs binary (package pkg, e.g. "." or its import path) into a new
// temporary directory, for a TestMain. cleanup removes it.
func Build(pkg string) (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "dibs-bin-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "dibs")
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// Node is one DIBS_DIR driven through the binary.
type Node struct {
	T    testing.TB
	Bin  string
	Name string
	Dir  string
	// Env is added to the environment of every command, after DIBS_DIR.
	Env []string
	// NoProxy runs commands without the *_PROXY variables of the test's environment.
	NoProxy bool
}

// Environ is the environment the node's commands run with.
func (n *Node) Environ() []string {
	base := os.Environ()
	if n.NoProxy {
		base = CleanEnv()
	}
	return append(append(base, "DIBS_DIR="+n.Dir), n.Env...)
}

// Command is `dibs args...` for this node, not started.
func (n *Node) Command(args ...string) *exec.Cmd {
	cmd := exec.Command(n.Bin, args...)
	cmd.Env = n.Environ()
	return cmd
}

// Run runs `dibs args...` and returns its stdout, stderr and exit code.
func (n *Node) Run(args ...string) (string, string, int) {
	n.T.Helper()
	cmd := n.Command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		n.T.Fatalf("%s: dibs %s: %v", n.Name, strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), 0
}

// OK runs `dibs args...` and fails the test unless it exits 0; it returns stdout.
func (n *Node) OK(args ...string) string {
	n.T.Helper()
	out, errs, code := n.Run(args...)
	if code != 0 {
		n.T.Fatalf("%s: dibs %s: exit %d: %s", n.Name, strings.Join(args, " "), code, errs)
	}
	return out
}

// Database is the section of `show_database --json --only section`.
func (n *Node) Database(section string) []map[string]any {
	n.T.Helper()
	out := n.OK("show_database", "--json", "--only", section)
	var db map[string][]map[string]any
	if err := json.Unmarshal([]byte(out), &db); err != nil {
		n.T.Fatalf("%s: show_database --json: %v\n%s", n.Name, err, out)
	}
	return db[section]
}

// CleanEnv is the test's environment without proxy settings, plus extra.
func CleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToUpper(k), "_PROXY") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// FreePort is a loopback port nothing listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitPort waits up to 5 s for something to listen on a loopback port.
func WaitPort(t testing.TB, port int) {
	t.Helper()
	for range 200 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("nothing listens on port %d", port)
}

// SafeBuffer is a bytes.Buffer that a running process may write while the test reads it.
type SafeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SafeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SafeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Proc is a dibs process (a daemon, a relay) running in the background.
type Proc struct {
	Cmd            *exec.Cmd
	Stdout, Stderr *SafeBuffer
	done           chan struct{}
	err            error
}

// StartProc starts cmd with its output captured, kills it when the test ends if it still
// runs, and waits until it listens on the loopback port; the test fails if it exits or
// has not listened within 10 s. what names it in failures.
func StartProc(t testing.TB, what string, cmd *exec.Cmd, port int) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Stdout: &SafeBuffer{}, Stderr: &SafeBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	for range 400 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v: %s", what, p.err, p.Stderr.String())
		case <-time.After(25 * time.Millisecond):
		}
	}
	t.Fatalf("%s never listened on %d: %s", what, port, p.Stderr.String())
	return nil
}

// Done is closed when the process has exited; Err then says how.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error, once Done is closed.
func (p *Proc) Err() error { return p.err }

// Stop sends sig and waits up to timeout for the process to exit; it returns the exit
// error, and fails the test if the process still runs.
func (p *Proc) Stop(t testing.TB, sig os.Signal, timeout time.Duration) error {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still runs %v after %v", p.Cmd.Path, timeout, sig)
		return nil
	}
}
