package main

// Tests of `dibs relay_server` with real processes: the relay in one process, each node a
// DIBS_DIR driven by separate dibs commands (cron style), as on a NAT'd machine. The
// binary comes from TestMain (cli_test.go).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

// relayHost is a name that only the test proxy resolves: a node reaches the relay under
// it only through HTTPS_PROXY / HTTP_PROXY. (Go never proxies loopback addresses.)
const relayHost = "relay.dibs.invalid"

// relayNode is one DIBS_DIR whose commands run with Env added to a proxy-free environment.
type relayNode struct {
	*clirun.Node
	key string // its export_key output
}

func newRelayNode(t *testing.T, root, name string) *relayNode {
	t.Helper()
	n := &relayNode{Node: &clirun.Node{T: t, Bin: dibsBin, Name: name, Dir: filepath.Join(root, name), NoProxy: true},
		key: filepath.Join(root, name+".asc")}
	n.OK("init", "--key", name+".dibs@relay.invalid")
	n.OK("set_option", "--name", "talkRetryDelay", "--value", "0")
	n.OK("export_key", "--out", n.key)
	return n
}

// link makes p a peer of n that is reached, and heard from, only through relay url.
func (n *relayNode) link(p *relayNode, url string) {
	n.T.Helper()
	n.OK("add_peer", "--peer", p.Name, "--email", p.Name+"@relay.invalid", "--local_quota", "1g", "--remote_quota", "1g",
		"--talk", "relay", "--listen", "relay", "--relay", url, "--key_file", p.key)
}

// peerRow is n's show_database --json row of peer.
func (n *relayNode) peerRow(peer string) map[string]any {
	n.T.Helper()
	var db map[string][]map[string]any
	out := n.OK("show_database", "--json", "--only", "peers")
	if err := json.Unmarshal([]byte(out), &db); err != nil {
		n.T.Fatalf("%s: show_database --json: %v\n%s", n.Name, err, out)
	}
	for _, r := range db["peers"] {
		if r["peer"] == peer {
			return r
		}
	}
	n.T.Fatalf("%s: show_database --json lists no peer %s:\n%s", n.Name, peer, out)
	return nil
}

// peerCell is the cell of column col in peer's row of the text show_database --only peers
// --wide: the table is aligned, so a cell starts where its header does.
func (n *relayNode) peerCell(peer, col string) string {
	n.T.Helper()
	out := n.OK("show_database", "--only", "peers", "--wide")
	lines := strings.Split(out, "\n")
	if len(lines) < 3 {
		n.T.Fatalf("%s: show_database --only peers:\n%s", n.Name, out)
	}
	header := lines[1]
	at := strings.Index(" "+header+" ", " "+col+" ")
	if at < 0 {
		n.T.Fatalf("%s: show_database --only peers has no column %s:\n%s", n.Name, col, out)
	}
	for _, l := range lines[2:] {
		if strings.HasPrefix(l, peer+" ") && len(l) > at {
			cell, _, _ := strings.Cut(l[at:], " ")
			return cell
		}
	}
	n.T.Fatalf("%s: show_database --only peers has no row %s:\n%s", n.Name, peer, out)
	return ""
}

// startRelay runs dibs relay_server with args and waits until it listens on port.
func startRelay(t *testing.T, port int, args ...string) *clirun.Proc {
	t.Helper()
	cmd := exec.Command(dibsBin, append([]string{"relay_server"}, args...)...)
	cmd.Env = clirun.CleanEnv()
	return clirun.StartProc(t, "relay_server", cmd, port)
}

// stopRelay sends SIGTERM and checks that the server stops cleanly, saying so.
func stopRelay(t *testing.T, r *clirun.Proc) {
	t.Helper()
	if err := r.Stop(t, syscall.SIGTERM, 20*time.Second); err != nil {
		t.Errorf("relay_server on SIGTERM: %v; stderr: %s", err, r.Stderr.String())
	}
	if !strings.Contains(r.Stdout.String(), "dibs relay stopped") {
		t.Errorf("relay_server did not say it stopped: stdout %q", r.Stdout.String())
	}
}

