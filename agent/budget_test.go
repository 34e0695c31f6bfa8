package agent_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// setClock is a clock a test sets by hand.
type setClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *setClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *setClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// sentLog records, in order, the files a sender delivered.
type sentLog struct {
	queue.Sender
	mu    sync.Mutex
	names []string
}

func (s *sentLog) Send(ctx context.Context, dst queue.Endpoint, msg queue.Message) error {
	err := s.Sender.Send(ctx, dst, msg)
	if err == nil {
		s.mu.Lock()
		s.names = append(s.names, msg.Name)
		s.mu.Unlock()
	}
	return err
}

// take returns what was sent since the last take.
func (s *sentLog) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.names
	s.names = nil
	return out
}

// queueFiles puts files of the given sizes into n's outgoing/<peer>/, named in order from
// start, and returns their names and contents.
func queueFiles(t *testing.T, n *testenv.Node, peer string, start time.Time, sizes []int) ([]string, map[string][]byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	var names []string
	data := map[string][]byte{}
	for i, size := range sizes {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.UintN(256))
		}
		name := queue.NewName(start.Add(time.Duration(i)*time.Millisecond), ".pgp")
		if _, err := n.Spool.Put(queue.Outgoing(peer), name, bytes.NewReader(b), 0); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		data[name] = b
	}
	return names, data
}

// mailPair is alice and bob, who reach each other by mail only; alice's clock is set by
// hand and her mail sender logs what it delivered.
func mailPair(t *testing.T, opts map[string]string) (*testenv.Env, *testenv.Node, *setClock, *sentLog) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice", Mail: true}, {Name: "bob", Mail: true}}, Options: opts})
	alice := env.Node("alice")
	clock := &setClock{t: time.Date(2026, 12, 3, 10, 0, 0, 0, time.Local)}
	alice.Now = clock.Now
	log := &sentLog{Sender: alice.Transports.Senders[agent.Mail]}
	alice.Transports.Senders[agent.Mail] = log
	return env, alice, clock, log
}

func bobStatus(t *testing.T, n *agent.Node) agent.StatusPeer {
	t.Helper()
	rep, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Peers {
		if p.Peer == "bob" {
			return p
		}
	}
	t.Fatal("no peer bob in the status")
	return agent.StatusPeer{}
}

