package agent

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
)

// binomialLoss is P(fewer than k of n survive) when each is lost with probability q.
func binomialLoss(k, n int, q float64) float64 {
	loss := 0.0
	for j := 0; j < k; j++ { // j survive
		c := 1.0
		for i := 0; i < j; i++ {
			c = c * float64(n-i) / float64(i+1)
		}
		loss += c * math.Pow(1-q, float64(j)) * math.Pow(q, float64(n-j))
	}
	return loss
}

func TestSegmentLoss_EqualPeersIsBinomial(t *testing.T) {
	for _, c := range []struct {
		k, n int
		q    float64
	}{{1, 2, 0.01}, {2, 4, 0.008}, {7, 9, 0.05}, {3, 3, 0.2}, {1, 1, 0.5}, {4, 10, 1e-4}} {
		q := make([]float64, c.n)
		for i := range q {
			q[i] = c.q
		}
		got, want := segmentLoss(c.k, q), binomialLoss(c.k, c.n, c.q)
		if math.Abs(got-want) > 1e-12*want {
			t.Errorf("k=%d n=%d q=%g: %g, want %g", c.k, c.n, c.q, got, want)
		}
	}
	// Tiny losses keep their digits: 1 - (1 - 1e-20) would be 0.
	if got := segmentLoss(1, []float64{1e-10, 1e-10}); math.Abs(got-1e-20)/1e-20 > 1e-9 {
		t.Errorf("two mirrors at 1e-10: %g, want 1e-20", got)
	}
	if got := Nines(segmentLoss(1, []float64{1e-10, 1e-10})); got != 20 {
		t.Errorf("nines of 1e-20: %v", got)
	}
	if segmentLoss(3, []float64{0.1, 0.1}) != 1 || segmentLoss(0, nil) != 0 {
		t.Error("fewer than k pieces must be lost; k = 0 never")
	}
	if got := allSurvive(1e-9, 2e-9, 3e-9); math.Abs(got-6e-9)/6e-9 > 1e-6 {
		t.Errorf("allSurvive(1e-9, 2e-9, 3e-9) = %g, want about 6e-9", got)
	}
	if Nines(1) != 0 || Nines(0) != maxNines || Nines(1e-6) != 6 {
		t.Errorf("Nines: %v %v %v", Nines(1), Nines(0), Nines(1e-6))
	}
}

// wilson is the Wilson score interval of a rate seen x times in n trials, z standard
// deviations wide.
func wilson(x, n int, z float64) (lo, hi float64) {
	p, nf := float64(x)/float64(n), float64(n)
	d := 1 + z*z/nf
	c := (p + z*z/(2*nf)) / d
	w := z / d * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf))
	return c - w, c + w
}

// The estimate against a simulation: many random grids of peers with known, unequal
// loss probabilities, random codes (k of n) and random placements; each trial loses
// each peer independently with its probability. Every segment's estimate must lie in
// the simulated loss rate's confidence interval (z = 4: with hundreds of comparisons,
// a correct model fails about one run in ten thousand, and the seed is fixed); a file of
// several segments may only err on the safe side (its estimate is a lower bound on
// surviving). The same check rejects the estimate that averages the peers' probabilities
// (the plain binomial): the simulation tells them apart.
func TestDurability_AgainstSimulation(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 1))
	const grids, files, trials, z = 40, 8, 20000, 4.0
	compared, averagedRejected, fileCompared := 0, 0, 0
	for g := range grids {
		peers := 5 + rng.IntN(8)
		q := make([]float64, peers)
		for i := range q {
			q[i] = math.Exp(math.Log(0.02) + rng.Float64()*(math.Log(0.4)-math.Log(0.02))) // 2% to 40%
		}
		type seg struct {
			k      int
			at     []int
			lost   int
			est    float64
			avgEst float64
		}
		type file struct {
			segs []*seg
			lost int
			est  float64
		}
		var fs []*file
		for range files {
			f := &file{}
			for range 1 + rng.IntN(3) {
				n := 2 + rng.IntN(min(peers, 8)-1)
				s := &seg{k: 1 + rng.IntN(n-1), at: rng.Perm(peers)[:n]}
				qs := make([]float64, n)
				mean := 0.0
				for i, p := range s.at {
					qs[i] = q[p]
					mean += q[p] / float64(n)
				}
				s.est, s.avgEst = segmentLoss(s.k, qs), binomialLoss(s.k, n, mean)
				f.segs = append(f.segs, s)
			}
			losses := make([]float64, len(f.segs))
			for i, s := range f.segs {
				losses[i] = s.est
			}
			f.est = allSurvive(losses...)
			fs = append(fs, f)
		}
		down := make([]bool, peers)
		for range trials {
			for i := range down {
				down[i] = rng.Float64() < q[i]
			}
			for _, f := range fs {
				fileLost := false
				for _, s := range f.segs {
					alive := 0
					for _, p := range s.at {
						if !down[p] {
							alive++
						}
					}
					if alive < s.k {
						s.lost++
						fileLost = true
					}
				}
				if fileLost {
					f.lost++
				}
			}
		}
		for fi, f := range fs {
			for si, s := range f.segs {
				if s.est < 1e-3 || s.est > 0.9 {
					continue // too rare or too sure to measure in this many trials
				}
				compared++
				lo, hi := wilson(s.lost, trials, z)
				if s.est < lo || s.est > hi {
					t.Errorf("grid %d file %d segment %d (k=%d of %d): estimate %.5f, simulated %.5f [%.5f, %.5f]",
						g, fi, si, s.k, len(s.at), s.est, float64(s.lost)/trials, lo, hi)
				}
				if s.avgEst < lo || s.avgEst > hi {
					averagedRejected++
				}
			}
			if f.est < 1e-3 || f.est > 0.9 {
				continue
			}
			fileCompared++
			lo, hi := wilson(f.lost, trials, z)
			if f.est < lo || (len(f.segs) == 1 && f.est > hi) {
				t.Errorf("grid %d file %d (%d segments): estimate %.5f, simulated %.5f [%.5f, %.5f]",
					g, fi, len(f.segs), f.est, float64(f.lost)/trials, lo, hi)
			}
		}
	}
	t.Logf("%d segments and %d files compared; the averaged estimate rejected for %d segments", compared, fileCompared, averagedRejected)
	if compared < 200 || fileCompared < 100 {
		t.Fatalf("only %d segments and %d files had a measurable loss rate: the test tests little", compared, fileCompared)
	}
	if averagedRejected < compared/10 {
		t.Errorf("the averaged (wrong) estimate was rejected for only %d of %d segments: the simulation cannot tell", averagedRejected, compared)
	}
}

