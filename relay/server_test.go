package relay

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// do sends a raw request with an optional token and returns the status and body.
func do(t *testing.T, method, url, token string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		signRaw(t, req, token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHello_ReportsSoftwareProtocolAndKey(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	info, err := newClient(t, "bob").Hello(context.Background(), d.url)
	if err != nil {
		t.Fatal(err)
	}
	want := HelloInfo{Software: "dibs", Version: "test", Protocol: 1, Key: string(fp(t, "alice"))}
	if info != want {
		t.Fatalf("Hello = %+v, want %+v", info, want)
	}
}

func TestPush_LandsInIncoming(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	data := sealed(t, "bob", "alice", 1000)
	name := queue.NewName(time.Now(), ".pgp")
	if err := newClient(t, "bob").Send(context.Background(), d.endpoint(t), message(name, data)); err != nil {
		t.Fatal(err)
	}
	c, err := d.spool.Claim(queue.Incoming, name)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	got, _ := io.ReadAll(c.Reader())
	if !bytes.Equal(got, data) {
		t.Fatalf("incoming/%s differs from what was sent", name)
	}
}

func TestPush_SameFileTwice_OneCopy(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	bob := newClient(t, "bob")
	data := sealed(t, "bob", "alice", 1000)
	for range 2 {
		if err := bob.Send(context.Background(), d.endpoint(t), message("twice.pgp", data)); err != nil {
			t.Fatal(err)
		}
	}
	if got := names(t, d.spool, queue.Incoming); !slices.Equal(got, []string{"twice.pgp"}) {
		t.Fatalf("incoming = %v", got)
	}
}

func TestPassivePull_DeletesOnlyAfterSinkCommitted(t *testing.T) {
	d := newDaemon(t, "alice", "bob", "carol")
	a, b := sealed(t, "alice", "bob", 100), sealed(t, "alice", "bob", 5000)
	put(t, d.spool, queue.Outgoing("bob"), "f1.pgp", a)
	put(t, d.spool, queue.Outgoing("bob"), "f2.pgp", b)
	bobSpool, err := queue.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var deletesAtSink []int64
	sink := func(name string, r io.Reader) error {
		deletesAtSink = append(deletesAtSink, d.count.get("DELETE /dibs/v1/files/"+name))
		_, err := bobSpool.Put(queue.Incoming, name, r, 0)
		return err
	}
	n, err := newClient(t, "bob").Poll(context.Background(), queue.Endpoint{Peer: "alice", Key: string(fp(t, "bob")), Addr: d.url}, sink)
	if err != nil || n != 2 {
		t.Fatalf("Poll = %d, %v; want 2, nil", n, err)
	}
	if !slices.Equal(deletesAtSink, []int64{0, 0}) {
		t.Errorf("DELETE counts seen while committing: %v, want none before the sink ran", deletesAtSink)
	}
	if got := names(t, d.spool, queue.Outgoing("bob")); len(got) != 0 {
		t.Errorf("outgoing/bob still holds %v", got)
	}
	if got := names(t, bobSpool, queue.Incoming); !slices.Equal(got, []string{"f1.pgp", "f2.pgp"}) {
		t.Errorf("bob's incoming = %v", got)
	}
}

func TestPassivePull_SinkFails_FileStaysOnServer(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	put(t, d.spool, queue.Outgoing("bob"), "f1.pgp", []byte("sealed"))
	errDisk := errors.New("disk full")
	s := &memSink{fail: errDisk}
	n, err := newClient(t, "bob").Poll(context.Background(), queue.Endpoint{Addr: d.url}, s.sink)
	if n != 0 || !errors.Is(err, errDisk) {
		t.Fatalf("Poll = %d, %v; want 0 and the sink's error", n, err)
	}
	if got := names(t, d.spool, queue.Outgoing("bob")); !slices.Equal(got, []string{"f1.pgp"}) {
		t.Fatalf("outgoing/bob = %v, want the file still there", got)
	}
	if c := d.count.get("DELETE /dibs/v1/files/f1.pgp"); c != 0 {
		t.Fatalf("%d DELETEs after a failed sink", c)
	}
}

func TestPassivePull_FileBeingSentLocally_IsLeftAndRetried(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	put(t, d.spool, queue.Outgoing("bob"), "busy.pgp", []byte("one"))
	put(t, d.spool, queue.Outgoing("bob"), "free.pgp", []byte("two"))
	c, err := d.spool.Claim(queue.Outgoing("bob"), "busy.pgp") // a local sender at work
	if err != nil {
		t.Fatal(err)
	}
	bob := newClient(t, "bob")
	s := &memSink{}
	n, err := bob.Poll(context.Background(), queue.Endpoint{Addr: d.url}, s.sink)
	if n != 1 || !errors.Is(err, ErrBusy) || queue.IsPermanent(err) {
		t.Fatalf("Poll = %d, %v; want 1 and a temporary ErrBusy", n, err)
	}
	c.Release()
	if n, err := bob.Poll(context.Background(), queue.Endpoint{Addr: d.url}, s.sink); n != 1 || err != nil {
		t.Fatalf("second Poll = %d, %v; want 1, nil", n, err)
	}
	if len(s.files) != 2 || string(s.files["busy.pgp"]) != "one" {
		t.Fatalf("collected %v", s.files)
	}
}

func TestSession_StrangerRefused(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	put(t, d.spool, queue.Outgoing("bob"), "f1.pgp", []byte("for bob"))
	mallory := newClient(t, "mallory")
	err := mallory.Send(context.Background(), d.endpoint(t), message("x.pgp", sealed(t, "mallory", "alice", 10)))
	if !errors.Is(err, ErrForbidden) || !queue.IsPermanent(err) {
		t.Fatalf("stranger's Send = %v; want a permanent ErrForbidden", err)
	}
	n, err := mallory.Poll(context.Background(), queue.Endpoint{Addr: d.url}, (&memSink{}).sink)
	if n != 0 || !errors.Is(err, ErrForbidden) {
		t.Fatalf("stranger's Poll = %d, %v; want ErrForbidden", n, err)
	}
	if got := names(t, d.spool, queue.Incoming); len(got) != 0 {
		t.Fatalf("incoming = %v after a stranger's deposit", got)
	}
	if got := names(t, d.spool, queue.Outgoing("bob")); len(got) != 1 {
		t.Fatalf("outgoing/bob = %v", got)
	}
}

func TestSession_PeerCannotSeeOrDeleteAnotherPeersFiles(t *testing.T) {
	d := newDaemon(t, "alice", "bob", "carol")
	put(t, d.spool, queue.Outgoing("carol"), "for-carol.pgp", []byte("carol's"))
	tok := rawSession(t, d.url, id(t, "bob"))
	files := d.url + "/dibs/v1/files"

	if code, body := do(t, "GET", files, tok, nil); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("bob lists %d %s; want an empty list", code, body)
	}
	if code, _ := do(t, "GET", files+"/for-carol.pgp", tok, nil); code != 404 {
		t.Errorf("bob GETs carol's file: %d, want 404", code)
	}
	do(t, "DELETE", files+"/for-carol.pgp", tok, nil)
	for _, p := range []string{"/..%2Fcarol%2Ffor-carol.pgp", "/%2E%2E%2Fcarol%2Ffor-carol.pgp", "/carol/for-carol.pgp"} {
		if code, _ := do(t, "GET", files+p, tok, nil); code/100 == 2 {
			t.Errorf("GET %s: %d", p, code)
		}
		if code, _ := do(t, "DELETE", files+p, tok, nil); code/100 == 2 && p != "/carol/for-carol.pgp" {
			t.Errorf("DELETE %s: %d", p, code)
		}
	}
	if got := names(t, d.spool, queue.Outgoing("carol")); !slices.Equal(got, []string{"for-carol.pgp"}) {
		t.Fatalf("outgoing/carol = %v: bob removed carol's file", got)
	}
	// Without a token nothing is listed at all.
	if code, _ := do(t, "GET", files, "", nil); code != 401 {
		t.Errorf("list without a token: %d, want 401", code)
	}
	if code, _ := do(t, "GET", files, strings.Repeat("A", 43), nil); code != 401 {
		t.Errorf("list with a made-up token: %d, want 401", code)
	}
}

// challengeAndSign gets a challenge from url and signs it as claimed, with signer's key.
func challengeAndSign(t *testing.T, u string, claimed pgpmsg.Fingerprint, signer *pgpmsg.Identity) []byte {
	t.Helper()
	code, body := do(t, "POST", u+"/dibs/v1/challenge", "", nil)
	if code != 200 {
		t.Fatalf("challenge: %d %s", code, body)
	}
	var ch challengeResponse
	if err := json.Unmarshal([]byte(body), &ch); err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u)
	sig, err := signer.SignDetached(SessionStatement(ch.Nonce, claimed, pu.Host))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sessionRequest{Key: string(claimed), Nonce: ch.Nonce,
		Signature: base64.StdEncoding.EncodeToString(sig), Server: pu.Host})
	return b
}

