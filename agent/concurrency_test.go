package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/transports"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// A running daemon and cron-style process_message runs on the same DIBS_DIR (each a
// fresh agent.Open, exactly like a second process: the database's lock is per open file) act on
// every file once: each HELLO gets exactly one reply, nothing is quarantined, nothing is
// left. The HELLOs arrive in waves while both are at work.
func TestDaemonAndCronActOnEachFileOnce(t *testing.T) {
	peers := []string{"bob", "carol", "dave"}
	const each, waves = 120, 6 // 360 HELLOs
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}, {Name: "dave"}}})
	alice := env.Node("alice")
	hellos := map[string]string{} // Message-Id -> sender
	var daemonLog lockedBuffer
	alice.Log = slog.New(slog.NewTextHandler(&daemonLog, &slog.HandlerOptions{Level: slog.LevelWarn}))
	defer func() {
		if t.Failed() {
			t.Logf("alice's daemon said:\n%s", daemonLog.String())
		}
	}()
	alice.Start() // the daemon: processes incoming/ as files arrive, and sends replies

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	imported := make(chan struct{})
	var wg sync.WaitGroup
	var cronProcessed, cronRuns int
	wg.Add(1)
	go func() { // cron: process_message again and again, each run its own opening
		defer wg.Done()
		for ctx.Err() == nil {
			n, err := agent.Open(alice.Dir)
			if err != nil {
				t.Errorf("cron open: %v", err)
				return
			}
			n.Transports = transports.Default(n)
			r, err := n.ProcessIncoming(ctx)
			n.Close()
			if err != nil && ctx.Err() == nil {
				t.Errorf("cron process_message: %v", err)
				return
			}
			cronProcessed += r.Processed
			cronRuns++
			time.Sleep(10 * time.Millisecond) // the next cron process starts
			select {
			case <-imported:
				if es, _ := alice.Spool.List(queue.Incoming); len(es) == 0 {
					return
				}
			default:
			}
		}
	}()
	// The peers push their HELLOs to alice's daemon in waves: each push wakes its
	// processLoop, while cron runs find the same files.
	for range waves {
		for _, p := range peers {
			n := env.Node(p)
			for range each / waves {
				hellos[n.Post("alice", agent.TypeHello)] = p
			}
			if res, err := n.SendOutgoing(ctx, "alice"); err != nil || res.Sent != each/waves {
				t.Fatalf("%s pushes to alice: %+v, %v", p, res, err)
			}
		}
	}
	close(imported)
	wg.Wait()
	for ctx.Err() == nil { // the daemon finishes what it claimed
		if es, _ := alice.Spool.List(queue.Incoming); len(es) == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ctx.Err() != nil {
		es, _ := alice.Spool.List(queue.Incoming)
		t.Fatalf("%d files still in incoming/ after 90 s: a deadlock between the daemon and cron?", len(es))
	}
	if q := alice.Quarantined(); len(q) > 0 {
		t.Fatalf("quarantined: %v", q)
	}

	// Every reply is in alice's outgoing box or already delivered to its peer's incoming
	// (a file being delivered is briefly in both: count it once). Each answers one HELLO.
	alicePub := pgpmsgtest.Key(t, "alice")
	var replies map[string]string // In-Reply-To -> file
	deadline := time.Now().Add(30 * time.Second)
	for {
		replies = map[string]string{}
		files := map[string]bool{}
		for _, p := range peers {
			for _, box := range []string{filepath.Join(alice.Dir, "outgoing", p), filepath.Join(env.Node(p).Dir, "incoming")} {
				des, _ := os.ReadDir(box)
				for _, de := range des {
					if files[p+"/"+de.Name()] {
						continue
					}
					inReplyTo, err := replyTo(filepath.Join(box, de.Name()), pgpmsgtest.Identity(t, p), alicePub)
					if err != nil {
						continue // renamed away (delivered) between the listing and the open
					}
					files[p+"/"+de.Name()] = true
					if prev, dup := replies[inReplyTo]; dup {
						t.Fatalf("HELLO %s answered twice: %s and %s", inReplyTo, prev, de.Name())
					}
					if hellos[inReplyTo] != p {
						t.Fatalf("reply %s to %s answers %q, not one of its HELLOs", de.Name(), p, inReplyTo)
					}
					replies[inReplyTo] = de.Name()
				}
			}
		}
		if len(replies) == len(hellos) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d replies for %d HELLOs", len(replies), len(hellos))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A lock-order deadlock between the two shows as a database open that timed out.
	if strings.Contains(daemonLog.String(), agent.ErrDBBusy.Error()) {
		t.Errorf("the daemon waited for the database until it gave up")
	}
	t.Logf("cron processed %d of %d in %d runs; the daemon the rest", cronProcessed, len(hellos), cronRuns)
}

// lockedBuffer is a log destination for several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// replyTo opens a sealed reply and returns its In-Reply-To.
func replyTo(path string, me *pgpmsg.Identity, from *pgpmsg.Key) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	msg, err := pgpmsg.Open(f, me, pgpmsg.NewKeyring(from), pgpmsg.OpenOptions{})
	if err != nil {
		return "", err
	}
	defer msg.Close()
	if typ := msg.Header.Get(pgpmsg.FieldType); typ != agent.TypeHello {
		return "", fmt.Errorf("%s is a %s", path, typ)
	}
	return msg.Header.Get(pgpmsg.FieldInReplyTo), nil
}