// The peer estimator is calibrated: peers whose true loss rates are drawn from the
// prior, watched for five years, then left for a horizon; among the peers with the same
// record, the share that loses pieces within the horizon is what peerLoss predicted.
func TestPeerLoss_CalibratedAgainstSimulation(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 2))
	const peers, z = 200000, 4.0
	start := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	watched, horizon := 5*365*day, 30*day
	days := func(d time.Duration) float64 { return d.Hours() / 24 }
	type bucket struct {
		n, lost   int
		predicted float64
	}
	byFailures := map[int]*bucket{}
	for range peers {
		rate := rng.ExpFloat64() / days(priorExposure) // Gamma(1, priorExposure): priorLosses is 1
		failures := 0
		for at := rng.ExpFloat64() / rate; at < days(watched); at += rng.ExpFloat64() / rate {
			failures++
		}
		ps := books.PeerState{FirstHeard: start, LastHeard: start.Add(watched), ProbesFailed: failures}
		b := byFailures[min(failures, 3)]
		if b == nil {
			b = &bucket{}
			byFailures[min(failures, 3)] = b
		}
		b.n++
		b.predicted += peerLoss(ps, ps.LastHeard, horizon)
		if rng.ExpFloat64()/rate < days(horizon) {
			b.lost++
		}
	}
	for f, b := range byFailures {
		if b.lost < 30 {
			continue
		}
		want := b.predicted / float64(b.n)
		lo, hi := wilson(b.lost, b.n, z)
		t.Logf("%d+ failures: %d peers, predicted %.4f, lost %.4f [%.4f, %.4f]", f, b.n, want, float64(b.lost)/float64(b.n), lo, hi)
		if want < lo || want > hi {
			t.Errorf("peers with %d failures: predicted %.4f, simulated %.4f [%.4f, %.4f]", f, want, float64(b.lost)/float64(b.n), lo, hi)
		}
	}
	if len(byFailures) < 3 {
		t.Fatalf("only %d distinct records: the test tests little", len(byFailures))
	}
}

