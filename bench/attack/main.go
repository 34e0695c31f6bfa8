// Command attack runs the attacks of issue 17 against a real `dibs relay_server` and a
// real `dibs start_daemon` on loopback, while a legitimate node keeps working, and prints
// what they cost: connections held and for how long, legitimate requests served and their
// latency, and the bytes a hostile peer made us keep. bench/attack.sh builds and runs it.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

var (
	dibsBin  = flag.String("dibs", "dibs", "the dibs binary")
	root     = flag.String("dir", "", "a scratch directory (default: a new temp dir)")
	duration = flag.Duration("duration", 60*time.Second, "how long the attacks and the legitimate rounds run")
	slow     = flag.Int("slow", 80, "slow session bodies held open against each server (its cap on unauthenticated requests is 64)")
	slowDep  = flag.Int("slow_deposits", 8, "stalled deposits held open against each server")
	every    = flag.Duration("every", 2*time.Second, "how often a slow client sends its next byte")
	flood    = flag.Int("flood", 40, "signed messages of an unknown type the hostile peer pushes (3 MB each)")
	tmpfsMB  = flag.Int("tmpfs", 32, "size in MB of the tmpfs for the full-disk run; 0 skips it")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *root == "" {
		d, err := os.MkdirTemp("", "dibs-attack-")
		check(err)
		defer os.RemoveAll(d)
		*root = d
	}
	run()
}

func check(err error) {
	if err != nil {
		log.Fatal("attack: ", err)
	}
}

// node is one DIBS_DIR driven by dibs commands.
type node struct {
	name, dir, key string
	port           int // of its daemon, if it runs one
}

func newNode(name string, dir string) *node {
	n := &node{name: name, dir: dir, key: filepath.Join(*root, name+".asc"), port: freePort()}
	n.ok("init", "--key", name+".dibs@attack.invalid")
	n.ok("set_option", "--name", "talkRetryDelay", "--value", "0")
	n.ok("set_option", "--name", "daemonPort", "--value", fmt.Sprint(n.port))
	n.ok("set_option", "--name", "daemonHost", "--value", "127.0.0.1")
	n.ok("export_key", "--out", n.key)
	return n
}

func (n *node) cmd(args ...string) *exec.Cmd {
	c := exec.Command(*dibsBin, args...)
	c.Env = append(cleanEnv(), "DIBS_DIR="+n.dir)
	return c
}

// run runs a dibs command and returns its output and whether it exited 0.
func (n *node) run(args ...string) (string, bool) {
	out, err := n.cmd(args...).CombinedOutput()
	return string(out), err == nil
}

func (n *node) ok(args ...string) string {
	out, ok := n.run(args...)
	if !ok {
		log.Fatalf("attack: %s: dibs %s: %s", n.name, strings.Join(args, " "), out)
	}
	return out
}

// addPeer makes p a peer of n with the given methods and the quota n grants p.
func (n *node) addPeer(p *node, talk, listen, quota string, extra ...string) {
	n.ok(append([]string{"add_peer", "--peer", p.name, "--email", p.name + "@attack.invalid",
		"--local_quota", quota, "--remote_quota", "1g", "--talk", talk, "--listen", listen,
		"--host", "127.0.0.1", "--port", fmt.Sprint(p.port), "--key_file", p.key}, extra...)...)
}

func (n *node) identity() *pgpmsg.Identity {
	f, err := os.Open(filepath.Join(n.dir, "keys", "secret.asc"))
	check(err)
	defer f.Close()
	id, err := pgpmsg.ReadIdentity(f)
	check(err)
	return id
}

func (n *node) public() *pgpmsg.Key {
	f, err := os.Open(n.key)
	check(err)
	defer f.Close()
	k, err := pgpmsg.ReadKey(f)
	check(err)
	return k
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DIBS_") || strings.HasSuffix(strings.ToUpper(k), "_PROXY") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs a long-lived dibs command and waits until it listens on port.
func start(c *exec.Cmd, port int) *exec.Cmd {
	var errOut bytes.Buffer
	c.Stdout, c.Stderr = io.Discard, &errOut
	check(c.Start())
	for range 200 {
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			conn.Close()
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("attack: %s does not listen on %d: %s", c.Args, port, errOut.String())
	return nil
}

func stop(c *exec.Cmd) {
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		c.Process.Kill()
		<-done
	}
}

// message is a message of type typ from -> to, with a payload of size random bytes.
func message(typ string, from *pgpmsg.Identity, to *pgpmsg.Key, size int) []byte {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, typ)
	h.Set(pgpmsg.FieldFrom, string(from.Fingerprint()))
	h.Set(pgpmsg.FieldTo, string(to.Fingerprint()))
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, time.Now().UTC().Format(time.RFC3339Nano))
	id := make([]byte, 16)
	rand.Read(id)
	h.Set("Piece-Id", hex.EncodeToString(id))
	payload := make([]byte, size)
	rand.Read(payload)
	var b bytes.Buffer
	check(pgpmsg.Seal(&b, h, bytes.NewReader(payload), from, to))
	return b.Bytes()
}

