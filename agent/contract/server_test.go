package contract_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent/contract"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newServer(t *testing.T, dir string, clk *clock) (*contract.Server, *contract.Client) {
	t.Helper()
	s, err := contract.OpenServer(dir, contract.ServerOptions{Now: clk.now, MaxPerKey: 2, MaxContracts: 3})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return s, &contract.Client{URL: hs.URL + "/peer_finder"}
}

func signed(t *testing.T, id *pgpmsg.Identity, name string, now time.Time) *contract.Contract {
	t.Helper()
	c := &contract.Contract{
		Name: name, MinQuota: 10e6, MaxQuota: 30e6, QuotaMult: 2.3, Talk: "passive", Listen: "active",
		Host: "backup-1.example.org", Port: 6363, Email: "alice-b@example.org",
		Posted: now, Lifetime: 3600,
	}
	if err := c.Sign(id); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServer_PostListUnpost(t *testing.T) {
	clk := &clock{time.Now()}
	dir := t.TempDir()
	alice, mallory := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Identity(t, "mallory")
	s, cl := newServer(t, dir, clk)
	ctx := context.Background()
	c := signed(t, alice, "alice-1", clk.t)
	if err := cl.Post(ctx, c); err != nil {
		t.Fatal(err) // a host name with '-' and an e-mail with '-' are fine
	}
	got, err := cl.Fetch(ctx, "alice-1")
	if err != nil || got.Fingerprint != string(alice.Fingerprint()) || got.Host != "backup-1.example.org" {
		t.Fatalf("Fetch = %+v, %v", got, err)
	}
	l, err := cl.List(ctx)
	if err != nil || len(l) != 1 {
		t.Fatalf("List = %v, %v", l, err)
	}
	resp, err := http.Get(strings.TrimSuffix(cl.URL, "/peer_finder") + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "alice-1") || !strings.Contains(string(page), "<table") {
		t.Errorf("HTML page lacks the contract:\n%s", page)
	}

	// The post survives a restart: it is on disk.
	s2, err := contract.OpenServer(dir, contract.ServerOptions{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s2.Get("alice-1"); !ok {
		t.Errorf("a new server on the same directory lacks alice-1")
	}

	// Only alice can withdraw it.
	forged, err := contract.NewUnpost(c, mallory, clk.t)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Unpost(ctx, forged); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("unpost signed by mallory: %v, want 403", err)
	}
	forged.Fingerprint = string(alice.Fingerprint()) // claims alice, signed by mallory
	if err := cl.Unpost(ctx, forged); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("unpost naming alice, signed by mallory: %v, want 403", err)
	}
	if _, ok := s.Get("alice-1"); !ok {
		t.Fatalf("a forged unpost removed the contract")
	}
	u, _ := contract.NewUnpost(c, alice, clk.t)
	if err := cl.Unpost(ctx, u); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Fetch(ctx, "alice-1"); !errors.Is(err, contract.ErrNotFound) {
		t.Errorf("Fetch after unpost: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "alice-1.json")); !os.IsNotExist(err) {
		t.Errorf("the withdrawn contract is still on disk: %v", err)
	}
	// The same signed post cannot bring it back.
	if err := cl.Post(ctx, c); err == nil {
		t.Errorf("a replayed post of a withdrawn contract was taken")
	}
}

func TestServer_LifetimeEnforced(t *testing.T) {
	clk := &clock{time.Now()}
	dir := t.TempDir()
	alice := pgpmsgtest.Identity(t, "alice")
	s, cl := newServer(t, dir, clk)
	ctx := context.Background()
	if err := cl.Post(ctx, signed(t, alice, "short", clk.t)); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(3601 * time.Second)
	if _, err := cl.Fetch(ctx, "short"); !errors.Is(err, contract.ErrNotFound) {
		t.Errorf("Fetch of an expired contract: %v", err)
	}
	if l, _ := cl.List(ctx); len(l) != 0 {
		t.Errorf("the listing shows an expired contract: %v", l)
	}
	if n := s.Expire(); n != 1 {
		t.Errorf("Expire removed %d, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "short.json")); !os.IsNotExist(err) {
		t.Errorf("the expired contract is still on disk: %v", err)
	}
}

func TestServer_RefusesBadPosts(t *testing.T) {
	clk := &clock{time.Now()}
	alice, bob, carol := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Identity(t, "bob"), pgpmsgtest.Identity(t, "carol")
	_, cl := newServer(t, t.TempDir(), clk)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(c *contract.Contract)
		want   string
	}{
		{"min above max", func(c *contract.Contract) { c.MinQuota = 40e6 }, "quotas"},
		{"zero quota", func(c *contract.Contract) { c.MinQuota = 0 }, "quotas"},
		{"negative mult", func(c *contract.Contract) { c.QuotaMult = -1 }, "quota_mult"},
		{"huge mult", func(c *contract.Contract) { c.QuotaMult = 1e9 }, "quota_mult"},
		{"talk carry", func(c *contract.Contract) { c.Talk = "carry" }, "talk"},
		{"host underscore", func(c *contract.Contract) { c.Host = "bad_host" }, "host"},
		{"host leading dash", func(c *contract.Contract) { c.Host = "-bad.example.org" }, "host"},
		{"port", func(c *contract.Contract) { c.Port = 70000 }, "port"},
		{"listen active without host", func(c *contract.Contract) { c.Host, c.Port = "", 0 }, "host"},
		{"email", func(c *contract.Contract) { c.Email = "alice at example.org" }, "email"},
		{"lifetime", func(c *contract.Contract) { c.Lifetime = 5 }, "lifetime"},
		{"name", func(c *contract.Contract) { c.Name = "../etc" }, "name"},
		{"old date", func(c *contract.Contract) { c.Posted = c.Posted.Add(-time.Hour) }, "clock"},
	} {
		c := signed(t, alice, "alice-x", clk.t)
		tc.change(c)
		c.Sign(alice) // a valid signature over the bad field: the field itself is refused
		err := cl.Post(ctx, c)
		if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a 400 naming %q", tc.name, err, tc.want)
		}
	}
	// Signed by another key than the one it advertises.
	c := signed(t, alice, "alice-x", clk.t)
	c.MaxQuota = 50e6 // after signing
	if err := cl.Post(ctx, c); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("post whose signature does not cover it: %v, want 403", err)
	}
	c = signed(t, alice, "alice-x", clk.t)
	b := signed(t, bob, "alice-x", clk.t)
	c.Signature = b.Signature
	if err := cl.Post(ctx, c); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("post signed by bob advertising alice: %v, want 403", err)
	}

	// Per-key and total limits (2 and 3 here), and names taken by another key.
	for _, n := range []string{"a1", "a2"} {
		if err := cl.Post(ctx, signed(t, alice, n, clk.t)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Post(ctx, signed(t, alice, "a3", clk.t)); err == nil || !strings.Contains(err.Error(), "at most 2") {
		t.Errorf("third contract of one key: %v", err)
	}
	if err := cl.Post(ctx, signed(t, bob, "a1", clk.t)); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Errorf("bob posting alice's name: %v", err)
	}
	if err := cl.Post(ctx, signed(t, bob, "b1", clk.t)); err != nil {
		t.Fatal(err)
	}
	if err := cl.Post(ctx, signed(t, carol, "c1", clk.t)); err == nil || !strings.Contains(err.Error(), "full") {
		t.Errorf("fourth contract on a server of 3: %v", err)
	}
}

func TestServer_MalformedAndOversized(t *testing.T) {
	clk := &clock{time.Now()}
	_, cl := newServer(t, t.TempDir(), clk)
	base := strings.TrimSuffix(cl.URL, "/peer_finder")
	for _, tc := range []struct {
		name, body string
		code       int
	}{
		{"not JSON", "name=foo&minQuota=1", 400},
		{"unknown field", `{"name":"x","revokePW":"y"}`, 400},
		{"two values", `{"name":"x"}{"name":"y"}`, 400},
		{"oversized", `{"name":"` + strings.Repeat("x", contract.MaxRequest) + `"}`, 413},
	} {
		resp, err := http.Post(base+"/post", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.code || e.Error == "" {
			t.Errorf("%s: %d %q, want %d with an error", tc.name, resp.StatusCode, e.Error, tc.code)
		}
	}
	// And it still serves.
	if err := cl.Post(context.Background(), signed(t, pgpmsgtest.Identity(t, "alice"), "after", clk.t)); err != nil {
		t.Errorf("post after bad requests: %v", err)
	}
}
