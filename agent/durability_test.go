package agent_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// A flaky peer: erin takes alice's pieces, then her answers stop reaching alice (the
// sender thinks they arrived). Each day alice probes the file; erin's probes time out
// and her silence grows, so her loss estimate rises and the estimates of the segments
// she holds a piece of fall. Repair moves her pieces to the four reliable peers (each
// segment is on four of the five) before any segment's estimate falls below
// durabilityTarget, and before repairAfter would count her silent: by the estimate,
// not by spares.
func TestRepair_MovesFlakyPeersPiecesBeforeTarget(t *testing.T) {
	const target = 4.0 // nines: repair starts below 5; four new peers on a 2+2 code give 5.66
	env := testenv.New(t, testenv.Setup{
		Nodes:   []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}, {Name: "dave"}, {Name: "erin"}, {Name: "mallory"}},
		Options: map[string]string{"kbPerFile": "100", "durabilityTarget": "4"},
	})
	alice, erin := env.Node("alice"), env.Node("erin")
	clock := &offsetClock{}
	for _, n := range env.Nodes {
		n.Now = clock.Now
	}
	data := make([]byte, 900_000) // five segments of two 100 kB pieces
	rng := rand.New(rand.NewPCG(16, 3))
	for i := range data {
		data[i] = byte(rng.UintN(256))
	}
	src := filepath.Join(t.TempDir(), "big.dat")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Store(ctx, src, "/big.dat"); err != nil {
		t.Fatal(err)
	}
	env.Settle(ctx, 20)
	if k, m, _ := agent.CodeFor(5, 2); k != 2 || m != 2 {
		t.Fatalf("code for five peers: %d+%d, the test assumes 2+2", k, m)
	}
	lowest := func(when string) float64 {
		t.Helper()
		nines, err := alice.SegmentNines()
		if err != nil {
			t.Fatal(err)
		}
		low := slices.Min(nines)
		t.Logf("%s: lowest segment %.2f nines, erin's loss %.4f, erin holds %d pieces", when, low, lossOf(t, alice, "erin"), piecesThere(t, alice, "erin"))
		if low < target {
			t.Fatalf("%s: a segment at %.2f nines, below the target %v", when, low, target)
		}
		return low
	}
	start := lowest("stored")
	held := piecesThere(t, alice, "erin")
	if held == 0 {
		t.Fatal("erin holds no piece: the test tests nothing")
	}
	res, err := alice.Repair()
	if err != nil || res.Moved != 0 || res.Rebuilt != 0 {
		t.Fatalf("repair among peers alike: %+v, %v; want nothing moved", res, err)
	}

	erin.Faults.SetRule(func(to string, _ queue.Message) testenv.Fault {
		if to == "alice" {
			return testenv.Lose
		}
		return testenv.Pass
	})
	moved, dipped := 0, false
	for day := 1; day <= 6 && piecesThere(t, alice, "erin") > 0; day++ {
		if _, err := alice.Probe("/big.dat"); err != nil {
			t.Fatal(err)
		}
		env.Settle(ctx, 20)
		clock.Set(time.Duration(day) * (24*time.Hour + time.Hour)) // past probeTimeout
		if _, err := alice.ExpireProbes(); err != nil {
			t.Fatal(err)
		}
		if lowest(fmt.Sprintf("day %d, probes expired", day)) < start {
			dipped = true
		}
		res, err := alice.Repair()
		if err != nil {
			t.Fatal(err)
		}
		if res.MarkedLost != 0 {
			t.Fatalf("day %d: repair marked %d pieces lost: erin was counted silent, not moved by the estimate", day, res.MarkedLost)
		}
		moved += res.Moved
		env.Settle(ctx, 20)
		lowest(fmt.Sprintf("day %d, repaired", day))
	}
	if !dipped {
		t.Error("erin's timeouts never lowered an estimate: the test tests nothing")
	}
	if n := piecesThere(t, alice, "erin"); n > 0 || moved < held {
		t.Fatalf("erin still holds %d pieces after %d moves (she held %d)", n, moved, held)
	}
	// Every piece landed on a reliable peer: each segment has its four pieces again.
	db, err := alice.Database("files")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range db["files"].([]agent.FileRow) {
		if f.Status != agent.StatusStored || f.Durability == nil || *f.Durability < target {
			t.Errorf("after the moves: %+v (durability %v)", f, f.Durability)
		}
	}
	if got := lowest("moved"); got < target+1 {
		t.Errorf("after the moves the lowest segment keeps %.2f nines, want at least %v", got, target+1)
	}
}

// piecesThere is how many healthy pieces of n's the peer holds, by n's books.
func piecesThere(t *testing.T, n *testenv.Node, peer string) int {
	t.Helper()
	db, err := n.Database("stats")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range db["stats"].([]agent.StatsRow) {
		if r.Peer == peer {
			return r.PiecesThere
		}
	}
	return 0
}

// lossOf is n's estimate of peer's loss probability, from its status.
func lossOf(t *testing.T, n *testenv.Node, peer string) float64 {
	t.Helper()
	rep, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Peers {
		if p.Peer == peer {
			return p.LossProbability
		}
	}
	return -1
}

// The status page, /status.json and /metrics show the estimate: bob failed probes, so he
// is the riskiest peer, and the file whose pieces he damaged is the weakest.
func TestStatus_ShowsDurability(t *testing.T) {
	_, base := statusNode(t)
	body, _ := get(t, base+"/status.json")
	var rep agent.StatusReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	loss := map[string]float64{}
	for _, p := range rep.Peers {
		loss[p.Peer] = p.LossProbability
	}
	if !(loss["bob"] > 1.5*loss["dave"] && loss["dave"] > 0) {
		t.Errorf("loss probabilities %v: bob failed probes, dave did not", loss)
	}
	nines := map[string]float64{}
	for _, f := range rep.Files {
		if f.Durability == nil {
			t.Fatalf("%s has no durability", f.Name)
		}
		nines[f.Name] = *f.Durability
	}
	d := rep.Durability
	if d.TargetNines != 6 || d.HorizonDays != 30 || d.MinNines == nil || *d.MinNines != nines["/damaged.txt"] ||
		nines["/damaged.txt"] >= nines["/notes.txt"] || d.BelowTarget != 3 {
		t.Errorf("durability %+v (min %v), files %v: want the damaged file the weakest, all three below 6 nines", d, deref(d.MinNines), nines)
	}
	body, _ = get(t, base+"/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	gauge := func(name, peer string) float64 {
		for _, m := range families[name].GetMetric() {
			if peer == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == peer) {
				return m.GetGauge().GetValue()
			}
		}
		t.Errorf("/metrics has no %s %s", name, peer)
		return -1
	}
	if v := gauge("dibs_durability_min_nines", ""); v != *d.MinNines {
		t.Errorf("dibs_durability_min_nines %v, want %v", v, *d.MinNines)
	}
	if v := gauge("dibs_peer_loss_probability", "bob"); math.Abs(v-loss["bob"]) > 1e-6*v { // the clock moved on
		t.Errorf("dibs_peer_loss_probability{bob} %v, want %v", v, loss["bob"])
	}
	if gauge("dibs_files_below_durability_target", "") != 3 || gauge("dibs_durability_target_nines", "") != 6 {
		t.Errorf("below target / target: %v / %v", gauge("dibs_files_below_durability_target", ""), gauge("dibs_durability_target_nines", ""))
	}
	page, _ := get(t, base+"/")
	if !strings.Contains(page, "3 below target") || !strings.Contains(page, fmt.Sprintf("%.1f nines", *d.MinNines)) {
		t.Errorf("the page does not show the durability:\n%s", page)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
