package agent

import (
	"net/http"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves /metrics: the status report as Prometheus metrics, gathered
// afresh on each scrape.
func (n *Node) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&statusCollector{n: n})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

type statusCollector struct{ n *Node }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("dibs_"+name, help, labels, nil)
}

var (
	mQueueDepth    = desc("queue_depth", "Files waiting in outgoing/ for the peer.", "peer")
	mQueueOldest   = desc("queue_oldest_age_seconds", "Age of the oldest file waiting for the peer (0: none).", "peer")
	mLastHeard     = desc("peer_last_heard_timestamp_seconds", "When the peer was last heard from (0: never).", "peer")
	mProbes        = desc("probes", "Probe results of the peer since it was added.", "peer", "result")
	mBytesStored   = desc("bytes_stored", "Bytes of our pieces the peer holds.", "peer")
	mBytesHeld     = desc("bytes_held", "Bytes of the peer's pieces we hold.", "peer")
	mPiecesLost    = desc("pieces_lost", "Our pieces on the peer counted as lost.", "peer")
	mQuotaUsed     = desc("quota_used_bytes", "Quota used: remote (ours on the peer) and local (the peer's here).", "peer", "side")
	mFiles         = desc("files", "Stored file versions by health.", "health")
	mRecoveries    = desc("recoveries", "Recovery jobs by state.", "state")
	mMessages      = desc("messages_total", "Incoming messages the daemon processed or quarantined since it started, by message type (unknown: unreadable, or not a type of the protocol).", "outcome", "type")
	mRepairs       = desc("repair_pieces_total", "What repair did since the daemon started: pieces marked lost, rebuilt; objects fetching; segments short.", "action")
	mTransportErrs = desc("transport_errors_total", "Failed sends since the daemon started, by talk method.", "method")
	mLastSuccess   = desc("last_success_timestamp_seconds", "When the job last succeeded (0: not since start, or never).", "job")
	mUp            = desc("status_up", "1 when the status could be read from the database (0: busy or failing).")
	mStarted       = desc("start_timestamp_seconds", "When the daemon started.")
	mPeerLoss      = desc("peer_loss_probability", "Estimated chance that the peer loses our pieces within durabilityHorizon.", "peer")
	mMinNines      = desc("durability_min_nines", "Lowest durability estimate of a stored file, in nines over durabilityHorizon (absent: none stored).")
	mTreeNines     = desc("tree_durability_nines", "Durability estimate of a stored tree, in nines over durabilityHorizon.", "tree")
	mBelowTarget   = desc("files_below_durability_target", "Stored files whose durability estimate is below durabilityTarget.")
	mTargetNines   = desc("durability_target_nines", "durabilityTarget, in nines.")
	mBudgetLeft    = desc("transport_budget_remaining_bytes", "What is left today of the peer's daily budget of the talk method (budget.go).", "peer", "method")
	mDrills        = desc("drills", "Restore drills in the books (the last 20) by state: waiting, done (passed), failed.", "state")
	mDrillBytes    = desc("drill_last_success_bytes", "Bytes of pieces the last drill that passed fetched.")
	mDrillSeconds  = desc("drill_last_success_duration_seconds", "How long the last drill that passed took, from start to end.")
	mLANHeard      = desc("lan_announcements_total", "LAN announcements heard since the daemon started, by result: accepted, or why ignored (self, malformed, unknown, bad_signature, stale, replayed).", "result")
	mHeld          = desc("transport_held", "1 when the peer's files wait on a budget or the send window.", "peer")
)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func ts(s *string) float64 {
	if s == nil {
		return 0
	}
	t, err := time.Parse(time.RFC3339, *s)
	if err != nil {
		return 0
	}
	return float64(t.Unix())
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	cnt := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	r := &c.n.runs
	r.mu.Lock()
	for _, typ := range sortedKeys(r.messages) {
		c := r.messages[typ]
		if typ != typeUnknown { // an unknown type is never processed
			cnt(mMessages, float64(c.Processed), "processed", typ)
		}
		cnt(mMessages, float64(c.Quarantined), "quarantined", typ)
	}
	cnt(mRepairs, float64(r.repairs.MarkedLost), "marked_lost")
	cnt(mRepairs, float64(r.repairs.Rebuilt), "rebuilt")
	cnt(mRepairs, float64(r.repairs.Fetching), "fetching")
	cnt(mRepairs, float64(r.repairs.Short), "short")
	cnt(mRepairs, float64(r.repairs.Moved), "moved")
	for _, m := range sortedKeys(r.transportErrors) {
		cnt(mTransportErrs, float64(r.transportErrors[m]), m)
	}
	if !r.started.IsZero() {
		g(mStarted, float64(r.started.Unix()))
	}
	r.mu.Unlock()
	lan := c.n.lanCounts()
	for _, k := range sortedKeys(lan) {
		cnt(mLANHeard, float64(lan[k]), k)
	}

	rep, err := c.n.Status()
	if err != nil {
		g(mUp, 0)
		return
	}
	g(mUp, 1)
	for _, p := range rep.Peers {
		g(mQueueDepth, float64(p.QueueDepth), p.Peer)
		g(mQueueOldest, float64(p.OldestQueuedSeconds), p.Peer)
		g(mLastHeard, ts(p.LastHeard), p.Peer)
		cnt(mProbes, float64(p.ProbeGood), p.Peer, "good")
		cnt(mProbes, float64(p.ProbeFailed), p.Peer, "failed")
		cnt(mProbes, float64(p.ProbeTimeout), p.Peer, "timeout")
		g(mBytesStored, float64(p.BytesThere), p.Peer)
		g(mBytesHeld, float64(p.BytesHere), p.Peer)
		g(mPiecesLost, float64(p.LostPieces), p.Peer)
		g(mQuotaUsed, float64(p.RemoteUsed), p.Peer, "remote")
		g(mQuotaUsed, float64(p.LocalUsed), p.Peer, "local")
		g(mPeerLoss, p.LossProbability, p.Peer)
		for _, b := range p.Budgets {
			g(mBudgetLeft, float64(b.Remaining), p.Peer, b.Method)
		}
		held := 0.0
		if p.Held != "" {
			held = 1
		}
		g(mHeld, held, p.Peer)
	}
	if d := rep.Durability; d.MinNines != nil {
		g(mMinNines, *d.MinNines)
	}
	for _, t := range rep.Durability.Trees {
		g(mTreeNines, t.Nines, t.Name)
	}
	g(mBelowTarget, float64(rep.Durability.BelowTarget))
	g(mTargetNines, rep.Durability.TargetNines)
	for _, h := range sortedKeys(rep.FileCounts) {
		g(mFiles, float64(rep.FileCounts[h]), h)
	}
	states := map[string]int{}
	for _, j := range rep.Recoveries {
		if j.Kind != books.JobDrill {
			states[j.State]++
		}
	}
	for _, s := range sortedKeys(states) {
		g(mRecoveries, float64(states[s]), s)
	}
	g(mLastSuccess, ts(rep.LastStore), "store")
	g(mLastSuccess, ts(rep.LastProbe), "probe")
	last := ""
	for _, j := range rep.Recoveries {
		if j.Kind != books.JobDrill && j.State == RecoveryDone && j.Ended != nil && *j.Ended > last {
			last = *j.Ended
		}
	}
	g(mLastSuccess, ts(&last), "recover")
	drills := map[string]int{RecoveryWaiting: 0, RecoveryDone: 0, RecoveryFailed: 0}
	for _, j := range rep.Recoveries {
		if j.Kind == books.JobDrill {
			drills[j.State]++
		}
	}
	for _, s := range sortedKeys(drills) {
		g(mDrills, float64(drills[s]), s)
	}
	if d := rep.LastGoodDrill; d != nil {
		g(mLastSuccess, ts(d.Ended), "drill")
		g(mDrillBytes, float64(d.Bytes))
		g(mDrillSeconds, d.Seconds)
	} else {
		g(mLastSuccess, 0, "drill")
	}
}
