package readme

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

// A runBlock is a ```sh block of the README marked <!-- run: ROLE -->: the commands one
// person (or the relay's machine) types, in order.
type runBlock struct {
	role  string
	line  int      // of the fence, 1-based
	lines []string // commands, continuation lines joined
}

var runMarker = regexp.MustCompile(`^<!-- run: ([a-z-]+) -->$`)

// runBlocks are the README's marked blocks. Every ```sh block must be marked, so that
// none escapes the test.
func runBlocks(t *testing.T, text string) []runBlock {
	t.Helper()
	var out []runBlock
	lines := strings.Split(text, "\n")
	role := ""
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if m := runMarker.FindStringSubmatch(l); m != nil {
			role = m[1]
			continue
		}
		if l == "```sh" {
			if role == "" {
				t.Errorf("README.md:%d: a ```sh block without <!-- run: ROLE --> before it", i+1)
			}
			b := runBlock{role: role, line: i + 1}
			cont := ""
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				c := strings.TrimSpace(lines[i])
				if strings.HasSuffix(c, `\`) {
					cont += strings.TrimSuffix(c, `\`)
					continue
				}
				if c = cont + c; c != "" {
					b.lines = append(b.lines, c)
				}
				cont = ""
			}
			out = append(out, b)
			role = ""
			continue
		}
		if l != "" {
			if role != "" {
				t.Errorf("README.md:%d: <!-- run: %s --> is not followed by a ```sh block", i, role)
			}
			role = ""
		}
	}
	return out
}

// person is one role of the walk-through: a home directory (so ~/.dibs is its node) on
// a machine of its own.
type person struct {
	name, home string
	node       *clirun.Node // the same node, driven directly by the test
	daemon     *clirun.Proc
}

// The walk-through's host names and ports, and what they are in the test: everything on
// loopback, on ports nothing else uses.
func substitutions(t *testing.T) *strings.Replacer {
	return strings.NewReplacer(
		"alice.example.org", "127.0.0.1",
		"relay.example.org", "127.0.0.1",
		"6363", fmt.Sprint(clirun.FreePort(t)),
		"8080", fmt.Sprint(clirun.FreePort(t)),
	)
}

