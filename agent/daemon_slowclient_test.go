package agent_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/testenv"
)

// A client that trickles the body of a session request to a daemon, a byte every 100 ms,
// is cut off after relay.DefaultRequestTimeout (10 s); the daemon serves its peers
// meanwhile.
func TestDaemon_SlowClientCutOff_PeersStillServed(t *testing.T) {
	env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice"}, testenv.NodeSpec{Name: "bob"}))
	addr := strings.TrimPrefix(env.Node("alice").URL, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /dibs/v1/session HTTP/1.1\r\nHost: %s\r\nContent-Length: 4000\r\n\r\n{", addr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 900 { // 90 s at most
			time.Sleep(100 * time.Millisecond)
			if _, err := c.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	defer func() { c.Close(); <-done }()
	helloBothWays(t, env, "alice", "bob")
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	b, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the daemon still holds a trickling client's connection after 60 s (it sent %q)", b)
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 408") {
		t.Errorf("the daemon answered a trickled session request %q, want 408", b)
	}
}
