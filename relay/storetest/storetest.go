// Package storetest is the conformance suite of relay.Store backends for relay_server: Run
// drives a store (two instances of it over the same data, where the backend has several)
// through what relay.Store's doc comments promise: durable deposits, duplicates that keep
// the first copy, the refusals and their order, quotas, exclusive opens, idempotent
// removal and expiry.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/relay"
)

// Options are what a harness opens its store with. Zero values mean the backend's defaults.
type Options struct {
	// AllowFile is the allow file the suite wrote (alice, bob and carol; not mallory).
	AllowFile   string
	Quota       int64
	MaxFileSize int64
	MaxAge      time.Duration
}

// Stores are two instances of the store under test over the same data: what one stores,
// the other serves. B may be A for a backend that runs in one process only.
type Stores struct {
	A, B relay.Store
}

// Harness opens a fresh, empty store with opts for one subtest.
type Harness func(t *testing.T, opts Options) Stores

// Run runs every check as a subtest.
func Run(t *testing.T, h Harness) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			allow := filepath.Join(dir, "allow.asc")
			var b bytes.Buffer
			for _, n := range []string{"alice", "bob", "carol"} {
				if err := pgpmsgtest.Key(t, n).WriteArmored(&b); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(allow, b.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			c.fn(t, func(o Options) Stores {
				o.AllowFile = allow
				return h(t, o)
			})
		})
	}
}

type open func(Options) Stores

var checks = []struct {
	name string
	fn   func(t *testing.T, open open)
}{
	{"DepositListOpenRemove_AcrossInstances", checkRoundTrip},
	{"Duplicate_KeepsFirstCopy", checkDuplicate},
	{"Strangers_Forbidden_BeforeReading", checkForbidden},
	{"TooLarge_BeforeReading", checkTooLarge},
	{"BadBody_StoresNothing", checkBadBody},
	{"Quota_PerRecipient", checkQuota},
	{"Quota_HoldsUnderConcurrentDeposits", checkQuotaConcurrent},
	{"StalledDeposit_CountsForItsDepositorOnly", checkStalled},
	{"SameNameInFlight_Busy", checkSameNameBusy},
	{"Open_ExclusiveAcrossInstances", checkOpenExclusive},
	{"Expire_ByAge_SkipsBusy", checkExpire},
}

func fp(t *testing.T, name string) pgpmsg.Fingerprint {
	return pgpmsgtest.Identity(t, name).Fingerprint()
}

// data returns n bytes that differ with seed.
func data(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>8)
	}
	return b
}

func deposit(t *testing.T, s relay.Store, from, to, name string, b []byte) error {
	t.Helper()
	return s.Deposit(fp(t, from), fp(t, to), name, int64(len(b)), bytes.NewReader(b))
}

func mustDeposit(t *testing.T, s relay.Store, from, to, name string, b []byte) {
	t.Helper()
	if err := deposit(t, s, from, to, name, b); err != nil {
		t.Fatalf("deposit %s from %s for %s: %v", name, from, to, err)
	}
}

