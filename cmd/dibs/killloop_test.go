package main

// The kill -9 loops (issue 11 item 13): store and process_message, run as the real
// binary, are killed with SIGKILL at random moments, again and again; then the spool and
// the books must agree, and a re-run must finish the job with every effect applied once.
// DIBS_KILLS sets the number of kills (bench/killloop.sh runs 100); each test logs one
// "kill9:" line with its counts.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
)

func killCount(t *testing.T, def int) int {
	if s := os.Getenv("DIBS_KILLS"); s != "" {
		k, err := strconv.Atoi(s)
		if err != nil || k < 1 {
			t.Fatalf("DIBS_KILLS=%q", s)
		}
		return k
	}
	return def
}

// runKilled starts cmd and kills it with SIGKILL after delay, unless it ended first.
// It reports whether the kill landed (the process was still running).
func runKilled(t *testing.T, cmd *exec.Cmd, delay time.Duration) bool {
	t.Helper()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v before it was killed: %s", cmd.Args[1], err, out.String())
		}
		return false
	case <-time.After(delay):
		cmd.Process.Signal(syscall.SIGKILL)
		if err := <-done; err == nil {
			return false // it finished as the signal went
		}
		return true
	}
}

// withBooks opens a node's database (no dibs process may run) and runs fn in a read
// transaction.
func withBooks(t *testing.T, dir string, fn func(tx *books.Tx) error) {
	t.Helper()
	db, err := books.Open(filepath.Join(dir, "db", "dibs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(fn); err != nil {
		t.Fatal(err)
	}
}

// pieceOfName is the piece id in a STORE file's name (<date>-<piece>-<message id>.pgp).
func pieceOfName(name string) string {
	parts := strings.Split(name, "-")
	if len(parts) != 3 {
		return ""
	}
	return parts[1]
}

// spoolAgreement compares a storing node's outgoing/ and stage with its books: an
// orphan is a STORE file the books do not know (in outgoing/, where it would travel); a
// missing piece is one the books count as sent whose file is nowhere (once the run is
// over, nowhere but in outgoing/).
// It also counts the staged files: recorded (the kill came between the commit and the
// release) or not (before the commit).
func spoolAgreement(t *testing.T, dir string, peers []string, final bool) (orphans, missing, recorded, unrecorded int) {
	t.Helper()
	sent := map[string]map[string]bool{} // peer -> piece ids the books count as sent
	withBooks(t, dir, func(tx *books.Tx) error {
		return tx.EachObject(func(o *books.Object) error {
			for _, seg := range o.Segments {
				for _, p := range seg.Pieces {
					if p.ID != "" && p.State == books.PieceSent {
						if sent[p.Peer] == nil {
							sent[p.Peer] = map[string]bool{}
						}
						sent[p.Peer][p.ID] = true
					}
				}
			}
			return nil
		})
	})
	for _, peer := range peers {
		found := map[string]bool{}
		unnamed := 0 // STORE files whose name has no piece id (as before the stages)
		for _, name := range files(t, filepath.Join(dir, "outgoing", peer)) {
			id := pieceOfName(name)
			switch {
			case id == "":
				unnamed++
			case !sent[peer][id]:
				orphans++
				t.Errorf("outgoing/%s/%s: a piece the books do not know", peer, name)
			}
			found[id] = true
		}
		stages, _ := filepath.Glob(filepath.Join(dir, "staged", "*", "outgoing", peer))
		for _, st := range stages {
			for _, name := range files(t, st) {
				id := pieceOfName(name)
				if sent[peer][id] {
					recorded++
				} else {
					unrecorded++
				}
				if !final {
					found[id] = true
				}
			}
		}
		notFound := 0
		for id := range sent[peer] {
			if !found[id] {
				notFound++
			}
		}
		// Files without a piece id in their name can only be counted.
		if o := unnamed - notFound; o > 0 {
			orphans += o
			t.Errorf("outgoing/%s: %d more pieces than the books know", peer, o)
		}
		if m := notFound - unnamed; m > 0 {
			missing += m
			t.Errorf("outgoing/%s: %d pieces the books count as sent are nowhere", peer, m)
		}
	}
	return orphans, missing, recorded, unrecorded
}

func writeRandom(t *testing.T, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// store is killed at random points while its tree changes under it; after every kill no
// piece in outgoing/ is unknown to the books and none the books count is lost, and a
// last store finishes the job.
func TestKill9_Store(t *testing.T) {
	kills := killCount(t, 10)
	root := t.TempDir()
	alice := newCLINode(t, root, "alice")
	peers := []string{"bob", "carol", "dave"}
	for _, name := range peers {
		alice.addPeer(newCLINode(t, root, name), "carry", "carry")
	}
	alice.OK("set_option", "--name", "redundantPieces", "--value", "1") // RS 2+1
	alice.OK("set_option", "--name", "kbPerFile", "--value", "64")
	alice.OK("set_option", "--name", "maxVersions", "--value", "1000") // no UNSTOREs in outgoing/
	tree := filepath.Join(root, "tree")
	os.Mkdir(tree, 0o700)
	const large, small = 30, 30
	for i := range large {
		writeRandom(t, filepath.Join(tree, fmt.Sprintf("large%02d", i)), 150_000+i*1000) // an object each
	}
	for i := range small {
		writeRandom(t, filepath.Join(tree, fmt.Sprintf("small%02d", i)), 3000+i) // packed
	}
	start := time.Now()
	alice.OK("store", "--name", tree)
	full := time.Since(start)

	landed, recorded, unrecorded := 0, 0, 0
	for i := range kills {
		for range large / 2 { // new versions, so that every run has work
			writeRandom(t, filepath.Join(tree, fmt.Sprintf("large%02d", mrand.IntN(large))), 150_000+mrand.IntN(50_000))
		}
		writeRandom(t, filepath.Join(tree, fmt.Sprintf("small%02d", mrand.IntN(small))), 3000+i)
		delay := time.Duration(mrand.Int64N(int64(full / 2)))
		if runKilled(t, alice.Command("store", "--name", tree), delay) {
			landed++
		}
		o, m, r, u := spoolAgreement(t, alice.Dir, peers, false)
		recorded, unrecorded = recorded+r, unrecorded+u
		if o+m > 0 {
			t.Fatalf("kill %d (after %s): %d orphans, %d missing pieces", i+1, delay, o, m)
		}
	}
	out := alice.OK("store", "--name", tree)
	orphans, missing, r, u := spoolAgreement(t, alice.Dir, peers, true)
	if left := r + u; orphans+missing+left > 0 {
		t.Fatalf("after the last store: %d orphans, %d missing, %d still staged", orphans, missing, left)
	}
	if out = alice.OK("store", "--name", tree); !strings.Contains(out, " 0 new versions") {
		t.Errorf("a store after the last one still had work: %s", out)
	}
	// Every file of the tree is recorded as it is now.
	versions := map[string]int64{}
	withBooks(t, alice.Dir, func(tx *books.Tx) error {
		return tx.EachVersion(func(fv books.FileVersion) error {
			if fv.Deleted.IsZero() {
				versions[fv.Name] = fv.Size // the last version wins
			}
			return nil
		})
	})
	des, _ := os.ReadDir(tree)
	for _, de := range des {
		fi, _ := de.Info()
		if got, ok := versions[filepath.Join(tree, de.Name())]; !ok || got != fi.Size() {
			t.Errorf("%s: recorded size %d (%v), on disk %d", de.Name(), got, ok, fi.Size())
		}
	}
	t.Logf("kill9: store: %d kills (%d landed mid-run; a first full run took %s), %d orphans, %d missing pieces; "+
		"staged after the kills: %d recorded pieces (released by the next run), %d unrecorded (removed)",
		kills, landed, full.Round(time.Millisecond), orphans, missing, recorded, unrecorded)
}

// carryAll moves every outgoing file of from into to's incoming/ (export_messages,
// import_messages).
func carryAll(t *testing.T, from, to *cliNode) int {
	t.Helper()
	dir := t.TempDir()
	from.OK("export_messages", "--dir", dir)
	out := to.OK("import_messages", "--dir", dir)
	var k int
	fmt.Sscanf(out, "imported %d", &k)
	return k
}

// processKilled runs process_message on n, killed at random points, until incoming/ is
// empty or the kills are spent, then once to the end. It returns how many runs it
// started to kill and how many kills landed mid-run.
func processKilled(t *testing.T, n *cliNode, kills int, maxDelay time.Duration) (runs, landed int) {
	t.Helper()
	for range kills {
		if len(files(t, filepath.Join(n.Dir, "incoming"))) == 0 {
			break
		}
		runs++
		if runKilled(t, n.Command("process_message"), time.Duration(mrand.Int64N(int64(maxDelay)))) {
			landed++
		}
	}
	n.OK("process_message")
	if left := files(t, filepath.Join(n.Dir, "incoming")); len(left) > 0 {
		t.Fatalf("%s: %d files still in incoming/", n.Name, len(left))
	}
	return runs, landed
}

// quarantined counts the files in n's quarantine/; any not refused as a replay (a
// message processed before its file could be removed) fails the test.
func quarantined(t *testing.T, n *cliNode) int {
	t.Helper()
	k := 0
	dir := filepath.Join(n.Dir, "quarantine")
	for _, name := range files(t, dir) {
		if strings.HasSuffix(name, ".reason") {
			continue
		}
		k++
		if b, _ := os.ReadFile(filepath.Join(dir, name+".reason")); !strings.Contains(string(b), "replay") {
			t.Errorf("%s: %s quarantined: %s", n.Name, name, b)
		}
	}
	return k
}

// process_message is killed at random points in a batch of STOREs, then in the batch of
// their ACKs: each STORE is held once, counted once against the quota and acknowledged
// once, and each ACK counts its piece once on the owner's side.
func TestKill9_ProcessMessage(t *testing.T) {
	kills := killCount(t, 8)
	root := t.TempDir()
	alice, bob := newCLINode(t, root, "alice"), newCLINode(t, root, "bob")
	alice.addPeer(bob, "carry", "carry")
	bob.addPeer(alice, "carry", "carry")
	alice.OK("set_option", "--name", "kbPerFile", "--value", "5") // 5 kB pieces: many messages
	tree := filepath.Join(root, "tree")
	os.Mkdir(tree, 0o700)
	for i := range 6 {
		writeRandom(t, filepath.Join(tree, fmt.Sprintf("f%d", i)), 200_000)
	}
	alice.OK("store", "--name", tree)
	stores := carryAll(t, alice, bob)
	if stores < 100 {
		t.Fatalf("only %d STOREs", stores)
	}

	runs, landed := processKilled(t, bob, kills, 250*time.Millisecond)
	var held, heldBytes, localUsed int64
	heldIDs := map[string]bool{}
	withBooks(t, bob.Dir, func(tx *books.Tx) error {
		ps, err := tx.Peer("alice")
		localUsed = ps.LocalUsed
		if err != nil {
			return err
		}
		return tx.EachHeld(func(_, id string, hp books.HeldPiece) error {
			held++
			heldBytes += hp.Size
			heldIDs[id] = true
			return nil
		})
	})
	if held != int64(stores) || localUsed != heldBytes {
		t.Errorf("bob holds %d pieces of %d bytes and counts %d bytes used; %d STOREs came", held, heldBytes, localUsed, stores)
	}
	onDisk, temps := 0, 0
	var tempPaths []string
	filepath.WalkDir(filepath.Join(bob.Dir, "storage"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			temps++ // a killed write's leftover: cleanup removes it once stale
			tempPaths = append(tempPaths, p)
			return nil
		}
		onDisk++
		if !heldIDs[d.Name()] {
			t.Errorf("storage: %s is held outside the books", d.Name())
		}
		return nil
	})
	if onDisk != int(held) {
		t.Errorf("%d piece files in storage/, %d in the books", onDisk, held)
	}
	// An hour later, cleanup removes what the killed writes left (issue 17 item 6).
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range tempPaths {
		os.Chtimes(p, old, old)
	}
	bob.OK("cleanup")
	for _, p := range tempPaths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cleanup left %s", p)
		}
	}
	acks := len(files(t, filepath.Join(bob.Dir, "outgoing", "alice")))
	if acks != stores {
		t.Errorf("bob has %d answers waiting for alice; %d STOREs came", acks, stores)
	}
	replays := quarantined(t, bob)

	if k := carryAll(t, bob, alice); k != acks {
		t.Fatalf("carried %d of %d answers", k, acks)
	}
	runsAcks, landedAcks := processKilled(t, alice, kills, 200*time.Millisecond)
	var pieces, stored int
	var pieceBytes int64
	var ps books.PeerState
	withBooks(t, alice.Dir, func(tx *books.Tx) error {
		var err error
		if ps, err = tx.Peer("bob"); err != nil {
			return err
		}
		return tx.EachObject(func(o *books.Object) error {
			for _, seg := range o.Segments {
				for _, p := range seg.Pieces {
					if p.ID == "" {
						continue
					}
					pieces++
					if p.State == books.PieceStored {
						stored++
						pieceBytes += p.Size
					}
				}
			}
			return nil
		})
	})
	if pieces != stores || stored != pieces || ps.RemoteUsed != pieceBytes || ps.RemotePending != 0 {
		t.Errorf("alice: %d of %d pieces acknowledged; remote_used %d for %d bytes, pending %d",
			stored, pieces, ps.RemoteUsed, pieceBytes, ps.RemotePending)
	}
	replays += quarantined(t, alice)
	t.Logf("kill9: process_message: %d runs killed in %d STOREs (%d mid-run) and %d in their ACKs (%d mid-run); "+
		"%d held once, %d ACKs, quota %d = %d bytes held, %d of %d pieces counted stored once; "+
		"%d duplicates refused as replays; %d temp files of killed writes in storage/, removed by cleanup",
		runs, stores, landed, runsAcks, landedAcks, held, acks, localUsed, heldBytes, stored, pieces, replays, temps)
}