// A mail peer with a budget of 1 MB a day gets 3.5 MB of files over five days, in order,
// every one of them; the small file among them goes at once. A file bigger than the whole
// budget goes on a day that used none of it. What a day used survives a restart: a node
// opened afresh on the same directory sends no more that day.
func TestBudget_MailPeerGetsFilesAcrossDays(t *testing.T) {
	env, alice, clock, log := mailPair(t, map[string]string{"mailBytesPerDay": "1m"})
	bob := env.Node("bob")
	const k = 1000
	day := func(d, h int) time.Time { return time.Date(2026, 12, d, h, 0, 0, 0, time.Local) }
	names, data := queueFiles(t, alice, "bob", day(3, 9), []int{400 * k, 400 * k, 2 * k, 400 * k, 1200 * k, 300 * k, 300 * k, 500 * k})
	f := func(i ...int) []string {
		var out []string
		for _, j := range i {
			out = append(out, names[j])
		}
		return out
	}
	send := func(n *agent.Node, want []string) {
		t.Helper()
		if _, err := n.SendOutgoing(ctx, "bob"); err != nil {
			t.Fatalf("at %s: %v", clock.Now(), err)
		}
		if got := log.take(); !slices.Equal(got, want) {
			t.Fatalf("at %s: sent %v, want %v", clock.Now(), got, want)
		}
	}

	send(alice.Node, f(0, 1, 2)) // 800 kB and the small file; 400 kB more would pass 1 MB
	st := bobStatus(t, alice.Node)
	if st.Held != "held: over mail budget until 2026-12-04 00:00" {
		t.Errorf("status: held %q", st.Held)
	}
	if len(st.Budgets) != 1 || st.Budgets[0] != (agent.BudgetRow{Method: agent.Mail, PerDay: 1000 * k, Used: 800 * k, Remaining: 200 * k}) {
		t.Errorf("status: budgets %+v", st.Budgets)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	alice.Daemon.ServeStatus(ln)
	base := "http://" + ln.Addr().String()
	metrics, _ := get(t, base+"/metrics")
	for _, want := range []string{`dibs_transport_budget_remaining_bytes{method="mail",peer="bob"} 200000`, `dibs_transport_held{peer="bob"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if page, _ := get(t, base+"/"); !strings.Contains(page, "held: over mail budget until 2026-12-04 00:00") || !strings.Contains(page, "mail: 200.0 kB of 1.0 MB left today") {
		t.Errorf("the status page does not say what is held:\n%s", page)
	}
	clock.Set(day(3, 23))
	send(alice.Node, nil)

	clock.Set(day(4, 9))
	send(alice.Node, f(3)) // the 1.2 MB file waits for a day that used none of its budget
	again, err := agent.Open(alice.Dir)
	if err != nil {
		t.Fatal(err)
	}
	again.Transports, again.Now = alice.Transports, clock.Now
	send(again, nil) // restarted: the day's use is in the books
	again.Close()

	clock.Set(day(5, 9))
	send(alice.Node, f(4)) // alone, over the budget
	small, smallData := queueFiles(t, alice, "bob", day(5, 9), []int{10 * k})
	data[small[0]] = smallData[small[0]]
	send(alice.Node, small) // a control message is never held
	clock.Set(day(6, 9))
	send(alice.Node, f(5, 6))
	clock.Set(day(7, 9))
	send(alice.Node, f(7))
	if st := bobStatus(t, alice.Node); st.Held != "" || st.QueueDepth != 0 {
		t.Errorf("all sent: held %q, queue depth %d", st.Held, st.QueueDepth)
	}

	// Nothing lost: bob's mailbox gives him every file, whole.
	if _, err := bob.PollPassives(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := bob.Spool.List(queue.Incoming)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(data) {
		t.Fatalf("bob got %d files, want %d", len(es), len(data))
	}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(bob.Spool.Dir(queue.Incoming), e.Name))
		if err != nil || !bytes.Equal(b, data[e.Name]) {
			t.Errorf("%s: not what alice queued (%v)", e.Name, err)
		}
	}
}

// A send window holds the files it is not in: the big ones wait until it opens, the
// small ones go.
func TestBudget_SendWindowHoldsFiles(t *testing.T) {
	env, alice, clock, log := mailPair(t, map[string]string{"sendWindow": "22:00-06:00"})
	names, _ := queueFiles(t, alice, "bob", clock.Now().Add(-time.Hour), []int{200_000, 1_000, 300_000})
	// The last is a repair's STORE: its name says so, and mail carries it as it is.
	box := alice.Spool.Dir(queue.Outgoing("bob"))
	repair := strings.TrimSuffix(names[2], ".pgp") + ".repair.pgp"
	if err := os.Rename(filepath.Join(box, names[2]), filepath.Join(box, repair)); err != nil {
		t.Fatal(err)
	}
	names[2] = repair
	if _, err := alice.SendOutgoing(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); !slices.Equal(got, names[1:2]) {
		t.Fatalf("at 10:00: sent %v, want only the small file", got)
	}
	if st := bobStatus(t, alice.Node); st.Held != "held: outside send window 22:00-06:00 until 22:00" {
		t.Errorf("status: held %q", st.Held)
	}
	clock.Set(time.Date(2026, 12, 3, 21, 59, 0, 0, time.Local))
	alice.SendOutgoing(ctx, "bob")
	if got := log.take(); len(got) != 0 {
		t.Fatalf("at 21:59: sent %v", got)
	}
	clock.Set(time.Date(2026, 12, 4, 1, 30, 0, 0, time.Local))
	if _, err := alice.SendOutgoing(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); !slices.Equal(got, []string{names[0], names[2]}) {
		t.Fatalf("at 01:30: sent %v, want the big files in order", got)
	}
	if st := bobStatus(t, alice.Node); st.Held != "" {
		t.Errorf("status: held %q", st.Held)
	}
	bob := env.Node("bob")
	if _, err := bob.PollPassives(ctx); err != nil {
		t.Fatal(err)
	}
	es, _ := bob.Spool.List(queue.Incoming)
	var got []string
	for _, e := range es {
		got = append(got, e.Name)
	}
	if !slices.Equal(got, names) {
		t.Errorf("bob got %v, want %v", got, names)
	}
}

// storeFiles counts the STORE files waiting in n's outgoing boxes: fresh ones and
// repair's (named *.repair.pgp, which budgets tell apart). A STORE's name carries its
// piece id: <date>-<piece>-<message id>.pgp.
func storeFiles(t *testing.T, n *testenv.Node) (fresh, repair int) {
	t.Helper()
	peers, err := n.Spool.Peers()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		es, _ := n.Spool.List(queue.Outgoing(p))
		for _, e := range es {
			switch {
			case strings.HasSuffix(e.Name, ".repair.pgp"):
				repair++
			case strings.Count(e.Name, "-") == 2:
				fresh++
			}
		}
	}
	return fresh, repair
}