func randName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b) + ".pgp"
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(dir string) (n int64, files int) {
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
				files++
			}
		}
		return nil
	})
	return n, files
}

// holds records the connections a kind of slow client held open.
type holds struct {
	mu       sync.Mutex
	open     int
	maxOpen  int
	held     []time.Duration
	statuses map[string]int
}

func (h *holds) begin() {
	h.mu.Lock()
	h.open++
	h.maxOpen = max(h.maxOpen, h.open)
	h.mu.Unlock()
}

func (h *holds) end(d time.Duration, status string) {
	h.mu.Lock()
	h.open--
	h.held = append(h.held, d)
	if h.statuses == nil {
		h.statuses = map[string]int{}
	}
	h.statuses[status]++
	h.mu.Unlock()
}

func (h *holds) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	slices.Sort(h.held)
	var longest, median time.Duration
	if len(h.held) > 0 {
		longest, median = h.held[len(h.held)-1], h.held[len(h.held)/2]
	}
	var st []string
	for k, v := range h.statuses {
		st = append(st, fmt.Sprintf("%s ×%d", k, v))
	}
	slices.Sort(st)
	return fmt.Sprintf("%d connections, at most %d open at once, held median %s, longest %s; answers: %s",
		len(h.held), h.maxOpen, median.Round(100*time.Millisecond), longest.Round(100*time.Millisecond), strings.Join(st, ", "))
}

// slowSessions keeps n session requests open against url, each sending a byte of its
// 4000-byte body every *every, reconnecting when the server cuts one off, until ctx ends.
func slowSessions(ctx context.Context, wg *sync.WaitGroup, url string, n int, h *holds) {
	host := strings.TrimPrefix(url, "http://")
	head := "POST /dibs/v1/session HTTP/1.1\r\nHost: " + host +
		"\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{"
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				trickle(ctx, host, head, h)
			}
		}()
	}
}

// trickle sends head, then a byte every *every until the server answers or closes.
func trickle(ctx context.Context, host, head string, h *holds) {
	c, err := net.Dial("tcp", host)
	if err != nil {
		time.Sleep(100 * time.Millisecond)
		return
	}
	defer c.Close()
	began := time.Now()
	h.begin()
	status := "closed"
	defer func() { h.end(time.Since(began), status) }()
	if _, err := io.WriteString(c, head); err != nil {
		return
	}
	answered := make(chan string, 1)
	go func() {
		b := make([]byte, 512)
		n, _ := io.ReadAtLeast(c, b, 12)
		line, _, _ := strings.Cut(string(b[:n]), "\r\n")
		answered <- strings.TrimPrefix(line, "HTTP/1.1 ")
	}()
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		select {
		case line := <-answered:
			if line != "" {
				status, _, _ = strings.Cut(line, " ")
			}
			return
		case <-ctx.Done():
			status = "held to the end"
			return
		case <-tick.C:
			c.Write([]byte(" "))
		}
	}
}

// stalledBody gives data a byte every *every.
type stalledBody struct {
	ctx  context.Context
	data []byte
}

func (s *stalledBody) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	select {
	case <-s.ctx.Done():
		return 0, s.ctx.Err()
	case <-time.After(*every):
	}
	p[0] = s.data[0]
	s.data = s.data[1:]
	return 1, nil
}

func (s *stalledBody) Close() error { return nil }

// stalledDeposits keeps n authenticated deposits of a real sealed file open against dst,
// sent a byte every *every, each renewed when the server cuts it off, until ctx ends.
func stalledDeposits(ctx context.Context, wg *sync.WaitGroup, c *relay.Client, dst queue.Endpoint, file []byte, n int, h *holds) {
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				began := time.Now()
				h.begin()
				err := c.Send(ctx, dst, queue.Message{Name: randName(), Size: int64(len(file)),
					Body: func() (io.ReadCloser, error) { return &stalledBody{ctx: ctx, data: file}, nil }})
				status := "201"
				var se *relay.StatusError
				switch {
				case errors.As(err, &se):
					status = fmt.Sprint(se.Code)
				case ctx.Err() != nil:
					status = "held to the end"
				case err != nil:
					status = "cut off"
				}
				h.end(time.Since(began), status)
				if err != nil && ctx.Err() == nil && status != "cut off" {
					time.Sleep(time.Second) // refused: do not spin
				}
			}
		}()
	}
}

