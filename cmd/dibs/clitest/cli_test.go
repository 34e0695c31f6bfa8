// Package clitest drives the real dibs binary as a user (or a cron job, or a script)
// would: separate processes, one DIBS_DIR each, daemons on loopback ports.
package clitest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dibs-cli-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "dibs")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/dibs-backup/dibs/cmd/dibs").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is one DIBS_DIR.
type node struct {
	t    *testing.T
	name string
	dir  string
	port int
}

// run runs dibs with the node's DIBS_DIR and returns stdout, stderr and the exit code.
func (n *node) run(args ...string) (string, string, int) {
	n.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "DIBS_DIR="+n.dir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("%s: dibs %v: %v", n.name, args, err)
	}
	return out.String(), errb.String(), code
}

// ok runs dibs and fails the test unless it succeeds.
func (n *node) ok(args ...string) string {
	n.t.Helper()
	out, errs, code := n.run(args...)
	if code != 0 {
		n.t.Fatalf("%s: dibs %s: exit %d: %s", n.name, strings.Join(args, " "), code, errs)
	}
	return out
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newNode(t *testing.T, root, name string) *node {
	n := &node{t: t, name: name, dir: filepath.Join(root, name), port: freePort(t)}
	n.ok("init", "--key", name+".dibs@cli.invalid")
	n.ok("set_option", "--name", "daemonPort", "--value", fmt.Sprint(n.port))
	n.ok("set_option", "--name", "daemonHost", "--value", "127.0.0.1")
	n.ok("set_option", "--name", "talkRetryDelay", "--value", "0")
	n.ok("export_key", "--out", filepath.Join(root, name+".asc"))
	return n
}

// startDaemon runs `dibs start_daemon` in the background until the test ends (or stop).
func (n *node) startDaemon() *exec.Cmd {
	n.t.Helper()
	cmd := exec.Command(bin, "start_daemon")
	cmd.Env = append(os.Environ(), "DIBS_DIR="+n.dir)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	})
	waitPort(n.t, n.port)
	return cmd
}

func waitPort(t *testing.T, port int) {
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

// database returns show_database --json --only section.
func (n *node) database(section string) []map[string]any {
	n.t.Helper()
	var db map[string][]map[string]any
	if err := json.Unmarshal([]byte(n.ok("show_database", "--json", "--only", section)), &db); err != nil {
		n.t.Fatalf("show_database --json: %v", err)
	}
	return db[section]
}

func TestCLI_WrongArgumentsGiveOneLine(t *testing.T) {
	n := &node{t: t, name: "x", dir: filepath.Join(t.TempDir(), "x")}
	for _, args := range [][]string{
		{"no_such_command"},
		{"add_peer", "--email", "a@b"},
		{"init"},
	} {
		_, errs, code := n.run(args...)
		lines := strings.Split(strings.TrimRight(errs, "\n"), "\n")
		if code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "dibs: ") {
			t.Errorf("dibs %v: exit %d, stderr %q; want one line starting with 'dibs: '", args, code, errs)
		}
	}
	n.ok("init", "--key", "x.dibs@cli.invalid")
	for _, args := range [][]string{
		{"add_peer", "--peer", "p", "--email", "p@x", "--local_quota", "12q", "--remote_quota", "1g", "--talk", "active", "--listen", "active"},
		{"set_option", "--name", "noSuchOption", "--value", "1"},
		{"store"},
		{"store", "--name", "/does/not/exist"},
		{"recover_file", "--file", "/never/stored"},
		{"unstore_file", "--file", "/never/stored"},
		{"forget", "--peer", "nobody"},
		{"relay_server", "--listen", "127.0.0.1:0"},
		{"relay_server", "--listen", "127.0.0.1:0", "--dir", t.TempDir(), "--tls_cert", "c.pem"},
	} {
		_, errs, code := n.run(args...)
		lines := strings.Split(strings.TrimRight(errs, "\n"), "\n")
		if code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "dibs: ") {
			t.Errorf("dibs %v: exit %d, stderr %q; want one line starting with 'dibs: '", args, code, errs)
		}
	}
}

