package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/queue"
)

func relayEndpoint(t testing.TB, r *relayServer, to string) queue.Endpoint {
	return queue.Endpoint{Peer: to, Key: string(fp(t, to)), Addr: r.url}
}

func TestRelay_DepositAndCollect(t *testing.T) {
	r := newRelay(t, DirOptions{}, "alice", "bob")
	data := sealed(t, "bob", "alice", 3000)
	if err := newClient(t, "bob").Send(context.Background(), relayEndpoint(t, r, "alice"), message("m1.pgp", data)); err != nil {
		t.Fatal(err)
	}
	// Bob cannot collect what he left for alice.
	if n, err := newClient(t, "bob").Poll(context.Background(), relayEndpoint(t, r, "bob"), (&memSink{}).sink); n != 0 || err != nil {
		t.Fatalf("bob's Poll = %d, %v; want 0, nil", n, err)
	}
	s := &memSink{}
	n, err := newClient(t, "alice").Poll(context.Background(), relayEndpoint(t, r, "alice"), s.sink)
	if n != 1 || err != nil || string(s.files["m1.pgp"]) != string(data) {
		t.Fatalf("alice's Poll = %d, %v, %d files", n, err, len(s.files))
	}
	if es, _ := r.store.List(fp(t, "alice")); len(es) != 0 {
		t.Fatalf("relay still holds %v", es)
	}
}

func TestRelay_StrangerCannotDeposit(t *testing.T) {
	r := newRelay(t, DirOptions{}, "alice", "bob")
	err := newClient(t, "mallory").Send(context.Background(), relayEndpoint(t, r, "alice"), message("m.pgp", sealed(t, "mallory", "alice", 10)))
	if !errors.Is(err, ErrForbidden) || !queue.IsPermanent(err) {
		t.Fatalf("stranger's deposit = %v; want a permanent ErrForbidden", err)
	}
	if err := r.store.Deposit(fp(t, "mallory"), fp(t, "alice"), "m.pgp", 1, nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("Store.Deposit from a stranger = %v", err)
	}
}

func TestRelay_DepositForNonAllowedRecipientRefused(t *testing.T) {
	r := newRelay(t, DirOptions{}, "alice", "bob")
	err := newClient(t, "bob").Send(context.Background(), relayEndpoint(t, r, "dave"), message("m.pgp", sealed(t, "bob", "dave", 10)))
	if !errors.Is(err, ErrForbidden) || !queue.IsPermanent(err) {
		t.Fatalf("deposit for dave = %v; want a permanent ErrForbidden", err)
	}
}

func TestRelay_MisaddressedFileRefused(t *testing.T) {
	r := newRelay(t, DirOptions{}, "alice", "bob", "carol")
	err := newClient(t, "bob").Send(context.Background(), relayEndpoint(t, r, "alice"), message("m.pgp", sealed(t, "bob", "carol", 10)))
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("a file for carol deposited for alice = %v; want ErrForbidden", err)
	}
}

func TestRelay_OverQuota_507Temporary(t *testing.T) {
	data := sealed(t, "bob", "alice", 4000)
	size := int64(len(data))
	r := newRelay(t, DirOptions{Quota: 2*size + size/2}, "alice", "bob", "carol")
	bob, carol := newClient(t, "bob"), newClient(t, "carol")
	for _, name := range []string{"a.pgp", "b.pgp"} {
		if err := bob.Send(context.Background(), relayEndpoint(t, r, "alice"), message(name, data)); err != nil {
			t.Fatal(err)
		}
	}
	err := bob.Send(context.Background(), relayEndpoint(t, r, "alice"), message("c.pgp", data))
	if !errors.Is(err, ErrOverQuota) || queue.IsPermanent(err) {
		t.Fatalf("third deposit = %v; want a temporary ErrOverQuota", err)
	}
	// The quota is alice's: carol's share is untouched.
	if err := bob.Send(context.Background(), relayEndpoint(t, r, "carol"), message("c.pgp", sealed(t, "bob", "carol", 4000))); err != nil {
		t.Fatalf("deposit for carol: %v", err)
	}
	// A duplicate of a held file is accepted without counting twice.
	if err := carol.Send(context.Background(), relayEndpoint(t, r, "alice"), message("a.pgp", data)); err != nil {
		t.Fatalf("re-deposit of a held file: %v", err)
	}
	// Once alice collects, there is room again.
	if n, err := newClient(t, "alice").Poll(context.Background(), relayEndpoint(t, r, "alice"), (&memSink{}).sink); n != 2 || err != nil {
		t.Fatalf("alice's Poll = %d, %v", n, err)
	}
	if err := bob.Send(context.Background(), relayEndpoint(t, r, "alice"), message("c.pgp", data)); err != nil {
		t.Fatalf("deposit after collection: %v", err)
	}
}