// testProxy is a tiny forward proxy (HTTP_PROXY: absolute-URI requests) and tunnel
// (HTTPS_PROXY: CONNECT) that knows one name, relayHost, as the relay's loopback address.
type testProxy struct {
	srv              *httptest.Server
	name, target     string // relayHost:port, 127.0.0.1:port
	mu               sync.Mutex
	connects, fwds   int
	refused          []string
	forward          *httputil.ReverseProxy
	tunnels          sync.WaitGroup
	closeTunnelsOnce sync.Once
}

func newTestProxy(t *testing.T, port int) *testProxy {
	p := &testProxy{name: fmt.Sprintf("%s:%d", relayHost, port), target: fmt.Sprintf("127.0.0.1:%d", port)}
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	p.forward = &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.URL.Host = p.target; pr.Out.Host = p.name },
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0), // a stopped relay is a 502, on purpose
	}
	p.srv = httptest.NewServer(p)
	t.Cleanup(func() { p.srv.Close(); p.tunnels.Wait() })
	return p
}

func (p *testProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if r.Method != http.MethodConnect {
		host = r.URL.Host
	}
	p.mu.Lock()
	if host != p.name {
		p.refused = append(p.refused, r.Method+" "+host)
		p.mu.Unlock()
		http.Error(w, "unknown host", http.StatusBadGateway)
		return
	}
	if r.Method == http.MethodConnect {
		p.connects++
	} else {
		p.fwds++
	}
	p.mu.Unlock()
	if r.Method != http.MethodConnect {
		p.forward.ServeHTTP(w, r)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
	p.tunnels.Add(2)
	pipe := func(dst net.Conn, src io.Reader) {
		defer p.tunnels.Done()
		io.Copy(dst, src)
		dst.(interface{ CloseWrite() error }).CloseWrite()
	}
	go pipe(up, buf.Reader)
	go func() {
		pipe(conn, up)
		conn.Close()
		up.Close()
	}()
}

func (p *testProxy) counts() (connects, forwards int, refused []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connects, p.fwds, append([]string(nil), p.refused...)
}

// selfSignedRelayCert is a CA certificate for relayHost and 127.0.0.1, valid for a day.
func selfSignedRelayCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: relayHost},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{relayHost}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "relay-cert.pem"), filepath.Join(dir, "relay-key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func concatFiles(t *testing.T, dst string, srcs ...string) {
	t.Helper()
	var b []byte
	for _, s := range srcs {
		d, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, d...)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Two NAT'd nodes, which accept no connections and run only cron-style commands, greet
// each other through `dibs relay_server`: directly over HTTP, through an HTTP_PROXY
// forward proxy, and over TLS with a self-signed certificate, directly and through an
// HTTPS_PROXY tunnel. A key that is not in the allow file is refused until it is added there (the
// running relay re-reads it); show_database tells per peer the method that last worked
// and the queue depth; SIGTERM stops the relay cleanly.
func TestRelayServer_TwoNATNodes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tls, proxy bool
	}{
		{"http", false, false},
		{"http_proxy", false, true},
		{"https_self_signed", true, false},
		{"https_proxy_self_signed", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) { relayScenario(t, tc.tls, tc.proxy) })
	}
}

