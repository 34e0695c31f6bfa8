package books

import "time"

// ProbeState is a probe waiting for its answer, keyed by the PROBE's Message-Id.
type ProbeState struct {
	Piece  string    `json:"piece"`
	Peer   string    `json:"peer"`
	Object string    `json:"object"`
	Chunks []int     `json:"chunks"`
	Sent   time.Time `json:"sent"`
}

// Probe returns the probe sent with Message-Id id, and whether it still waits.
func (t *Tx) Probe(id string) (ProbeState, bool, error) {
	var st ProbeState
	ok, err := t.get(bucketProbes, []byte(id), &st)
	return st, ok, err
}

// PutProbe records the probe sent with Message-Id id.
func (t *Tx) PutProbe(id string, st ProbeState) error { return t.put(bucketProbes, []byte(id), st) }

// DeleteProbe closes the probe sent with Message-Id id.
func (t *Tx) DeleteProbe(id string) error { return t.delete(bucketProbes, []byte(id)) }

// EachProbe calls fn with every probe waiting and its Message-Id, by Message-Id.
func (t *Tx) EachProbe(fn func(id string, st ProbeState) error) error {
	return each(t, bucketProbes, func(k []byte, st *ProbeState) error { return fn(string(k), *st) })
}
