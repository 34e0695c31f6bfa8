// Package demo runs `dibs demo`: a small grid of real nodes on loopback (each with its
// own directory, key and HTTP daemon), a backup, the loss of a peer and of the owner's
// whole directory, and the recovery from the recovery kit alone.
package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
)

// member is one node of the grid with its daemon.
type member struct {
	name string
	n    *agent.Node
	d    *agent.Daemon
	nat  bool // accepts no connections: it pushes and pulls
}

// pieceKB is kbPerFile: small, so that a few megabytes make several pieces.
const pieceKB = 256

func (m *member) stop() {
	if m.d != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		m.d.Run(ctx) // already cancelled: shuts the server down
		m.d = nil
	}
	if m.n != nil {
		m.n.Close()
	}
}

// The grid's code: three peers hold alice's pieces, and with one parity piece per segment
// any two of them rebuild it, so losing one peer loses nothing (agent's codeFor).
const (
	parity  = 1
	holders = 3 // bob, carol, dave
)

// timeLimit bounds the whole demo; it takes about a second.
const timeLimit = 2 * time.Minute

// Run runs the demo in dir (which it fills) and writes its report to out. It fails
// unless every byte came back.
func Run(ctx context.Context, dir string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeLimit)
	defer cancel()
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	start := time.Now()
	step := func(what string) func() {
		t := time.Now()
		say("\n== %s", what)
		return func() { say("   (%s)", time.Since(t).Round(time.Millisecond)) }
	}

	done := step("four nodes on loopback: alice (the owner), bob, carol, and dave behind NAT")
	names := []string{"alice", "bob", "carol", "dave"}
	grid := map[string]*member{}
	defer func() {
		for _, m := range grid {
			m.stop()
		}
	}()
	for _, name := range names {
		m, err := newMember(filepath.Join(dir, name), name, name == "dave", "127.0.0.1:0")
		if err != nil {
			return err
		}
		grid[name] = m
		where := "daemon on " + m.d.Addr().String()
		if m.nat {
			where = "no inbound connections (pushes and polls)"
		}
		say("   %-6s %s  key %s", name, where, m.n.Fingerprint())
	}
	for _, a := range names {
		for _, b := range names {
			if a != b {
				if err := link(grid[a], grid[b]); err != nil {
					return err
				}
			}
		}
	}
	done()

	done = step("alice stores a sample tree")
	tree := filepath.Join(dir, "sample")
	files, bytesIn, err := makeSample(tree)
	if err != nil {
		return err
	}
	alice := grid["alice"]
	res, err := alice.n.Store(ctx, tree, "/sample")
	if err != nil {
		return err
	}
	say("   %d files, %d bytes (%s): %d objects, %d pieces of at most %s sealed into the peers' spools",
		files, bytesIn, agent.FormatSize(bytesIn), res.Objects, res.Pieces, agent.FormatSize(pieceKB*1000))
	say("   each segment: %d data + %d parity pieces, on %d different peers; any %d rebuild it",
		holders-parity, parity, holders, holders-parity)
	for _, w := range res.Warnings {
		say("   warning: %s", w)
	}
	rounds, err := settle(ctx, grid, func() bool { return allStored(alice.n) })
	if err != nil {
		return err
	}
	say("   after %s of send / poll / process every piece is acknowledged:", agent.Count(rounds, "round"))
	if err := peerTable(grid, say); err != nil {
		return err
	}
	done()

	done = step("carol vanishes for good, then alice's disk dies (she kept her recovery kit)")
	grid["carol"].stop()
	delete(grid, "carol")
	var kit bytes.Buffer
	if err := alice.n.ExportRecoveryKit(&kit); err != nil {
		return err
	}
	say("   recovery kit: %d bytes (secret key + peer list)", kit.Len())
	addr := alice.d.Addr().String()
	alice.stop()
	if err := os.RemoveAll(alice.n.Dir); err != nil {
		return err
	}
	an, err := agent.ImportRecoveryKit(filepath.Join(dir, "alice-new"), &kit)
	if err != nil {
		return err
	}
	an.Transports = transports.Default(an)
	alice = &member{name: "alice", n: an}
	if alice.d, err = serve(an, addr); err != nil {
		return err
	}
	grid["alice"] = alice
	say("   alice's new directory knows her key and peers, nothing else")
	done()

	done = step("alice asks everyone for everything (recover_all)")
	if err := alice.n.RecoverAll(); err != nil {
		return err
	}
	rounds, err = settle(ctx, grid, func() bool {
		st := recoveryState(alice.n)
		return st == agent.RecoveryDone || st == agent.RecoveryFailed
	})
	if err != nil {
		return err
	}
	if st := recoveryState(alice.n); st != agent.RecoveryDone {
		return fmt.Errorf("recover_all ended %s", st)
	}
	got := filepath.Join(alice.n.Dir, "recovery", "sample")
	same, total, bytesOut, err := compare(tree, got)
	if err != nil {
		return err
	}
	say("   after %s: %d of %d entries identical (content, mode, mtime, links)", agent.Count(rounds, "round"), same, total)
	say("   %d bytes (%s) recovered from bob and dave into %s", bytesOut, agent.FormatSize(bytesOut), got)
	if same != total {
		return fmt.Errorf("only %d of %d entries came back identical", same, total)
	}
	if bytesOut != bytesIn {
		return fmt.Errorf("%d bytes came back of %d", bytesOut, bytesIn)
	}
	done()

	done = step("the rebuilt books work: alice probes the peers holding big.bin")
	if _, err := alice.n.Probe("/sample/big.bin"); err != nil {
		return err
	}
	if _, err := settle(ctx, grid, func() bool { return probesAnswered(alice.n) }); err != nil {
		return err
	}
	db, err := alice.n.Database("probe")
	if err != nil {
		return err
	}
	for _, r := range db["probe"].([]agent.ProbeRow) {
		if r.Good+r.Failed > 0 {
			say("   %-6s good %d, failed %d", r.Peer, r.Good, r.Failed)
		}
	}
	done()
	say("\nevery byte came back (%s in all)", time.Since(start).Round(time.Millisecond))
	return nil
}

