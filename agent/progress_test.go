package agent_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// counter is an agent.Progress that adds up what it hears.
type counter struct {
	mu            sync.Mutex
	starts, dones int
	totalBytes    int64
	totalFiles    int
	bytes         int64
	files         int
	byteAdds      int // Adds of bytes alone: a large file told segment by segment
	lateAdds      int // Adds after Done
}

var _ agent.Progress = (*counter)(nil)

func (c *counter) Start(bytes int64, files int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starts++
	c.totalBytes, c.totalFiles = bytes, files
}

func (c *counter) Add(bytes int64, files int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dones > 0 {
		c.lateAdds++
	}
	if files == 0 && bytes > 0 {
		c.byteAdds++
	}
	c.bytes += bytes
	c.files += files
}

func (c *counter) Done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dones++
}

// check fails unless the progress started and ended once, and what was added is what
// Start announced: wantFiles files and wantBytes bytes.
func (c *counter) check(t *testing.T, what string, wantBytes int64, wantFiles int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.starts != 1 || c.dones != 1 || c.lateAdds != 0 {
		t.Errorf("%s: %d Start, %d Done, %d Add after Done; want 1, 1, 0", what, c.starts, c.dones, c.lateAdds)
	}
	if c.totalBytes != wantBytes || c.totalFiles != wantFiles {
		t.Errorf("%s: Start(%d bytes, %d files), want (%d, %d)", what, c.totalBytes, c.totalFiles, wantBytes, wantFiles)
	}
	if c.bytes != wantBytes || c.files != wantFiles {
		t.Errorf("%s: added %d bytes, %d files, want %d, %d", what, c.bytes, c.files, wantBytes, wantFiles)
	}
}

// outgoing is the count and bytes of the files in n's outgoing/.
func outgoing(t *testing.T, n *agent.Node) (int64, int) {
	t.Helper()
	peers, err := n.Spool.Peers()
	if err != nil {
		t.Fatal(err)
	}
	var bytes int64
	files := 0
	for _, p := range peers {
		es, err := n.Spool.List(queue.Outgoing(p))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			bytes += e.Size
		}
		files += len(es)
	}
	return bytes, files
}

func TestProgress_StoreSendProcessRecover(t *testing.T) {
	env := fourNodes(t, map[string]string{"kbPerFile": "300"})
	alice, bob := env.Node("alice"), env.Node("bob")
	tree := makeTree(t, 40, 2_500_000)

	c := &counter{}
	alice.Progress = c
	res, err := alice.Store(ctx, tree, "/tree")
	if err != nil {
		t.Fatal(err)
	}
	// Everything is new: every regular file's bytes are read, and they are what was coded.
	c.check(t, "first store", res.Bytes, res.Entries)
	if c.byteAdds < 4 { // 2.5 MB in segments of 2 x 300 kB
		t.Errorf("the large file was told in %d steps, want one a segment", c.byteAdds)
	}

	// A second store reads only the file that changed.
	changed := filepath.Join(tree, "exec.sh")
	if err := os.WriteFile(changed, []byte("#!/bin/sh\necho changed, and longer\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(changed)
	if err != nil {
		t.Fatal(err)
	}
	c = &counter{}
	alice.Progress = c
	res, err = alice.Store(ctx, tree, "/tree")
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored != 1 {
		t.Fatalf("second store: %+v", res)
	}
	c.check(t, "second store", fi.Size(), res.Entries)

	// send_message goes through every outgoing file.
	wantBytes, wantFiles := outgoing(t, alice.Node)
	c = &counter{}
	alice.Progress = c
	sent, err := alice.SendOutgoing(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if sent.Sent != wantFiles || wantFiles == 0 {
		t.Fatalf("sent %+v of %d files", sent, wantFiles)
	}
	c.check(t, "send_message", wantBytes, wantFiles)

	// process_message opens every incoming file.
	es, err := bob.Spool.List(queue.Incoming)
	if err != nil {
		t.Fatal(err)
	}
	var inBytes int64
	for _, e := range es {
		inBytes += e.Size
	}
	c = &counter{}
	bob.Progress = c
	proc, err := bob.ProcessIncoming(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if proc.Processed != len(es) || len(es) == 0 {
		t.Fatalf("processed %+v of %d files", proc, len(es))
	}
	c.check(t, "process_message", inBytes, len(es))
	alice.Progress, bob.Progress = nil, nil
	env.Settle(ctx, 20)

	// recover_file seals one request a peer that holds pieces.
	c = &counter{}
	alice.Progress = c
	if _, err := alice.RecoverFile("/tree", 0); err != nil {
		t.Fatal(err)
	}
	c.check(t, "recover_file", 0, 3)
	c = &counter{}
	alice.Progress = c
	if err := alice.RecoverAll(); err != nil {
		t.Fatal(err)
	}
	c.check(t, "recover_all", 0, 3)

	// export_messages moves them all (with --keep: they stay for send_message too).
	wantBytes, wantFiles = outgoing(t, alice.Node)
	c = &counter{}
	alice.Progress = c
	exp, err := alice.ExportMessages(t.TempDir(), "", true)
	if err != nil {
		t.Fatal(err)
	}
	if exp.Exported != wantFiles || wantFiles == 0 {
		t.Fatalf("exported %d of %d files", exp.Exported, wantFiles)
	}
	c.check(t, "export_messages", wantBytes, wantFiles)
}

// TestProgress_PollCountsWhatArrives: poll_passives cannot know beforehand what waits
// for it; it tells each file as it arrives.
func TestProgress_PollCountsWhatArrives(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice", NAT: true}, {Name: "bob", NAT: true}}})
	alice, bob := env.Node("alice"), env.Node("bob")
	alice.Post("bob", "HELLO")
	alice.Post("bob", "HELLO")
	if _, err := alice.SendOutgoing(ctx, ""); err != nil {
		t.Fatal(err)
	}
	c := &counter{}
	bob.Progress = c
	k, err := bob.PollPassives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if k != 2 {
		t.Fatalf("polled %d files, want 2", k)
	}
	es, err := bob.Spool.List(queue.Incoming)
	if err != nil {
		t.Fatal(err)
	}
	var bytes int64
	for _, e := range es {
		bytes += e.Size
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.starts != 1 || c.dones != 1 || c.totalBytes != 0 || c.totalFiles != 0 {
		t.Errorf("%d Start(%d, %d), %d Done; want one Start(0, 0) and one Done", c.starts, c.totalBytes, c.totalFiles, c.dones)
	}
	if c.files != 2 || c.bytes != bytes {
		t.Errorf("added %d files, %d bytes; %d bytes arrived in 2 files", c.files, c.bytes, bytes)
	}
}
