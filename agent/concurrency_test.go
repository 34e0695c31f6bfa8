package agent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// A running daemon and a cron-style process_message on the same DIBS_DIR (a second
// opening of it, exactly like a second process: bbolt's lock is per open file) act on
// every file once: each HELLO gets exactly one reply, nothing is quarantined, nothing left.
func TestDaemonAndCronActOnEachFileOnce(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}}})
	alice, bob, carol := env.Node("alice"), env.Node("bob"), env.Node("carol")
	const each = 150
	for range each {
		bob.Post("alice", agent.TypeHello)
		carol.Post("alice", agent.TypeHello)
	}
	carried := t.TempDir()
	for _, n := range []*testenv.Node{bob, carol} {
		if _, err := n.ExportMessages(carried, "alice", false); err != nil {
			t.Fatal(err)
		}
	}
	cron, err := agent.Open(alice.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cron.Close()
	alice.Start() // the daemon: processes incoming/ as files arrive, and sends replies

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var cronDone agent.ProcessResult
	wg.Add(1)
	go func() { // cron: process_message again and again
		defer wg.Done()
		for ctx.Err() == nil {
			r, err := cron.ProcessIncoming(ctx)
			if err != nil && ctx.Err() == nil {
				t.Errorf("cron process_message: %v", err)
				return
			}
			cronDone.Processed += r.Processed
			if es, _ := cron.Spool.List(queue.Incoming); len(es) == 0 && r.Processed == 0 {
				return
			}
		}
	}()
	if _, err := alice.ImportMessages(carried); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for ctx.Err() == nil { // the daemon finishes what it claimed
		if es, _ := alice.Spool.List(queue.Incoming); len(es) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatal("incoming/ never emptied: a deadlock between the daemon and cron?")
	}
	if q := alice.Quarantined(); len(q) > 0 {
		t.Fatalf("quarantined: %v", q)
	}
	// Every reply is in alice's outgoing box or already delivered to its peer's incoming.
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A file being delivered is briefly in both places: count names once.
		names := map[string]bool{}
		for _, peer := range []*testenv.Node{bob, carol} {
			out, _ := alice.Spool.List(queue.Outgoing(peer.Spec.Name))
			in, _ := peer.Spool.List(queue.Incoming)
			for _, e := range append(out, in...) {
				names[peer.Spec.Name+"/"+e.Name] = true
			}
		}
		total := len(names)
		if total == 2*each {
			break
		}
		if total > 2*each || time.Now().After(deadline) {
			t.Fatalf("%d replies for %d HELLOs", total, 2*each)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("cron processed %d of %d; the daemon the rest", cronDone.Processed, 2*each)
}
