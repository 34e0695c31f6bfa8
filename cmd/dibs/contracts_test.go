package main

// Tests of the peer finder with real processes: `dibs contract_server` in the background,
// nodes posting, withdrawing and answering contracts through the binary.

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

// startContractServer runs dibs contract_server on a free port and returns its URL.
func startContractServer(t *testing.T, dir string, args ...string) (*clirun.Proc, string) {
	t.Helper()
	port := clirun.FreePort(t)
	cmd := exec.Command(dibsBin, append([]string{"contract_server", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--dir", dir}, args...)...)
	cmd.Env = clirun.CleanEnv()
	p := clirun.StartProc(t, "contract_server", cmd, port)
	return p, "http://127.0.0.1:" + strconv.Itoa(port) + "/peer_finder"
}

func postedRow(t *testing.T, n *cliNode, name string) map[string]any {
	t.Helper()
	for _, r := range n.Database("posted_contracts") {
		if r["name"] == name {
			return r
		}
	}
	return nil
}

func TestContractServer_PostUnpostSurvivesKill(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "finder")
	srv, url := startContractServer(t, dir)
	alice := newCLINode(t, root, "alice")
	mallory := newCLINode(t, root, "mallory")

	out := alice.OK("post_contract", "--min_quota", "10M", "--max_quota", "30M", "--quota_mult", "2.3",
		"--lifetime", "3600", "--contract_name", "alice-1", "--url", url, "--host", "alice-pc.example.org", "--port", "6363")
	if !strings.Contains(out, "posted contract alice-1") {
		t.Errorf("post_contract says %q", out)
	}
	r := postedRow(t, alice, "alice-1")
	if r == nil || r["state"] != "posted" || r["min_quota"] != 10e6 || r["expires"] == "" {
		t.Fatalf("show_database --only posted_contracts: %v", r)
	}
	if exp, err := time.Parse(time.RFC3339, r["expires"].(string)); err != nil || time.Until(exp) < 59*time.Minute {
		t.Errorf("expires %v (%v), want about an hour from now", r["expires"], err)
	}
	if _, e, code := alice.Run("post_contract", "--min_quota", "10M", "--max_quota", "30M", "--quota_mult", "1",
		"--lifetime", "3600", "--contract_name", "alice-1", "--url", url, "--host", "h.example.org"); code == 0 {
		t.Errorf("posting alice-1 twice worked")
	} else if !strings.Contains(e, "alice-1") {
		t.Errorf("posting alice-1 twice: %q", e)
	}

	// kill -9: the post was committed before the answer.
	srv.Cmd.Process.Signal(syscall.SIGKILL)
	<-srv.Done()
	srv2, url2 := startContractServer(t, dir)
	resp, err := http.Get(strings.TrimSuffix(url2, "/peer_finder") + "/contracts.json")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64<<10)
	k, _ := resp.Body.Read(b)
	resp.Body.Close()
	if !strings.Contains(string(b[:k]), `"alice-1"`) {
		t.Fatalf("after kill -9 and a restart, contracts.json lacks alice-1: %s", b[:k])
	}

	// mallory cannot withdraw it: she posted no such contract, and a request she signs
	// is refused by the server (TestServer_PostListUnpost has the forged request).
	if _, e, code := mallory.Run("unpost_contract", "--contract_name", "alice-1", "--url", url2); code == 0 || !strings.Contains(e, "no contract alice-1") {
		t.Errorf("mallory unposting alice-1: exit %d, %q", code, e)
	}
	alice.OK("unpost_contract", "--contract_name", "alice-1", "--url", url2)
	if r := postedRow(t, alice, "alice-1"); r != nil {
		t.Errorf("after unpost_contract, show_database still lists %v", r)
	}
	resp, err = http.Get(strings.TrimSuffix(url2, "/peer_finder") + "/contracts/alice-1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the server still serves alice-1 after unpost: %s", resp.Status)
	}

	// A post the server refuses is a clear one-line error, and the server goes on.
	_, e, code := alice.Run("post_contract", "--min_quota", "30M", "--max_quota", "10M", "--quota_mult", "1",
		"--lifetime", "3600", "--url", url2, "--host", "h.example.org")
	if code == 0 || strings.Count(strings.TrimSpace(e), "\n") != 0 || !strings.Contains(e, "min_quota") {
		t.Errorf("post with min above max: exit %d, stderr %q", code, e)
	}
	alice.OK("post_contract", "--min_quota", "1M", "--max_quota", "10M", "--quota_mult", "1",
		"--lifetime", "3600", "--url", url2, "--host", "h.example.org", "--contract_name", "alice-2")
	srv2.Stop(t, syscall.SIGTERM, 10*time.Second)
	if !strings.Contains(srv2.Stdout.String(), "dibs contract server stopped") {
		t.Errorf("contract_server did not say it stopped: %q", srv2.Stdout.String())
	}
}