// writeTree makes a tree with binary data, CR bytes, an empty file and a link.
func writeTree(t *testing.T, root string) {
	rng := rand.New(rand.NewPCG(5, 6))
	w := func(rel string, b []byte) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 700_000)
	for i := range big {
		big[i] = byte(rng.UintN(256))
	}
	w("big.bin", big)
	w("cr.txt", bytes.Repeat([]byte("line\r\n\r"), 5000))
	w("empty", nil)
	for i := range 120 {
		w(fmt.Sprintf("many/%03d", i), []byte(strings.Repeat(fmt.Sprint(i), 1+i*7)))
	}
	os.Symlink("big.bin", filepath.Join(root, "link"))
}

func treeSums(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		fi, _ := os.Lstat(p)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "link:" + l
		case fi.IsDir():
			out[rel] = "dir"
		default:
			b, _ := os.ReadFile(p)
			out[rel] = fmt.Sprintf("%x %v", sha256.Sum256(b), fi.Mode().Perm())
		}
		return nil
	})
	return out
}

// TestCLI_BackupLosePeerAndDiskRecover: alice sits behind NAT and runs only cron
// commands; bob, carol and dave run daemons. Alice stores a tree, loses carol and then
// her whole DIBS_DIR, and gets every byte back from the recovery kit.
func TestCLI_BackupLosePeerAndDiskRecover(t *testing.T) {
	root := t.TempDir()
	alice := newNode(t, root, "alice")
	peers := []*node{newNode(t, root, "bob"), newNode(t, root, "carol"), newNode(t, root, "dave")}
	for _, p := range peers {
		// Alice pushes to the daemons; they keep what is for her until she pulls it.
		alice.ok("add_peer", "--peer", p.name, "--email", p.name+"@cli.invalid", "--local_quota", "100m", "--remote_quota", "100m",
			"--talk", "active", "--listen", "passive", "--host", "127.0.0.1", "--port", fmt.Sprint(p.port), "--key_file", filepath.Join(root, p.name+".asc"))
		p.ok("add_peer", "--peer", "alice", "--email", "alice@cli.invalid", "--local_quota", "100m", "--remote_quota", "100m",
			"--talk", "passive", "--listen", "active", "--key_file", filepath.Join(root, "alice.asc"))
		p.ok("set_option", "--name", "kbPerFile", "--value", "100")
	}
	alice.ok("set_option", "--name", "kbPerFile", "--value", "100")
	daemons := map[string]*exec.Cmd{}
	for _, p := range peers {
		daemons[p.name] = p.startDaemon()
	}
	tree := filepath.Join(root, "tree")
	writeTree(t, tree)
	if out := alice.ok("store", "--name", tree, "--as", "docs"); !strings.Contains(out, "new versions") {
		t.Fatalf("store said %q", out)
	}
	cron := func(n *node, until func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !until() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: cron rounds never got there", n.name)
			}
			n.run("send_message")
			n.run("poll_passives")
			n.ok("process_message")
			time.Sleep(100 * time.Millisecond)
		}
	}
	allStored := func() bool {
		rows := alice.database("files")
		for _, r := range rows {
			if r["status"] != "stored" {
				return false
			}
		}
		return len(rows) > 120
	}
	cron(alice, allStored)
	for _, r := range alice.database("peers") {
		if r["remote_used"].(float64) <= 0 || r["last_heard"] == nil {
			t.Errorf("peer row after storing: %v", r)
		}
	}
	// A cron process_message on bob's directory while bob's daemon runs changes nothing.
	peers[0].ok("process_message")

	// carol is gone for good; alice's disk dies, the recovery kit survives.
	daemons["carol"].Process.Signal(syscall.SIGTERM)
	if err := daemons["carol"].Wait(); err != nil {
		t.Fatalf("carol's daemon did not exit cleanly on SIGTERM: %v", err)
	}
	kit := filepath.Join(root, "kit.asc")
	alice.ok("export_recovery_kit", "--out", kit)
	os.RemoveAll(alice.dir)
	alice.ok("import_recovery_kit", "--file", kit)
	if rows := alice.database("files"); len(rows) != 0 {
		t.Fatalf("a fresh directory knows %d files", len(rows))
	}
	alice.ok("recover_all")
	cron(alice, func() bool {
		for _, r := range alice.database("recovery") {
			if r["name"] == "*all*" && r["state"] != "waiting" {
				return true
			}
		}
		return false
	})
	for _, r := range alice.database("recovery") {
		if r["state"] != "done" {
			t.Fatalf("recovery: %v", r)
		}
	}
	want, got := treeSums(t, tree), treeSums(t, filepath.Join(alice.dir, "recovery", "docs"))
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: recovered %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("recovered %d entries, stored %d", len(got), len(want))
	}
	// The rebuilt books work: probe, then store again.
	alice.ok("probe", "--file", "docs/big.bin")
	cron(alice, func() bool {
		good := 0.0
		for _, r := range alice.database("probe") {
			good += r["good"].(float64)
			if r["failed"].(float64) > 0 {
				t.Fatalf("probe failed: %v", r)
			}
		}
		return good > 0
	})
	for _, p := range []*node{peers[0], peers[2]} {
		if q, _ := os.ReadDir(filepath.Join(p.dir, "quarantine")); len(q) > 0 {
			t.Errorf("%s quarantined %d files", p.name, len(q))
		}
	}
	if _, errs, code := alice.run("stop_daemon"); code == 0 || !strings.Contains(errs, "no daemon") {
		t.Errorf("stop_daemon without a daemon: exit %d, %q", code, errs)
	}
}