// newMember creates a node directory with a fresh key and starts its daemon.
func newMember(dir, name string, nat bool, addr string) (*member, error) {
	n, err := agent.Init(dir, agent.InitConfig{KeyName: name + ".dibs@demo.invalid", Admin: name + "@demo.invalid"})
	if err != nil {
		return nil, err
	}
	opts := map[string]string{"kbPerFile": fmt.Sprint(pieceKB), "redundantPieces": fmt.Sprint(parity),
		"talkRetryDelay": "0", "daemonAddress": "127.0.0.1"}
	for k, v := range opts {
		if err := n.SetOption(k, v); err != nil {
			return nil, err
		}
	}
	n.Transports = transports.Default(n)
	d, err := serve(n, addr)
	if err != nil {
		return nil, err
	}
	return &member{name: name, n: n, d: d, nat: nat}, nil
}

func serve(n *agent.Node, addr string) (*agent.Daemon, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return n.StartDaemon(ln)
}

// link makes b a peer of a: a pushes to b's daemon unless b is behind NAT (then b pulls).
func link(a, b *member) error {
	talk, listen := agent.Active, agent.Active
	if b.nat {
		talk = agent.Passive
	}
	if a.nat {
		listen = agent.Passive
	}
	host, port := "127.0.0.1", 0
	if _, p, err := net.SplitHostPort(b.d.Addr().String()); err == nil {
		fmt.Sscan(p, &port)
	}
	q := int64(1_000_000_000)
	email := b.name + "@demo.invalid"
	var key bytes.Buffer
	if err := b.n.ID.Public().WriteArmored(&key); err != nil {
		return err
	}
	return a.n.AddPeer(b.name, agent.PeerEdit{Email: &email, Talk: &talk, Listen: &listen, Host: &host, Port: &port,
		LocalQuota: &q, RemoteQuota: &q, Key: &key})
}

// settle runs rounds of what cron runs on every node until done says so.
func settle(ctx context.Context, grid map[string]*member, done func() bool) (int, error) {
	for round := 1; round <= 60; round++ {
		for _, m := range grid {
			m.n.SendOutgoing(ctx, "") // an unreachable peer is retried next round
			m.n.PollPassives(ctx)
			if _, err := m.n.ProcessIncoming(ctx); err != nil {
				return round, err
			}
		}
		if done() {
			return round, nil
		}
		if err := ctx.Err(); err != nil {
			return round, err
		}
	}
	return 60, errors.New("the grid did not settle in 60 rounds")
}