// read opens name for to and reads it whole.
func read(t *testing.T, s relay.Store, to, name string) []byte {
	t.Helper()
	rc, size, err := s.Open(fp(t, to), name)
	if err != nil {
		t.Fatalf("Open %s for %s: %v", name, to, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	if int64(len(b)) != size {
		t.Fatalf("Open %s said %d bytes, read %d", name, size, len(b))
	}
	return b
}

// names lists to's files by name, in List's order.
func names(t *testing.T, s relay.Store, to string) []string {
	t.Helper()
	es, err := s.List(fp(t, to))
	if err != nil {
		t.Fatalf("List for %s: %v", to, err)
	}
	out := []string{}
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

func held(t *testing.T, s relay.Store, to string) int64 {
	t.Helper()
	es, err := s.List(fp(t, to))
	if err != nil {
		t.Fatalf("List for %s: %v", to, err)
	}
	n := int64(0)
	for _, e := range es {
		n += e.Size
	}
	return n
}

func checkRoundTrip(t *testing.T, open open) {
	s := open(Options{})
	if got := names(t, s.B, "alice"); len(got) != 0 {
		t.Fatalf("a fresh store holds %v for alice", got)
	}
	first, second := data(1, 3000), data(2, 200_000)
	// Names sort by creation time (queue.NewName), so that oldest first is name order.
	mustDeposit(t, s.A, "bob", "alice", "m1.pgp", first)
	mustDeposit(t, s.A, "carol", "alice", "m2.pgp", second)
	es, err := s.B.List(fp(t, "alice"))
	if err != nil || len(es) != 2 || es[0].Name != "m1.pgp" || es[1].Name != "m2.pgp" ||
		es[0].Size != 3000 || es[1].Size != 200_000 || es[0].ModTime.After(es[1].ModTime) {
		t.Fatalf("List through the other instance = %+v, %v; want m1.pgp (3000), then m2.pgp (200000)", es, err)
	}
	if got := names(t, s.B, "bob"); len(got) != 0 {
		t.Fatalf("bob sees alice's files: %v", got)
	}
	if _, _, err := s.B.Open(fp(t, "bob"), "m1.pgp"); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("bob's Open of alice's file = %v; want ErrNotFound", err)
	}
	if got := read(t, s.B, "alice", "m1.pgp"); !bytes.Equal(got, first) {
		t.Fatal("m1.pgp came back altered")
	}
	if got := read(t, s.A, "alice", "m2.pgp"); !bytes.Equal(got, second) {
		t.Fatal("m2.pgp came back altered")
	}
	if err := s.B.Remove(fp(t, "alice"), "m1.pgp"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := s.A.Remove(fp(t, "alice"), "m1.pgp"); err != nil {
		t.Fatalf("Remove of a file already removed = %v; want nil", err)
	}
	if _, _, err := s.A.Open(fp(t, "alice"), "m1.pgp"); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Open of a removed file = %v; want ErrNotFound", err)
	}
	if got := names(t, s.A, "alice"); len(got) != 1 || got[0] != "m2.pgp" {
		t.Fatalf("left after Remove: %v", got)
	}
}

func checkDuplicate(t *testing.T, open open) {
	s := open(Options{})
	first := data(1, 1000)
	mustDeposit(t, s.A, "bob", "alice", "m.pgp", first)
	if err := deposit(t, s.B, "carol", "alice", "m.pgp", data(9, 1500)); err != nil {
		t.Fatalf("a second deposit of a name held = %v; want nil (a duplicate delivery)", err)
	}
	if got := read(t, s.A, "alice", "m.pgp"); !bytes.Equal(got, first) {
		t.Fatal("the duplicate replaced the first copy")
	}
	if got := names(t, s.B, "alice"); len(got) != 1 {
		t.Fatalf("alice's files after a duplicate: %v", got)
	}
	// The same name for another recipient is another file.
	mustDeposit(t, s.B, "bob", "carol", "m.pgp", data(3, 10))
	if got := read(t, s.B, "carol", "m.pgp"); !bytes.Equal(got, data(3, 10)) {
		t.Fatal("carol's m.pgp is not hers")
	}
}

// unread fails the test if it is read.
type unread struct{ t *testing.T }

func (u unread) Read([]byte) (int, error) {
	u.t.Error("the store read the body of a deposit it must refuse first")
	return 0, io.ErrUnexpectedEOF
}

func checkForbidden(t *testing.T, open open) {
	s := open(Options{})
	if _, ok := s.A.Key(fp(t, "mallory")); ok {
		t.Fatal("Key(mallory) = true; she is not in the allow file")
	}
	if k, ok := s.B.Key(fp(t, "alice")); !ok || k.Fingerprint() != fp(t, "alice") {
		t.Fatal("Key(alice) is not alice's key")
	}
	ids, err := s.A.Recipient(fp(t, "bob"), fp(t, "alice"))
	if err != nil || len(ids) == 0 {
		t.Fatalf("Recipient(bob, alice) = %v, %v; want alice's key ids", ids, err)
	}
	for _, c := range [][2]string{{"mallory", "alice"}, {"bob", "mallory"}} {
		if _, err := s.A.Recipient(fp(t, c[0]), fp(t, c[1])); !errors.Is(err, relay.ErrForbidden) {
			t.Errorf("Recipient(%s, %s) = %v; want ErrForbidden", c[0], c[1], err)
		}
		err := s.B.Deposit(fp(t, c[0]), fp(t, c[1]), "m.pgp", 10, unread{t})
		if !errors.Is(err, relay.ErrForbidden) {
			t.Errorf("Deposit from %s for %s = %v; want ErrForbidden", c[0], c[1], err)
		}
	}
	if _, err := s.A.List(fp(t, "mallory")); !errors.Is(err, relay.ErrForbidden) {
		t.Errorf("List for mallory = %v; want ErrForbidden", err)
	}
	if _, _, err := s.A.Open(fp(t, "mallory"), "m.pgp"); !errors.Is(err, relay.ErrForbidden) {
		t.Errorf("Open for mallory = %v; want ErrForbidden", err)
	}
	if err := s.A.Remove(fp(t, "mallory"), "m.pgp"); !errors.Is(err, relay.ErrForbidden) {
		t.Errorf("Remove for mallory = %v; want ErrForbidden", err)
	}
}

func checkTooLarge(t *testing.T, open open) {
	s := open(Options{MaxFileSize: 1000})
	err := s.A.Deposit(fp(t, "bob"), fp(t, "alice"), "big.pgp", 1001, unread{t})
	if !errors.Is(err, relay.ErrTooLarge) {
		t.Fatalf("Deposit over MaxFileSize = %v; want ErrTooLarge", err)
	}
	mustDeposit(t, s.B, "bob", "alice", "fits.pgp", data(1, 1000))
}

// failing returns some bytes, then err.
type failing struct {
	n   int
	err error
}

func (f *failing) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

func checkBadBody(t *testing.T, open open) {
	s := open(Options{})
	alice, bob := fp(t, "alice"), fp(t, "bob")
	if err := s.A.Deposit(bob, alice, "short.pgp", 1000, bytes.NewReader(data(1, 999))); err == nil {
		t.Error("a body one byte short was taken")
	}
	if err := s.A.Deposit(bob, alice, "long.pgp", 1000, bytes.NewReader(data(1, 1001))); err == nil {
		t.Error("a body one byte long was taken")
	}
	boom := errors.New("connection reset")
	if err := s.B.Deposit(bob, alice, "failed.pgp", 300_000, &failing{n: 200_000, err: boom}); !errors.Is(err, boom) {
		t.Errorf("a deposit whose body fails = %v; want the reader's error", err)
	}
	if got := names(t, s.B, "alice"); len(got) != 0 {
		t.Fatalf("bad bodies left files: %v", got)
	}
	// Nothing of them stays in the way.
	for _, name := range []string{"short.pgp", "long.pgp", "failed.pgp"} {
		mustDeposit(t, s.B, "bob", "alice", name, data(2, 1000))
	}
	if h := held(t, s.A, "alice"); h != 3000 {
		t.Fatalf("alice holds %d bytes; want 3000", h)
	}
}

func checkQuota(t *testing.T, open open) {
	s := open(Options{Quota: 2500})
	mustDeposit(t, s.A, "bob", "alice", "a.pgp", data(1, 1000))
	mustDeposit(t, s.B, "carol", "alice", "b.pgp", data(2, 1000))
	err := deposit(t, s.A, "bob", "alice", "c.pgp", data(3, 1000))
	if !errors.Is(err, relay.ErrOverQuota) {
		t.Fatalf("a deposit past alice's quota = %v; want ErrOverQuota", err)
	}
	if err := s.B.Deposit(fp(t, "carol"), fp(t, "alice"), "d.pgp", 1000, unread{t}); !errors.Is(err, relay.ErrOverQuota) {
		t.Fatalf("a deposit past alice's quota through the other instance = %v; want ErrOverQuota", err)
	}
	// The quota is alice's: carol's share is untouched.
	mustDeposit(t, s.A, "bob", "carol", "c.pgp", data(3, 2000))
	// A duplicate of a held file is taken without counting twice.
	if err := deposit(t, s.B, "bob", "alice", "a.pgp", data(1, 1000)); err != nil {
		t.Fatalf("re-deposit of a held file: %v", err)
	}
	// Once alice collects, there is room again.
	if err := s.B.Remove(fp(t, "alice"), "a.pgp"); err != nil {
		t.Fatal(err)
	}
	mustDeposit(t, s.A, "bob", "alice", "c.pgp", data(3, 1000))
	if h := held(t, s.A, "alice"); h != 2000 {
		t.Fatalf("alice holds %d bytes; want 2000", h)
	}
}

func checkQuotaConcurrent(t *testing.T, open open) {
	const size, fit, tries = 1000, 10, 24
	s := open(Options{Quota: fit * size})
	errs := make([]error, tries)
	var wg sync.WaitGroup
	for i := range tries {
		st := s.A
		if i%2 == 1 {
			st = s.B
		}
		from := []string{"bob", "carol"}[i%3%2]
		wg.Go(func() { errs[i] = deposit(t, st, from, "alice", fmt.Sprintf("f%02d.pgp", i), data(byte(i), size)) })
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, relay.ErrOverQuota):
			t.Errorf("deposit %d: %v; want nil or ErrOverQuota", i, err)
		}
	}
	if h := held(t, s.B, "alice"); ok != fit || h != fit*size {
		t.Fatalf("%d of %d concurrent deposits taken, alice holds %d bytes; want %d taken, %d bytes (her quota)",
			ok, tries, h, fit, fit*size)
	}
}

