package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The node database is a bbolt file: one writer at a time, every commit fsynced, readers
// see consistent snapshots. Its buckets:
var (
	bucketSeen     = []byte("seen")     // Message-Id (hex) -> Date (unix seconds, 8 bytes): the replay table
	bucketPeers    = []byte("peers")    // peer name -> PeerState (JSON)
	bucketOutbox   = []byte("outbox")   // sequence (8 bytes) -> OutMessage (JSON): replies waiting to be sealed
	bucketRequests = []byte("requests") // Message-Id -> pending request we sent (JSON), for retries
	allBuckets     = [][]byte{bucketSeen, bucketPeers, bucketOutbox, bucketRequests}
)

// A daemon and cron commands sharing a DIBS_DIR take its two waited-for locks in one
// order: the database (bbolt's flock on db/dibs.db), then the outbox lock (db/outbox.lock,
// outbox.go). So the outbox is flushed only with the database held: a process holding the
// outbox lock while it waited for the database would wait on one that held the database
// and flushed, until bbolt's timeout (ErrDBBusy). Spool claims are never waited for (a
// busy file is left to its holder), so they take no part.

// ErrDBBusy means another process held the database for too long.
var ErrDBBusy = errors.New("the database is busy (another dibs command or the daemon holds it); try again")

type database struct{ b *bolt.DB }

func openDB(dir string) (*database, error) {
	b, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{Timeout: 60 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, ErrDBBusy
	}
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	b.MaxBatchDelay = 5 * time.Millisecond
	// Creating the buckets is a commit (two fsyncs); the daemon opens the database on
	// every wake, and nearly every open finds them there.
	missing := false
	b.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			missing = missing || tx.Bucket(name) == nil
		}
		return nil
	})
	if !missing {
		return &database{b: b}, nil
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	return &database{b: b}, nil
}

func (d *database) close() error { return d.b.Close() }

// withDB runs fn with the database open. Unless KeepDB is set, the database is closed
// again when the last concurrent user is done, so other processes get their turn.
func (n *Node) withDB(fn func(*bolt.DB) error) error {
	n.dbMu.Lock()
	if n.db == nil {
		db, err := openDB(n.Dir)
		if err != nil {
			n.dbMu.Unlock()
			return err
		}
		n.db = db
	}
	n.dbRefs++
	db := n.db
	n.dbMu.Unlock()
	defer func() {
		n.dbMu.Lock()
		n.dbRefs--
		if n.dbRefs == 0 && !n.KeepDB && n.db != nil {
			n.db.close()
			n.db = nil
		}
		n.dbMu.Unlock()
	}()
	return fn(db.b)
}

// PeerState is what the node knows of a peer beyond the peer list: usage and liveness.
type PeerState struct {
	LastHeard  time.Time `json:"last_heard,omitzero"`
	LocalUsed  int64     `json:"local_used"`
	RemoteUsed int64     `json:"remote_used"`
	// LastMethod is the last talk method that delivered a file; LastError the last failure.
	LastMethod  string    `json:"last_method,omitempty"`
	LastSent    time.Time `json:"last_sent,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
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
	// Forgotten is set when the peer told us (FORGET_YOU) it dropped what it held for us.
	Forgotten time.Time `json:"forgotten,omitzero"`
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func peerState(tx *bolt.Tx, name string) (PeerState, error) {
	var ps PeerState
	_, err := getJSON(tx.Bucket(bucketPeers), []byte(name), &ps)
	return ps, err
}

func putPeerState(tx *bolt.Tx, name string, ps PeerState) error {
	return putJSON(tx.Bucket(bucketPeers), []byte(name), ps)
}

// updatePeerState applies fn to a peer's state in its own transaction.
func (n *Node) updatePeerState(name string, fn func(*PeerState)) error {
	return n.withDB(func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			ps, err := peerState(tx, name)
			if err != nil {
				return err
			}
			fn(&ps)
			return putPeerState(tx, name, ps)
		})
	})
}

// PeerStates returns the state of every peer that has one.
func (n *Node) PeerStates() (map[string]PeerState, error) {
	out := map[string]PeerState{}
	err := n.withDB(func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketPeers).ForEach(func(k, v []byte) error {
				var ps PeerState
				if err := json.Unmarshal(v, &ps); err != nil {
					return err
				}
				out[string(k)] = ps
				return nil
			})
		})
	})
	return out, err
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
