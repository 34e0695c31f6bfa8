// Package clitest drives the real dibs binary as a user (or a cron job, or a script)
// would: separate processes, one DIBS_DIR each, daemons on loopback ports.
package clitest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

var bin string

func TestMain(m *testing.M) {
	b, cleanup, err := clirun.Build("github.com/dibs-backup/dibs/cmd/dibs")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = b
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// node is one DIBS_DIR with its daemon's port.
type node struct {
	*clirun.Node
	port int
}

func newNode(t *testing.T, root, name string) *node {
	n := &node{Node: &clirun.Node{T: t, Bin: bin, Name: name, Dir: filepath.Join(root, name)}, port: clirun.FreePort(t)}
	n.OK("init", "--key", name+".dibs@cli.invalid")
	n.OK("set_option", "--name", "daemonPort", "--value", fmt.Sprint(n.port))
	n.OK("set_option", "--name", "daemonHost", "--value", "127.0.0.1")
	n.OK("set_option", "--name", "talkRetryDelay", "--value", "0")
	n.OK("export_key", "--out", filepath.Join(root, name+".asc"))
	return n
}

// startDaemon runs `dibs start_daemon` in the background until the test ends (or stop).
func (n *node) startDaemon() *clirun.Proc {
	n.T.Helper()
	return clirun.StartProc(n.T, n.Name+": start_daemon", n.Command("start_daemon"), n.port)
}

func TestCLI_WrongArgumentsGiveOneLine(t *testing.T) {
	n := &clirun.Node{T: t, Bin: bin, Name: "x", Dir: filepath.Join(t.TempDir(), "x")}
	for _, args := range [][]string{
		{"no_such_command"},
		{"add_peer", "--email", "a@b"},
		{"init"},
	} {
		_, errs, code := n.Run(args...)
		lines := strings.Split(strings.TrimRight(errs, "\n"), "\n")
		if code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "dibs: ") {
			t.Errorf("dibs %v: exit %d, stderr %q; want one line starting with 'dibs: '", args, code, errs)
		}
	}
	n.OK("init", "--key", "x.dibs@cli.invalid")
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
		_, errs, code := n.Run(args...)
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
		alice.OK("add_peer", "--peer", p.Name, "--email", p.Name+"@cli.invalid", "--local_quota", "100m", "--remote_quota", "100m",
			"--talk", "active", "--listen", "passive", "--host", "127.0.0.1", "--port", fmt.Sprint(p.port), "--key_file", filepath.Join(root, p.Name+".asc"))
		p.OK("add_peer", "--peer", "alice", "--email", "alice@cli.invalid", "--local_quota", "100m", "--remote_quota", "100m",
			"--talk", "passive", "--listen", "active", "--key_file", filepath.Join(root, "alice.asc"))
		p.OK("set_option", "--name", "kbPerFile", "--value", "100")
	}
	alice.OK("set_option", "--name", "kbPerFile", "--value", "100")
	daemons := map[string]*clirun.Proc{}
	for _, p := range peers {
		daemons[p.Name] = p.startDaemon()
	}
	tree := filepath.Join(root, "tree")
	writeTree(t, tree)
	if out := alice.OK("store", "--name", tree, "--as", "docs"); !strings.Contains(out, "new versions") {
		t.Fatalf("store said %q", out)
	}
	cron := func(n *node, until func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !until() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: cron rounds never got there", n.Name)
			}
			n.Run("send_message")
			n.Run("poll_passives")
			n.OK("process_message")
			time.Sleep(100 * time.Millisecond)
		}
	}
	allStored := func() bool {
		rows := alice.Database("files")
		for _, r := range rows {
			if r["status"] != "stored" {
				return false
			}
		}
		return len(rows) > 120
	}
	cron(alice, allStored)
	for _, r := range alice.Database("peers") {
		if r["remote_used"].(float64) <= 0 || r["last_heard"] == nil {
			t.Errorf("peer row after storing: %v", r)
		}
	}
	// A cron process_message on bob's directory while bob's daemon runs changes nothing.
	peers[0].OK("process_message")

	// carol is gone for good; alice's disk dies, the recovery kit survives.
	if err := daemons["carol"].Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("carol's daemon did not exit cleanly on SIGTERM: %v", err)
	}
	kit := filepath.Join(root, "kit.asc")
	alice.OK("export_recovery_kit", "--out", kit)
	os.RemoveAll(alice.Dir)
	alice.OK("import_recovery_kit", "--file", kit)
	if rows := alice.Database("files"); len(rows) != 0 {
		t.Fatalf("a fresh directory knows %d files", len(rows))
	}
	alice.OK("recover_all")
	cron(alice, func() bool {
		for _, r := range alice.Database("recovery") {
			if r["name"] == "*all*" && r["state"] != "waiting" {
				return true
			}
		}
		return false
	})
	for _, r := range alice.Database("recovery") {
		if r["state"] != "done" {
			t.Fatalf("recovery: %v", r)
		}
	}
	want, got := treeSums(t, tree), treeSums(t, filepath.Join(alice.Dir, "recovery", "docs"))
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: recovered %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("recovered %d entries, stored %d", len(got), len(want))
	}
	// The rebuilt books work: probe, then store again.
	alice.OK("probe", "--file", "docs/big.bin")
	cron(alice, func() bool {
		good := 0.0
		for _, r := range alice.Database("probe") {
			good += r["good"].(float64)
			if r["failed"].(float64) > 0 {
				t.Fatalf("probe failed: %v", r)
			}
		}
		return good > 0
	})
	for _, p := range []*node{peers[0], peers[2]} {
		if q, _ := os.ReadDir(filepath.Join(p.Dir, "quarantine")); len(q) > 0 {
			t.Errorf("%s quarantined %d files", p.Name, len(q))
		}
	}
	if _, errs, code := alice.Run("stop_daemon"); code == 0 || !strings.Contains(errs, "no daemon") {
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
	port := clirun.FreePort(t)
	relayDir := filepath.Join(root, "relay")
	srv := clirun.StartProc(t, "relay_server", exec.Command(bin, "relay_server", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--dir", relayDir, "--allow", allow, "--tls_cert", cert, "--tls_key", key), port)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	for _, n := range []*node{alice, bob, mallory} {
		n.OK("set_option", "--name", "relayURL", "--value", url)
		n.OK("set_option", "--name", "relayCAFile", "--value", cert)
	}
	link := func(from, to *node) {
		from.OK("add_peer", "--peer", to.Name, "--email", to.Name+"@cli.invalid", "--local_quota", "1g", "--remote_quota", "1g",
			"--talk", "relay", "--listen", "relay", "--relay", url, "--key_file", filepath.Join(root, to.Name+".asc"))
	}
	link(alice, bob)
	link(bob, alice)
	link(mallory, bob)
	if out := alice.OK("send_hello", "--peer", "bob"); strings.Contains(out, "not delivered") {
		t.Fatalf("alice's HELLO through the relay: %q", out)
	}
	bob.OK("poll_passives")
	bob.OK("process_message")
	bob.OK("send_message")
	alice.OK("poll_passives")
	alice.OK("process_message")
	for _, pair := range [][2]*node{{alice, bob}, {bob, alice}} {
		heard := false
		for _, r := range pair[0].Database("peers") {
			if r["peer"] == pair[1].Name && r["last_heard"] != nil {
				heard = true
			}
		}
		if !heard {
			t.Errorf("%s never heard from %s through the relay", pair[0].Name, pair[1].Name)
		}
	}
	// Mallory is not in the allow file: the relay refuses her, and her file stays queued.
	if out := mallory.OK("send_hello", "--peer", "bob"); !strings.Contains(out, "not delivered") {
		t.Errorf("the relay took a stranger's deposit: %q", out)
	}
	mallory.Run("send_message")
	bob.OK("poll_passives")
	if out := bob.OK("process_message"); !strings.Contains(out, "processed 0") {
		t.Errorf("bob got something from a stranger: %q", out)
	}
	if err := srv.Stop(t, syscall.SIGTERM, 15*time.Second); err != nil {
		t.Errorf("relay_server on SIGTERM: %v: %s", err, srv.Stderr.String())
	}
}