// signalling closes started at its first Read.
type signalling struct {
	r       io.Reader
	once    sync.Once
	started chan struct{}
}

func (s *signalling) Read(p []byte) (int, error) {
	s.once.Do(func() { close(s.started) })
	return s.r.Read(p)
}

// stall starts a deposit whose body arrives only when feed is called, and returns once
// the store is reading it; done gets the deposit's result.
func stall(t *testing.T, st relay.Store, from, to, name string, size int) (feed func(), done chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	body := &signalling{r: pr, started: make(chan struct{})}
	done = make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- st.Deposit(fp(t, from), fp(t, to), name, int64(size), body)
		close(finished)
	}()
	select {
	case <-body.started:
	case err := <-done:
		t.Fatalf("the deposit to stall ended at once: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the store never read the body of the deposit to stall")
	}
	var once sync.Once
	feed = func() {
		once.Do(func() {
			go func() {
				pw.Write(data(7, size))
				pw.Close()
			}()
		})
	}
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")); <-finished })
	return feed, done
}

func checkStalled(t *testing.T, open open) {
	s := open(Options{Quota: 3000})
	feed, done := stall(t, s.A, "carol", "alice", "stalled.pgp", 1900)
	if err := deposit(t, s.B, "bob", "alice", "bob.pgp", data(1, 1500)); err != nil {
		t.Fatalf("bob's deposit while carol's stalls: %v", err)
	}
	if err := deposit(t, s.B, "carol", "alice", "more.pgp", data(2, 1000)); !errors.Is(err, relay.ErrOverQuota) {
		t.Fatalf("carol's second deposit while her first stalls = %v; want ErrOverQuota (her own stalled bytes count)", err)
	}
	feed()
	select {
	case err := <-done:
		if !errors.Is(err, relay.ErrOverQuota) {
			t.Fatalf("carol's stalled deposit, arriving after bob's filled the share = %v; want ErrOverQuota", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled deposit did not end once its body arrived")
	}
	if got := names(t, s.A, "alice"); len(got) != 1 || got[0] != "bob.pgp" {
		t.Fatalf("alice's files: %v; want bob's only", got)
	}
	// Nothing stays reserved: carol's deposit that fits goes in.
	mustDeposit(t, s.A, "carol", "alice", "later.pgp", data(3, 1500))
}

func checkSameNameBusy(t *testing.T, open open) {
	s := open(Options{})
	feed, done := stall(t, s.A, "bob", "alice", "m.pgp", 5000)
	if err := deposit(t, s.B, "carol", "alice", "m.pgp", data(1, 5000)); !errors.Is(err, relay.ErrBusy) {
		t.Fatalf("a deposit of a name being deposited = %v; want ErrBusy", err)
	}
	feed()
	if err := <-done; err != nil {
		t.Fatalf("the first deposit: %v", err)
	}
	if err := deposit(t, s.B, "carol", "alice", "m.pgp", data(1, 5000)); err != nil {
		t.Fatalf("the same name once the first deposit is in = %v; want nil (a duplicate)", err)
	}
	if got := read(t, s.B, "alice", "m.pgp"); !bytes.Equal(got, data(7, 5000)) {
		t.Fatal("m.pgp is not the first deposit's")
	}
}

func checkOpenExclusive(t *testing.T, open open) {
	s := open(Options{})
	alice := fp(t, "alice")
	want := data(5, 70_000)
	mustDeposit(t, s.A, "bob", "alice", "m.pgp", want)
	rc, size, err := s.A.Open(alice, "m.pgp")
	if err != nil || size != int64(len(want)) {
		t.Fatalf("Open = %d, %v", size, err)
	}
	if _, _, err := s.B.Open(alice, "m.pgp"); !errors.Is(err, relay.ErrBusy) {
		t.Fatalf("a second Open while the file is open = %v; want ErrBusy", err)
	}
	if err := s.B.Remove(alice, "m.pgp"); !errors.Is(err, relay.ErrBusy) {
		t.Fatalf("Remove while the file is open = %v; want ErrBusy", err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reading the open file: %d bytes, %v", len(got), err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := read(t, s.B, "alice", "m.pgp"); !bytes.Equal(got, want) {
		t.Fatal("the file changed")
	}
	if err := s.A.Remove(alice, "m.pgp"); err != nil {
		t.Fatalf("Remove once closed: %v", err)
	}
	if got := names(t, s.B, "alice"); len(got) != 0 {
		t.Fatalf("left after Remove: %v", got)
	}
}

func checkExpire(t *testing.T, open open) {
	const maxAge = time.Hour
	s := open(Options{MaxAge: maxAge})
	ea, okA := s.A.(relay.Expirer)
	eb, okB := s.B.(relay.Expirer)
	if !okA || !okB {
		t.Skip("the store does not expire files")
	}
	mustDeposit(t, s.A, "bob", "alice", "1old.pgp", data(1, 100))
	time.Sleep(50 * time.Millisecond)
	mustDeposit(t, s.B, "bob", "alice", "2new.pgp", data(2, 100))
	mustDeposit(t, s.B, "bob", "carol", "carol.pgp", data(3, 100))
	es, err := s.A.List(fp(t, "alice"))
	if err != nil || len(es) != 2 {
		t.Fatalf("List = %v, %v", es, err)
	}
	if n, err := ea.Expire(time.Now()); n != 0 || err != nil {
		t.Fatalf("Expire now = %d, %v; want 0, nil", n, err)
	}
	between := es[0].ModTime.Add(maxAge + es[1].ModTime.Sub(es[0].ModTime)/2)
	if n, err := eb.Expire(between); n != 1 || err != nil {
		t.Fatalf("Expire past old.pgp's age = %d, %v; want 1, nil", n, err)
	}
	if got := names(t, s.A, "alice"); len(got) != 1 || got[0] != "2new.pgp" {
		t.Fatalf("left after expiry: %v; want 2new.pgp", got)
	}
	// A file being read is skipped until the next call.
	rc, _, err := s.A.Open(fp(t, "alice"), "2new.pgp")
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * maxAge)
	if n, err := eb.Expire(later); n != 1 || err != nil {
		t.Fatalf("Expire while new.pgp is open = %d, %v; want 1 (carol's), nil", n, err)
	}
	rc.Close()
	if n, err := ea.Expire(later); n != 1 || err != nil {
		t.Fatalf("Expire once new.pgp is closed = %d, %v; want 1, nil", n, err)
	}
	for _, who := range []string{"alice", "carol"} {
		if got := names(t, s.B, who); len(got) != 0 {
			t.Fatalf("%s's files left after expiry: %v", who, got)
		}
	}
}