func TestSession_ReplayedNonceRefused(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	req := challengeAndSign(t, d.url, fp(t, "bob"), id(t, "bob"))
	if code, body := do(t, "POST", d.url+"/dibs/v1/session", "", bytes.NewReader(req)); code != 200 {
		t.Fatalf("first use: %d %s", code, body)
	}
	if code, body := do(t, "POST", d.url+"/dibs/v1/session", "", bytes.NewReader(req)); code != 403 || !strings.Contains(body, "nonce") {
		t.Fatalf("replay: %d %s; want 403 about the nonce", code, body)
	}
}

func TestSession_ExpiredNonceRefused(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	req := challengeAndSign(t, d.url, fp(t, "bob"), id(t, "bob"))
	d.clock.Advance(NonceLifetime + time.Second)
	if code, body := do(t, "POST", d.url+"/dibs/v1/session", "", bytes.NewReader(req)); code != 403 {
		t.Fatalf("expired nonce: %d %s; want 403", code, body)
	}
}

func TestSession_SignatureByAnotherKeyRefused(t *testing.T) {
	d := newDaemon(t, "alice", "bob", "carol")
	// carol (a peer herself) signs a claim to be bob.
	req := challengeAndSign(t, d.url, fp(t, "bob"), id(t, "carol"))
	if code, body := do(t, "POST", d.url+"/dibs/v1/session", "", bytes.NewReader(req)); code != 403 {
		t.Fatalf("carol claiming to be bob: %d %s; want 403", code, body)
	}
	// mallory (a stranger) signs a claim to be bob.
	req = challengeAndSign(t, d.url, fp(t, "bob"), id(t, "mallory"))
	if code, body := do(t, "POST", d.url+"/dibs/v1/session", "", bytes.NewReader(req)); code != 403 {
		t.Fatalf("mallory claiming to be bob: %d %s; want 403", code, body)
	}
}

