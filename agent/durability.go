package agent

import (
	"math"
	"path"
	"sort"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
)

// The durability estimate (docs/durability.md): each peer's chance of losing what it
// holds for us within durabilityHorizon, from what it has shown; from those and where the
// pieces are, each segment's chance of keeping k of its n pieces; a file's and a tree's
// as products. Peers fail independently of each other: the model's one big assumption.

// The peer model's prior and weights, stated in docs/durability.md.
const (
	// priorLosses and priorExposure are a Gamma prior on a peer's rate of losing our
	// pieces: one loss in ten years, held as firmly as one observed loss. A new peer
	// loses our pieces within 30 days with probability 30/(3652.5+30), about 0.8%.
	priorLosses   = 1.0
	priorExposure = 3652*day + 12*time.Hour
	// timeoutWeight is what a probe unanswered for probeTimeout counts for; a failed
	// probe (a wrong answer, a refusal) counts as one loss.
	timeoutWeight = 0.5
	// durabilityHeadroom is how many nines above durabilityTarget repair starts at: a
	// move takes a repair pass and a delivery, and the estimate must not cross the
	// target meanwhile.
	durabilityHeadroom = 1.0
	// moveFactor: a piece moves only to a peer at least this many times less likely to
	// be lost, so that peers alike do not trade pieces back and forth; placement counts
	// peers within this factor of each other as alike.
	moveFactor = 2.0
	// maxNines caps what is printed: beyond it, float64 rounding, not the peers, decides.
	maxNines = 30.0
)

// peerLoss is the probability that a peer loses what it holds for us within horizon
// from now. The peer's losses are a Poisson process whose rate has the Gamma prior
// above; observed: failed probes (one loss each) and timeouts (timeoutWeight each) over
// the time it was watched (FirstHeard to LastHeard). Since LastHeard nothing is known,
// so the horizon starts there: silence adds to it. A peer that said it dropped our pieces
// (FORGET_YOU) and was not heard since has lost them.
func peerLoss(ps books.PeerState, now time.Time, horizon time.Duration) float64 {
	if !ps.Forgotten.IsZero() && ps.LastHeard.Before(ps.Forgotten) {
		return 1
	}
	a := priorLosses + float64(ps.ProbesFailed) + timeoutWeight*float64(ps.ProbesTimeout)
	b := priorExposure
	if !ps.FirstHeard.IsZero() && ps.LastHeard.After(ps.FirstHeard) {
		b += ps.LastHeard.Sub(ps.FirstHeard)
	}
	h := horizon
	if !ps.LastHeard.IsZero() && now.After(ps.LastHeard) {
		h += now.Sub(ps.LastHeard)
	}
	return gammaPoissonLoss(a, b.Hours()/24, h.Hours()/24)
}

// gammaPoissonLoss is the chance of at least one event within h days when the rate of
// events has a Gamma(a, b) posterior (b in days): 1 - (b/(b+h))^a, computed so that a
// small chance keeps its digits.
func gammaPoissonLoss(a, b, h float64) float64 {
	if h <= 0 {
		return 0
	}
	return -math.Expm1(a * math.Log1p(-h/(b+h)))
}

// segmentLoss is the probability that fewer than k pieces survive, when the pieces are
// lost independently, piece i with probability q[i] (the Poisson-binomial distribution,
// by dynamic programming over the pieces). It sums the ways of losing, never subtracts
// from one, so that 1e-20 stays 1e-20.
func segmentLoss(k int, q []float64) float64 {
	if k <= 0 {
		return 0
	}
	if len(q) < k {
		return 1
	}
	// dist[j], j < k: the chance that exactly j of the pieces so far survive;
	// dist[k]: that at least k do.
	dist := make([]float64, k+1)
	dist[0] = 1
	for _, qi := range q {
		s := 1 - qi
		dist[k] += dist[k-1] * s
		for j := k - 1; j >= 1; j-- {
			dist[j] = dist[j]*qi + dist[j-1]*s
		}
		dist[0] *= qi
	}
	loss := 0.0
	for _, v := range dist[:k] {
		loss += v
	}
	return min(loss, 1)
}

