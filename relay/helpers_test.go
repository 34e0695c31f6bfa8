package relay

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits a little for goroutines started by this package's code to end,
// and describes those that remain.
func leakedGoroutines() string {
	var stacks string
	for range 50 {
		buf := make([]byte, 1<<20)
		all := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
		var ours []string
		for _, g := range all {
			if strings.Contains(g, "dibs/relay.") && !strings.Contains(g, "relay.TestMain") &&
				!strings.Contains(g, "relay.leakedGoroutines") {
				ours = append(ours, g)
			}
		}
		stacks = strings.Join(ours, "\n\n")
		if stacks == "" {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
	return stacks
}

// fakeClock is a settable clock for servers.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func id(t testing.TB, name string) *pgpmsg.Identity { return pgpmsgtest.Identity(t, name) }
func fp(t testing.TB, name string) pgpmsg.Fingerprint {
	return pgpmsgtest.Identity(t, name).Fingerprint()
}

// newClient returns a Client for the fixture name, with its own connection pool that is
// closed when the test ends.
func newClient(t testing.TB, name string) *Client {
	tr := &http.Transport{ExpectContinueTimeout: time.Second, MaxIdleConnsPerHost: 8}
	t.Cleanup(tr.CloseIdleConnections)
	return &Client{ID: id(t, name), HTTP: &http.Client{Transport: tr}}
}

// counter counts the requests a handler sees, by "METHOD path".
type counter struct {
	h http.Handler
	n sync.Map // string → *atomic.Int64
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v, _ := c.n.LoadOrStore(r.Method+" "+r.URL.Path, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	c.h.ServeHTTP(w, r)
}

func (c *counter) get(key string) int64 {
	v, ok := c.n.Load(key)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// daemon is one node's relay endpoint: its spool, served for its peers.
type daemon struct {
	self   string
	spool  *queue.Spool
	store  *SpoolStore
	srv    *Server
	clock  *fakeClock
	count  *counter
	url    string
	peers  map[pgpmsg.Fingerprint]string
	peerMu sync.Mutex
}

// newDaemon serves self's spool for the named peers on 127.0.0.1. SelfKeyIDs is set, so
// deposits must be sealed to self.
func newDaemon(t testing.TB, self string, peers ...string) *daemon {
	return newDaemonOpts(t, ServerOptions{}, self, peers...)
}

// newDaemonOpts is newDaemon with a server tuned by opts; the test sets its version, key,
// clock and error report.
func newDaemonOpts(t testing.TB, opts ServerOptions, self string, peers ...string) *daemon {
	sp, err := queue.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{self: self, spool: sp, clock: newClock(), peers: make(map[pgpmsg.Fingerprint]string)}
	for _, p := range peers {
		d.peers[fp(t, p)] = p
	}
	keys := pgpmsgtest.Keyring(t, pgpmsgtest.Names...)
	d.store = &SpoolStore{
		Spool: sp, Self: fp(t, self), SelfKeyIDs: id(t, self).EncryptionKeyIDs(),
		Peer: func(f pgpmsg.Fingerprint) (string, *pgpmsg.Key, bool) {
			d.peerMu.Lock()
			name, ok := d.peers[f]
			d.peerMu.Unlock()
			if !ok {
				return "", nil, false
			}
			k, _ := keys.Lookup(f)
			return name, k, true
		},
	}
	opts.Version, opts.Key, opts.Now = "test", fp(t, self), d.clock.Now
	opts.OnError = func(err error) { t.Errorf("server error: %v", err) }
	d.srv = NewServer(d.store, opts)
	d.count = &counter{h: d.srv}
	hs := httptest.NewServer(d.count)
	t.Cleanup(hs.Close)
	d.url = hs.URL
	return d
}

func (d *daemon) endpoint(t testing.TB) queue.Endpoint {
	return queue.Endpoint{Peer: d.self, Key: string(fp(t, d.self)), Addr: d.url}
}

// relayServer is a relay_server: a DirStore in a temp dir with an allow file.
type relayServer struct {
	dir, allow string
	store      *DirStore
	srv        *Server
	clock      *fakeClock
	url        string
}

func newRelay(t testing.TB, opts DirOptions, allowed ...string) *relayServer {
	dir := t.TempDir()
	r := &relayServer{dir: filepath.Join(dir, "store"), allow: filepath.Join(dir, "allow.asc"), clock: newClock()}
	writeAllow(t, r.allow, allowed...)
	opts.AllowFile = r.allow
	s, err := OpenDirStore(r.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.store = s
	r.srv = NewServer(s, ServerOptions{Version: "test", Now: r.clock.Now,
		OnError: func(err error) { t.Errorf("server error: %v", err) }})
	hs := httptest.NewServer(r.srv)
	t.Cleanup(hs.Close)
	r.url = hs.URL
	return r
}

// writeAllow writes the armored public keys of names into path, as concatenated
// export_key outputs.
func writeAllow(t testing.TB, path string, names ...string) {
	var b bytes.Buffer
	for _, n := range names {
		if err := pgpmsgtest.Key(t, n).WriteArmored(&b); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sealed is a real dibs message from from to to with size bytes of payload (cached).
func sealed(t testing.TB, from, to string, size int) []byte {
	return pgpmsgtest.Sealed(t, from, to, size)
}

func message(name string, data []byte) queue.Message {
	return queue.Message{Name: name, Size: int64(len(data)),
		Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

// put places data in box of sp.
func put(t testing.TB, sp *queue.Spool, box queue.Box, name string, data []byte) {
	t.Helper()
	if _, err := sp.Put(box, name, bytes.NewReader(data), 0); err != nil {
		t.Fatal(err)
	}
}

// names lists the file names in box.
func names(t testing.TB, sp *queue.Spool, box queue.Box) []string {
	t.Helper()
	es, err := sp.List(box)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

// memSink collects files in memory.
type memSink struct {
	mu    sync.Mutex
	files map[string][]byte
	fail  error
}

func (m *memSink) sink(name string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if m.fail != nil {
		return m.fail
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.files == nil {
		m.files = map[string][]byte{}
	}
	m.files[name] = b
	return nil
}

// rawSession opens a session by hand and returns its token.
func rawSession(t testing.TB, url string, who *pgpmsg.Identity) string {
	t.Helper()
	c := newClient(t, "alice")
	c.ID = who
	base, err := baseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.authenticate(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	rawMu.Lock()
	rawSessions[tok.token] = rawOwner{who, tok.seq}
	rawMu.Unlock()
	return tok.token
}

// The owners of the sessions rawSession opened, so that raw requests can be signed.
var (
	rawMu       sync.Mutex
	rawSessions = map[string]rawOwner{}
)

type rawOwner struct {
	id  *pgpmsg.Identity
	seq *atomic.Uint64
}

// rawAuth returns the header lines that authorize a request in token's session (opened
// by rawSession): the token, and its owner's signature over the request.
func rawAuth(t testing.TB, token, method, path string, length int64) string {
	t.Helper()
	rawMu.Lock()
	o, ok := rawSessions[token]
	rawMu.Unlock()
	if !ok {
		return "Authorization: Bearer " + token + "\r\n"
	}
	seq := o.seq.Add(1)
	sig, err := o.id.SignDetached(RequestStatement(token, seq, method, path, length))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("Authorization: Bearer %s\r\n%s: %d\r\n%s: %s\r\n", token, HeaderSeq, seq, HeaderSignature, base64.StdEncoding.EncodeToString(sig))
}

// signRaw authorizes req in token's session as rawAuth does.
func signRaw(t testing.TB, req *http.Request, token string) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimSpace(rawAuth(t, token, req.Method, protocolPath(req.URL), req.ContentLength)), "\r\n") {
		k, v, _ := strings.Cut(l, ": ")
		req.Header.Set(k, v)
	}
}