func TestSession_SignatureForAnotherServerRefused(t *testing.T) {
	// A server bob talks to (evil) passes on alice's challenge; bob's signature names evil,
	// so it buys nothing at alice's.
	d := newDaemon(t, "alice", "bob")
	code, body := do(t, "POST", d.url+"/dibs/v1/challenge", "", nil)
	if code != 200 {
		t.Fatal(code, body)
	}
	var ch challengeResponse
	json.Unmarshal([]byte(body), &ch)
	sig, _ := id(t, "bob").SignDetached(SessionStatement(ch.Nonce, fp(t, "bob"), "evil.example:6363"))
	for _, server := range []string{"evil.example:6363", strings.TrimPrefix(d.url, "http://")} {
		b, _ := json.Marshal(sessionRequest{Key: string(fp(t, "bob")), Nonce: ch.Nonce,
			Signature: base64.StdEncoding.EncodeToString(sig), Server: server})
		if code, body := do(t, "POST", d.url+"/dibs/v1/session", "", bytes.NewReader(b)); code != 403 {
			t.Fatalf("signature for evil.example presented as %q: %d %s; want 403", server, code, body)
		}
	}
}

func TestSession_OversizeRequestRefused(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	big := `{"key":"` + strings.Repeat("A", 1<<20) + `"}`
	// Refused by its Content-Length, unread and before it takes a slot.
	if code, _ := do(t, "POST", d.url+"/dibs/v1/session", "", strings.NewReader(big)); code != 413 {
		t.Fatalf("1 MiB session request: %d, want 413", code)
	}
}