// allSurvive combines independent losses into the chance that any of them happens:
// 1 - prod(1 - l). For parts that share peers (the segments of a file, the files of a
// tree) the parts' survivals are positively correlated, and the product is a lower bound
// on surviving (Harris's inequality): the estimate errs on the safe side.
func allSurvive(losses ...float64) float64 {
	sum := 0.0
	for _, l := range losses {
		if l >= 1 {
			return 1
		}
		sum += math.Log1p(-l)
	}
	return -math.Expm1(sum)
}

// Nines is a loss probability as nines of durability, -log10(loss), capped at maxNines
// and rounded to a hundredth: 1e-6 is 6 nines (99.9999%), a lost segment 0.
func Nines(loss float64) float64 {
	if loss <= 0 {
		return maxNines
	}
	return math.Round(min(-math.Log10(loss), maxNines)*100) / 100
}

// lossModel holds each peer's loss probability over the horizon.
type lossModel struct {
	peer map[string]float64 // peers of the peer list; any other peer's pieces are lost
}

// newLossModel rates the peers of the list from their states.
func (n *Node) newLossModel(peers []*Peer, states map[string]PeerState) lossModel {
	now, horizon := n.Now(), optDurabilityHorizon.Get(n.Opts)
	m := lossModel{peer: map[string]float64{}}
	for _, p := range peers {
		m.peer[p.Name] = peerLoss(states[p.Name], now, horizon)
	}
	return m
}

// lossModelTx is newLossModel with the states read in tx.
func (n *Node) lossModelTx(tx *books.Tx) (lossModel, error) {
	peers, err := n.Peers()
	if err != nil {
		return lossModel{}, err
	}
	states := map[string]PeerState{}
	for _, p := range peers {
		if states[p.Name], err = tx.Peer(p.Name); err != nil {
			return lossModel{}, err
		}
	}
	return n.newLossModel(peers, states), nil
}

// of is a peer's loss probability: 1 for a peer not in the list.
func (m lossModel) of(peer string) float64 {
	if q, ok := m.peer[peer]; ok {
		return q
	}
	return 1
}

// segment is the chance that segment s of o keeps fewer than k pieces: its healthy
// pieces (acknowledged or on their way) count, each at its peer's loss probability; a
// piece lost (a failed probe, a silent peer, a refusal) counts for nothing.
func (m lossModel) segment(o *Object, s int) float64 {
	var q []float64
	for _, p := range o.Segments[s].Pieces {
		if p.Healthy() {
			q = append(q, m.of(p.Peer))
		}
	}
	return segmentLoss(o.K, q)
}

// object is the chance that o loses a segment.
func (m lossModel) object(o *Object) float64 {
	losses := make([]float64, len(o.Segments))
	for s := range o.Segments {
		losses[s] = m.segment(o, s)
	}
	return allSurvive(losses...)
}

// repairTrigger is the nines below which repair acts on a segment: durabilityTarget plus
// the headroom.
func (n *Node) repairTrigger() float64 {
	return float64(optDurabilityTarget.Get(n.Opts)) + durabilityHeadroom
}

// repairSegments lists the segments of o that repair rebuilds: those NeedRepair names
// (by spares), and those missing a piece whose estimate is below the trigger.
func (n *Node) repairSegments(o *Object, m lossModel) []int {
	out := o.NeedRepair(n.spare(o))
	listed := map[int]bool{}
	for _, s := range out {
		listed[s] = true
	}
	trigger := n.repairTrigger()
	for s, seg := range o.Segments {
		healthy := 0
		for _, p := range seg.Pieces {
			if p.Healthy() {
				healthy++
			}
		}
		if !listed[s] && healthy < o.N && Nines(m.segment(o, s)) < trigger {
			out = append(out, s)
		}
	}
	sort.Ints(out)
	return out
}