func TestRelay_StoreLimitTooLarge(t *testing.T) {
	r := newRelay(t, DirOptions{MaxFileSize: 100}, "alice", "bob")
	err := newClient(t, "bob").Send(context.Background(), relayEndpoint(t, r, "alice"), message("m.pgp", sealed(t, "bob", "alice", 1000)))
	if !errors.Is(err, ErrTooLarge) || !queue.IsPermanent(err) {
		t.Fatalf("deposit over the store's limit = %v; want a permanent ErrTooLarge", err)
	}
}

func TestRelay_Expire(t *testing.T) {
	r := newRelay(t, DirOptions{MaxAge: time.Hour}, "alice", "bob")
	bob := newClient(t, "bob")
	for _, name := range []string{"old.pgp", "new.pgp"} {
		if err := bob.Send(context.Background(), relayEndpoint(t, r, "alice"), message(name, sealed(t, "bob", "alice", 10))); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(r.store.spool.Dir(queue.Outgoing(string(fp(t, "alice"))))+"/old.pgp", old, old); err != nil {
		t.Fatal(err)
	}
	n, err := r.store.Expire(time.Now())
	if n != 1 || err != nil {
		t.Fatalf("Expire = %d, %v; want 1, nil", n, err)
	}
	es, _ := r.store.List(fp(t, "alice"))
	if len(es) != 1 || es[0].Name != "new.pgp" {
		t.Fatalf("left after expiry: %v", es)
	}
	// Server.Sweep runs the store's expiry too.
	r.clock.Advance(2 * time.Hour)
	r.srv.Sweep()
	if es, _ := r.store.List(fp(t, "alice")); len(es) != 0 {
		t.Fatalf("left after Sweep: %v", es)
	}
}

func TestRelay_AllowFileReread(t *testing.T) {
	r := newRelay(t, DirOptions{}, "alice", "bob")
	dave := newClient(t, "dave")
	if err := dave.Send(context.Background(), relayEndpoint(t, r, "alice"), message("d.pgp", sealed(t, "dave", "alice", 10))); !errors.Is(err, ErrForbidden) {
		t.Fatalf("dave before he is allowed: %v", err)
	}
	bobTok := rawSession(t, r.url, id(t, "bob"))

	writeAllow(t, r.allow, "alice", "dave") // bob out, dave in
	if err := dave.Send(context.Background(), relayEndpoint(t, r, "alice"), message("d.pgp", sealed(t, "dave", "alice", 10))); err != nil {
		t.Fatalf("dave after the allow file changed: %v", err)
	}
	if code, _ := do(t, "GET", r.url+"/dibs/v1/files", bobTok, nil); code != 403 {
		t.Fatalf("bob's session after he was removed: %d, want 403", code)
	}

	// A broken allow file leaves the keys in force, and Reload says why.
	if err := os.WriteFile(r.allow, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\ngarbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Reload(); err == nil {
		t.Fatal("Reload of a broken allow file returned nil")
	}
	if _, ok := r.store.Key(fp(t, "dave")); !ok {
		t.Fatal("a broken allow file dropped the keys in force")
	}
	// A missing allow file allows nobody.
	os.Remove(r.allow)
	if _, ok := r.store.Key(fp(t, "alice")); ok {
		t.Fatal("alice is allowed without an allow file")
	}
}

func TestOpenDirStore_BadAllowFile(t *testing.T) {
	dir := t.TempDir()
	allow := dir + "/allow.asc"
	os.WriteFile(allow, []byte("not keys"), 0o600)
	if _, err := OpenDirStore(dir+"/store", DirOptions{AllowFile: allow}); err == nil {
		t.Fatal("OpenDirStore with an unreadable allow file succeeded")
	}
	if _, err := OpenDirStore(dir+"/store", DirOptions{}); err == nil {
		t.Fatal("OpenDirStore without an allow file succeeded")
	}
}

// A deposit whose body stalls counts against the quota for its depositor only (issue 17
// item 2: one stalled 1,900-byte upload kept every other deposit to that recipient out
// with 507 for as long as it stalled). The quota still holds when the stalled body
// arrives after the others filled it.
func TestRelay_StalledDepositLocksOnlyItsDepositor(t *testing.T) {
	r := newRelay(t, DirOptions{Quota: 3000}, "alice", "bob", "carol")
	alice, bob, carol := fp(t, "alice"), fp(t, "bob"), fp(t, "carol")
	stalled, feed := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- r.store.Deposit(carol, alice, "stalled.pgp", 1900, stalled) }()
	for { // until carol's deposit holds its reservation
		r.store.mu.Lock()
		n := len(r.store.inflight)
		r.store.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := r.store.Deposit(bob, alice, "bob.pgp", 1500, bytes.NewReader(make([]byte, 1500))); err != nil {
		t.Fatalf("bob's deposit while carol's stalls: %v", err)
	}
	if err := r.store.Deposit(carol, alice, "more.pgp", 1000, bytes.NewReader(make([]byte, 1000))); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("carol's second deposit while her first stalls: %v; want ErrOverQuota (her own stalled bytes count)", err)
	}
	feed.Write(make([]byte, 1900))
	feed.Close()
	if err := <-done; !errors.Is(err, ErrOverQuota) {
		t.Fatalf("carol's stalled deposit, arriving after bob's filled the share: %v; want ErrOverQuota", err)
	}
	if es, _ := r.store.List(alice); len(es) != 1 || es[0].Name != "bob.pgp" {
		t.Fatalf("alice's files: %+v; want bob's only", es)
	}
	// Nothing stays reserved: carol's deposit that fits goes in.
	if err := r.store.Deposit(carol, alice, "later.pgp", 1500, bytes.NewReader(make([]byte, 1500))); err != nil {
		t.Fatalf("carol's deposit after hers ended: %v", err)
	}
}

// hidingWriter hides the connection of the ResponseWriter it wraps, as a middleware
// without an Unwrap method does: the Server cannot set its deadlines.
type hidingWriter struct{ http.ResponseWriter }

// A stalled deposit gives back its depositor's reservation when its deadline passes,
// even when the Server cannot set the connection's deadline (issue 17 item 2: behind a
// wrapper it kept it for as long as the connection lived, here for ever).
func TestRelay_StalledDepositBehindWrapper_ReservationEndsAtDeadline(t *testing.T) {
	dir := t.TempDir()
	allow := filepath.Join(dir, "allow.asc")
	writeAllow(t, allow, "alice", "carol")
	store, err := OpenDirStore(filepath.Join(dir, "store"), DirOptions{AllowFile: allow, Quota: 3000})
	if err != nil {
		t.Fatal(err)
	}
	// 1900 bytes at 1000 bytes/s at least: 0.3 s + 2 s.
	srv := NewServer(store, ServerOptions{Version: "test", MinTransferRate: 1000, TransferGrace: 300 * time.Millisecond})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.ServeHTTP(hidingWriter{w}, r)
	}))
	t.Cleanup(hs.Close)
	alice, carol := fp(t, "alice"), fp(t, "carol")
	tok := rawSession(t, hs.URL, id(t, "carol"))
	path := "/dibs/v1/files/" + string(alice) + "/stalled.pgp"
	head := fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: 1900\r\n\r\n",
		path, strings.TrimPrefix(hs.URL, "http://"), rawAuth(t, tok, "PUT", path, 1900))
	trickle(t, hs.URL, head, []byte{0}, time.Second, 60)
	for { // until carol's deposit holds its reservation
		store.mu.Lock()
		n := len(store.inflight)
		store.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	var last error
	for time.Since(start) < 15*time.Second {
		last = store.Deposit(carol, alice, "more.pgp", 1500, bytes.NewReader(make([]byte, 1500)))
		if last == nil {
			break
		}
		if !errors.Is(last, ErrOverQuota) {
			t.Fatalf("carol's second deposit: %v", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("carol's stalled deposit still holds her reservation %s later (deadline 2.3 s): %v", time.Since(start).Round(time.Second), last)
	}
	if elapsed := time.Since(start); elapsed < time.Second {
		t.Errorf("carol's second deposit went in after %s, before the stalled one's deadline", elapsed)
	}
}
