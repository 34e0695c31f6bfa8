package relay

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/dibs-backup/dibs/queue"
)

// sniffer is someone on a plain HTTP path: a reverse proxy that forwards every request
// (under a path prefix it strips, as a TLS-terminating front end would) and keeps a copy
// of what it saw.
type sniffer struct {
	mu   sync.Mutex
	seen []*http.Request
	url  string // the base URL clients use: the proxy and its prefix
}

func newSniffer(t *testing.T, target string) *sniffer {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	s := &sniffer{}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		pr.Out.Host = pr.In.Host // the session signature names the host the client addressed
		s.mu.Lock()
		s.seen = append(s.seen, pr.In.Clone(context.Background()))
		s.mu.Unlock()
	}}
	hs := httptest.NewServer(http.StripPrefix("/front", rp))
	t.Cleanup(hs.Close)
	s.url = hs.URL + "/front"
	return s
}

// last returns the last request seen with method whose path ends in suffix.
func (s *sniffer) last(t *testing.T, method, suffix string) *http.Request {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.seen) - 1; i >= 0; i-- {
		if r := s.seen[i]; r.Method == method && strings.HasSuffix(r.URL.Path, suffix) {
			return r
		}
	}
	t.Fatalf("no %s …%s went through", method, suffix)
	return nil
}

// replay sends to the daemon a request with the captured headers of got (token,
// sequence number, signature), with method and path of its own choosing.
func replay(t *testing.T, base string, got *http.Request, method, path string) int {
	t.Helper()
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"Authorization", HeaderSeq, HeaderSignature} {
		req.Header.Set(h, got.Header.Get(h))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A session token seen on a plain HTTP path is no bearer token (issue 17 item 9): alone it
// opens nothing, and the signed requests seen with it can be neither replayed nor turned
// into other requests. The owner's own requests go through a proxy that strips a path
// prefix, as before.
func TestSession_SniffedTokenOpensNothing(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	put(t, d.spool, queue.Outgoing("bob"), "first.pgp", []byte("for bob"))
	mitm := newSniffer(t, d.url)
	bob := newClient(t, "bob")
	s := &memSink{}
	if n, err := bob.Poll(context.Background(), queue.Endpoint{Addr: mitm.url}, s.sink); n != 1 || err != nil {
		t.Fatalf("bob's Poll through the proxy: %d, %v", n, err)
	}
	put(t, d.spool, queue.Outgoing("bob"), "second.pgp", []byte("for bob too"))
	list, del := mitm.last(t, "GET", "/files"), mitm.last(t, "DELETE", "/first.pgp")
	token := strings.TrimPrefix(list.Header.Get("Authorization"), "Bearer ")
	files := "/dibs/v1/files"

	if code, _ := do(t, "GET", d.url+files, "", nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	req, _ := http.NewRequest("GET", d.url+files, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("the sniffed token alone lists bob's files: %d, want 401", resp.StatusCode)
	}
	if code := replay(t, d.url, list, "GET", files); code != 401 {
		t.Errorf("the sniffed list request replayed: %d, want 401", code)
	}
	if code := replay(t, d.url, del, "DELETE", files+"/second.pgp"); code != 401 {
		t.Errorf("the sniffed DELETE turned on another file: %d, want 401", code)
	}
	if code := replay(t, d.url, del, "GET", files+"/second.pgp"); code != 401 {
		t.Errorf("the sniffed DELETE turned into a GET: %d, want 401", code)
	}
	if got := names(t, d.spool, queue.Outgoing("bob")); len(got) != 1 || got[0] != "second.pgp" {
		t.Fatalf("outgoing/bob = %v; want second.pgp still waiting", got)
	}
	// Bob's own session goes on.
	if n, err := bob.Poll(context.Background(), queue.Endpoint{Addr: mitm.url}, s.sink); n != 1 || err != nil {
		t.Fatalf("bob's second Poll: %d, %v", n, err)
	}
}

// A node behind a corporate proxy (HTTP_PROXY, a forward proxy that sees and passes on
// every request) still deposits and collects: the signature is in headers, bound to
// no connection.
func TestClient_ThroughForwardProxy(t *testing.T) {
	d := newDaemon(t, "alice", "bob")
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.Host = pr.In.Host // an absolute request URI: pass it on as it is
	}})
	t.Cleanup(proxy.Close)
	pu, _ := url.Parse(proxy.URL)
	bob := newClient(t, "bob")
	bob.HTTP = &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	if err := bob.Send(context.Background(), d.endpoint(t), message("via-proxy.pgp", sealed(t, "bob", "alice", 2000))); err != nil {
		t.Fatalf("deposit through a forward proxy: %v", err)
	}
	put(t, d.spool, queue.Outgoing("bob"), "back.pgp", []byte("for bob"))
	if n, err := bob.Poll(context.Background(), queue.Endpoint{Addr: d.url}, (&memSink{}).sink); n != 1 || err != nil {
		t.Fatalf("poll through a forward proxy: %d, %v", n, err)
	}
	if got := names(t, d.spool, queue.Incoming); len(got) != 1 {
		t.Fatalf("incoming = %v", got)
	}
}

func TestSession_SeqWindow(t *testing.T) {
	var s session
	for _, c := range []struct {
		seq uint64
		ok  bool
	}{
		{0, false}, {1, true}, {1, false}, {3, true}, {2, true}, {2, false}, {3, false},
		{1000, true}, {4, true}, {4, false}, {1000 + seqWindow, true}, {1000, false},
		{1001, true}, {1001, false}, {1000 + seqWindow, false}, {5000, true}, {4999, true}, {5000 - seqWindow, false},
	} {
		if got := s.useSeq(c.seq); got != c.ok {
			t.Fatalf("seq %d after the ones above: %v, want %v", c.seq, got, c.ok)
		}
	}
}
