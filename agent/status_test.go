package agent_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/testenv"
)

// statusNode is alice with what a person looks for on the status page: two stored files,
// one degraded (bob's disk flipped bytes in its pieces, and a probe found out), and a
// HELLO queued for carol. Its daemon serves the status on the returned base URL.
func statusNode(t *testing.T) (*testenv.Env, string) {
	t.Helper()
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}, {Name: "dave"}, {Name: "erin"}},
		Options: map[string]string{"kbPerFile": "100"}})
	alice := env.Node("alice")
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("damaged.txt", bytes.Repeat([]byte("soon degraded \x00\r\n"), 5000))
	if _, err := alice.Store(ctx, filepath.Join(dir, "damaged.txt"), "/damaged.txt"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	for _, p := range piecesOn(t, env.Node("bob"), "alice") {
		b, _ := os.ReadFile(p)
		for i := 0; i < len(b); i += 1024 {
			b[i] ^= 0x55
		}
		os.WriteFile(p, b, 0o600)
	}
	if _, err := alice.Probe("/damaged.txt"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 10)
	for _, name := range []string{"notes.txt", "photo.raw"} {
		write(name, bytes.Repeat([]byte(name), 3000))
		if _, err := alice.Store(ctx, filepath.Join(dir, name), "/"+name); err != nil {
			t.Fatal(err)
		}
	}
	env.Settle(ctx, 20)
	alice.Post("carol", agent.TypeHello) // not sent: no daemon loop runs, no Settle follows
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	alice.Daemon.ServeStatus(ln)
	return env, "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), resp.Header
}

