package agent_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// A stranger who knows the name of a file waiting in incoming/ cannot replace it by
// sending a file of that name (by mail, a relay, a carried directory): both are kept, the
// real message is acted on and the stranger's goes to quarantine.
func TestIncoming_SameNameNeverReplacesWaitingFile(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}})
	bob := env.Node("bob")
	alice, mallory := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Identity(t, "mallory")
	bobKey := pgpmsgtest.Key(t, "bob")
	now := time.Now()

	put(t, bob, "waiting.pgp", seal(t, hello(alice, bob.ID, now), alice, bobKey))
	forged := seal(t, hello(mallory, bob.ID, now), mallory, bobKey)
	// By the poll and mail sink.
	if err := bob.Sink()("waiting.pgp", bytes.NewReader(forged)); err != nil {
		t.Fatal(err)
	}
	// By import_messages.
	carried := t.TempDir()
	mine := filepath.Join(carried, string(bob.Fingerprint()))
	os.MkdirAll(mine, 0o700)
	forged2 := seal(t, hello(mallory, bob.ID, now.Add(time.Second)), mallory, bobKey)
	os.WriteFile(filepath.Join(mine, "waiting.pgp"), forged2, 0o600)
	if res, err := bob.ImportMessages(carried); err != nil || res.Imported != 1 {
		t.Fatalf("import_messages: %+v, %v", res, err)
	}
	if es, _ := bob.Spool.List(queue.Incoming); len(es) != 3 {
		t.Fatalf("incoming/ holds %d files, want the waiting one and both newcomers", len(es))
	}
	res, err := bob.ProcessIncoming(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Processed != 1 || res.Quarantined != 2 {
		t.Fatalf("processed %d, quarantined %d; want 1 and 2", res.Processed, res.Quarantined)
	}
	if bob.LastHeard("alice").IsZero() {
		t.Fatal("alice's waiting HELLO was lost")
	}
	q := bob.Quarantined()
	for name, reason := range q {
		if name == "waiting.pgp" || !strings.Contains(reason, "signer") {
			t.Errorf("quarantined %s: %s", name, reason)
		}
	}
}

// store is a valid STORE from -> to of a piece of size random bytes.
func store(t *testing.T, from, toID *pgpmsg.Identity, to *pgpmsg.Key, size int) []byte {
	return signed(t, agent.TypeStore, from, toID, to, size)
}

// signed is a message of type typ from -> to with a payload of size random bytes.
func signed(t *testing.T, typ string, from, toID *pgpmsg.Identity, to *pgpmsg.Key, size int) []byte {
	t.Helper()
	h := hello(from, toID, time.Now())
	h.Set(pgpmsg.FieldType, typ)
	id := make([]byte, 16)
	rand.Read(id)
	h.Set("Piece-Id", hex.EncodeToString(id))
	piece := make([]byte, size)
	rand.Read(piece)
	var b bytes.Buffer
	if err := pgpmsg.Seal(&b, h, bytes.NewReader(piece), from, to); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// failAfter reads n bytes of r, then fails with err: a disk that filled or broke.
type failAfter struct {
	r   io.Reader
	n   int
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	k, err := f.r.Read(p[:min(len(p), f.n)])
	f.n -= k
	return k, err
}

// twoStores puts two valid 3 MB STOREs from alice into bob's incoming/.
func twoStores(t *testing.T) *testenv.Node {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}})
	bob := env.Node("bob")
	alice, bobKey := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Key(t, "bob")
	put(t, bob, "store-1.pgp", store(t, alice, bob.ID, bobKey, 3<<20))
	put(t, bob, "store-2.pgp", store(t, alice, bob.ID, bobKey, 3<<20))
	return bob
}

// leftForLater checks that a run left both STOREs in incoming/ and said why.
func leftForLater(t *testing.T, bob *testenv.Node, res agent.ProcessResult, why string) {
	t.Helper()
	if res.Left != 2 || res.Quarantined != 0 || res.Processed != 0 {
		t.Errorf("processed %d, quarantined %d, left %d; want both left", res.Processed, res.Quarantined, res.Left)
	}
	if !strings.Contains(res.Why, why) {
		t.Errorf("the run says %q, want it to mention %q", res.Why, why)
	}
	if es, _ := bob.Spool.List(queue.Incoming); len(es) != 2 {
		t.Errorf("incoming/ holds %d files, want 2", len(es))
	}
	if q := bob.Quarantined(); len(q) != 0 {
		t.Errorf("quarantined: %v", q)
	}
}

// A message that cannot be read for now (the disk is full, or failing) may be perfectly
// good: it stays in incoming/ for the next run instead of going to quarantine.
func TestProcess_TemporaryReadErrorLeavesMessage(t *testing.T) {
	bob := twoStores(t)
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EIO} {
		t.Run(errno.Error(), func(t *testing.T) {
			agent.WrapMessageReads(t, func(r io.Reader) io.Reader { return &failAfter{r: r, n: 1 << 20, err: errno} })
			res, err := bob.ProcessIncoming(ctx)
			if err != nil {
				t.Fatal(err)
			}
			leftForLater(t, bob, res, errno.Error())
		})
	}
	res, err := bob.ProcessIncoming(ctx)
	if err != nil || res.Processed != 2 || res.Why != "" {
		t.Fatalf("with the disk well again: %+v, %v; want both processed", res, err)
	}
}