func relayScenario(t *testing.T, useTLS, useProxy bool) {
	root := t.TempDir()
	port := clirun.FreePort(t)
	alice, bob, mallory := newRelayNode(t, root, "alice"), newRelayNode(t, root, "bob"), newRelayNode(t, root, "mallory")
	allow := filepath.Join(root, "allow.asc")
	concatFiles(t, allow, alice.key, bob.key)
	relayDir := filepath.Join(root, "relay")
	args := []string{"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--dir", relayDir, "--allow", allow, "--quota", "50m", "--max_size", "2m"}
	scheme := "http"
	var cert string
	if useTLS {
		var key string
		cert, key = selfSignedRelayCert(t, root)
		args = append(args, "--tls_cert", cert, "--tls_key", key)
		scheme = "https"
	}
	srv := startRelay(t, port, args...)
	// The port opens before the first line is printed: on a loaded machine the line
	// can lag the port by a moment.
	want := scheme + "://127.0.0.1:"
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(srv.Stdout.String(), want) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(srv.Stdout.String(), want) {
		t.Errorf("relay_server's first line %q does not say %s", srv.Stdout.String(), want)
	}
	url := fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
	var proxy *testProxy
	if useProxy {
		proxy = newTestProxy(t, port)
		url = fmt.Sprintf("%s://%s:%d", scheme, relayHost, port)
		v := "HTTP_PROXY=" + proxy.srv.URL
		if useTLS {
			v = "HTTPS_PROXY=" + proxy.srv.URL
		}
		for _, n := range []*relayNode{alice, bob, mallory} {
			n.Env = append(n.Env, v)
		}
	}
	for _, n := range []*relayNode{alice, bob, mallory} {
		n.OK("set_option", "--name", "relayURL", "--value", url)
		if useTLS {
			n.OK("set_option", "--name", "relayCAFile", "--value", cert)
		}
	}
	alice.link(bob, url)
	bob.link(alice, url)
	mallory.link(bob, url)
	bob.link(mallory, url)

	if useProxy { // the relay's name resolves nowhere: without the proxy nothing is delivered
		env := alice.Env
		alice.Env = nil
		if out := alice.OK("send_hello", "--peer", "bob"); !strings.Contains(out, "not delivered") {
			t.Fatalf("alice reached %s without a proxy: %q", url, out)
		}
		alice.Env = env
		if r := alice.peerRow("bob"); r["queue_depth"] != 1.0 || r["last_method"] != "" {
			t.Errorf("alice's HELLO that could not go: queue_depth %v, last_method %q; want 1 and none", r["queue_depth"], r["last_method"])
		}
		if out := alice.OK("send_message"); !strings.Contains(out, "sent 1, waiting 0") {
			t.Fatalf("alice's send_message through the proxy: %q", out)
		}
	} else if out := alice.OK("send_hello", "--peer", "bob"); strings.Contains(out, "not delivered") {
		t.Fatalf("alice's HELLO through the relay: %q", out)
	}
	if got := files(t, filepath.Join(alice.Dir, "outgoing", "bob")); len(got) != 0 {
		t.Fatalf("alice's outgoing/bob still holds %v after a delivery", got)
	}
	if out := bob.OK("poll_passives"); !strings.Contains(out, "received 1") {
		t.Fatalf("bob's poll_passives: %q", out)
	}
	if out := bob.OK("process_message"); !strings.Contains(out, "processed 1, quarantined 0") {
		t.Fatalf("bob's process_message: %q", out)
	}
	if out := bob.OK("send_message"); !strings.Contains(out, "sent 1") {
		t.Fatalf("bob's reply: %q", out)
	}
	if out := alice.OK("poll_passives"); !strings.Contains(out, "received 1") {
		t.Fatalf("alice's poll_passives: %q", out)
	}
	alice.OK("process_message")
	for _, pair := range [][2]*relayNode{{alice, bob}, {bob, alice}} {
		r := pair[0].peerRow(pair[1].Name)
		if r["last_heard"] == nil {
			t.Errorf("%s never heard from %s through the relay", pair[0].Name, pair[1].Name)
		}
		if r["last_method"] != "relay" || r["queue_depth"] != 0.0 {
			t.Errorf("%s's row of %s: last_method %v, queue_depth %v; want relay and 0", pair[0].Name, pair[1].Name, r["last_method"], r["queue_depth"])
		}
		if m, q := pair[0].peerCell(pair[1].Name, "last_method"), pair[0].peerCell(pair[1].Name, "queue_depth"); m != "relay" || q != "0" {
			t.Errorf("%s's show_database text, row %s: last_method %q, queue_depth %q; want relay and 0", pair[0].Name, pair[1].Name, m, q)
		}
	}

	// Mallory's key is not in the allow file: the relay refuses her. That is a matter of
	// the relay's configuration, not of her file: it waits in her spool.
	if out := mallory.OK("send_hello", "--peer", "bob"); !strings.Contains(out, "not delivered") {
		t.Errorf("the relay took a stranger's deposit: %q", out)
	}
	if r := mallory.peerRow("bob"); r["last_method"] != "" || !strings.Contains(fmt.Sprint(r["last_error"]), "403") || r["queue_depth"] != 1.0 {
		t.Errorf("mallory's row of bob after the refusal: last_method %v, last_error %v, queue_depth %v", r["last_method"], r["last_error"], r["queue_depth"])
	}
	if out := bob.OK("poll_passives"); !strings.Contains(out, "received 0") {
		t.Errorf("bob got something from a stranger: %q", out)
	}
	// Her key added to the allow file, the running relay takes her files: the one that
	// waited and a new one.
	concatFiles(t, allow, alice.key, bob.key, mallory.key)
	if out := mallory.OK("send_hello", "--peer", "bob"); strings.Contains(out, "not delivered") {
		t.Errorf("after the allow file named mallory: %q", out)
	}
	if out := bob.OK("poll_passives"); !strings.Contains(out, "received 2") {
		t.Errorf("bob's poll_passives after mallory was allowed: %q", out)
	}
	if out := bob.OK("process_message"); !strings.Contains(out, "processed 2, quarantined 0") {
		t.Errorf("bob's process_message of mallory's HELLOs: %q", out)
	}
	if useProxy {
		c, f, refused := proxy.counts()
		if (useTLS && c == 0) || (!useTLS && f == 0) || len(refused) > 0 {
			t.Errorf("the proxy saw %d CONNECTs, %d forwarded requests, refused %v", c, f, refused)
		}
	}

	stopRelay(t, srv)
	// The relay gone, files wait (temporary failure) and show_database counts them.
	if out := alice.OK("send_hello", "--peer", "bob"); !strings.Contains(out, "not delivered") {
		t.Errorf("a HELLO with the relay stopped: %q", out)
	}
	if r := alice.peerRow("bob"); r["queue_depth"] != 1.0 || r["last_method"] != "relay" || r["last_error"] == "" {
		t.Errorf("alice's row of bob with the relay down: %v", r)
	}
	if q := alice.peerCell("bob", "queue_depth"); q != "1" {
		t.Errorf("alice's show_database text: queue_depth of bob %q, want 1", q)
	}
	for _, n := range []*relayNode{alice, bob} {
		if q := files(t, filepath.Join(n.Dir, "quarantine")); len(q) > 0 {
			t.Errorf("%s quarantined %v", n.Name, q)
		}
	}
	// The relay logs nothing else than its deposits and collections, the refusal and the
	// test's own probes of its port.
	sc := bufio.NewScanner(strings.NewReader(srv.Stderr.String()))
	for sc.Scan() {
		if l := sc.Text(); !strings.Contains(l, "may not") && !strings.Contains(l, "TLS handshake error") &&
			!strings.Contains(l, "msg=deposit door=http") && !strings.Contains(l, "msg=collected door=http") {
			t.Errorf("relay_server logged: %s", l)
		}
	}
}

