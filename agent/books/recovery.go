package books

import "time"

// Recovery states (show_database --only recovery).
const (
	RecoveryWaiting = "waiting"
	RecoveryDone    = "done"
	RecoveryFailed  = "failed"
)

// Job kinds.
const (
	JobFile   = "file"   // recover_file: a stored file or tree
	JobAll    = "all"    // recover_all: everything the peers hold for us
	JobRepair = "repair" // an object fetched back to be coded again
	JobPrune  = "prune"  // a pack fetched back to be rewritten without its dropped files
	JobDrill  = "drill"  // a restore drill: a sample recovered into a scratch directory and checked
)

// RecoveryJob is a recovery in progress: it lives in the database, with the shards
// received so far under recovery.tmp/, so it survives restarts.
type RecoveryJob struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"`
	Target  string    `json:"target,omitempty"` // stored name (file jobs), object id (repair, prune)
	Version int       `json:"version,omitempty"`
	State   string    `json:"state"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	// Objects maps the object ids the job needs to whether they are assembled.
	Objects map[string]bool `json:"objects"`
	// Finished maps each peer asked by recover_all to the pieces it said it sent (-1: not yet).
	Finished map[string]int `json:"finished,omitempty"`
	Received map[string]int `json:"received,omitempty"`
	// Pieces are the piece ids recover_all received, so a piece sent twice counts once.
	Pieces  map[string]bool `json:"pieces,omitempty"`
	Written int             `json:"written"`
	Error   string          `json:"error,omitempty"`
	// A drill's sample: the stored names it recovers, each with its version.
	Sample map[string]int `json:"sample,omitempty"`
	// Bad maps the pieces a drill found bad or missing to why, "PEER: reason".
	Bad map[string]string `json:"bad,omitempty"`
	// Bytes is what a drill fetches: the sizes of its objects.
	Bytes int64 `json:"bytes,omitempty"`
	// Requests are a drill from the kit's requests, by Message-Id, with their peer: the
	// answers to them go to the kit's node.
	Requests map[string]string `json:"requests,omitempty"`
	// Files is how many stored files a drill from the kit checked.
	Files int `json:"files,omitempty"`
}

// init gives a job read back from the database its maps (empty ones are not stored).
func (j *RecoveryJob) init() {
	if j.Objects == nil {
		j.Objects = map[string]bool{}
	}
	if j.Kind == JobDrill {
		if j.Pieces == nil {
			j.Pieces = map[string]bool{}
		}
		if j.Bad == nil {
			j.Bad = map[string]string{}
		}
		if j.Sample == nil {
			j.Sample = map[string]int{}
		}
		if j.Requests == nil {
			j.Requests = map[string]string{}
		}
	}
	if j.Kind == JobAll {
		if j.Finished == nil {
			j.Finished = map[string]int{}
		}
		if j.Received == nil {
			j.Received = map[string]int{}
		}
		if j.Pieces == nil {
			j.Pieces = map[string]bool{}
		}
	}
}

// Job returns the named recovery job, or nil.
func (t *Tx) Job(name string) (*RecoveryJob, error) {
	var j RecoveryJob
	ok, err := t.get(bucketRecovery, []byte(name), &j)
	if err != nil || !ok {
		return nil, err
	}
	j.init()
	return &j, nil
}

// PutJob records j under its name.
func (t *Tx) PutJob(j *RecoveryJob) error { return t.put(bucketRecovery, []byte(j.Name), j) }

// DeleteJob forgets the named job.
func (t *Tx) DeleteJob(name string) error { return t.delete(bucketRecovery, []byte(name)) }

// EachJob calls fn with every recovery job, running or ended, by name.
func (t *Tx) EachJob(fn func(j *RecoveryJob) error) error {
	return each(t, bucketRecovery, func(_ []byte, j *RecoveryJob) error {
		j.init()
		return fn(j)
	})
}

// ActiveJobs returns the jobs still waiting for pieces, by name.
func (t *Tx) ActiveJobs() ([]*RecoveryJob, error) {
	var out []*RecoveryJob
	err := t.EachJob(func(j *RecoveryJob) error {
		if j.State == RecoveryWaiting {
			out = append(out, j)
		}
		return nil
	})
	return out, err
}
