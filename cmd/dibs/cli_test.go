package main

// These tests run the dibs binary as a user (or a cron job) does: one process per
// command, DIBS_DIR in the environment, daemons as background processes on loopback.

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/pgpmsg"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

var dibsBin string

func TestMain(m *testing.M) {
	bin, cleanup, err := clirun.Build(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dibsBin = bin
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// cliNode is one DIBS_DIR driven through the binary, with its daemon's port.
type cliNode struct {
	*clirun.Node
	port    int
	keyFile string // its export_key
}

func newCLINode(t *testing.T, root, name string) *cliNode {
	t.Helper()
	n := &cliNode{Node: &clirun.Node{T: t, Bin: dibsBin, Name: name, Dir: filepath.Join(root, name)},
		port: clirun.FreePort(t), keyFile: filepath.Join(root, name+".asc")}
	n.OK("init", "--key", name+".dibs@cli.invalid")
	n.OK("set_option", "--name", "daemonPort", "--value", fmt.Sprint(n.port))
	n.OK("set_option", "--name", "daemonHost", "--value", "127.0.0.1")
	n.OK("set_option", "--name", "statusAddress", "--value", "127.0.0.1:0") // not the default 6364: tests run side by side
	n.OK("set_option", "--name", "talkRetryDelay", "--value", "0")
	n.OK("export_key", "--out", n.keyFile)
	if b, err := os.ReadFile(n.keyFile); err != nil || !bytes.Contains(b, []byte("BEGIN PGP PUBLIC KEY BLOCK")) {
		t.Fatalf("%s: export_key --out wrote %q (%v)", name, b, err)
	}
	return n
}

// addPeer makes p a peer of n: talk is how n's messages reach p, listen how p's reach n.
func (n *cliNode) addPeer(p *cliNode, talk, listen string) {
	n.T.Helper()
	n.OK("add_peer", "--peer", p.Name, "--email", p.Name+"@cli.invalid",
		"--local_quota", "1g", "--remote_quota", "1g", "--talk", talk, "--listen", listen,
		"--host", "127.0.0.1", "--port", fmt.Sprint(p.port), "--key_file", p.keyFile)
}

// startDaemon runs `dibs start_daemon` in the background until it listens.
func (n *cliNode) startDaemon() *clirun.Proc {
	n.T.Helper()
	return clirun.StartProc(n.T, n.Name+": start_daemon", n.Command("start_daemon"), n.port)
}

// stop runs stop_daemon and waits for the daemon process, which must exit 0.
func (n *cliNode) stopDaemon(d *clirun.Proc) {
	n.T.Helper()
	n.OK("stop_daemon")
	select {
	case <-d.Done():
		if d.Err() != nil {
			n.T.Fatalf("%s: the daemon exited with %v: %s", n.Name, d.Err(), d.Stderr.String())
		}
	case <-time.After(30 * time.Second):
		n.T.Fatalf("%s: the daemon still runs after stop_daemon", n.Name)
	}
}

// lastHeard is show_database --json's last_heard of peer ("" if never).
func (n *cliNode) lastHeard(peer string) string {
	n.T.Helper()
	var db struct {
		Peers []struct {
			Peer      string  `json:"peer"`
			LastHeard *string `json:"last_heard"`
		} `json:"peers"`
	}
	out := n.OK("show_database", "--json")
	if err := json.Unmarshal([]byte(out), &db); err != nil {
		n.T.Fatalf("%s: show_database --json: %v\n%s", n.Name, err, out)
	}
	for _, p := range db.Peers {
		if p.Peer == peer {
			if p.LastHeard == nil {
				return ""
			}
			if _, err := time.Parse(time.RFC3339, *p.LastHeard); err != nil {
				n.T.Fatalf("%s: last_heard of %s is %q: %v", n.Name, peer, *p.LastHeard, err)
			}
			return *p.LastHeard
		}
	}
	n.T.Fatalf("%s: show_database lists no peer %s:\n%s", n.Name, peer, out)
	return ""
}

func files(t *testing.T, dir string) []string {
	des, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if !de.IsDir() {
			out = append(out, de.Name())
		}
	}
	return out
}

// A NAT'd node greets a node that runs start_daemon: its HELLO goes by push, the reply
// waits at the daemon until the NAT'd node's cron-style send_message, poll_passives,
// process_message pulls it. Both then show when they last heard of the other.
func TestCLI_PassiveNodeAndDaemon(t *testing.T) {
	root := t.TempDir()
	alice, bob := newCLINode(t, root, "alice"), newCLINode(t, root, "bob")
	alice.addPeer(bob, "active", "passive")
	bob.addPeer(alice, "passive", "active")
	d := bob.startDaemon()

	if out := alice.OK("send_hello", "--host", "127.0.0.1", "--port", fmt.Sprint(bob.port)); !strings.Contains(out, "dibs") {
		t.Errorf("send_hello --host: %q", out)
	}
	if out := alice.OK("send_hello", "--peer", "bob"); strings.Contains(out, "not delivered") {
		t.Fatalf("send_hello --peer bob: %s", out)
	}
	if got := files(t, filepath.Join(alice.Dir, "outgoing", "bob")); len(got) != 0 {
		t.Fatalf("the HELLO was pushed, yet outgoing/bob holds %v", got)
	}
	var heard string
	for range 50 { // alice's cron, until bob's daemon has processed the HELLO and answered
		alice.OK("send_message")
		alice.OK("poll_passives")
		alice.OK("process_message")
		if heard = alice.lastHeard("bob"); heard != "" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if heard == "" {
		t.Fatalf("alice never heard from bob; bob's daemon said:\n%s", d.Stderr.String())
	}
	bob.stopDaemon(d)
	if bob.lastHeard("alice") == "" {
		t.Errorf("bob processed alice's HELLO but shows no last_heard")
	}
	for _, n := range []*cliNode{alice, bob} {
		if q := files(t, filepath.Join(n.Dir, "quarantine")); len(q) > 0 {
			t.Errorf("%s quarantined %v", n.Name, q)
		}
		if in := files(t, filepath.Join(n.Dir, "incoming")); len(in) > 0 {
			t.Errorf("%s left %v in incoming/", n.Name, in)
		}
	}
	if _, errs, code := bob.Run("stop_daemon"); code == 0 || !strings.HasPrefix(errs, "dibs: ") {
		t.Errorf("stop_daemon with no daemon: exit %d, %q", code, errs)
	}
}

// Two nodes with no network at all exchange HELLOs on a carried directory.
func TestCLI_Sneakernet(t *testing.T) {
	root := t.TempDir()
	alice, carol := newCLINode(t, root, "alice"), newCLINode(t, root, "carol")
	alice.addPeer(carol, "passive", "passive")
	carol.addPeer(alice, "passive", "passive")

	alice.OK("send_hello", "--peer", "carol")
	if out := alice.OK("send_message"); !strings.Contains(out, "sent 0, waiting 1") {
		t.Errorf("send_message to a passive peer: %q", out)
	}
	stick := filepath.Join(root, "stick")
	if out := alice.OK("export_messages", "--dir", stick); !strings.Contains(out, "exported 1") {
		t.Fatalf("export_messages: %q", out)
	}
	if got := files(t, filepath.Join(alice.Dir, "outgoing", "carol")); len(got) != 0 {
		t.Errorf("export_messages left %v in outgoing/carol", got)
	}
	carried := carriedFiles(t, stick)
	if out := carol.OK("import_messages", "--dir", stick); !strings.Contains(out, "imported 1") {
		t.Fatalf("import_messages: %q", out)
	}
	if left := carriedFiles(t, stick); len(left) != 0 {
		t.Errorf("import_messages left %v on the stick", left)
	}
	if out := carol.OK("process_message"); !strings.Contains(out, "processed 1, quarantined 0") {
		t.Fatalf("carol process_message: %q", out)
	}
	if carol.lastHeard("alice") == "" {
		t.Fatal("carol processed alice's HELLO but shows no last_heard")
	}
	if alice.lastHeard("carol") != "" {
		t.Fatal("alice heard of carol before any reply travelled")
	}
	back := filepath.Join(root, "back")
	carol.OK("export_messages", "--dir", back, "--peer", "alice")
	alice.OK("import_messages", "--dir", back)
	if out := alice.OK("process_message"); !strings.Contains(out, "processed 1, quarantined 0") {
		t.Fatalf("alice process_message: %q", out)
	}
	if alice.lastHeard("carol") == "" {
		t.Fatal("alice processed carol's reply but shows no last_heard")
	}
	// The same stick carried in again (a copy kept): a replay, quarantined, no reply.
	for path, data := range carried {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	carol.OK("import_messages", "--dir", stick)
	if out := carol.OK("process_message"); !strings.Contains(out, "processed 0, quarantined 1") {
		t.Errorf("a replayed HELLO: %q", out)
	}
	if got := files(t, filepath.Join(carol.Dir, "outgoing", "alice")); len(got) != 0 {
		t.Errorf("a replayed HELLO was answered: %v", got)
	}
}

// auto_check --sync sends the storage lists at once; a plain auto_check after it finds
// the day's exchange done (and a node's first auto_check only starts its clock).
func TestCLI_AutoCheckSync(t *testing.T) {
	root := t.TempDir()
	alice, carol := newCLINode(t, root, "alice"), newCLINode(t, root, "carol")
	alice.addPeer(carol, "passive", "passive")
	outgoing := filepath.Join(alice.Dir, "outgoing", "carol")
	if out := alice.OK("auto_check"); strings.Contains(out, "storage list") || len(files(t, outgoing)) != 0 {
		t.Fatalf("the first auto_check sent storage lists: %q", out)
	}
	if out := alice.OK("auto_check", "--sync"); !strings.Contains(out, "sent our storage list to 1 peer\n") {
		t.Fatalf("auto_check --sync: %q", out)
	}
	if got := files(t, outgoing); len(got) != 1 {
		t.Fatalf("outgoing/carol holds %v, want the storage list", got)
	}
	if out := alice.OK("auto_check"); strings.Contains(out, "storage list") || len(files(t, outgoing)) != 1 {
		t.Fatalf("auto_check right after --sync sent the lists again: %q", out)
	}
}

// carriedFiles reads every file under a carried directory.
func carriedFiles(t *testing.T, dir string) map[string][]byte {
	out := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = b
		}
		return nil
	})
	return out
}