// tripwire is a request body that must not be read.
type tripwire struct{ read bool }

func (tw *tripwire) Read(p []byte) (int, error) { tw.read = true; return 0, errors.New("body read") }
func (tw *tripwire) Close() error               { return nil }

func TestDeposit_Oversize_413BeforeReadingBody(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	tok := rawSession(t, d.url, id(t, "bob"))
	for _, tc := range []struct {
		size int64
		want int
	}{{DefaultMaxFileSize + 1, 413}, {-1, 411}} {
		tw := &tripwire{}
		req := httptest.NewRequest("PUT", "/dibs/v1/files/"+string(fp(t, "alice"))+"/big.pgp", tw)
		req.ContentLength = tc.size
		signRaw(t, req, tok)
		req.Host = strings.TrimPrefix(d.url, "http://")
		rec := httptest.NewRecorder()
		d.srv.ServeHTTP(rec, req)
		if rec.Code != tc.want || tw.read {
			t.Errorf("Content-Length %d: status %d, body read %v; want %d without reading", tc.size, rec.Code, tw.read, tc.want)
		}
	}
	// And through a real client: a permanent ErrTooLarge.
	huge := queue.Message{Name: "huge.pgp", Size: DefaultMaxFileSize + 1, Body: func() (io.ReadCloser, error) {
		return io.NopCloser(io.LimitReader(zeros{}, DefaultMaxFileSize+1)), nil
	}}
	err := newClient(t, "bob").Send(context.Background(), d.endpoint(t), huge)
	if !errors.Is(err, ErrTooLarge) || !queue.IsPermanent(err) {
		t.Fatalf("Send of an oversize file = %v; want a permanent ErrTooLarge", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestSpoolStore_DepositForAnotherRecipientRefused(t *testing.T) {
	d := newDaemon(t, "alice", "bob", "carol")
	dst := queue.Endpoint{Key: string(fp(t, "carol")), Addr: d.url}
	err := newClient(t, "bob").Send(context.Background(), dst, message("x.pgp", sealed(t, "bob", "carol", 10)))
	if !errors.Is(err, ErrForbidden) || !queue.IsPermanent(err) {
		t.Fatalf("deposit for carol at alice's = %v; want a permanent ErrForbidden", err)
	}
	// The store refuses by itself, whatever the file holds.
	if _, err := d.store.Recipient(fp(t, "bob"), fp(t, "carol")); !errors.Is(err, ErrForbidden) {
		t.Errorf("Recipient(bob, carol) = %v; want ErrForbidden", err)
	}
	if err := d.store.Deposit(fp(t, "bob"), fp(t, "carol"), "y.pgp", 1, strings.NewReader("y")); !errors.Is(err, ErrForbidden) {
		t.Errorf("Deposit(bob, carol) = %v; want ErrForbidden", err)
	}
	if got := names(t, d.spool, queue.Incoming); len(got) != 0 {
		t.Fatalf("incoming = %v", got)
	}
}

func TestDeposit_NotSealedToRecipientRefused(t *testing.T) {
	d := newDaemon(t, "alice", "bob", "carol")
	bob := newClient(t, "bob")
	for name, data := range map[string][]byte{
		"to-carol.pgp": sealed(t, "bob", "carol", 10),
		"junk.pgp":     []byte("this is not an OpenPGP message at all"),
		"empty.pgp":    {},
	} {
		err := bob.Send(context.Background(), d.endpoint(t), message(name, data))
		if !errors.Is(err, ErrForbidden) || !queue.IsPermanent(err) {
			t.Errorf("%s: Send = %v; want a permanent ErrForbidden", name, err)
		}
	}
	if got := names(t, d.spool, queue.Incoming); len(got) != 0 {
		t.Fatalf("incoming = %v", got)
	}
}

func TestDeposit_BadNameRefused(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	tok := rawSession(t, d.url, id(t, "bob"))
	for _, name := range []string{".hidden", "a%2Fb", "x.reason", "-dash", "a..b"} {
		code, body := do(t, "PUT", d.url+"/dibs/v1/files/"+string(fp(t, "alice"))+"/"+name, tok, strings.NewReader("x"))
		if code != 400 {
			t.Errorf("PUT %q: %d %s; want 400", name, code, body)
		}
	}
}

func TestSession_TokenExpired_ClientReauthenticates(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	bob := newClient(t, "bob")
	data := sealed(t, "bob", "alice", 100)
	if err := bob.Send(context.Background(), d.endpoint(t), message("one.pgp", data)); err != nil {
		t.Fatal(err)
	}
	d.clock.Advance(TokenLifetime + time.Minute) // the server's clock only: bob still trusts his token
	if err := bob.Send(context.Background(), d.endpoint(t), message("two.pgp", data)); err != nil {
		t.Fatalf("Send after the token expired: %v", err)
	}
	if n := d.count.get("POST /dibs/v1/session"); n != 2 {
		t.Fatalf("%d sessions opened, want 2", n)
	}
	if got := names(t, d.spool, queue.Incoming); len(got) != 2 {
		t.Fatalf("incoming = %v", got)
	}
}

// lost401 is a transport on which a 401 answer never arrives: the connection is reset
// first, as when a restarted server refuses an old token and closes the connection while
// a large upload is still going (the client wrote on, and its write failed).
type lost401 struct{ rt http.RoundTripper }

func (l lost401) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		return nil, errors.New("write: connection reset by peer")
	}
	return resp, err
}

func TestSession_TokenRefusedConnectionReset_NextSendOpensSession(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	bob := &Client{ID: id(t, "bob"), HTTP: &http.Client{Transport: lost401{tr}}}
	data := sealed(t, "bob", "alice", 100)
	if err := bob.Send(context.Background(), d.endpoint(t), message("one.pgp", data)); err != nil {
		t.Fatal(err)
	}
	d.clock.Advance(TokenLifetime + time.Minute) // the server forgot the session, as after a restart
	if err := bob.Send(context.Background(), d.endpoint(t), message("two.pgp", data)); err == nil || queue.IsPermanent(err) {
		t.Fatalf("Send whose 401 was lost = %v; want a temporary error", err)
	}
	if err := bob.Send(context.Background(), d.endpoint(t), message("two.pgp", data)); err != nil {
		t.Fatalf("the next Send kept the refused token: %v", err)
	}
	if got := names(t, d.spool, queue.Incoming); len(got) != 2 {
		t.Fatalf("incoming = %v", got)
	}
}

func TestSession_PeerDropped_TokenStopsWorking(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	tok := rawSession(t, d.url, id(t, "bob"))
	d.peerMu.Lock()
	delete(d.peers, fp(t, "bob"))
	d.peerMu.Unlock()
	if code, _ := do(t, "GET", d.url+"/dibs/v1/files", tok, nil); code != 403 {
		t.Fatalf("list by a dropped peer: %d, want 403", code)
	}
}

func TestSend_ServerUnreachable_Temporary(t *testing.T) {
	hs := httptest.NewServer(http.NotFoundHandler())
	addr := hs.URL
	hs.Close()
	bob := newClient(t, "bob")
	err := bob.Send(context.Background(), queue.Endpoint{Key: string(fp(t, "alice")), Addr: addr}, message("x.pgp", []byte("x")))
	if err == nil || queue.IsPermanent(err) {
		t.Fatalf("Send to a closed port = %v; want a temporary error", err)
	}
	if _, err := bob.Poll(context.Background(), queue.Endpoint{Addr: addr}, (&memSink{}).sink); err == nil || queue.IsPermanent(err) {
		t.Fatalf("Poll of a closed port = %v; want a temporary error", err)
	}
	if !strings.HasPrefix(err.Error(), "relay: send x.pgp to ") {
		t.Errorf("error %q lacks the package and operation", err)
	}
}

func TestSend_ServerError_Temporary(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/dibs/v1/challenge" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		http.NotFound(w, r)
	}))
	defer hs.Close()
	err := newClient(t, "bob").Send(context.Background(), queue.Endpoint{Key: string(fp(t, "alice")), Addr: hs.URL}, message("x.pgp", []byte("x")))
	if err == nil || queue.IsPermanent(err) {
		t.Fatalf("Send when the server answers 503 = %v; want a temporary error", err)
	}
}