// TestREADME_WalkThroughRuns runs every marked block of the README as written: each
// command through sh, in the person's home (HOME set, no DIBS_DIR), from one directory
// that stands for the files the friends hand each other (their .asc keys, the kit).
// Only host names and ports are mapped, to loopback. `dibs start_daemon` and `dibs
// relay_server` are started in the background, as a person leaves them running; before
// each command the running daemons have acted on what reached them, as they have by the
// time a person types the next line. Every command must exit 0. Then the test checks what
// the README says came of it: both friends' files are stored, and the recovered node gets
// Alice's files back, byte for byte, through the relay, after a few rounds of the cron
// job's three commands.
func TestREADME_WalkThroughRuns(t *testing.T) {
	blocks := runBlocks(t, readDoc(t, "README.md"))
	roles := map[string]bool{}
	for _, b := range blocks {
		roles[b.role] = true
	}
	for _, r := range []string{"alice", "bob", "relay", "alice-new"} {
		if !roles[r] {
			t.Errorf("README.md has no walk-through block for %s", r)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	top := t.TempDir()
	shared := filepath.Join(top, "handed-over")
	binDir := filepath.Dir(dibsBin)
	if err := os.MkdirAll(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	people := map[string]*person{}
	get := func(name string) *person {
		if p := people[name]; p != nil {
			return p
		}
		home := filepath.Join(top, name)
		p := &person{name: name, home: home}
		p.node = &clirun.Node{T: t, Bin: dibsBin, Name: name, Dir: filepath.Join(home, ".dibs"), NoProxy: true,
			Env: []string{"HOME=" + home}}
		if err := os.MkdirAll(home, 0o700); err != nil {
			t.Fatal(err)
		}
		people[name] = p
		return p
	}
	// What the friends back up: a small tree each.
	seed := map[string]map[string]string{
		"alice": {"Documents/notes.txt": "buy milk\r\n", "Documents/photos/cat.raw": strings.Repeat("\x00\x0d\xff", 3000)},
		"bob":   {"Documents/todo.txt": "call Alice\n"},
	}
	for name, files := range seed {
		for rel, content := range files {
			path := filepath.Join(get(name).home, rel)
			os.MkdirAll(filepath.Dir(path), 0o700)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := func(p *person) []string {
		var e []string
		for _, kv := range clirun.CleanEnv() {
			switch k, _, _ := strings.Cut(kv, "="); k {
			case "HOME", "DIBS_DIR", "PATH":
			default:
				e = append(e, kv)
			}
		}
		return append(e, "HOME="+p.home, "PATH="+binDir+":"+os.Getenv("PATH"))
	}
	sub := substitutions(t)
	var background []*clirun.Proc

	for _, b := range blocks {
		p := get(b.role)
		for _, line := range b.lines {
			cmdline := sub.Replace(line)
			where := fmt.Sprintf("README.md:%d (%s): %s", b.line, p.name, line)
			for _, q := range people {
				if q.daemon != nil {
					settleDaemon(t, q)
				}
			}
			cmd := exec.Command("sh", "-c", cmdline)
			cmd.Dir, cmd.Env = shared, env(p)
			if fields := strings.Fields(cmdline); len(fields) > 1 && fields[0] == "dibs" &&
				(fields[1] == "start_daemon" || fields[1] == "relay_server") {
				cmd.Args = []string{"sh", "-c", "exec " + cmdline} // the signals reach dibs
				port := listenPort(t, p, fields)
				proc := clirun.StartProc(t, where, cmd, port)
				background = append(background, proc)
				if fields[1] == "start_daemon" {
					p.daemon = proc
				}
				continue
			}
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", where, err, out.String(), errb.String())
			}
			t.Logf("%s\n%s%s", where, out.String(), errb.String())
			if strings.Contains(cmdline, "dibs stop_daemon") {
				waitExit(t, where, p.daemon)
				p.daemon = nil
			}
		}
	}

	// What the README says came of it.
	for _, name := range []string{"alice", "bob"} {
		files := people[name].node.Database("files")
		if len(files) < len(seed[name]) {
			t.Errorf("%s has %d stored files, want at least the %d of ~/Documents", name, len(files), len(seed[name]))
		}
		for _, f := range files {
			if f["status"] != "stored" {
				t.Errorf("%s: %v is %v, want stored", name, f["name"], f["status"])
			}
		}
	}
	// The cron job's three commands, on the recovered node and on Bob's, until the
	// recovery is done.
	alice, bob, fresh := people["alice"], people["bob"], people["alice-new"]
	state := ""
	for round := 0; round < 10 && state != "done"; round++ {
		for _, p := range []*person{bob, fresh} {
			for _, c := range []string{"poll_passives", "process_message", "send_message"} {
				p.node.OK(c)
			}
		}
		for _, r := range fresh.node.Database("recovery") {
			state, _ = r["state"].(string)
		}
	}
	if state != "done" {
		t.Fatalf("recover_all on the new node: %q after 10 rounds, want done", state)
	}
	for rel, content := range seed["alice"] {
		got, err := os.ReadFile(filepath.Join(fresh.home, ".dibs", "recovery", alice.home, rel))
		if err != nil || string(got) != content {
			t.Errorf("recovered %s: %d bytes (%v), want the %d bytes stored", rel, len(got), err, len(content))
		}
	}
	for _, proc := range background {
		select {
		case <-proc.Done():
		default:
			if err := proc.Stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
				t.Errorf("%s on SIGTERM: %v: %s", proc.Cmd.Args, err, proc.Stderr.String())
			}
		}
	}
}

// listenPort is the loopback port a server command listens on: relay_server's --listen,
// the daemon's daemonPort.
func listenPort(t *testing.T, p *person, fields []string) int {
	t.Helper()
	addr := ""
	for i, f := range fields {
		if v, ok := strings.CutPrefix(f, "--listen="); ok {
			addr = v
		} else if f == "--listen" && i+1 < len(fields) {
			addr = fields[i+1]
		}
	}
	if fields[1] == "start_daemon" {
		addr = ":" + strings.TrimSpace(p.node.OK("show_option", "--name", "daemonPort"))
	}
	var port int
	if _, err := fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &port); err != nil {
		t.Fatalf("%v: no port to wait for in %q", fields, addr)
	}
	return port
}

// settleDaemon waits until p's daemon has processed what peers pushed to it: incoming/
// is empty, and a command that needs the database (which the daemon holds while it
// processes and seals the replies) has had its turn after that.
func settleDaemon(t *testing.T, p *person) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		des, err := os.ReadDir(filepath.Join(p.node.Dir, "incoming"))
		if err != nil {
			t.Fatal(err)
		}
		if len(des) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's daemon left %d files in incoming/", p.name, len(des))
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.node.OK("show_database", "--only", "peers")
}

// waitExit checks that a daemon stopped by stop_daemon exited cleanly.
func waitExit(t *testing.T, where string, p *clirun.Proc) {
	t.Helper()
	if p == nil {
		t.Errorf("%s: no daemon was running", where)
		return
	}
	select {
	case <-p.Done():
		if p.Err() != nil {
			t.Errorf("%s: the daemon exited with %v: %s", where, p.Err(), p.Stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("%s: the daemon still runs", where)
	}
}