// whyMoved is the Why of a piece taken off an unreliable peer.
const whyMoved = "moved off an unreliable peer"

// markMoves takes, in each segment of o whose estimate is below the repair trigger, the
// acknowledged piece on the least reliable peer off it (marked lost, so that repair
// places it again and asks the peer to drop it), when a peer moveFactor times more
// reliable holds no piece of the segment and has room. One piece per segment per pass:
// the next pass sees the new estimate. It returns the pieces marked.
func (n *Node) markMoves(tx *books.Tx, o *Object, m lossModel, peers []*Peer) (int, error) {
	trigger := n.repairTrigger()
	moved := 0
	for s := range o.Segments {
		seg := &o.Segments[s]
		if Nines(m.segment(o, s)) >= trigger {
			continue
		}
		worst, busy := -1, map[string]bool{}
		for i, p := range seg.Pieces {
			if !p.Healthy() {
				continue
			}
			busy[p.Peer] = true
			if p.State == PieceStored && (worst < 0 || m.of(p.Peer) > m.of(seg.Pieces[worst].Peer)) {
				worst = i
			}
		}
		if worst < 0 {
			continue
		}
		w := seg.Pieces[worst]
		better := false
		for _, p := range peers {
			if busy[p.Name] || m.of(p.Name)*moveFactor > m.of(w.Peer) {
				continue
			}
			ok, err := n.canTake(tx, p, w.Size)
			if err != nil {
				return moved, err
			}
			if ok {
				better = true
				break
			}
		}
		if !better {
			continue
		}
		n.Log.Info("repair: moving a piece off an unreliable peer", "peer", w.Peer, "object", o.ID, "segment", s,
			"loss", m.of(w.Peer), "nines", Nines(m.segment(o, s)))
		seg.Pieces[worst].State, seg.Pieces[worst].Why = PieceLost, whyMoved
		moved++
	}
	return moved, nil
}

// canTake reports whether peer can take a piece of size bytes now: it has a key, has
// not dropped our pieces without being heard since, and has room.
func (n *Node) canTake(tx *books.Tx, p *Peer, size int64) (bool, error) {
	if _, key, err := n.Peer(p.Name); err != nil || key == nil {
		return false, nil
	}
	ps, err := tx.Peer(p.Name)
	if err != nil {
		return false, err
	}
	if !ps.Forgotten.IsZero() && ps.LastHeard.Before(ps.Forgotten) {
		return false, nil
	}
	return p.RemoteQuota-ps.RemoteUsed-ps.RemotePending >= size, nil
}

// byReliability sorts peers, most reliable first; peers within moveFactor of each other
// keep their order.
func byReliability(peers []*Peer, m lossModel) {
	sort.SliceStable(peers, func(i, j int) bool { return lossClass(m.of(peers[i].Name)) < lossClass(m.of(peers[j].Name)) })
}

// lossClass buckets a loss probability by factors of moveFactor: peers in one bucket
// count as alike for placement.
func lossClass(q float64) int {
	if q <= 0 {
		return math.MinInt32
	}
	return int(math.Floor(math.Log(q) / math.Log(moveFactor)))
}

// durabilityRows fills show_database's durability column: a version's from its object,
// a directory's from the newest versions of the entries under it (a stored tree's
// objects, each counted once however many files share it).
type durabilityRows struct {
	model    lossModel
	objs     map[string]*Object
	loss     map[string]float64 // by object id, computed once
	versions []FileVersion      // in the order of the rows
	latest   map[string]int     // stored name -> index of its newest version
}

func newDurabilityRows(m lossModel, objs map[string]*Object) *durabilityRows {
	return &durabilityRows{model: m, objs: objs, loss: map[string]float64{}, latest: map[string]int{}}
}