// A peer cannot store more with us through quarantine than its quota: of its signed 3 MB
// messages of an unknown type (15 of them made 45 MB before quarantine was bounded) only
// the start of each is kept, only within its 1 MB quota (15 starts; of the others, the
// reasons), and what quarantine holds of it counts against that quota when it then
// stores pieces.
func TestQuarantine_PeerFilesCountAgainstItsQuota(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice", Quota: 1_000_000}, {Name: "bob", Quota: 1_000_000}}})
	bob := env.Node("bob")
	alice, bobKey := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Key(t, "bob")
	for i := range 18 {
		put(t, bob, "unknown-"+string(rune('a'+i))+".pgp", signed(t, "LAUNCH_MISSILES", alice, bob.ID, bobKey, 3_000_000))
	}
	res, err := bob.ProcessIncoming(ctx)
	if err != nil || res.Quarantined != 18 {
		t.Fatalf("%+v, %v; want 18 quarantined", res, err)
	}
	qs, err := bob.Spool.QuarantineFiles()
	if err != nil {
		t.Fatal(err)
	}
	var held int64
	for _, q := range qs {
		held += q.Size
		if q.Size > 64<<10 || q.From != "alice" {
			t.Errorf("quarantined %s: %d bytes, from %q", q.Name, q.Size, q.From)
		}
	}
	if held > 1_000_000 {
		t.Fatalf("quarantine holds %d bytes from alice, more than her 1 MB quota", held)
	}
	if len(qs) != 15 || countFiles(t, bob.Spool.Dir(queue.Quarantine)) != len(qs)+18 {
		t.Errorf("quarantine/ keeps %d files (want the start of 15) and should keep a reason for each of the 18", len(qs))
	}
	t.Logf("alice has %d bytes in quarantine", held)

	used := func() int64 {
		st, err := bob.PeerStates()
		if err != nil {
			t.Fatal(err)
		}
		return st["alice"].LocalUsed
	}
	put(t, bob, "store-small.pgp", store(t, alice, bob.ID, bobKey, 1_000_000-int(held)-10_000))
	if res, err := bob.ProcessIncoming(ctx); err != nil || res.Processed != 1 || used() == 0 {
		t.Fatalf("a piece that fits beside the quarantined bytes: %+v, %v, %d bytes used", res, err, used())
	}
	before := used()
	put(t, bob, "store-more.pgp", store(t, alice, bob.ID, bobKey, 100_000))
	if res, err := bob.ProcessIncoming(ctx); err != nil || res.Processed != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	if used() != before {
		t.Errorf("a 100 KB piece was taken with %d bytes held and %d in quarantine of a 1 MB quota", before, held)
	}
}

// Anyone who copied a peer's message can send it again: replays go to quarantine as a
// stranger's files do, not counted against the peer's quota.
func TestQuarantine_ReplaysDoNotCountAgainstThePeer(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice", Quota: 1_000_000}, {Name: "bob", Quota: 1_000_000}}})
	bob := env.Node("bob")
	alice, bobKey := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Key(t, "bob")
	piece := store(t, alice, bob.ID, bobKey, 400_000)
	put(t, bob, "store.pgp", piece)
	if res, err := bob.ProcessIncoming(ctx); err != nil || res.Processed != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	for i := range 10 {
		put(t, bob, "replay-"+string(rune('a'+i))+".pgp", piece)
	}
	if res, err := bob.ProcessIncoming(ctx); err != nil || res.Quarantined != 10 {
		t.Fatalf("replays: %+v, %v", res, err)
	}
	qs, _ := bob.Spool.QuarantineFiles()
	for _, q := range qs {
		if q.From != "" {
			t.Errorf("replay %s counted as alice's", q.Name)
		}
	}
	put(t, bob, "store-2.pgp", store(t, alice, bob.ID, bobKey, 400_000))
	if res, err := bob.ProcessIncoming(ctx); err != nil || res.Processed != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	st, _ := bob.PeerStates()
	if used := st["alice"].LocalUsed; used < 800_000 {
		t.Errorf("alice's second piece was refused (%d bytes used): her replays counted against her quota", used)
	}
}

// Files from strangers (anyone can encrypt to our key and mail us) are bounded by
// quarantineMaxBytes, and by their first 64 KiB each; the reasons of all stay.
func TestQuarantine_BoundedForStrangers(t *testing.T) {
	env := testenv.New(t, testenv.Setup{
		Nodes:   []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}},
		Options: map[string]string{"quarantineMaxBytes": "300k"},
	})
	bob := env.Node("bob")
	mallory, bobKey := pgpmsgtest.Identity(t, "mallory"), pgpmsgtest.Key(t, "bob")
	for i := range 12 {
		put(t, bob, "mallory-"+string(rune('a'+i))+".pgp", signed(t, agent.TypeHello, mallory, bob.ID, bobKey, 200_000))
	}
	garbage := make([]byte, 200_000)
	rand.Read(garbage)
	put(t, bob, "garbage.pgp", garbage)
	res, err := bob.ProcessIncoming(ctx)
	if err != nil || res.Quarantined != 13 {
		t.Fatalf("%+v, %v; want 13 quarantined", res, err)
	}
	qs, _ := bob.Spool.QuarantineFiles()
	var held int64
	for _, q := range qs {
		held += q.Size
		if q.Size > 64<<10 {
			t.Errorf("quarantined %s whole: %d bytes", q.Name, q.Size)
		}
	}
	if held > 300_000 || len(qs) == 0 {
		t.Errorf("quarantine holds %d bytes in %d files; want some, at most 300k", held, len(qs))
	}
	des, _ := os.ReadDir(bob.Spool.Dir(queue.Quarantine))
	reasons := 0
	for _, de := range des {
		if strings.HasSuffix(de.Name(), queue.ReasonSuffix) {
			reasons++
		}
	}
	if reasons != 13 {
		t.Errorf("%d reason files, want one for each of the 13", reasons)
	}
	t.Logf("quarantine holds %d bytes in %d files", held, len(qs))
}
