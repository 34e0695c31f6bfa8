package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/relay"
)

// The HTTP door's deposits, collections and refusals are counted and logged; /metrics
// answers loopback clients only.
func TestRelayMetrics_CountsAndLoopbackOnly(t *testing.T) {
	dir := t.TempDir()
	var allow bytes.Buffer
	for _, n := range []string{"alice", "bob"} {
		pgpmsgtest.Key(t, n).WriteArmored(&allow)
	}
	allowFile := filepath.Join(dir, "allow.asc")
	writeTestFile(t, allowFile, allow.Bytes())
	store, err := relay.OpenDirStore(filepath.Join(dir, "store"), relay.DirOptions{AllowFile: allowFile, Quota: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	m := newRelayMetrics(store, allowFile, slog.New(slog.NewTextHandler(&logs, nil)))
	s := m.door(store, "http", true)
	alice, bob := pgpmsgtest.Identity(t, "alice").Fingerprint(), pgpmsgtest.Identity(t, "bob").Fingerprint()
	if err := s.Deposit(alice, bob, "f1", 10, strings.NewReader("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := s.Deposit(alice, bob, "f2", 2000, strings.NewReader(strings.Repeat("x", 2000))); err == nil {
		t.Fatal("a deposit over quota went through")
	}
	if _, err := s.Recipient(alice, pgpmsg.Fingerprint(strings.Repeat("AB", 20))); err == nil {
		t.Fatal("a recipient outside the allow file was taken")
	}

	get := func(remote string) (int, string) {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		m.handler(http.NotFoundHandler()).ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, string(b)
	}
	if code, _ := get("192.0.2.7:5000"); code != http.StatusForbidden {
		t.Errorf("/metrics from beyond loopback: %d; want 403", code)
	}
	code, body := get("127.0.0.1:5000")
	if code != http.StatusOK {
		t.Fatalf("/metrics from loopback: %d", code)
	}
	for _, want := range []string{
		`dibs_relay_deposits_total{door="http"} 1`,
		`dibs_relay_refusals_total{door="http",reason="over_quota"} 1`,
		`dibs_relay_refusals_total{door="http",reason="forbidden"} 1`,
		`dibs_relay_queue_files{key="` + string(bob) + `",user=""} 1`,
		`dibs_relay_queue_bytes{key="` + string(bob) + `",user=""} 10`,
		`dibs_relay_queue_files{key="` + string(alice) + `",user=""} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	if err := s.Remove(bob, "f1"); err != nil {
		t.Fatal(err)
	}
	if _, body := get("[::1]:5000"); !strings.Contains(body, `dibs_relay_collections_total{door="http"} 1`+"\n") {
		t.Errorf("/metrics after a collection:\n%s", body)
	}
	for _, want := range []string{"msg=deposit door=http", "msg=refused door=http reason=over_quota", "msg=collected door=http"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, logs.String())
		}
	}
}

func writeTestFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