// /status.json decodes into the documented fields, /metrics parses as Prometheus text,
// and the page shows the peers, the degraded file and the queue.
func TestStatus_JSONMetricsAndPage(t *testing.T) {
	_, base := statusNode(t)

	body, _ := get(t, base+"/status.json")
	var rep agent.StatusReport
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields() // every field it serves is one StatusReport documents
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("/status.json: %v\n%s", err, body)
	}
	if rep.Version != agent.SoftwareVersion || rep.Started == "" {
		t.Errorf("version %q, started %q", rep.Version, rep.Started)
	}
	if c := rep.FileCounts; c["degraded"] != 1 || c["stored"] != 2 || c["lost"] != 0 {
		t.Errorf("file_counts %v, want 1 degraded and 2 stored", c)
	}
	if len(rep.Files) != 3 || rep.Files[0].Name != "/damaged.txt" || rep.Files[0].Status != agent.StatusDegraded {
		t.Errorf("files, the worst first: %+v", rep.Files)
	}
	depth := map[string]int{}
	for _, p := range rep.Peers {
		depth[p.Peer] = p.QueueDepth
		if p.Peer == "bob" && (p.ProbePassRate == nil || *p.ProbePassRate >= 1 || p.ProbeFailed == 0) {
			t.Errorf("bob failed probes, but his row says %+v", p)
		}
	}
	if len(rep.Peers) != 4 || depth["carol"] != 1 || depth["dave"] != 0 {
		t.Errorf("queue depths %v, want carol 1 of 4 peers", depth)
	}
	// The files were stored by Store (as `dibs store` from cron would), not by the
	// daemon's auto_check: the report still knows when.
	if rep.LastStore == nil {
		t.Errorf("last_store is null after a store beside the daemon")
	}
	var raw map[string]json.RawMessage
	json.Unmarshal([]byte(body), &raw)
	for _, f := range []string{"version", "uptime_seconds", "peers", "file_counts", "files", "recoveries", "jobs", "last_repair", "last_probe", "last_store"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("/status.json has no %q", f)
		}
	}

	body, hdr := get(t, base+"/metrics")
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	value := func(family string, labels ...string) (float64, bool) {
		for _, m := range families[family].GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			match := true
			for i := 0; i+1 < len(labels); i += 2 {
				match = match && got[labels[i]] == labels[i+1]
			}
			if match {
				if m.Gauge != nil {
					return m.Gauge.GetValue(), true
				}
				return m.Counter.GetValue(), true
			}
		}
		return 0, false
	}
	for _, want := range []struct {
		family string
		labels []string
		value  float64
	}{
		{"dibs_queue_depth", []string{"peer", "carol"}, 1},
		{"dibs_queue_depth", []string{"peer", "dave"}, 0},
		{"dibs_files", []string{"health", "degraded"}, 1},
		{"dibs_files", []string{"health", "stored"}, 2},
		{"dibs_status_up", nil, 1},
	} {
		if v, ok := value(want.family, want.labels...); !ok || v != want.value {
			t.Errorf("%s%v = %v (found %v), want %v", want.family, want.labels, v, ok, want.value)
		}
	}
	for _, f := range []string{"dibs_queue_oldest_age_seconds", "dibs_bytes_stored", "dibs_bytes_held",
		"dibs_probes", "dibs_repair_pieces_total", "dibs_last_success_timestamp_seconds"} {
		if families[f] == nil {
			t.Errorf("/metrics has no %s", f)
		}
	}
	if v, _ := value("dibs_probes", "peer", "bob", "result", "failed"); v == 0 {
		t.Errorf("dibs_probes{peer=bob,result=failed} = 0")
	}

	page, hdr := get(t, base+"/")
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("/ Content-Type %q", ct)
	}
	for _, want := range []string{"bob", "carol", "dave", "erin", "/damaged.txt", "degraded: 1", `name="viewport"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// dibs_messages_total counts what the daemon's processing did by message type: a HELLO
// processed, a stale HELLO quarantined, and under "unknown" a file that is no message
// and a message of a type the protocol does not have (what a sender writes there is no
// label).
func TestStatus_MetricsCountMessagesByType(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}, Daemons: true})
	bob := env.Node("bob")
	alice, bobKey := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Key(t, "bob")
	now := time.Now()
	bogus := hello(alice, bob.ID, now)
	bogus.Set(pgpmsg.FieldType, "BOGUS")
	for name, data := range map[string][]byte{
		"hello.pgp":   seal(t, hello(alice, bob.ID, now), alice, bobKey),
		"stale.pgp":   seal(t, hello(alice, bob.ID, now.Add(-30*24*time.Hour)), alice, bobKey),
		"garbage.pgp": []byte("not an OpenPGP message\n"),
		"bogus.pgp":   rawSeal(t, bogus, alice, bobKey),
	} {
		put(t, bob, name, data)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bob.Daemon.ServeStatus(ln)

	want := map[[2]string]float64{
		{"processed", agent.TypeHello}:   1,
		{"quarantined", agent.TypeHello}: 1,
		{"quarantined", "unknown"}:       2,
	}
	var got map[[2]string]float64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		body, _ := get(t, "http://"+ln.Addr().String()+"/metrics")
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("/metrics does not parse: %v\n%s", err, body)
		}
		got = map[[2]string]float64{}
		for _, m := range families["dibs_messages_total"].GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			got[[2]string{l["outcome"], l["type"]}] = m.GetCounter().GetValue()
		}
		if got[[2]string{"quarantined", "unknown"}] >= 2 && got[[2]string{"processed", agent.TypeHello}] >= 1 &&
			got[[2]string{"quarantined", agent.TypeHello}] >= 1 || time.Now().After(deadline) {
			break
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("dibs_messages_total{outcome=%q,type=%q} = %v, want %v", k[0], k[1], got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok && v != 0 {
			t.Errorf("dibs_messages_total{outcome=%q,type=%q} = %v: nothing of that was sent", k[0], k[1], v)
		}
		if k[1] == "BOGUS" {
			t.Errorf("the sender's type BOGUS became a label")
		}
	}
	if _, ok := got[[2]string{"processed", "unknown"}]; ok {
		t.Errorf("an unknown type is never processed, yet /metrics has a series for it")
	}
}
