package books

import "time"

// PeerState is what the node knows of a peer beyond the peer list: usage and liveness.
type PeerState struct {
	LastHeard time.Time `json:"last_heard,omitzero"`
	// FirstHeard is the Date of the first message processed from the peer: with LastHeard,
	// how long it has been watched (the durability estimate's exposure).
	FirstHeard time.Time `json:"first_heard,omitzero"`
	LocalUsed  int64     `json:"local_used"`
	RemoteUsed int64     `json:"remote_used"`
	// LastMethod is the last talk method that delivered a file; LastError the last failure.
	LastMethod  string    `json:"last_method,omitempty"`
	LastSent    time.Time `json:"last_sent,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// LastRefusal is the last NACK the peer sent us, "OP: reason" (the send worked; the
	// peer refused the request).
	LastRefusal   string    `json:"last_refusal,omitempty"`
	LastRefusalAt time.Time `json:"last_refusal_at,omitzero"`
	// RemotePending is the size of pieces sent to the peer and not yet acknowledged:
	// placement counts it against remote_quota along with RemoteUsed.
	RemotePending int64 `json:"remote_pending,omitempty"`
	// Probe statistics: answers that proved the piece, that did not, and probes that
	// went unanswered for probeTimeout; RTTTotal sums the good answers' response times.
	ProbesGood    int           `json:"probes_good,omitempty"`
	ProbesFailed  int           `json:"probes_failed,omitempty"`
	ProbesTimeout int           `json:"probes_timeout,omitempty"`
	ProbeRTTTotal time.Duration `json:"probe_rtt_total,omitempty"`
	LastProbe     time.Time     `json:"last_probe,omitzero"`
	// Answers counts the answers the peer sent to our requests (ACK, NACK, the
	// responses); Refusals the NACKs among them.
	Answers  int `json:"answers,omitempty"`
	Refusals int `json:"refusals,omitempty"`
	// Forgotten is set when the peer told us (FORGET_YOU) it dropped what it held for us.
	Forgotten time.Time `json:"forgotten,omitzero"`
	// Sent counts what today's sends used of the peer's daily budgets (agent/budget.go).
	Sent SendDay `json:"sent,omitzero"`
}

// SendDay is what was sent to a peer on one local day, for its daily budgets: bytes by
// talk method, and of those, the bytes of repair traffic.
type SendDay struct {
	Day    string           `json:"day,omitempty"` // 2006-01-02, local time
	Bytes  map[string]int64 `json:"bytes,omitempty"`
	Repair map[string]int64 `json:"repair,omitempty"`
}

// Peer returns the state of the named peer (the zero state if it has none yet).
func (t *Tx) Peer(name string) (PeerState, error) {
	var ps PeerState
	_, err := t.get(bucketPeers, []byte(name), &ps)
	return ps, err
}

// PutPeer records the state of the named peer.
func (t *Tx) PutPeer(name string, ps PeerState) error {
	return t.put(bucketPeers, []byte(name), ps)
}

// DeletePeer forgets the state of the named peer.
func (t *Tx) DeletePeer(name string) error { return t.delete(bucketPeers, []byte(name)) }

// EachPeer calls fn with every peer that has a state, by name.
func (t *Tx) EachPeer(fn func(name string, ps PeerState) error) error {
	return each(t, bucketPeers, func(k []byte, ps *PeerState) error { return fn(string(k), *ps) })
}