// add notes the next row's version; versions come oldest first for each name.
func (d *durabilityRows) add(fv FileVersion) {
	d.latest[fv.Name] = len(d.versions)
	d.versions = append(d.versions, fv)
}

// objectLoss is the chance of losing object id: 1 if the books no longer have it.
func (d *durabilityRows) objectLoss(id string) float64 {
	if l, ok := d.loss[id]; ok {
		return l
	}
	l := 1.0
	if o := d.objs[id]; o != nil {
		l = d.model.object(o)
	}
	d.loss[id] = l
	return l
}

// fill sets the Durability of rows, which are the versions added, in order.
func (d *durabilityRows) fill(rows []FileRow) {
	trees := map[string]map[string]bool{} // directory -> objects of the entries under it
	for i, fv := range d.versions {
		if fv.Object == "" {
			continue
		}
		v := Nines(d.objectLoss(fv.Object))
		rows[i].Durability = &v
		if d.latest[fv.Name] != i || !fv.Deleted.IsZero() {
			continue // an old version, or one gone locally: not part of the tree now
		}
		for dir := fv.Name; dir != "/"; {
			dir = path.Dir(dir)
			if j, ok := d.latest[dir]; ok && d.versions[j].Kind == KindDir && d.versions[j].Deleted.IsZero() {
				if trees[dir] == nil {
					trees[dir] = map[string]bool{}
				}
				trees[dir][fv.Object] = true
			}
		}
	}
	for dir, objs := range trees {
		var losses []float64
		for id := range objs {
			losses = append(losses, d.objectLoss(id))
		}
		v := Nines(allSurvive(losses...))
		rows[d.latest[dir]].Durability = &v
	}
}

// Durability sums up the estimate for the status page and /metrics.
type Durability struct {
	TargetNines float64 `json:"target_nines"` // durabilityTarget
	HorizonDays float64 `json:"horizon_days"` // durabilityHorizon
	// MinNines is the lowest estimate of a stored file as it is now (the newest version
	// of each name not deleted); null: none stored.
	MinNines *float64 `json:"min_nines"`
	// BelowTarget counts those files whose estimate is below TargetNines.
	BelowTarget int `json:"below_target"`
	// Trees are the stored trees (directories not inside another stored one).
	Trees []TreeDurability `json:"trees"`
}

// TreeDurability is a stored tree's estimate.
type TreeDurability struct {
	Name  string  `json:"name"`
	Nines float64 `json:"nines"`
}

// durabilitySummary sums up show_database's file rows.
func (n *Node) durabilitySummary(files []FileRow) Durability {
	d := Durability{TargetNines: float64(optDurabilityTarget.Get(n.Opts)),
		HorizonDays: optDurabilityHorizon.Get(n.Opts).Hours() / 24, Trees: []TreeDurability{}}
	latest := map[string]FileRow{}
	for _, f := range files {
		if l, ok := latest[f.Name]; !ok || f.Version > l.Version {
			latest[f.Name] = f
		}
	}
	for _, name := range sortedKeys(latest) {
		f := latest[name]
		if f.Deleted != nil || f.Durability == nil {
			continue
		}
		if f.Kind == KindDir {
			if parent, ok := latest[path.Dir(name)]; name == "/" || !ok || parent.Kind != KindDir || parent.Deleted != nil {
				d.Trees = append(d.Trees, TreeDurability{Name: name, Nines: *f.Durability})
			}
			continue
		}
		if d.MinNines == nil || *f.Durability < *d.MinNines {
			v := *f.Durability
			d.MinNines = &v
		}
		if *f.Durability < d.TargetNines {
			d.BelowTarget++
		}
	}
	return d
}

// statusLossModel is the loss model from the peer list and the books.
func (n *Node) statusLossModel() (lossModel, error) {
	peers, err := n.Peers()
	if err != nil {
		return lossModel{}, err
	}
	states, err := n.PeerStates()
	if err != nil {
		return lossModel{}, err
	}
	return n.newLossModel(peers, states), nil
}