// legit counts the outcomes and latencies of one legitimate command.
type legit struct {
	name     string
	ok, fail int
	lat      []time.Duration
	lastErr  string
}

func (l *legit) do(n *node, args ...string) bool {
	began := time.Now()
	out, ok := n.run(args...)
	l.lat = append(l.lat, time.Since(began))
	if ok {
		l.ok++
	} else {
		l.fail++
		l.lastErr = strings.TrimSpace(out)
	}
	return ok
}

func (l *legit) String() string {
	slices.Sort(l.lat)
	var med, p95, top time.Duration
	if k := len(l.lat); k > 0 {
		med, p95, top = l.lat[k/2], l.lat[k*95/100], l.lat[k-1]
	}
	s := fmt.Sprintf("%-34s %3d ok %3d failed; latency median %s, p95 %s, max %s", l.name, l.ok, l.fail,
		med.Round(time.Millisecond), p95.Round(time.Millisecond), top.Round(time.Millisecond))
	if l.lastErr != "" {
		s += "\n      last failure: " + l.lastErr
	}
	return s
}

func run() {
	fmt.Printf("attack: in %s, attacks for %s, %d slow sessions and %d stalled deposits per server, a byte every %s\n",
		*root, *duration, *slow, *slowDep, *every)
	a := newNode("alice", filepath.Join(*root, "alice")) // runs start_daemon: the victim
	b := newNode("bob", filepath.Join(*root, "bob"))     // a legitimate client behind NAT
	c := newNode("carol", filepath.Join(*root, "carol")) // reached only through the relay
	h := newNode("mallory", filepath.Join(*root, "mallory"))

	// The relay takes files from and for bob, carol and mallory, 10 MB for each.
	relayPort := freePort()
	relayURL := fmt.Sprintf("http://127.0.0.1:%d", relayPort)
	var allow []byte
	for _, n := range []*node{b, c, h} {
		k, err := os.ReadFile(n.key)
		check(err)
		allow = append(allow, k...)
	}
	allowFile := filepath.Join(*root, "allow.asc")
	check(os.WriteFile(allowFile, allow, 0o600))
	relayDir := filepath.Join(*root, "relay")
	rel := start(exec.Command(*dibsBin, "relay_server", "--listen", fmt.Sprintf("127.0.0.1:%d", relayPort),
		"--dir", relayDir, "--allow", allowFile, "--quota", "10m"), relayPort)
	defer stop(rel)

	// alice serves bob (who pushes to her and pulls her replies) and mallory, a peer she
	// granted 1 MB, with 2 MB of quarantine at most.
	const quarantineMax = 2_000_000
	a.ok("set_option", "--name", "quarantineMaxBytes", "--value", "2m")
	a.addPeer(b, "passive", "active", "1g")
	a.addPeer(h, "passive", "active", "1m")
	for _, n := range []*node{b, c} {
		n.ok("set_option", "--name", "relayURL", "--value", relayURL)
	}
	b.addPeer(a, "active", "passive", "1g")
	b.addPeer(c, "relay", "relay", "1g", "--relay", relayURL)
	c.addPeer(b, "relay", "relay", "1g", "--relay", relayURL)
	daemon := start(a.cmd("start_daemon"), a.port)
	defer stop(daemon)
	daemonURL := fmt.Sprintf("http://127.0.0.1:%d", a.port)

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var wg sync.WaitGroup
	var relaySlow, daemonSlow, relayDep, daemonDep, floodHolds holds
	slowSessions(ctx, &wg, relayURL, *slow, &relaySlow)
	slowSessions(ctx, &wg, daemonURL, *slow, &daemonSlow)

	// mallory, a real peer of alice and allowed at the relay, stalls deposits at both.
	mal := &relay.Client{ID: h.identity(), IdleTimeout: time.Hour}
	toBob := message("HELLO", mal.ID, b.public(), 1000)
	toAlice := message("HELLO", mal.ID, a.public(), 1000)
	stalledDeposits(ctx, &wg, mal, queue.Endpoint{Peer: "bob", Key: string(b.public().Fingerprint()), Addr: relayURL}, toBob, *slowDep, &relayDep)
	stalledDeposits(ctx, &wg, mal, queue.Endpoint{Peer: "alice", Key: string(a.public().Fingerprint()), Addr: daemonURL}, toAlice, *slowDep, &daemonDep)

	// ... and floods alice with signed 3 MB messages of an unknown type, and offers her
	// files over her size limit.
	var pushed, strangers, refused, oversize atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		fast := &relay.Client{ID: mal.ID}
		dst := queue.Endpoint{Peer: "alice", Key: string(a.public().Fingerprint()), Addr: daemonURL}
		for i := 0; i < *flood && ctx.Err() == nil; i++ {
			m := message("LAUNCH_MISSILES", mal.ID, a.public(), 3_000_000)
			began := time.Now()
			floodHolds.begin()
			err := fast.Send(ctx, dst, queue.Message{Name: randName(), Size: int64(len(m)),
				Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(m)), nil }})
			st := "201"
			if err != nil {
				st = "refused"
				refused.Add(1)
			} else {
				pushed.Add(1)
			}
			floodHolds.end(time.Since(began), st)
		}
		// Files merely sealed to alice, signed by a key she does not know, through
		// mallory's session: a stranger's, bounded by quarantineMaxBytes only.
		stranger, err := pgpmsg.Generate("stranger@attack.invalid", time.Now())
		check(err)
		for i := 0; i < *flood && ctx.Err() == nil; i++ {
			m := message("LAUNCH_MISSILES", stranger, a.public(), 3_000_000)
			if err := fast.Send(ctx, dst, queue.Message{Name: randName(), Size: int64(len(m)),
				Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(m)), nil }}); err != nil {
				refused.Add(1)
			} else {
				strangers.Add(1)
			}
		}
		for range 3 { // 200 MB announced, over maxMsgSize (128m): refused before the body
			err := fast.Send(ctx, dst, queue.Message{Name: randName(), Size: 200_000_000,
				Body: func() (io.ReadCloser, error) { return io.NopCloser(io.LimitReader(zeros{}, 200_000_000)), nil }})
			var se *relay.StatusError
			if errors.As(err, &se) && se.Code == http.StatusRequestEntityTooLarge {
				oversize.Add(1)
			}
		}
	}()

	// Meanwhile bob and carol go through their rounds.
	var (
		helloA   = legit{name: "bob: send_hello --peer alice"}
		helloC   = legit{name: "bob: send_hello --peer carol"}
		pollB    = legit{name: "bob: poll_passives"}
		procB    = legit{name: "bob: process_message"}
		pollC    = legit{name: "carol: poll_passives"}
		procC    = legit{name: "carol: process_message"}
		sendC    = legit{name: "carol: send_message"}
		rounds   int
		roundLat []time.Duration
	)
	var relayRSS, daemonRSS atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			relayRSS.Store(max(relayRSS.Load(), rss(rel.Process.Pid)))
			daemonRSS.Store(max(daemonRSS.Load(), rss(daemon.Process.Pid)))
			time.Sleep(500 * time.Millisecond)
		}
	}()
	time.Sleep(3 * time.Second) // let the slow clients reach the servers first
	for ctx.Err() == nil {
		began := time.Now()
		helloA.do(b, "send_hello", "--peer", "alice")
		helloC.do(b, "send_hello", "--peer", "carol")
		pollC.do(c, "poll_passives")
		procC.do(c, "process_message")
		sendC.do(c, "send_message")
		pollB.do(b, "poll_passives")
		procB.do(b, "process_message")
		rounds++
		roundLat = append(roundLat, time.Since(began))
		time.Sleep(500 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	heardA, heardC := lastHeard(b, "alice"), lastHeard(b, "carol")

	fmt.Printf("\nlegitimate rounds: %d in %s\n", rounds, *duration)
	for _, l := range []*legit{&helloA, &helloC, &pollC, &procC, &sendC, &pollB, &procB} {
		fmt.Println("  " + l.String())
	}
	fmt.Printf("  bob heard from alice at %s, from carol at %s\n", heardA, heardC)
	fmt.Printf("\nslow session bodies, relay:     %s\n", &relaySlow)
	fmt.Printf("slow session bodies, daemon:    %s\n", &daemonSlow)
	fmt.Printf("stalled deposits, relay:        %s\n", &relayDep)
	fmt.Printf("stalled deposits, daemon:       %s\n", &daemonDep)
	fmt.Printf("flood pushes (3 MB each):       %s\n", &floodHolds)
	fmt.Printf("oversized (200 MB) offers refused with 413: %d of 3\n", oversize.Load())
	fmt.Printf("largest RSS during the attacks: relay_server %d MB, start_daemon %d MB\n", relayRSS.Load()>>20, daemonRSS.Load()>>20)

	// What mallory made alice keep: let her daemon process the flood first.
	time.Sleep(3 * time.Second)
	stop(daemon)
	a.run("process_message")
	qBytes, qFiles := dirBytes(filepath.Join(a.dir, "quarantine"))
	malBytes := fromPeer(a.dir, "mallory")
	sBytes, _ := dirBytes(filepath.Join(a.dir, "storage", "mallory"))
	inBytes, inFiles := dirBytes(filepath.Join(a.dir, "incoming"))
	rBytes, rFiles := dirBytes(relayDir)
	fmt.Printf("\nmallory pushed %d × 3 MB signed by herself and %d × 3 MB signed by a stranger's key = %d MB (%d refused)\n",
		pushed.Load(), strangers.Load(), (pushed.Load()+strangers.Load())*3, refused.Load())
	fmt.Printf("alice keeps %d bytes in quarantine/ (%d files, reasons included; %d of them from mallory; quarantineMaxBytes %d, mallory's quota 1,000,000), %d in storage/mallory, %d bytes in incoming/ (%d files)\n",
		qBytes, qFiles, malBytes, quarantineMax, sBytes, inBytes, inFiles)
	fmt.Printf("the relay holds %d bytes in %d files (10 MB quota per recipient)\n", rBytes, rFiles)

	if *tmpfsMB > 0 {
		fullDisk(b)
	}
}

// fromPeer is the size of the files in dir's quarantine/ that came from peer.
func fromPeer(dir, peer string) int64 {
	sp, err := queue.Open(dir)
	check(err)
	qs, err := sp.QuarantineFiles()
	check(err)
	var n int64
	for _, q := range qs {
		if q.From == peer {
			n += q.Size
		}
	}
	return n
}

// rss is the resident set of process pid in bytes, 0 if unknown.
func rss(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	return 0
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// lastHeard is n's last_heard of peer in show_database --json.
func lastHeard(n *node, peer string) string {
	out, _ := n.run("show_database", "--json", "--only", "peers")
	var db struct {
		Peers []struct {
			Peer      string  `json:"peer"`
			LastHeard *string `json:"last_heard"`
		} `json:"peers"`
	}
	if json.Unmarshal([]byte(out), &db) != nil {
		return "?"
	}
	for _, p := range db.Peers {
		if p.Peer == peer && p.LastHeard != nil {
			return *p.LastHeard
		}
	}
	return "never"
}

// fullDisk puts a node's DIBS_DIR on a small tmpfs, has valid STOREs from from arrive,
// fills the disk, and runs process_message: the STOREs must stay in incoming/, and be
// processed, once each, when space returns.
func fullDisk(from *node) {
	mnt := filepath.Join(*root, "tmpfs")
	check(os.MkdirAll(mnt, 0o700))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", *tmpfsMB), "tmpfs", mnt).CombinedOutput(); err != nil {
		fmt.Printf("\nfull disk: skipped, mount -t tmpfs failed: %s (agent's TestProcess_TemporaryReadErrorLeavesMessage covers it with a hook)\n", strings.TrimSpace(string(out)))
		return
	}
	defer exec.Command("umount", mnt).Run()
	d := newNode("dave", filepath.Join(mnt, "dave"))
	d.addPeer(from, "carry", "carry", "1g")
	const stores, size = 4, 3_000_000
	id, to := from.identity(), d.public()
	for range stores {
		check(os.WriteFile(filepath.Join(d.dir, "incoming", randName()), message("STORE", id, to, size), 0o600))
	}
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	check(err)
	_, err = io.Copy(f, zeros{})
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		check(fmt.Errorf("filling the tmpfs: %v, want ENOSPC", err))
	}
	out, _ := d.run("process_message")
	_, inFull := dirBytes(filepath.Join(d.dir, "incoming"))
	_, qFull := dirBytes(filepath.Join(d.dir, "quarantine"))
	fmt.Printf("\nfull disk (%d MB tmpfs, filled): %d valid 3 MB STOREs delivered; process_message: %q; incoming/ keeps %d, quarantine/ %d\n",
		*tmpfsMB, stores, strings.TrimSpace(out), inFull, qFull)
	check(os.Remove(filler))
	out, _ = d.run("process_message")
	_, inAfter := dirBytes(filepath.Join(d.dir, "incoming"))
	_, held := dirBytes(filepath.Join(d.dir, "storage", from.name))
	again, _ := d.run("process_message")
	fmt.Printf("space back: process_message: %q; incoming/ keeps %d, storage/%s holds %d pieces; a second run: %q\n",
		strings.TrimSpace(out), inAfter, from.name, held, strings.TrimSpace(again))
	out, _ = d.run("show_database", "--only", "peers")
	fmt.Printf("%s\n", strings.TrimSpace(out))
}