// A relay over its quota or size limit refuses files; the files wait at the sender.
func TestRelayServer_Limits(t *testing.T) {
	root := t.TempDir()
	port := clirun.FreePort(t)
	alice, bob := newRelayNode(t, root, "alice"), newRelayNode(t, root, "bob")
	allow := filepath.Join(root, "allow.asc")
	concatFiles(t, allow, alice.key, bob.key)
	// A HELLO is a few kB: a quota of 1 byte refuses every one, for now (507, temporary).
	srv := startRelay(t, port, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--dir", filepath.Join(root, "relay"), "--allow", allow, "--quota", "0.001k")
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	alice.OK("set_option", "--name", "relayURL", "--value", url)
	alice.link(bob, url)
	if out := alice.OK("send_hello", "--peer", "bob"); !strings.Contains(out, "not delivered") {
		t.Errorf("a relay with a 1-byte quota took a HELLO: %q", out)
	}
	if r := alice.peerRow("bob"); r["queue_depth"] != 1.0 || !strings.Contains(fmt.Sprint(r["last_error"]), "507") {
		t.Errorf("alice's row of bob after a refusal over quota: %v", r)
	}
	stopRelay(t, srv)

	// --max_size below a HELLO (some 600 bytes): refused for good (413), so the file goes
	// to quarantine.
	// --max_age: a file older than that, left from before, is expired as the relay starts;
	// a younger one stays.
	dir := filepath.Join(root, "relay2")
	sp, err := queue.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	box := queue.Outgoing(bob.fingerprint())
	for _, name := range []string{"old.pgp", "young.pgp"} {
		if _, err := sp.Put(box, name, strings.NewReader("sealed"), 0); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(sp.Dir(box), "old.pgp"), old, old); err != nil {
		t.Fatal(err)
	}
	port = clirun.FreePort(t)
	srv = startRelay(t, port, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--dir", dir, "--allow", allow, "--max_size", "0.1k", "--max_age", "3600")
	url = fmt.Sprintf("http://127.0.0.1:%d", port)
	alice.OK("edit_peer", "--peer", "bob", "--relay", url)
	if out, _, _ := alice.Run("send_message"); !strings.Contains(out, "undeliverable 1") {
		t.Errorf("a relay with --max_size 0.1k and a queued HELLO: %q", out)
	}
	if q := files(t, filepath.Join(alice.Dir, "quarantine")); len(q) == 0 {
		t.Errorf("a file the relay refuses as too large was not quarantined")
	}
	if r := alice.peerRow("bob"); r["queue_depth"] != 0.0 || !strings.Contains(fmt.Sprint(r["last_error"]), "413") {
		t.Errorf("alice's row of bob after a refusal as too large: %v", r)
	}
	var left []string
	for range 100 {
		if left = files(t, sp.Dir(box)); !slices.Contains(left, "old.pgp") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.Equal(left, []string{"young.pgp"}) {
		t.Errorf("after a start with --max_age 3600 the relay holds %v for bob, want young.pgp", left)
	}
	stopRelay(t, srv)
}

// fingerprint is the node's key fingerprint, read from its export_key output.
func (n *relayNode) fingerprint() string {
	n.T.Helper()
	f, err := os.Open(n.key)
	if err != nil {
		n.T.Fatal(err)
	}
	defer f.Close()
	keys, err := pgpmsg.ReadKeys(f)
	if err != nil || len(keys) != 1 {
		n.T.Fatalf("%s: %s: %d keys, %v", n.Name, n.key, len(keys), err)
	}
	return string(keys[0].Fingerprint())
}

// Wrong command lines give one line on stderr and the exit code of their kind.
func TestRelayServer_BadArguments(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.asc")
	os.WriteFile(garbage, []byte("not a key\n"), 0o600)
	unreadable := filepath.Join(dir, "unreadable.asc")
	os.WriteFile(unreadable, []byte("x"), 0o000)
	notPEM := filepath.Join(dir, "cert.pem")
	os.WriteFile(notPEM, []byte("not pem"), 0o600)
	empty := filepath.Join(dir, "empty.asc")
	os.WriteFile(empty, nil, 0o600)
	emptyUsers := filepath.Join(dir, "users.toml")
	os.WriteFile(emptyUsers, nil, 0o600)
	d := filepath.Join(dir, "relay")
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"--listen", "127.0.0.1:0"}, exitUsage, "--dir is required"},
		{[]string{"--dir", d}, exitUsage, "--listen is required"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--tls_cert", notPEM}, exitUsage, "--tls_cert and --tls_key go together"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--tls_key", notPEM}, exitUsage, "--tls_cert and --tls_key go together"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", filepath.Join(dir, "missing.asc")}, exitError, "missing.asc"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d}, exitError, "allow.asc"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", garbage}, exitError, "garbage.asc"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--quota", "lots"}, exitUsage, "--quota"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--max_age", "10"}, exitUsage, "--max_age"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--tls_cert", notPEM, "--tls_key", notPEM}, exitError, "--tls_cert"},
		{[]string{"--listen", "256.0.0.1:1", "--dir", d, "--allow", empty}, exitError, "--listen"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--smtp", "127.0.0.1:0"}, exitError, "users.toml"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--users", emptyUsers}, exitUsage, "--users goes with --smtp or --imap"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--imap", "127.0.0.1:0", "--users", garbage}, exitError, "garbage.asc"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--imap", "256.0.0.1:1", "--users", emptyUsers}, exitError, "--imap"},
		{[]string{"--listen", "127.0.0.1:0", "--dir", d, "--allow", empty, "--smtp", "256.0.0.1:1", "--users", emptyUsers}, exitError, "--smtp"},
	} {
		var out, errb bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		a := &App{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }, Ctx: ctx}
		code := a.Main(append([]string{"relay_server"}, tc.args...))
		cancel()
		lines := strings.Split(strings.TrimRight(errb.String(), "\n"), "\n")
		if code != tc.code || len(lines) != 1 || !strings.HasPrefix(lines[0], "dibs: relay_server: ") || !strings.Contains(lines[0], tc.says) {
			t.Errorf("relay_server %v: exit %d, stderr %q; want exit %d and one line saying %q", tc.args, code, errb.String(), tc.code, tc.says)
		}
	}
	if os.Getuid() != 0 { // root reads any file
		var errb bytes.Buffer
		a := &App{Stdout: io.Discard, Stderr: &errb, Getenv: func(string) string { return "" }, Ctx: context.Background()}
		code := a.Main([]string{"relay_server", "--listen", "127.0.0.1:0", "--dir", d, "--allow", unreadable})
		if code != exitError || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), "permission denied") {
			t.Errorf("an unreadable allow file: exit %d, %q", code, errb.String())
		}
	}
}

// A relay takes by default the largest file a node takes by default (maxMsgSize): no
// larger, or it would keep files its recipients refuse. Its help says which that is.
func TestRelayServer_DefaultMaxSizeIsNodesMaxMsgSize(t *testing.T) {
	n := &clirun.Node{T: t, Bin: dibsBin, Name: "node", Dir: filepath.Join(t.TempDir(), "node")}
	n.OK("init", "--key", "node.dibs@relay.invalid")
	nodeMax, err := strconv.ParseInt(strings.TrimSpace(n.OK("show_option", "--name", "maxMsgSize")), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	var o relayServerOptions
	o.declare(flag.NewFlagSet("relay_server", flag.ContinueOnError))
	if got := o.maxSize.bytes; got != nodeMax {
		t.Errorf("relay_server --max_size defaults to %d bytes, a node's maxMsgSize to %d", got, nodeMax)
	}
	want := "(default " + agent.FormatSize(nodeMax) + ")"
	var line string
	for l := range strings.Lines(n.OK("help", "relay_server")) {
		if strings.Contains(l, "--max_size") {
			line = l
		}
	}
	if !strings.Contains(line, want) {
		t.Errorf("help relay_server says %q about --max_size, want it to say %s", line, want)
	}
}