func TestPeerLoss_FromWhatThePeerShowed(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	h := 30 * day
	year := 365 * day
	watched := books.PeerState{FirstHeard: now.Add(-year), LastHeard: now}
	loss := func(ps books.PeerState) float64 { return peerLoss(ps, now, h) }

	prior := loss(books.PeerState{})
	if want := 30 / (3652.5 + 30); math.Abs(prior-want) > 1e-12 {
		t.Errorf("a new peer: %v, want the prior %v (docs/durability.md)", prior, want)
	}
	if got := loss(watched); got >= prior {
		t.Errorf("a year watched without a failure: %v, not below the prior %v", got, prior)
	}
	last := loss(watched)
	for f := 1; f <= 5; f++ {
		ps := watched
		ps.ProbesFailed = f
		got := loss(ps)
		if got <= last {
			t.Errorf("%d failed probes: %v, not above %v", f, got, last)
		}
		last = got
	}
	failed, timedOut := watched, watched
	failed.ProbesFailed, timedOut.ProbesTimeout = 1, 1
	if !(loss(watched) < loss(timedOut) && loss(timedOut) < loss(failed)) {
		t.Errorf("a timeout should weigh less than a failure: none %v, timeout %v, failure %v", loss(watched), loss(timedOut), loss(failed))
	}
	silent := watched
	silent.LastHeard = now.Add(-2 * h) // silent for two horizons
	if got := loss(silent); got <= 2*loss(watched) {
		t.Errorf("silent for two horizons: %v, want well above %v", got, loss(watched))
	}
	brief := watched
	brief.LastHeard = now.Add(-time.Hour)
	if got := loss(brief); got < loss(watched) || got > loss(watched)*1.01 {
		t.Errorf("silent for an hour: %v, want about %v", got, loss(watched))
	}
	forgot := watched
	forgot.Forgotten = now
	forgot.LastHeard = now.Add(-time.Minute)
	if got := loss(forgot); got != 1 {
		t.Errorf("a peer that dropped our pieces: %v, want 1", got)
	}
	if got := peerLoss(watched, now, 2*h); got <= loss(watched) {
		t.Errorf("a longer horizon: %v, not above %v", got, loss(watched))
	}
}

// show_database's durability column: a file's from its object, a directory's from the
// objects of its entries' newest versions, each counted once; an old version or one
// deleted locally is not part of the tree.
func TestDurabilityRows_FilesAndTrees(t *testing.T) {
	m := lossModel{peer: map[string]float64{"bob": 0.1, "carol": 0.2, "dave": 0.3}}
	obj := func(id string, peers ...string) *Object {
		o := &Object{ID: id, K: 1, N: len(peers), Refs: 1, Segments: []Segment{{}}}
		for i, p := range peers {
			o.Segments[0].Pieces = append(o.Segments[0].Pieces, Piece{ID: id + p, Index: i, Peer: p, State: PieceStored})
		}
		return o
	}
	objs := map[string]*Object{"pack": obj("pack", "bob", "carol"), "big": obj("big", "dave"), "old": obj("old", "bob")}
	entry := func(name, kind string, version int, object string) FileVersion {
		return FileVersion{ManifestEntry: ManifestEntry{Name: name, Kind: kind, Version: version}, Object: object}
	}
	gone := entry("/t/gone", KindFile, 1, "old")
	gone.Deleted = time.Now()
	versions := []FileVersion{ // in the books' order: by name, then version
		entry("/t", KindDir, 1, ""),
		entry("/t/a", KindFile, 1, "old"), entry("/t/a", KindFile, 2, "pack"),
		entry("/t/b", KindFile, 1, "pack"),
		gone,
		entry("/t/link", KindSymlink, 1, ""),
		entry("/t/sub", KindDir, 1, ""),
		entry("/t/sub/c", KindFile, 1, "big"),
		entry("/t/sub/lost", KindFile, 1, "missing"),
		entry("/u", KindDir, 1, ""),
	}
	d := newDurabilityRows(m, objs)
	rows := make([]FileRow, len(versions))
	for i, fv := range versions {
		rows[i] = FileRow{Name: fv.Name, Version: fv.Version, Kind: fv.Kind}
		d.add(fv)
	}
	d.fill(rows)
	got := map[string]*float64{}
	for _, r := range rows {
		got[fmt.Sprintf("%s@%d", r.Name, r.Version)] = r.Durability
	}
	want := map[string]*float64{
		"/t@1":          durPtr(Nines(1)), // /t/sub/lost's object is gone
		"/t/a@1":        durPtr(Nines(0.1)),
		"/t/a@2":        durPtr(Nines(0.1 * 0.2)),
		"/t/b@1":        durPtr(Nines(0.1 * 0.2)),
		"/t/gone@1":     durPtr(Nines(0.1)),
		"/t/link@1":     nil,
		"/t/sub@1":      durPtr(Nines(1)),
		"/t/sub/c@1":    durPtr(Nines(0.3)),
		"/t/sub/lost@1": durPtr(Nines(1)),
		"/u@1":          nil, // an empty directory: nothing to lose
	}
	for k, w := range want {
		g := got[k]
		if (g == nil) != (w == nil) || (g != nil && *g != *w) {
			t.Errorf("%s: durability %v, want %v", k, deref(g), deref(w))
		}
	}
	// Without the lost file, the tree is its two objects: 1 - (1-0.02)(1-0.3).
	rows = rows[:len(rows)-2]
	d = newDurabilityRows(m, objs)
	for _, fv := range versions[:len(versions)-2] {
		d.add(fv)
	}
	d.fill(rows)
	if w := Nines(1 - (1-0.02)*(1-0.3)); rows[0].Durability == nil || *rows[0].Durability != w {
		t.Errorf("/t: %v, want %v", deref(rows[0].Durability), w)
	}
}

func durPtr(v float64) *float64 { return &v }

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
