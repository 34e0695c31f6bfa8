package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An edit of dibsrc.toml beside the running daemon (set_option) is taken at the next
// watch and the schedules follow it; a dibsrc.toml that does not load is logged and the
// options in use are kept.
func TestReload_Options(t *testing.T) {
	e := newSchedEnv(t, "", "", map[string]string{"pollInterval": "600"})
	cron, err := Open(e.n.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := cron.SetOption("pollInterval", "120"); err != nil {
		t.Fatal(err)
	}
	cron.Close()
	e.jump(time.Second)
	if got := optPollInterval.Get(e.n.Opts); got != 120*time.Second {
		t.Fatalf("pollInterval after the edit: %v", got)
	}
	for _, job := range []string{"poll", "auto_check", "repair"} { // rescheduled after the watch ran
		waitFor(t, job+" due at 2m0s", func() bool { _, next := e.run(job); return next == 120*time.Second })
	}
	e.idle()
	if !strings.Contains(e.log.String(), `msg="dibsrc.toml reloaded" changed=pollInterval`) {
		t.Errorf("the reload is not logged:\n%s", e.log.String())
	}

	path := filepath.Join(e.n.Dir, optionsFile)
	good, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(good, []byte("pollInterval = \"often\"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	e.jump(time.Second)
	if got := optPollInterval.Get(e.n.Opts); got != 120*time.Second {
		t.Fatalf("pollInterval after a bad edit: %v; want the 2m0s in use", got)
	}
	if !strings.Contains(e.log.String(), "dibsrc.toml not reloaded: the options in use are kept") {
		t.Errorf("the bad edit is not logged:\n%s", e.log.String())
	}
	e.jump(118 * time.Second)
	e.wantRun("poll", 120*time.Second, 240*time.Second)
}

// peers.toml edited beside the daemon is read again; one that does not load, or that
// lacks a peer the books know (truncated), is logged and the list in use is kept.
func TestReload_Peers(t *testing.T) {
	e := newSchedEnv(t, "active", "active", nil)
	if err := e.n.updatePeerState("bob", func(ps *PeerState) { ps.LocalUsed = 1 }); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.n.Dir, peersFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"this is not toml [", "# emptied\n"} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(peersRetryEvery) // a failed reload is retried no sooner
		e.jump(time.Second)
		p, _, err := e.n.Peer("bob")
		if err != nil || p.Port != 9 {
			t.Fatalf("after peers.toml became %q: bob is %+v, %v; want the list in use", bad, p, err)
		}
	}
	if got := strings.Count(e.log.String(), "peers.toml not reloaded"); got != 2 {
		t.Errorf("%d bad peer lists logged; want 2:\n%s", got, e.log.String())
	}
	time.Sleep(peersRetryEvery)
	if err := os.WriteFile(path, []byte(strings.Replace(string(good), "port = 9", "port = 11", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.jump(time.Second)
	if p, _, err := e.n.Peer("bob"); err != nil || p.Port != 11 {
		t.Fatalf("after a good edit: bob is %+v, %v; want port 11", p, err)
	}
	if !strings.Contains(e.log.String(), "peers.toml reloaded") {
		t.Errorf("the reload is not logged:\n%s", e.log.String())
	}
}
