package main

// Tests of the peer finder with real processes: `dibs contract_server` in the background,
// nodes posting, withdrawing and answering contracts through the binary.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent/contract"
	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// startContractServer runs dibs contract_server on a free port and returns its URL.
func startContractServer(t *testing.T, dir string, args ...string) (*clirun.Proc, string) {
	t.Helper()
	port := clirun.FreePort(t)
	cmd := exec.Command(dibsBin, append([]string{"contract_server", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--dir", dir}, args...)...)
	cmd.Env = clirun.CleanEnv()
	p := clirun.StartProc(t, "contract_server", cmd, port)
	// The port opens a moment before the first line is printed.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.Stdout.String(), "serving") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
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
	// A withdrawal signed by another key is refused by the server process itself.
	cl := &contract.Client{URL: url2}
	posted, err := cl.Fetch(t.Context(), "alice-1")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := contract.NewUnpost(posted, pgpmsgtest.Identity(t, "mallory"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged.Fingerprint = posted.Fingerprint // claims to be alice's
	if err := cl.Unpost(t.Context(), forged); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a forged unpost: %v, want 403", err)
	}
	if _, err := cl.Fetch(t.Context(), "alice-1"); err != nil {
		t.Fatalf("after a forged unpost: %v", err)
	}
	// Oversized and malformed posts: a clear error each, and the server goes on.
	base := strings.TrimSuffix(url2, "/peer_finder")
	for body, want := range map[string]int{
		strings.Repeat("x", 100<<10):   http.StatusRequestEntityTooLarge,
		"name=alice-1&revokePW=secret": http.StatusBadRequest,
	} {
		resp, err := http.Post(base+"/peer_finder/post", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || !strings.Contains(string(msg), `"error"`) {
			t.Errorf("a bad post: %s %s, want %d with an error", resp.Status, msg, want)
		}
	}
	if _, err := cl.List(t.Context()); err != nil {
		t.Errorf("the server after bad posts: %v", err)
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

func rowOf(rows []map[string]any, key, value string) map[string]any {
	for _, r := range rows {
		if r[key] == value {
			return r
		}
	}
	return nil
}

// The full handshake as real processes: a reachable poster runs start_daemon, a
// proposer behind NAT with no daemon runs propose_contract and then only its cron
// commands. Afterwards each lists the other as a peer with the agreed quotas, and a
// store on the proposer puts pieces on the poster.
func TestContracts_HandshakeNATProposer(t *testing.T) {
	root := t.TempDir()
	_, url := startContractServer(t, filepath.Join(root, "finder"))
	poster := newCLINode(t, root, "poster")
	nat := newCLINode(t, root, "nat")
	poster.OK("set_option", "--name", "dibsAdmin", "--value", "poster-admin@cli.invalid")
	nat.OK("set_option", "--name", "dibsAdmin", "--value", "nat-admin@cli.invalid")
	poster.OK("post_contract", "--min_quota", "10M", "--max_quota", "30M", "--quota_mult", "2", "--lifetime", "3600",
		"--contract_name", "poster-1", "--talk", "passive", "--listen", "active", "--url", url,
		"--host", "127.0.0.1", "--port", fmt.Sprint(poster.port))
	d := poster.startDaemon()

	// The poster's view: it gives 10M, gets 25M; it keeps our files for us to pull.
	out := nat.OK("propose_contract", "--contract_name", "poster-1", "--local_quota", "10M", "--remote_quota", "25M", "--url", url)
	if !strings.Contains(out, "proposed to poster-1") {
		t.Fatalf("propose_contract: %q", out)
	}
	if r := rowOf(nat.Database("proposed_contracts"), "name", "poster-1"); r == nil || r["state"] != "sent" {
		t.Fatalf("proposed_contracts after propose_contract: %v", r)
	}
	if len(nat.Database("peers")) != 0 {
		t.Fatalf("the proposer lists peers before any answer: %v", nat.Database("peers"))
	}
	cron := func(n *cliNode, until func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !until() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: cron rounds never got there; the poster's daemon said:\n%s", n.Name, d.Stderr.String())
			}
			n.Run("send_message")
			n.Run("poll_passives")
			n.OK("process_message")
			time.Sleep(100 * time.Millisecond)
		}
	}
	cron(nat, func() bool {
		r := rowOf(nat.Database("proposed_contracts"), "name", "poster-1")
		return r != nil && r["state"] != "sent"
	})
	if r := rowOf(nat.Database("proposed_contracts"), "name", "poster-1"); r["state"] != "accepted" || r["answered"] == nil {
		t.Fatalf("proposal: %v", r)
	}
	pp := rowOf(nat.Database("peers"), "peer", "poster-admin@cli.invalid")
	if pp == nil || pp["local_quota"] != 25e6 || pp["remote_quota"] != 10e6 || pp["talk"] != "active" || pp["listen"] != "passive" ||
		pp["host"] != "127.0.0.1" || pp["port"] != float64(poster.port) {
		t.Fatalf("the proposer's record of the poster: %v", pp)
	}
	np := rowOf(poster.Database("peers"), "peer", "nat.dibs@cli.invalid")
	if np == nil || np["local_quota"] != 10e6 || np["remote_quota"] != 25e6 || np["talk"] != "passive" || np["listen"] != "active" ||
		np["email"] != "nat-admin@cli.invalid" || np["fingerprint"] == "" {
		t.Fatalf("the poster's record of the proposer: %v (all: %v)", np, poster.Database("peers"))
	}
	if r := rowOf(poster.Database("posted_contracts"), "name", "poster-1"); r == nil || r["state"] != "taken" || r["taken_by"] != "nat.dibs@cli.invalid" {
		t.Errorf("posted_contracts after acceptance: %v", r)
	}

	// The taken contract leaves the server with the poster's next send_message.
	poster.OK("send_message")
	resp, err := http.Get(strings.TrimSuffix(url, "/peer_finder") + "/contracts/poster-1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the taken contract is still posted: %s", resp.Status)
	}

	// And they trade: a store on the proposer lands on the poster.
	file := filepath.Join(root, "notes.txt")
	os.WriteFile(file, []byte(strings.Repeat("the peer finder works\n", 500)), 0o600)
	nat.OK("store", "--name", file)
	cron(nat, func() bool {
		rows := nat.Database("files")
		return len(rows) == 1 && rows[0]["status"] == "stored"
	})
	if r := rowOf(poster.Database("storage"), "peer", "nat.dibs@cli.invalid"); r == nil || r["pieces"].(float64) < 1 {
		t.Errorf("the poster holds nothing for the proposer: %v", poster.Database("storage"))
	}
	poster.stopDaemon(d)
	for _, n := range []*cliNode{poster, nat} {
		if q := files(t, filepath.Join(n.Dir, "quarantine")); len(q) > 0 {
			t.Errorf("%s quarantined %v", n.Name, q)
		}
	}
}

// propose_contract refuses, with one clear line and nothing kept, what does not fit the
// contract, and a contract that is no longer posted.
func TestContracts_ProposeRefusedLocally(t *testing.T) {
	root := t.TempDir()
	_, url := startContractServer(t, filepath.Join(root, "finder"))
	poster, prop := newCLINode(t, root, "poster"), newCLINode(t, root, "prop")
	poster.OK("post_contract", "--min_quota", "10M", "--max_quota", "30M", "--quota_mult", "2", "--lifetime", "3600",
		"--contract_name", "p-1", "--talk", "passive", "--listen", "active", "--url", url, "--host", "127.0.0.1", "--port", fmt.Sprint(poster.port))
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--local_quota", "10M", "--remote_quota", "50M"}, "outside the contract's"},
		{[]string{"--local_quota", "20M", "--remote_quota", "25M"}, "less than 2 times"},
		{[]string{"--local_quota", "10M", "--remote_quota", "25M", "--talk", "mail"}, "talk"},
		{[]string{"--local_quota", "10M", "--remote_quota", "25M", "--contract_name", "nope"}, "not posted"},
	} {
		args := append([]string{"propose_contract", "--contract_name", "p-1", "--url", url}, tc.args...)
		_, e, code := prop.Run(args...)
		if code == 0 || strings.Count(strings.TrimSpace(e), "\n") != 0 || !strings.Contains(e, tc.says) {
			t.Errorf("%v: exit %d, stderr %q; want one line saying %q", tc.args, code, e, tc.says)
		}
	}
	poster.OK("unpost_contract", "--contract_name", "p-1")
	if _, e, code := prop.Run("propose_contract", "--contract_name", "p-1", "--url", url, "--local_quota", "10M", "--remote_quota", "25M"); code == 0 || !strings.Contains(e, "not posted") {
		t.Errorf("proposing to an unposted contract: exit %d, %q", code, e)
	}
	if rows := prop.Database("proposed_contracts"); len(rows) != 0 {
		t.Errorf("refused proposals were kept: %v", rows)
	}
	if rows := prop.Database("peers"); len(rows) != 0 {
		t.Errorf("refused proposals made peers: %v", rows)
	}
}

// With --tls_cert and --tls_key the contract server speaks HTTPS only.
func TestContractServer_TLS(t *testing.T) {
	root := t.TempDir()
	cert, key := selfSignedRelayCert(t, root)
	srv, url := startContractServer(t, filepath.Join(root, "finder"), "--tls_cert", cert, "--tls_key", key)
	if !strings.Contains(srv.Stdout.String(), "serving https://") {
		t.Errorf("contract_server's first line: %q", srv.Stdout.String())
	}
	pem, _ := os.ReadFile(cert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	base := strings.Replace(strings.TrimSuffix(url, "/peer_finder"), "http://", "https://", 1)
	resp, err := hc.Get(base + "/contracts.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"contracts"`) {
		t.Errorf("GET /contracts.json over TLS: %s %s", resp.Status, b)
	}
	if resp, err := http.Get(strings.TrimSuffix(url, "/peer_finder") + "/contracts.json"); err == nil {
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP was answered 200 by a TLS server")
		}
		resp.Body.Close()
	}
	if _, e, code := (&cliNode{Node: &clirun.Node{T: t, Bin: dibsBin, Name: "x", Dir: filepath.Join(root, "x")}}).Run("contract_server", "--listen", "127.0.0.1:0", "--dir", root, "--tls_cert", cert); code != 2 || !strings.Contains(e, "go together") {
		t.Errorf("--tls_cert without --tls_key: exit %d, %q", code, e)
	}
}