func TestAuthTable_ChallengesBounded(t *testing.T) {
	a := newAuthTable()
	now := time.Now()
	first := a.newNonce(now)
	for range maxNonces + 100 {
		a.newNonce(now)
	}
	if a.order.Len() > maxNonces || len(a.nonces) > maxNonces {
		t.Fatalf("%d challenges held, at most %d allowed", len(a.nonces), maxNonces)
	}
	if a.useNonce(first, now) {
		t.Fatal("the oldest challenge survived a flood")
	}
	late := a.newNonce(now)
	if !a.useNonce(late, now) || a.useNonce(late, now) {
		t.Fatal("a fresh challenge is not usable exactly once")
	}
	a.sweep(now.Add(NonceLifetime))
	if len(a.nonces) != 0 {
		t.Fatalf("%d challenges left after they all expired", len(a.nonces))
	}
}

func TestAuthTable_SessionsBoundedPerKey(t *testing.T) {
	a := newAuthTable()
	now := time.Now()
	key := pgpmsg.Fingerprint(strings.Repeat("AB", 20))
	first, _ := a.newToken(key, now)
	for range maxTokensPerKey {
		a.newToken(key, now)
	}
	if len(a.sessions) != maxTokensPerKey {
		t.Fatalf("%d sessions for one key, want %d", len(a.sessions), maxTokensPerKey)
	}
	if _, ok := a.lookup(first, now); ok {
		t.Fatal("the oldest session survived")
	}
	tok, _ := a.newToken(key, now)
	if got, ok := a.lookup(tok, now); !ok || got != key {
		t.Fatal("a fresh token does not work")
	}
	if _, ok := a.lookup(tok, now.Add(TokenLifetime)); ok {
		t.Fatal("an expired token works")
	}
	a.sweep(now.Add(TokenLifetime))
	if len(a.sessions) != 0 || len(a.byKey) != 0 {
		t.Fatalf("%d sessions left after they all expired", len(a.sessions))
	}
}

