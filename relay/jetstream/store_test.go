package jetstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	njs "github.com/nats-io/nats.go/jetstream"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
	"github.com/dibs-backup/dibs/relay/jetstream"
	"github.com/dibs-backup/dibs/relay/storetest"
)

// cluster is three nats-server nodes with JetStream, routed to each other on loopback.
type cluster struct {
	nodes []*server.Server
	urls  []string
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startCluster starts a 3-node cluster in this process; the test's end stops it.
func startCluster(t testing.TB) *cluster {
	const n = 3
	c := &cluster{}
	var routes []string
	ports := make([][2]int, n)
	for i := range n {
		ports[i] = [2]int{freePort(t), freePort(t)}
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i][1]))
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i][0]))
	}
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: ports[i][0],
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "dibs-test", Host: "127.0.0.1", Port: ports[i][1]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		c.nodes = append(c.nodes, s)
	}
	t.Cleanup(func() {
		for _, s := range c.nodes {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	for _, s := range c.nodes {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("a nats-server node did not start")
		}
	}
	// Until the meta leader sees all three nodes with JetStream, and they are current.
	deadline := time.Now().Add(30 * time.Second)
	for ready := false; !ready; {
		all := 0
		for _, s := range c.nodes {
			if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == n {
				all = n
			}
		}
		ready = all == n
		for _, s := range c.nodes {
			ready = ready && s.JetStreamIsCurrent()
		}
		if !ready && time.Now().After(deadline) {
			t.Fatal("the cluster did not form within 30 s")
		}
		if !ready {
			time.Sleep(50 * time.Millisecond)
		}
	}
	nc, err := nats.Connect(strings.Join(c.urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := njs.New(nc)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster has no JetStream after 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

var (
	sharedOnce sync.Once
	sharedURLs []string
	sharedStop func()
)

// clusterURLs returns the URLs of a cluster to test on: DIBS_NATS_URLS (comma-separated,
// e.g. three nats-server processes that .ci/run starts), or a cluster in this process
// shared by the tests of the package.
func clusterURLs(t *testing.T) []string {
	if env := endpointsFromEnv(); env != nil {
		return env
	}
	sharedOnce.Do(func() {
		ct := &cleanupT{TB: t}
		c := startCluster(ct)
		sharedURLs, sharedStop = c.urls, ct.run
	})
	if sharedURLs == nil {
		t.Fatal("the shared cluster did not start")
	}
	return sharedURLs
}

func endpointsFromEnv() []string {
	if env := os.Getenv("DIBS_NATS_URLS"); env != "" {
		return strings.Split(env, ",")
	}
	return nil
}

// cleanupT is a testing.TB whose cleanups run when the package's tests end, not the first test.
type cleanupT struct {
	testing.TB
	fns []func()
}

func (c *cleanupT) Cleanup(f func()) { c.fns = append(c.fns, f) }
func (c *cleanupT) TempDir() string {
	d, err := os.MkdirTemp("", "dibs-nats-")
	if err != nil {
		c.Fatal(err)
	}
	c.fns = append(c.fns, func() { os.RemoveAll(d) })
	return d
}
func (c *cleanupT) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedStop != nil {
		sharedStop()
	}
	os.Exit(code)
}

var prefixN int

// open opens a store over urls, the first of them first, under prefix.
func open(t testing.TB, urls []string, prefix string, o storetest.Options) *jetstream.Store {
	t.Helper()
	return openLease(t, urls, prefix, o, 15*time.Second)
}

func openLease(t testing.TB, urls []string, prefix string, o storetest.Options, lease time.Duration) *jetstream.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := jetstream.Connect(ctx, strings.Join(urls, ","), jetstream.Options{AllowFile: o.AllowFile,
		Quota: o.Quota, MaxFileSize: o.MaxFileSize, MaxAge: o.MaxAge, Prefix: prefix,
		Lease: lease, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// rotate returns urls starting at the i-th, so that instances connect to different nodes.
func rotate(urls []string, i int) []string {
	i %= len(urls)
	return append(append([]string{}, urls[i:]...), urls[:i]...)
}

func freshPrefix(t *testing.T) string {
	prefixN++
	return fmt.Sprintf("dibs-test-%d-%d", os.Getpid(), prefixN)
}

// deleteBuckets removes a test's buckets from a cluster that outlives it.
func deleteBuckets(t *testing.T, urls []string, prefix string) {
	t.Cleanup(func() {
		nc, err := nats.Connect(strings.Join(urls, ","))
		if err != nil {
			return
		}
		defer nc.Close()
		js, _ := njs.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		js.DeleteObjectStore(ctx, prefix+"-files")
		js.DeleteKeyValue(ctx, prefix+"-index")
		js.DeleteKeyValue(ctx, prefix+"-leases")
	})
}

// TestConformance: two stores, each connected to another node first, over one cluster.
func TestConformance(t *testing.T) {
	urls := clusterURLs(t)
	storetest.Run(t, func(t *testing.T, o storetest.Options) storetest.Stores {
		prefix := freshPrefix(t)
		deleteBuckets(t, urls, prefix)
		return storetest.Stores{A: open(t, rotate(urls, 0), prefix, o), B: open(t, rotate(urls, 1), prefix, o)}
	})
}

func TestReplicas_ThreeOnAThreeNodeCluster(t *testing.T) {
	urls := clusterURLs(t)
	if len(urls) < 3 {
		t.Skip("fewer than 3 servers")
	}
	prefix := freshPrefix(t)
	deleteBuckets(t, urls, prefix)
	s := open(t, urls, prefix, storetest.Options{AllowFile: writeAllow(t)})
	if s.Replicas() != 3 {
		t.Fatalf("Replicas = %d; want 3", s.Replicas())
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := njs.New(nc)
	for _, name := range []string{"OBJ_" + prefix + "-files", "KV_" + prefix + "-index", "KV_" + prefix + "-leases"} {
		st, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if cfg := st.CachedInfo().Config; cfg.Replicas != 3 || cfg.Storage != njs.FileStorage {
			t.Errorf("stream %s: %d replicas on %v; want 3 on file storage", name, cfg.Replicas, cfg.Storage)
		}
	}
}

func writeAllow(t testing.TB) string {
	var b bytes.Buffer
	for _, n := range []string{"alice", "bob", "carol"} {
		if err := pgpmsgtest.Key(t, n).WriteArmored(&b); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "allow.asc")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sealed returns a real dibs message from bob to alice.
func sealed(t testing.TB, size int) []byte {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, "HELLO")
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, time.Now().UTC().Format(time.RFC3339))
	var buf bytes.Buffer
	if err := pgpmsg.Seal(&buf, h, bytes.NewReader(make([]byte, size)), pgpmsgtest.Identity(t, "bob"), pgpmsgtest.Key(t, "alice")); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// relayFront is one relay_server instance: a relay.Server over a store, on loopback.
func relayFront(t testing.TB, s relay.Store) string {
	srv := relay.NewServer(s, relay.ServerOptions{Version: "test"})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs.URL
}

func client(t testing.TB, name string) *relay.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &relay.Client{ID: pgpmsgtest.Identity(t, name), HTTP: &http.Client{Transport: tr}}
}

func message(name string, data []byte) queue.Message {
	return queue.Message{Name: name, Size: int64(len(data)),
		Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

func endpoint(t testing.TB, addr string) queue.Endpoint {
	return queue.Endpoint{Peer: "alice", Key: string(pgpmsgtest.Identity(t, "alice").Fingerprint()), Addr: addr}
}

// collector keeps what a poll delivers, by name.
type collector struct {
	mu    sync.Mutex
	files map[string][][]byte
}

func (c *collector) sink(name string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files[name] = append(c.files[name], b)
	return nil
}

// TestTwoRelays_DepositThroughOneCollectThroughTheOther: two relay_server instances over
// one cluster serve the same users.
func TestTwoRelays_DepositThroughOneCollectThroughTheOther(t *testing.T) {
	urls := clusterURLs(t)
	prefix := freshPrefix(t)
	deleteBuckets(t, urls, prefix)
	allow := writeAllow(t)
	one := relayFront(t, open(t, rotate(urls, 0), prefix, storetest.Options{AllowFile: allow}))
	two := relayFront(t, open(t, rotate(urls, 1), prefix, storetest.Options{AllowFile: allow}))
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 5 {
		name := queue.NewName(time.Now(), ".pgp")
		want[name] = sealed(t, 1000+i*50_000)
		if err := client(t, "bob").Send(ctx, endpoint(t, one), message(name, want[name])); err != nil {
			t.Fatal(err)
		}
	}
	c := &collector{files: map[string][][]byte{}}
	if n, err := client(t, "alice").Poll(ctx, endpoint(t, two), c.sink); n != 5 || err != nil {
		t.Fatalf("alice's poll of the other relay = %d, %v; want 5, nil", n, err)
	}
	for name, b := range want {
		if got := c.files[name]; len(got) != 1 || !bytes.Equal(got[0], b) {
			t.Errorf("%s: %d copies, or altered", name, len(got))
		}
	}
	// Collected means removed, for both instances.
	for _, addr := range []string{one, two} {
		if n, err := client(t, "alice").Poll(ctx, endpoint(t, addr), c.sink); n != 0 || err != nil {
			t.Fatalf("a second poll = %d, %v; want 0, nil", n, err)
		}
	}
}

// retry calls f until it returns nil, for up to a minute.
func retry(t *testing.T, what string, f func() error) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for tries := 1; ; tries++ {
		err := f()
		if err == nil {
			return tries
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still failing after a minute: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A node of the cluster dies in the middle of 200 deposits through one relay and
// collections through the other: every deposit acknowledged arrives, intact; a name
// may arrive twice (a poll whose DELETE was lost), never with other bytes, and nothing
// stays behind.
func TestKillOneNode_NothingLostNothingTwiceInEffect(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a node of a 3-node cluster: a few seconds of leader elections")
	}
	urls, kill := killableCluster(t)
	prefix := freshPrefix(t)
	allow := writeAllow(t)
	one := relayFront(t, open(t, rotate(urls, 0), prefix, storetest.Options{AllowFile: allow}))
	twoStore := open(t, rotate(urls, 1), prefix, storetest.Options{AllowFile: allow})
	two := relayFront(t, twoStore)
	bob, alice := client(t, "bob"), client(t, "alice")
	got := &collector{files: map[string][][]byte{}}
	poll := func() {
		retry(t, "alice's poll", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := alice.Poll(ctx, endpoint(t, two), got.sink)
			return err
		})
	}
	const total = 200
	want := map[string][]byte{}
	retried := 0
	start := time.Now()
	for i := range total {
		if i == total/2 {
			kill() // the node relay one talks to first
		}
		name := queue.NewName(time.Now(), ".pgp")
		want[name] = sealed(t, 500+i*97)
		retried += retry(t, "bob's deposit", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return bob.Send(ctx, endpoint(t, one), message(name, want[name]))
		}) - 1
		if i%10 == 9 {
			poll()
		}
	}
	poll()
	t.Logf("%d deposits and their collections in %s, one node killed after %d; %d deposits retried",
		total, time.Since(start).Round(time.Millisecond), total/2, retried)
	twice := 0
	for name, b := range want {
		copies := got.files[name]
		if len(copies) == 0 {
			t.Errorf("%s never arrived", name)
		}
		for _, cp := range copies {
			if !bytes.Equal(cp, b) {
				t.Errorf("%s arrived altered", name)
			}
		}
		if len(copies) > 1 {
			twice++
		}
	}
	if len(got.files) != total {
		t.Errorf("%d names arrived; want %d", len(got.files), total)
	}
	if twice > 0 {
		t.Logf("%d files arrived twice (same bytes, same name: process_message keeps one)", twice)
	}
	es, err := twoStore.List(pgpmsgtest.Identity(t, "alice").Fingerprint())
	if err != nil || len(es) != 0 {
		t.Fatalf("left in the store: %d files, %v", len(es), err)
	}
}

// killableCluster returns a cluster for the kill test and how to kill its first node:
// with DIBS_NATS_KILL_PID (the process id of the nats-server at the first of
// DIBS_NATS_URLS, as .ci/nats/test.sh runs it), SIGKILL to that process, a crash with no
// leadership handed over; else a cluster in this process, whose first node shuts down.
func killableCluster(t *testing.T) (urls []string, kill func()) {
	if pid := os.Getenv("DIBS_NATS_KILL_PID"); pid != "" && endpointsFromEnv() != nil {
		n, err := strconv.Atoi(pid)
		if err != nil {
			t.Fatalf("DIBS_NATS_KILL_PID=%q: %v", pid, err)
		}
		return endpointsFromEnv(), func() {
			p, err := os.FindProcess(n)
			if err == nil {
				err = p.Kill()
			}
			if err != nil {
				t.Fatalf("kill nats-server %d: %v", n, err)
			}
		}
	}
	c := startCluster(t)
	return c.urls, func() { c.nodes[0].Shutdown() }
}

// An object that no index names (its instance died between storing it and naming it) is
// removed by Expire once it is an hour old; the files the index names stay.
func TestExpire_RemovesOrphanObjects(t *testing.T) {
	urls := clusterURLs(t)
	prefix := freshPrefix(t)
	deleteBuckets(t, urls, prefix)
	s := open(t, urls, prefix, storetest.Options{AllowFile: writeAllow(t)})
	alice, bob := pgpmsgtest.Identity(t, "alice").Fingerprint(), pgpmsgtest.Identity(t, "bob").Fingerprint()
	if err := s.Deposit(bob, alice, "kept.pgp", 5, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := njs.New(nc)
	ctx := context.Background()
	obs, err := js.ObjectStore(ctx, prefix+"-files")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, string(alice)+".deadbeef", []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Expire(time.Now()); n != 0 || err != nil {
		t.Fatalf("Expire = %d, %v", n, err)
	}
	if _, err := obs.GetInfo(ctx, string(alice)+".deadbeef"); err != nil {
		t.Fatalf("a young orphan was removed: %v", err)
	}
	if n, err := s.Expire(time.Now().Add(2 * time.Hour)); n != 0 || err != nil {
		t.Fatalf("Expire an hour later = %d, %v", n, err)
	}
	if _, err := obs.GetInfo(ctx, string(alice)+".deadbeef"); err == nil {
		t.Fatal("the orphan is still there")
	}
	rc, _, err := s.Open(alice, "kept.pgp")
	if err != nil {
		t.Fatalf("the file the index names: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "hello" {
		t.Fatalf("kept.pgp = %q", b)
	}
}

// An instance that dies while it delivers a file holds it no longer than its lease.
func TestDeadInstance_LeaseEnds(t *testing.T) {
	urls := clusterURLs(t)
	prefix := freshPrefix(t)
	deleteBuckets(t, urls, prefix)
	allow := writeAllow(t)
	const lease = 2 * time.Second
	a := openLease(t, urls, prefix, storetest.Options{AllowFile: allow}, lease)
	b := openLease(t, rotate(urls, 1), prefix, storetest.Options{AllowFile: allow}, lease)
	alice, bob := pgpmsgtest.Identity(t, "alice").Fingerprint(), pgpmsgtest.Identity(t, "bob").Fingerprint()
	if err := a.Deposit(bob, alice, "m.pgp", 5, strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	rc, _, err := a.Open(alice, "m.pgp")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	time.Sleep(lease) // a's lease is renewed while it lives
	if _, _, err := b.Open(alice, "m.pgp"); !errors.Is(err, relay.ErrBusy) {
		t.Fatalf("Open while a holds the file = %v; want ErrBusy", err)
	}
	a.Close() // a dies: its connection is gone, and nobody renews its lease
	start := time.Now()
	for {
		rc, _, err := b.Open(alice, "m.pgp")
		if err == nil {
			rc.Close()
			break
		}
		if !errors.Is(err, relay.ErrBusy) || time.Since(start) > 3*lease {
			t.Fatalf("Open %s after a died = %v", time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the file was free %s after its holder died (lease %s)", time.Since(start).Round(time.Millisecond), lease)
}