// recover_all with the owner's process_message killed at random points while it takes
// the pieces back: the re-run finishes the recovery from what was carried once, asking
// no peer for anything again, and every file comes back whole.
func TestKill9_RecoverAll(t *testing.T) {
	kills := killCount(t, 8)
	root := t.TempDir()
	alice, bob, carol := newCLINode(t, root, "alice"), newCLINode(t, root, "bob"), newCLINode(t, root, "carol")
	for _, p := range []*cliNode{bob, carol} {
		alice.addPeer(p, "carry", "carry")
		p.addPeer(alice, "carry", "carry")
	}
	alice.OK("set_option", "--name", "kbPerFile", "--value", "20") // many pieces: many messages
	tree := filepath.Join(root, "tree")
	os.Mkdir(tree, 0o700)
	for i := range 6 {
		writeRandom(t, filepath.Join(tree, fmt.Sprintf("f%d", i)), 200_000)
	}
	for i := range 50 {
		writeRandom(t, filepath.Join(tree, fmt.Sprintf("s%02d", i)), 3_000)
	}
	alice.OK("store", "--name", tree)
	round := func(peers ...*cliNode) {
		for _, p := range peers {
			carryAll(t, alice, p)
			p.OK("process_message")
			carryAll(t, p, alice)
		}
	}
	round(bob, carol)
	alice.OK("process_message")
	kit := filepath.Join(root, "kit.asc")
	alice.OK("export_recovery_kit", "--out", kit)
	if err := os.RemoveAll(alice.Dir); err != nil {
		t.Fatal(err)
	}
	alice.OK("import_recovery_kit", "--file", kit)
	alice.OK("recover_all")
	round(bob, carol)
	answers := len(files(t, filepath.Join(alice.Dir, "incoming")))
	if answers < 20 {
		t.Fatalf("only %d answers to recover_all", answers)
	}
	runs, landed := processKilled(t, alice, kills, 300*time.Millisecond)
	var db struct {
		Recovery []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"recovery"`
	}
	if err := json.Unmarshal([]byte(alice.OK("show_database", "--only", "recovery", "--json")), &db); err != nil {
		t.Fatal(err)
	}
	if len(db.Recovery) != 1 || db.Recovery[0].State != "done" {
		t.Fatalf("after %d runs killed (%d mid-run) and one to the end: %+v", runs, landed, db.Recovery)
	}
	for _, p := range []string{"bob", "carol"} {
		if left := files(t, filepath.Join(alice.Dir, "outgoing", p)); len(left) > 0 {
			t.Errorf("the re-run asks %s again: %v", p, left)
		}
	}
	got := filepath.Join(alice.Dir, "recovery", tree)
	des, err := os.ReadDir(tree)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		want, _ := os.ReadFile(filepath.Join(tree, de.Name()))
		have, err := os.ReadFile(filepath.Join(got, de.Name()))
		if err != nil || !bytes.Equal(want, have) {
			t.Errorf("%s: recovered %d bytes (%v), stored %d", de.Name(), len(have), err, len(want))
		}
	}
	t.Logf("kill9: recover_all: %d answers, %d process_message runs killed, %d mid-run", answers, runs, landed)
}