func allStored(n *agent.Node) bool {
	db, err := n.Database("files")
	if err != nil {
		return false
	}
	rows := db["files"].([]agent.FileRow)
	for _, r := range rows {
		if r.Status != agent.StatusStored {
			return false
		}
	}
	return len(rows) > 0
}

func recoveryState(n *agent.Node) string {
	db, err := n.Database("recovery")
	if err != nil {
		return ""
	}
	for _, r := range db["recovery"].([]agent.RecoveryRow) {
		if r.Name == "*all*" {
			return r.State
		}
	}
	return ""
}

func probesAnswered(n *agent.Node) bool {
	db, err := n.Database("probe")
	if err != nil {
		return false
	}
	answered, waiting := 0, 0
	for _, r := range db["probe"].([]agent.ProbeRow) {
		answered += r.Good + r.Failed
		waiting += r.Waiting
	}
	return answered > 0 && waiting == 0
}

// peerTable shows alice's books (stats) beside each peer's own (storage).
func peerTable(grid map[string]*member, say func(string, ...any)) error {
	db, err := grid["alice"].n.Database("stats")
	if err != nil {
		return err
	}
	for _, r := range db["stats"].([]agent.StatsRow) {
		held := "?"
		if m := grid[r.Peer]; m != nil {
			if sdb, err := m.n.Database("storage"); err == nil {
				held = "0"
				for _, s := range sdb["storage"].([]agent.StorageRow) {
					if s.Peer == "alice" {
						held = fmt.Sprint(s.Pieces)
					}
				}
			}
		}
		say("   %-6s holds %3d pieces of alice's, %s (its own books: %s pieces)", r.Peer, r.PiecesThere, agent.FormatSize(r.BytesThere), held)
	}
	return nil
}

// makeSample writes the demo's tree: binary data, text with CR bytes, an empty file, a
// symlink, a few hundred small files.
func makeSample(root string) (int, int64, error) {
	rng := rand.New(rand.NewPCG(2026, 11))
	var total int64
	count := 0
	write := func(rel string, b []byte, mode fs.FileMode) error {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		total += int64(len(b))
		count++
		return os.WriteFile(p, b, mode)
	}
	big := make([]byte, 3_000_000)
	for i := range big {
		big[i] = byte(rng.UintN(256))
	}
	if err := write("big.bin", big, 0o644); err != nil {
		return 0, 0, err
	}
	if err := write("notes/crlf.txt", bytes.Repeat([]byte("DIBS corrupted 0x0D\r\nnot us\r\n"), 4000), 0o600); err != nil {
		return 0, 0, err
	}
	if err := write("empty", nil, 0o644); err != nil {
		return 0, 0, err
	}
	for i := range 300 {
		line := fmt.Sprintf("file %d: %s\n", i, strings.Repeat("x", rng.IntN(2000)))
		if err := write(fmt.Sprintf("small/%02d/f%03d.txt", i%10, i), []byte(line), 0o644); err != nil {
			return 0, 0, err
		}
	}
	if err := os.Symlink("big.bin", filepath.Join(root, "link-to-big")); err != nil {
		return 0, 0, err
	}
	return count + 1, total, nil
}

// compare counts the entries of want that got holds identically, and the bytes of the
// regular files got holds.
func compare(want, got string) (same, total int, bytes int64, err error) {
	err = filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		total++
		a, err := describe(p)
		if err != nil {
			return err
		}
		gp := filepath.Join(got, rel)
		if b, err := describe(gp); err == nil && a == b {
			same++
			if fi, err := os.Lstat(gp); err == nil && fi.Mode().IsRegular() {
				bytes += fi.Size()
			}
		}
		return nil
	})
	return same, total, bytes, err
}

func describe(p string) (string, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return "", err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		l, err := os.Readlink(p)
		return "link " + l, err
	case fi.IsDir():
		return "dir " + fi.Mode().String(), nil
	}
	b, err := os.ReadFile(p)
	return fmt.Sprintf("file %s %x %d", fi.Mode(), sha256.Sum256(b), fi.ModTime().Unix()), err
}