// A wrong command line is refused with a non-zero exit and one line on stderr, in a
// directory not yet initialized and in one that is.
func TestCLI_WrongArguments(t *testing.T) {
	root := t.TempDir()
	fresh := &clirun.Node{T: t, Bin: dibsBin, Name: "fresh", Dir: filepath.Join(root, "fresh")}
	for _, args := range [][]string{
		{"no_such_command"},
		{"add_peer", "--email", "a@b"},
		{"init"},
	} {
		_, errs, code := fresh.Run(args...)
		lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
		if code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "dibs: ") {
			t.Errorf("dibs %s in a fresh directory: exit %d, stderr %q; want an error and one line starting with \"dibs: \"", strings.Join(args, " "), code, errs)
		}
	}
	alice := newCLINode(t, root, "alice")
	for _, args := range [][]string{
		{},
		{"no_such_command"},
		{"send_hello"},
		{"send_hello", "--port", "1"},
		{"add_peer", "--email", "x@cli.invalid", "--local_quota", "1g", "--remote_quota", "1g", "--talk", "active", "--listen", "active"},
		{"add_peer", "--peer", "x", "--email", "x@cli.invalid", "--local_quota", "12q", "--remote_quota", "1g", "--talk", "active", "--listen", "active"},
		{"set_option", "--name", "noSuchOption", "--value", "1"},
		{"set_option", "--name", "daemonPort", "--value", "not-a-port"},
		{"process_message", "stray"},
		{"send_message", "--file", "x.pgp"},
		{"export_messages"},
		{"import_messages", "--dir", "a", "--maildir", "b"},
		{"show_database", "--only", "nothing"},
		{"process_message", "--no_such_flag"},
		{"store"},
		{"store", "--name", "/does/not/exist"},
		{"recover_file", "--file", "/never/stored"},
		{"unstore_file", "--file", "/never/stored"},
		{"forget", "--peer", "nobody"},
		{"relay_server", "--listen", "127.0.0.1:0"},
		{"relay_server", "--listen", "127.0.0.1:0", "--dir", t.TempDir(), "--tls_cert", "c.pem"},
	} {
		_, errs, code := alice.Run(args...)
		lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
		if code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "dibs: ") {
			t.Errorf("dibs %s: exit %d, stderr %q; want an error and one line starting with \"dibs: \"", strings.Join(args, " "), code, errs)
		}
	}
	// Nothing above changed the node.
	if out := alice.OK("show_option", "--name", "daemonPort"); !strings.Contains(out, fmt.Sprint(alice.port)) {
		t.Errorf("daemonPort is now %q", out)
	}
}

