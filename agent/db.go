package agent

import (
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dibs-backup/dibs/agent/books"
)

// The node database is package books: one file, db/dibs.db, whose schema books lists.
// The buckets not yet reached through its accessors:
var (
	bucketSeen     = []byte("seen")
	bucketPeers    = []byte("peers")
	bucketOutbox   = []byte("outbox")
	bucketRequests = []byte("requests")
)

// A daemon and cron commands sharing a DIBS_DIR take its two waited-for locks in one
// order: the database (the flock on db/dibs.db), then the outbox lock (db/outbox.lock,
// outbox.go). So the outbox is flushed only with the database held: a process holding the
// outbox lock while it waited for the database would wait on one that held the database
// and flushed, until the database's timeout (ErrDBBusy). Spool claims are never waited
// for (a busy file is left to its holder), so they take no part.

// ErrDBBusy means another process held the database for too long.
var ErrDBBusy = books.ErrDBBusy

// withDB runs fn with the database open. Unless KeepDB is set, the database is closed
// again when the last concurrent user is done, so other processes get their turn.
func (n *Node) withDB(fn func(*books.DB) error) error {
	n.dbMu.Lock()
	if n.db == nil {
		db, err := books.Open(filepath.Join(n.Dir, dbFile))
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
			n.db.Close()
			n.db = nil
		}
		n.dbMu.Unlock()
	}()
	return fn(db)
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

func peerState(tx *books.Tx, name string) (PeerState, error) {
	var ps PeerState
	_, err := getJSON(tx.Bucket(bucketPeers), []byte(name), &ps)
	return ps, err
}

func putPeerState(tx *books.Tx, name string, ps PeerState) error {
	return putJSON(tx.Bucket(bucketPeers), []byte(name), ps)
}

// updatePeerState applies fn to a peer's state in its own transaction.
func (n *Node) updatePeerState(name string, fn func(*PeerState)) error {
	return n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
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
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
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
