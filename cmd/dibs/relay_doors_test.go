package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
	"github.com/dibs-backup/dibs/pgpmsg"
	"golang.org/x/crypto/bcrypt"
)

// TestRelayServer_ThreeDoors: two NAT'd nodes back up to each other through one
// relay_server with all three doors. mel only sends mail (SMTP submission with AUTH over
// STARTTLS) and reads its IMAP mailbox (IMAPS); hal only speaks HTTPS to the relay. So
// everything mel sends reaches hal as SMTP in → HTTP poll, and everything hal sends
// reaches mel as HTTP deposit → IMAP fetch. Both store a tree; mel loses its whole
// DIBS_DIR, and recover_all brings every byte back through the same doors.
func TestRelayServer_ThreeDoors(t *testing.T) {
	root := t.TempDir()
	mel, hal := newCLINode(t, root, "mel"), newCLINode(t, root, "hal")
	port, smtpPort, imapPort := clirun.FreePort(t), clirun.FreePort(t), clirun.FreePort(t)
	cert, key := selfSignedRelayCert(t, root)
	allow := filepath.Join(root, "allow.asc")
	concatFiles(t, allow, mel.keyFile, hal.keyFile)
	users := filepath.Join(root, "users.toml")
	var ut strings.Builder
	for _, n := range []*cliNode{mel, hal} {
		h, err := bcrypt.GenerateFromPassword([]byte(n.Name+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&ut, "[[user]]\nkey = %q\nmail = %q\npassword = %q\n\n", keyFingerprint(t, n.keyFile), n.Name+"@relay.test", h)
	}
	if err := os.WriteFile(users, []byte(ut.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	relayDir := filepath.Join(root, "relay")
	srv := startRelay(t, port, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--dir", relayDir, "--allow", allow,
		"--users", users, "--smtp", fmt.Sprintf("127.0.0.1:%d", smtpPort), "--imap", fmt.Sprintf("127.0.0.1:%d", imapPort),
		"--tls_cert", cert, "--tls_key", key, "--max_size", "2m")
	url := fmt.Sprintf("https://127.0.0.1:%d", port)

	configure := func() {
		for _, n := range []*cliNode{mel, hal} {
			n.OK("set_option", "--name", "kbPerFile", "--value", "100")
		}
		for name, value := range map[string]string{
			"dibsAdmin": "mel@relay.test", "mailCAFile": cert,
			"smtpServer": fmt.Sprintf("127.0.0.1:%d", smtpPort), "smtpUser": "mel@relay.test", "smtpPassword": "mel-pw", "smtpTLS": "starttls",
			"imapServer": fmt.Sprintf("127.0.0.1:%d", imapPort), "imapUser": "mel@relay.test", "imapPassword": "mel-pw", "imapTLS": "tls",
		} {
			mel.OK("set_option", "--name", name, "--value", value)
		}
		hal.OK("set_option", "--name", "relayURL", "--value", url)
		hal.OK("set_option", "--name", "relayCAFile", "--value", cert)
	}
	configure()
	mel.OK("add_peer", "--peer", "hal", "--email", "hal@relay.test", "--local_quota", "100m", "--remote_quota", "100m",
		"--talk", "mail", "--listen", "mail", "--key_file", hal.keyFile)
	hal.OK("add_peer", "--peer", "mel", "--email", "mel@relay.test", "--local_quota", "100m", "--remote_quota", "100m",
		"--talk", "relay", "--listen", "relay", "--relay", url, "--key_file", mel.keyFile)

	// cron runs rounds of the three commands on both nodes until done says so.
	cron := func(what string, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: cron rounds never got there; relay stderr:\n%s", what, tail(srv.Stderr.String(), 3000))
			}
			for _, n := range []*cliNode{mel, hal} {
				n.Run("send_message")
				n.Run("poll_passives")
				n.OK("process_message")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	allStored := func(n *cliNode) func() bool {
		return func() bool {
			rows := n.Database("files")
			for _, r := range rows {
				if r["status"] != "stored" {
					return false
				}
			}
			return len(rows) > 120
		}
	}
	trees := map[string]string{}
	for _, n := range []*cliNode{mel, hal} {
		tree := filepath.Join(root, "tree-"+n.Name)
		writeTree(t, tree)
		trees[n.Name] = tree
		if out := n.OK("store", "--name", tree, "--as", "docs"); !strings.Contains(out, "new versions") {
			t.Fatalf("%s: store said %q", n.Name, out)
		}
	}
	cron("storing", func() bool { return allStored(mel)() && allStored(hal)() })
	if r := mel.Database("peers")[0]; r["last_method"] != "mail" {
		t.Errorf("mel's row of hal: last_method %v; want mail", r["last_method"])
	}
	if r := hal.Database("peers")[0]; r["last_method"] != "relay" {
		t.Errorf("hal's row of mel: last_method %v; want relay", r["last_method"])
	}

	// mel's disk dies (hal holds mel's pieces; mel's copy of hal's would die with it).
	for _, n := range []*cliNode{mel} {
		kit := filepath.Join(root, n.Name+"-kit.asc")
		n.OK("export_recovery_kit", "--out", kit)
		os.RemoveAll(n.Dir)
		n.OK("import_recovery_kit", "--file", kit)
		n.OK("set_option", "--name", "statusAddress", "--value", "127.0.0.1:0")
		n.OK("set_option", "--name", "talkRetryDelay", "--value", "0")
		configure()
		if rows := n.Database("files"); len(rows) != 0 {
			t.Fatalf("%s: a fresh directory knows %d files", n.Name, len(rows))
		}
		n.OK("recover_all")
		cron(n.Name+": recover_all", func() bool {
			for _, r := range n.Database("recovery") {
				if r["name"] == "*all*" && r["state"] != "waiting" {
					return true
				}
			}
			return false
		})
		for _, r := range n.Database("recovery") {
			if r["state"] != "done" {
				t.Fatalf("%s: recovery: %v", n.Name, r)
			}
		}
		want, got := treeSums(t, trees[n.Name]), treeSums(t, filepath.Join(n.Dir, "recovery", "docs"))
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s: recovered %q, want %q", n.Name, k, got[k], v)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: recovered %d entries, stored %d", n.Name, len(got), len(want))
		}
	}
	for _, n := range []*cliNode{mel, hal} {
		if q, _ := os.ReadDir(filepath.Join(n.Dir, "quarantine")); len(q) > 0 {
			t.Errorf("%s quarantined %d files", n.Name, len(q))
		}
	}

	// The operator's view: both mail doors and the HTTP door took and gave files.
	metrics := fetchMetrics(t, port, cert)
	for _, want := range []string{`dibs_relay_deposits_total{door="smtp"}`, `dibs_relay_deposits_total{door="http"}`,
		`dibs_relay_collections_total{door="imap"}`, `dibs_relay_collections_total{door="http"}`} {
		line := metricLine(metrics, want)
		if line == "" || strings.HasSuffix(line, " 0") {
			t.Errorf("/metrics: %q is %q; want more than 0", want, line)
		}
	}
	if !strings.Contains(metrics, `dibs_relay_queue_files{key="`) {
		t.Errorf("/metrics has no queue of any key:\n%s", metrics)
	}
	stopRelay(t, srv)
}

func keyFingerprint(t *testing.T, file string) pgpmsg.Fingerprint {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, err := pgpmsg.ReadKey(f)
	if err != nil {
		t.Fatal(err)
	}
	return k.Fingerprint()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func metricLine(metrics, name string) string {
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	return ""
}

// fetchMetrics reads /metrics of the relay on port, over TLS trusting cert.
func fetchMetrics(t *testing.T, port int, cert string) string {
	t.Helper()
	c, err := httpsClient(cert)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s: %s", resp.Status, b)
	}
	return string(b)
}

func httpsClient(cert string) (*http.Client, error) {
	b, err := os.ReadFile(cert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}, nil
}