func TestPoll_StalledDownload_GivesUpTemporarily(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	put(t, d.spool, queue.Outgoing("bob"), "slow.pgp", bytes.Repeat([]byte("x"), 1000))
	stall := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" && r.URL.Path == "/dibs/v1/files/slow.pgp" {
			w.Header().Set("Content-Length", "1000")
			w.Write([]byte("xxxxxxxxxx"))
			w.(http.Flusher).Flush()
			<-r.Context().Done() // then nothing more, until the client gives up
			return
		}
		d.srv.ServeHTTP(w, r)
	})
	hs := httptest.NewServer(stall)
	defer hs.Close()
	bob := newClient(t, "bob")
	bob.IdleTimeout = 200 * time.Millisecond
	s := &memSink{}
	start := time.Now()
	n, err := bob.Poll(context.Background(), queue.Endpoint{Addr: hs.URL}, s.sink)
	if n != 0 || !errors.Is(err, errStalled) || queue.IsPermanent(err) {
		t.Fatalf("Poll of a stalled download = %d, %v; want a temporary stall error", n, err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("gave up after %v", time.Since(start))
	}
	if got := names(t, d.spool, queue.Outgoing("bob")); len(got) != 1 {
		t.Fatalf("outgoing/bob = %v, want the file kept", got)
	}
}

func TestSpoolStore_IncomingFull_507Temporary(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	data := sealed(t, "bob", "alice", 1000)
	d.store.MaxIncoming = int64(len(data)) * 3 / 2
	bob := newClient(t, "bob")
	if err := bob.Send(context.Background(), d.endpoint(t), message("a.pgp", data)); err != nil {
		t.Fatal(err)
	}
	err := bob.Send(context.Background(), d.endpoint(t), message("b.pgp", data))
	if !errors.Is(err, ErrOverQuota) || queue.IsPermanent(err) {
		t.Fatalf("deposit into a full incoming/ = %v; want a temporary ErrOverQuota", err)
	}
	if _, err := drainIncoming(context.Background(), d.spool, (&memSink{}).sink); err != nil {
		t.Fatal(err)
	}
	if err := bob.Send(context.Background(), d.endpoint(t), message("b.pgp", data)); err != nil {
		t.Fatalf("deposit once incoming/ was processed: %v", err)
	}
}
