package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/creack/pty"
)

// decodeLine decodes out, which must be exactly one line of JSON, into v.
func decodeLine(t *testing.T, what, out string, v any) {
	t.Helper()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("%s: not one line: %q", what, out)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
}

// carry moves what from has for to across by hand, and lets to process it.
func carry(t *testing.T, root string, from, to *cliNode) {
	t.Helper()
	stick := filepath.Join(root, "stick-"+from.Name+"-"+to.Name)
	from.OK("export_messages", "--dir", stick, "--peer", to.Name)
	to.OK("import_messages", "--dir", stick)
	to.OK("process_message")
	os.RemoveAll(stick)
}

// TestCLI_JSONSummaries: store, send_message, probe, recover_file and recover_all with
// --json print one line whose fields say what happened; without a terminal nothing
// extra goes to stderr, and without --json the text lines are as before.
func TestCLI_JSONSummaries(t *testing.T) {
	root := t.TempDir()
	alice, bob, carol := newCLINode(t, root, "alice"), newCLINode(t, root, "bob"), newCLINode(t, root, "carol")
	for _, p := range []*cliNode{bob, carol} {
		alice.addPeer(p, "carry", "carry")
		p.addPeer(alice, "carry", "carry")
	}
	tree := filepath.Join(root, "tree")
	writeTree(t, tree)
	var entries int
	var size int64
	filepath.Walk(tree, func(_ string, fi os.FileInfo, err error) error {
		if err == nil {
			entries++
			if fi.Mode().IsRegular() {
				size += fi.Size()
			}
		}
		return nil
	})

	out, errs, code := alice.Run("store", "--name", tree, "--as", "/t", "--json")
	if code != 0 || errs != "" {
		t.Fatalf("store --json: exit %d, stderr %q", code, errs)
	}
	var st storeSummary
	decodeLine(t, "store --json", out, &st)
	if st.Name != "/t" || st.Entries != entries || st.Unchanged != 0 || st.Stored != entries || st.Bytes != size ||
		st.Objects == 0 || st.Pieces < 2 || st.Deleted != 0 || st.Warnings == nil || len(st.Warnings) != 0 {
		t.Errorf("store --json: %+v; the tree has %d entries, %d bytes", st, entries, size)
	}
	// Without --json: the text line, and still nothing on stderr (no terminal there).
	out, errs, code = alice.Run("store", "--name", tree, "--as", "/t")
	if code != 0 || errs != "" || !strings.HasPrefix(out, "looked at ") || strings.Count(out, "\n") != 1 {
		t.Errorf("store: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	waiting := len(files(t, filepath.Join(alice.Dir, "outgoing", "bob"))) + len(files(t, filepath.Join(alice.Dir, "outgoing", "carol")))
	out, errs, code = alice.Run("send_message", "--json")
	if code != 0 || errs != "" {
		t.Fatalf("send_message --json: exit %d, stderr %q", code, errs)
	}
	var sent sendSummary
	decodeLine(t, "send_message --json", out, &sent)
	if sent != (sendSummary{Waiting: waiting}) || waiting == 0 {
		t.Errorf("send_message --json: %+v; %d files wait for carried peers", sent, waiting)
	}
	if out := alice.OK("send_message"); out != "sent 0, waiting "+itoa(waiting)+", undeliverable 0\n" {
		t.Errorf("send_message: %q", out)
	}

	for _, p := range []*cliNode{bob, carol} {
		carry(t, root, alice, p)
		carry(t, root, p, alice) // the acknowledgements
	}
	var probe struct {
		Name   string `json:"name"`
		Pieces int    `json:"pieces"`
	}
	decodeLine(t, "probe --json", alice.OK("probe", "--file", "/t", "--json"), &probe)
	if probe.Name != "/t" || probe.Pieces != st.Pieces {
		t.Errorf("probe --json: %+v; %d pieces stored", probe, st.Pieces)
	}

	var rf struct {
		Name    string `json:"name"`
		Version int    `json:"version"`
		Dir     string `json:"dir"`
	}
	decodeLine(t, "recover_file --json", alice.OK("recover_file", "--file", "t/", "--json"), &rf)
	if rf.Name != "/t" || rf.Version != 0 || rf.Dir != filepath.Join(alice.Dir, "recovery", "t") {
		t.Errorf("recover_file --json: %+v", rf)
	}
	var ra struct {
		Peers []string `json:"peers"`
		Dir   string   `json:"dir"`
	}
	decodeLine(t, "recover_all --json", alice.OK("recover_all", "--json"), &ra)
	slices.Sort(ra.Peers)
	if !slices.Equal(ra.Peers, []string{"bob", "carol"}) || ra.Dir != filepath.Join(alice.Dir, "recovery") {
		t.Errorf("recover_all --json: %+v", ra)
	}
	// The answers rebuild the file: recover_file --json's dir is where it appears.
	for _, p := range []*cliNode{bob, carol} {
		carry(t, root, alice, p)
		carry(t, root, p, alice)
	}
	if _, err := os.Stat(filepath.Join(rf.Dir, "big.bin")); err != nil {
		t.Errorf("after the answers: %v", err)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestCLI_ProgressBarOnATerminal: with stderr on a terminal, store draws its bar there
// (the label, the files counted, bytes), and stdout keeps the summary alone.
func TestCLI_ProgressBarOnATerminal(t *testing.T) {
	root := t.TempDir()
	alice, bob := newCLINode(t, root, "alice"), newCLINode(t, root, "bob")
	alice.addPeer(bob, "carry", "carry")
	tree := filepath.Join(root, "tree")
	writeTree(t, tree)

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	var stdout bytes.Buffer
	cmd := alice.Command("store", "--name", tree, "--json")
	cmd.Stdout, cmd.Stderr = &stdout, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the child has it
	got := make(chan []byte)
	go func() { b, _ := io.ReadAll(ptmx); got <- b }() // ends with EIO once the child is gone
	if err := cmd.Wait(); err != nil {
		t.Fatalf("store on a terminal: %v", err)
	}
	bar := string(<-got)
	var st storeSummary
	decodeLine(t, "store --json with a bar", stdout.String(), &st)
	if !strings.Contains(bar, "store ") || !strings.Contains(bar, "/"+itoa(st.Entries)+" files") || !strings.Contains(bar, "B") || !strings.Contains(bar, "\r") {
		t.Errorf("no bar of %d files on the terminal: %q", st.Entries, bar)
	}
	if strings.Contains(bar, "looked at") || strings.Contains(bar, "{") {
		t.Errorf("the summary went to the terminal: %q", bar)
	}
}

// A log record written while the bar is drawn clears the bar first, so the record
// starts its own line, and the bar is drawn again after it.
func TestBar_LogLineInterruptsTheBar(t *testing.T) {
	var out bytes.Buffer
	a := &App{Stderr: &out}
	b := &bar{w: &out, label: "store"}
	a.bar.Store(b)
	b.Start(1<<20, 4)
	b.Add(1<<19, 2)
	b.pb.RenderBlank()
	before := out.Len()
	if _, err := (stderrLog{a}).Write([]byte("level=WARNING msg=\"peer unreachable\"\n")); err != nil {
		t.Fatal(err)
	}
	got := out.String()[before:]
	i := strings.Index(got, "level=WARNING")
	if i < 0 {
		t.Fatalf("the record was not written: %q", got)
	}
	if cleared := got[:i]; !strings.HasSuffix(cleared, "\r") || strings.Contains(cleared, "store") {
		t.Errorf("the bar was not cleared before the record: %q", cleared)
	}
	if after := got[i:]; !strings.Contains(after, "store 2/4 files") {
		t.Errorf("the bar was not drawn again after the record: %q", after)
	}
	b.Done()
	a.bar.Store(nil)
	out.Reset()
	(stderrLog{a}).Write([]byte("level=ERROR msg=x\n"))
	if out.String() != "level=ERROR msg=x\n" {
		t.Errorf("without a bar the record is not written as is: %q", out.String())
	}
}