// A daemon process and cron's process_message processes, again and again, on one
// DIBS_DIR act on each file once: every HELLO gets exactly one reply, none is
// quarantined, none is left.
func TestCLI_DaemonAndCronProcessEachFileOnce(t *testing.T) {
	root := t.TempDir()
	alice := newCLINode(t, root, "alice")
	// bob pushes to alice's daemon (each push wakes it); carol's files come on a stick,
	// imported where the daemon only finds them on its next round, or cron first.
	bob, carol := newCLINode(t, root, "bob"), newCLINode(t, root, "carol")
	senders := []*cliNode{bob, carol}
	alice.addPeer(bob, "passive", "active") // replies wait in outgoing/ to be counted
	bob.addPeer(alice, "active", "passive")
	alice.addPeer(carol, "passive", "passive")
	carol.addPeer(alice, "passive", "passive")
	const waves, perWave = 5, 30  // 300 HELLOs
	hellos := map[string]string{} // Message-Id -> sender
	post := func(s *cliNode) {
		n, err := agent.Open(s.Dir) // queueing by the library is quicker than send_hello
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		for range perWave {
			id, err := n.Post("alice", agent.TypeHello, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			hellos[id] = s.Name
		}
	}
	d := alice.startDaemon()

	stop := make(chan struct{})
	cronDone := make(chan struct{})
	var cronRuns, cronProcessed int
	go func() { // cron
		defer close(cronDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, errs, code := alice.Run("process_message")
			if code != 0 {
				t.Errorf("cron process_message: exit %d: %s", code, errs)
				return
			}
			var p, q, l int
			fmt.Sscanf(out, "processed %d, quarantined %d, left %d", &p, &q, &l)
			cronRuns++
			cronProcessed += p
		}
	}()
	for w := range waves {
		post(bob)
		post(carol)
		if out := bob.OK("send_message"); !strings.Contains(out, fmt.Sprintf("sent %d,", perWave)) {
			t.Fatalf("bob send_message: %s", out)
		}
		stick := filepath.Join(root, fmt.Sprint("stick", w))
		carol.OK("export_messages", "--dir", stick)
		if out := alice.OK("import_messages", "--dir", stick); !strings.Contains(out, fmt.Sprintf("imported %d,", perWave)) {
			t.Fatalf("alice import_messages: %s", out)
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(files(t, filepath.Join(alice.Dir, "incoming"))) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	<-cronDone
	alice.stopDaemon(d)
	if left := files(t, filepath.Join(alice.Dir, "incoming")); len(left) > 0 {
		t.Fatalf("%d files left in incoming/; the daemon said:\n%s", len(left), d.Stderr.String())
	}
	if q := files(t, filepath.Join(alice.Dir, "quarantine")); len(q) > 0 {
		t.Fatalf("quarantined %v", q)
	}
	// A lock-order deadlock between the two shows as a database open that timed out.
	for _, line := range strings.Split(d.Stderr.String(), "\n") {
		if strings.Contains(line, agent.ErrDBBusy.Error()) {
			t.Errorf("the daemon waited for the database until it gave up: %s", line)
		}
	}
	alicePub := readKey(t, alice.keyFile)
	answered := map[string]bool{}
	for _, s := range senders {
		me := readIdentity(t, s.Dir)
		box := filepath.Join(alice.Dir, "outgoing", s.Name)
		for _, name := range files(t, box) {
			inReplyTo := openReply(t, filepath.Join(box, name), me, alicePub)
			if hellos[inReplyTo] != s.Name {
				t.Fatalf("reply %s to %s answers %q, not one of its HELLOs", name, s.Name, inReplyTo)
			}
			if answered[inReplyTo] {
				t.Fatalf("HELLO %s answered twice", inReplyTo)
			}
			answered[inReplyTo] = true
		}
	}
	if len(answered) != len(hellos) {
		t.Fatalf("%d replies for %d HELLOs", len(answered), len(hellos))
	}
	t.Logf("cron: %d runs processed %d of %d; the daemon the rest", cronRuns, cronProcessed, len(hellos))
}

func readKey(t *testing.T, path string) *pgpmsg.Key {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := pgpmsg.ReadKey(f)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readIdentity(t *testing.T, dir string) *pgpmsg.Identity {
	f, err := os.Open(filepath.Join(dir, "keys", "secret.asc"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id, err := pgpmsg.ReadIdentity(f)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// openReply opens a HELLO reply and returns its In-Reply-To.
func openReply(t *testing.T, path string, me *pgpmsg.Identity, from *pgpmsg.Key) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msg, err := pgpmsg.Open(f, me, pgpmsg.NewKeyring(from), pgpmsg.OpenOptions{})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer msg.Close()
	if typ := msg.Header.Get(pgpmsg.FieldType); typ != agent.TypeHello {
		t.Fatalf("%s is a %s, not a HELLO reply", path, typ)
	}
	return msg.Header.Get(pgpmsg.FieldInReplyTo)
}

// The text show_database puts something in every cell ("-" for nothing yet), so that no
// column goes missing from a row split on blanks (values with blanks in them, such as
// an error text, are the exception: --json is for scripts).
func TestCLI_ShowDatabaseTextHasNoBlankCells(t *testing.T) {
	root := t.TempDir()
	alice, bob := newCLINode(t, root, "alice"), newCLINode(t, root, "bob")
	alice.addPeer(bob, "active", "passive") // no comment, no relay, never heard from
	out := alice.OK("show_database")
	for _, section := range strings.Split(out, "== ")[1:] {
		lines := strings.Split(strings.TrimSpace(section), "\n")
		if len(lines) < 2 {
			continue // an empty section: its title only
		}
		cols := len(strings.Fields(lines[1]))
		for _, row := range lines[2:] {
			if n := len(strings.Fields(row)); n != cols {
				t.Errorf("section %s: row %q has %d cells, the header %d", lines[0], row, n, cols)
			}
		}
	}
	if !strings.Contains(out, "== peers (1)") {
		t.Fatalf("no peer listed:\n%s", out)
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
	alice := newCLINode(t, root, "alice")
	peers := []*cliNode{newCLINode(t, root, "bob"), newCLINode(t, root, "carol"), newCLINode(t, root, "dave")}
	for _, p := range peers {
		// Alice pushes to the daemons; they keep what is for her until she pulls it.
		alice.OK("add_peer", "--peer", p.Name, "--email", p.Name+"@cli.invalid", "--local_quota", "100m", "--remote_quota", "100m",
			"--talk", "active", "--listen", "passive", "--host", "127.0.0.1", "--port", fmt.Sprint(p.port), "--key_file", p.keyFile)
		p.OK("add_peer", "--peer", "alice", "--email", "alice@cli.invalid", "--local_quota", "100m", "--remote_quota", "100m",
			"--talk", "passive", "--listen", "active", "--key_file", alice.keyFile)
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
	cron := func(n *cliNode, until func() bool) {
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
	for _, p := range []*cliNode{peers[0], peers[2]} {
		if q, _ := os.ReadDir(filepath.Join(p.Dir, "quarantine")); len(q) > 0 {
			t.Errorf("%s quarantined %d files", p.Name, len(q))
		}
	}
	if _, errs, code := alice.Run("stop_daemon"); code == 0 || !strings.Contains(errs, "no daemon") {
		t.Errorf("stop_daemon without a daemon: exit %d, %q", code, errs)
	}
}