// TestCLI_RelayServer: two NAT'd nodes that can only reach a relay exchange HELLOs
// through `dibs relay_server` over TLS; a stranger's deposit is refused.
func TestCLI_RelayServer(t *testing.T) {
	root := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	cert, key := filepath.Join(root, "cert.pem"), filepath.Join(root, "key.pem")
	os.WriteFile(cert, certPEM, 0o600)
	os.WriteFile(key, keyPEM, 0o600)
	alice, bob, mallory := newNode(t, root, "alice"), newNode(t, root, "bob"), newNode(t, root, "mallory")
	allow := filepath.Join(root, "allow.asc")
	a, _ := os.ReadFile(filepath.Join(root, "alice.asc"))
	b, _ := os.ReadFile(filepath.Join(root, "bob.asc"))
	os.WriteFile(allow, append(a, b...), 0o600)
	port := freePort(t)
	relayDir := filepath.Join(root, "relay")
	srv := exec.Command(bin, "relay_server", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--dir", relayDir, "--allow", allow, "--tls_cert", cert, "--tls_key", key)
	var srvErr bytes.Buffer
	srv.Stderr = &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if srv.ProcessState == nil {
			srv.Process.Kill()
			srv.Wait()
		}
	}()
	waitPort(t, port)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	for _, n := range []*node{alice, bob, mallory} {
		n.ok("set_option", "--name", "relayURL", "--value", url)
		n.ok("set_option", "--name", "relayCAFile", "--value", cert)
	}
	link := func(from, to *node) {
		from.ok("add_peer", "--peer", to.name, "--email", to.name+"@cli.invalid", "--local_quota", "1g", "--remote_quota", "1g",
			"--talk", "relay", "--listen", "relay", "--relay", url, "--key_file", filepath.Join(root, to.name+".asc"))
	}
	link(alice, bob)
	link(bob, alice)
	link(mallory, bob)
	if out := alice.ok("send_hello", "--peer", "bob"); strings.Contains(out, "not delivered") {
		t.Fatalf("alice's HELLO through the relay: %q", out)
	}
	bob.ok("poll_passives")
	bob.ok("process_message")
	bob.ok("send_message")
	alice.ok("poll_passives")
	alice.ok("process_message")
	for _, pair := range [][2]*node{{alice, bob}, {bob, alice}} {
		heard := false
		for _, r := range pair[0].database("peers") {
			if r["peer"] == pair[1].name && r["last_heard"] != nil {
				heard = true
			}
		}
		if !heard {
			t.Errorf("%s never heard from %s through the relay", pair[0].name, pair[1].name)
		}
	}
	// Mallory is not in the allow file: the relay refuses her, and her file stays queued.
	if out := mallory.ok("send_hello", "--peer", "bob"); !strings.Contains(out, "not delivered") {
		t.Errorf("the relay took a stranger's deposit: %q", out)
	}
	mallory.run("send_message")
	bob.ok("poll_passives")
	if out := bob.ok("process_message"); !strings.Contains(out, "processed 0") {
		t.Errorf("bob got something from a stranger: %q", out)
	}
	srv.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("relay_server on SIGTERM: %v: %s", err, srvErr.String())
		}
	case <-ctx.Done():
		t.Error("relay_server did not stop on SIGTERM")
	}
}
