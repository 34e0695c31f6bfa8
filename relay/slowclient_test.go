package relay

// Slow clients on real loopback connections: a body trickled a byte at a time, a download
// never read. The server's deadlines are set short, so that the tests run in seconds;
// they assert only that a connection ends long before a generous limit, never how soon.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/queue"
)

// trickler is a slowloris client: it sends a request's head at once, then its body a
// chunk at a time, on a raw connection.
type trickler struct {
	conn net.Conn
	done chan struct{} // closed when the writer stops
}

// trickle sends head to the server at url, then chunk every every, at most n times or until
// the server stops taking them. The connection is closed when the test ends.
func trickle(t *testing.T, url, head string, chunk []byte, every time.Duration, n int) *trickler {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &trickler{conn: c, done: make(chan struct{})}
	t.Cleanup(func() { c.Close(); <-tr.done })
	if _, err := io.WriteString(c, head); err != nil {
		close(tr.done)
		t.Fatal(err)
	}
	go func() {
		defer close(tr.done)
		for range n {
			time.Sleep(every)
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	return tr
}

// closedWithin reads what the server sends until it closes the connection and returns
// the answer's status line; it fails the test if the connection is still open after limit.
func (tr *trickler) closedWithin(t *testing.T, limit time.Duration) string {
	t.Helper()
	tr.conn.SetReadDeadline(time.Now().Add(limit))
	b, err := io.ReadAll(tr.conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still holds the connection after %s (it sent %q)", limit, b)
	}
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line
}

// slowSession starts a session request whose body comes at a byte every 100 ms, for a
// minute at most.
func slowSession(t *testing.T, url string) *trickler {
	head := "POST /dibs/v1/session HTTP/1.1\r\nHost: " + strings.TrimPrefix(url, "http://") +
		"\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{"
	return trickle(t, url, head, []byte(" "), 100*time.Millisecond, 600)
}

func TestSlowClient_SessionBodyTrickled_CutOffAfterRequestTimeout(t *testing.T) {
	d := newDaemonOpts(t, ServerOptions{RequestTimeout: 300 * time.Millisecond}, "alice", "bob")
	if got := slowSession(t, d.url).closedWithin(t, 20*time.Second); !strings.HasPrefix(got, "HTTP/1.1 408") {
		t.Errorf("a trickled session request was answered %q, want 408", got)
	}
}

func TestSlowClient_DepositTrickled_CutOffAfterItsSizeAllows(t *testing.T) {
	// 2000 bytes at 1000 bytes/s at least: 0.3 s + 3 s. The client sends 10 bytes/s.
	d := newDaemonOpts(t, ServerOptions{RequestTimeout: 300 * time.Millisecond,
		MinTransferRate: 1000, TransferGrace: 300 * time.Millisecond}, "alice", "bob")
	tok := rawSession(t, d.url, id(t, "bob"))
	path := "/dibs/v1/files/" + string(fp(t, "alice")) + "/slow.pgp"
	head := fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: %s\r\n%s"+
		"Content-Length: 2000\r\n\r\n", path, strings.TrimPrefix(d.url, "http://"), rawAuth(t, tok, "PUT", path, 2000))
	got := trickle(t, d.url, head, []byte{0}, 100*time.Millisecond, 600).closedWithin(t, 30*time.Second)
	if !strings.HasPrefix(got, "HTTP/1.1 408") {
		t.Errorf("a trickled deposit was answered %q, want 408", got)
	}
	if got := names(t, d.spool, queue.Incoming); len(got) != 0 {
		t.Errorf("incoming/ holds %v after a deposit that never arrived", got)
	}
}

// pacedReader gives its data in chunks, pausing before each.
type pacedReader struct {
	data  []byte
	chunk int
	pause time.Duration
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(p.pause)
	n := copy(b[:min(len(b), p.chunk)], p.data)
	p.data = p.data[n:]
	return n, nil
}

// A deposit that keeps above the minimum rate gets the time its size needs, not only the
// RequestTimeout of small requests.
func TestSlowClient_DepositAboveMinRate_Accepted(t *testing.T) {
	d := newDaemonOpts(t, ServerOptions{RequestTimeout: 200 * time.Millisecond,
		MinTransferRate: 1000, TransferGrace: time.Second}, "alice", "bob")
	tok := rawSession(t, d.url, id(t, "bob"))
	data := sealed(t, "bob", "alice", 2000)
	// Five chunks, 150 ms apart: 0.75 s, over RequestTimeout; the allowance is 1 s + 3 s or more.
	body := &pacedReader{data: data, chunk: len(data)/5 + 1, pause: 150 * time.Millisecond}
	req, err := http.NewRequest("PUT", d.url+"/dibs/v1/files/"+string(fp(t, "alice"))+"/paced.pgp", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(data))
	signRaw(t, req, tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("paced deposit: %d %s, want 201", resp.StatusCode, b)
	}
	if got := names(t, d.spool, queue.Incoming); len(got) != 1 {
		t.Errorf("incoming/ holds %v, want paced.pgp", got)
	}
}

// While slow clients hang on to their connections, a peer still pushes and pulls.
func TestSlowClients_PeerStillServed(t *testing.T) {
	d := newDaemonOpts(t, ServerOptions{RequestTimeout: 5 * time.Second, MaxUnauthenticated: 8}, "alice", "bob")
	var slow []*trickler
	for range 4 {
		slow = append(slow, slowSession(t, d.url))
	}
	time.Sleep(200 * time.Millisecond) // let them reach the server
	bob := newClient(t, "bob")
	if err := bob.Send(context.Background(), d.endpoint(t), message("m1.pgp", sealed(t, "bob", "alice", 3000))); err != nil {
		t.Fatalf("bob's push while slow clients hang: %v", err)
	}
	put(t, d.spool, queue.Outgoing("bob"), "m2.pgp", sealed(t, "alice", "bob", 3000))
	var sink memSink
	if n, err := bob.Poll(context.Background(), queue.Endpoint{Peer: "alice", Key: string(fp(t, "bob")), Addr: d.url}, sink.sink); err != nil || n != 1 {
		t.Fatalf("bob's poll while slow clients hang = %d, %v; want 1, nil", n, err)
	}
	for _, s := range slow {
		s.closedWithin(t, 30*time.Second)
	}
}

// Slow session bodies take no slot of the unauthenticated requests: more of them than
// there are slots leave a peer free to open its session (issue 17: 64 of them, a byte
// every 2 s, kept every peer of a daemon or a relay from pushing or polling).
func TestSlowSessionBodies_HoldNoSlot(t *testing.T) {
	d := newDaemonOpts(t, ServerOptions{RequestTimeout: 5 * time.Second, MaxUnauthenticated: 2}, "alice", "bob")
	var slow []*trickler
	for range 4 {
		slow = append(slow, slowSession(t, d.url))
	}
	// Bodies that say they are larger than a session request can be are refused unread.
	var large []*trickler
	for range 2 {
		head := "POST /dibs/v1/session HTTP/1.1\r\nHost: " + strings.TrimPrefix(d.url, "http://") +
			"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
		large = append(large, trickle(t, d.url, head, []byte(" "), 100*time.Millisecond, 600))
	}
	time.Sleep(300 * time.Millisecond) // let them reach the server
	bob := newClient(t, "bob")
	if err := bob.Send(context.Background(), d.endpoint(t), message("m1.pgp", sealed(t, "bob", "alice", 3000))); err != nil {
		t.Fatalf("bob's push while 6 slow session bodies hang, with 2 slots: %v", err)
	}
	for _, s := range large {
		if got := s.closedWithin(t, 30*time.Second); !strings.HasPrefix(got, "HTTP/1.1 413") {
			t.Errorf("a session request of 100,000 bytes was answered %q, want 413", got)
		}
	}
	for _, s := range slow {
		s.closedWithin(t, 30*time.Second)
	}
}

// sessionStarted sends a well-formed session request for bob (with a bad signature) on
// its own connection and returns a channel of its status code.
func sessionStarted(t *testing.T, url string) <-chan int {
	var ch challengeResponse
	resp, err := http.Post(url+"/dibs/v1/challenge", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&ch)
	resp.Body.Close()
	body, _ := json.Marshal(sessionRequest{Key: string(fp(t, "bob")), Nonce: ch.Nonce, Signature: "AAAA",
		Server: strings.TrimPrefix(url, "http://")})
	code := make(chan int, 1)
	go func() {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Post(url+"/dibs/v1/session", "application/json", bytes.NewReader(body))
		if err != nil {
			code <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		code <- resp.StatusCode
	}()
	return code
}

// Requests being worked on take the slots: one more is answered 503 with a Retry-After,
// and the slots are free again once the work is done.
func TestUnauthenticated_OverCap_503WithRetryAfter(t *testing.T) {
	d := newDaemonOpts(t, ServerOptions{MaxUnauthenticated: 2}, "alice", "bob")
	challenge := func() *http.Response {
		resp, err := http.Post(d.url+"/dibs/v1/challenge", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// Two session requests block in their handler, where it asks the store for bob's key.
	d.peerMu.Lock()
	busy := []<-chan int{sessionStarted(t, d.url), sessionStarted(t, d.url)}
	var resp *http.Response
	for range 100 {
		if resp = challenge(); resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.peerMu.Unlock()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("challenge with both slots taken: %d, Retry-After %q; want 503, 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	for _, b := range busy {
		if code := <-b; code != http.StatusForbidden {
			t.Errorf("a session request with a bad signature: %d, want 403", code)
		}
	}
	if resp := challenge(); resp.StatusCode != http.StatusOK {
		t.Fatalf("challenge once the sessions were answered: %d, want 200", resp.StatusCode)
	}
}

// A client that asks for a file and does not read it is cut off once the file's
// transfer allowance is over, and the server's goroutine with it.
func TestSlowReader_DownloadCutOff(t *testing.T) {
	// 12 MB at 8 MiB/s at least: 0.2 s + 2 s. More than the kernel buffers of the server's
	// socket (tcp_wmem's maximum is commonly 4 MB) and the client's (set to 64 KiB).
	const size = 12_000_000
	d := newDaemonOpts(t, ServerOptions{MinTransferRate: 8 << 20, TransferGrace: 200 * time.Millisecond}, "alice", "bob")
	put(t, d.spool, queue.Outgoing("bob"), "big.pgp", make([]byte, size))
	tok := rawSession(t, d.url, id(t, "bob"))
	c, err := net.Dial("tcp", strings.TrimPrefix(d.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	fmt.Fprintf(c, "GET /dibs/v1/files/big.pgp HTTP/1.1\r\nHost: %s\r\n%s\r\n",
		strings.TrimPrefix(d.url, "http://"), rawAuth(t, tok, "GET", "/dibs/v1/files/big.pgp", 0))
	time.Sleep(5 * time.Second) // read nothing
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer's head: %v", err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still holds the connection 30 s later, after %d bytes", n)
	}
	if err == nil || n >= size {
		t.Errorf("the stalled client still got %d bytes of %d (%v), want the download cut off", n, size, err)
	}
}
