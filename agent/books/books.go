// Package books keeps the node's records: one bbolt file (one writer at a time, every
// commit fsynced, readers see consistent snapshots), its buckets, the state types stored
// in them, and typed accessors on a transaction. No other package touches bbolt.
//
// The schema. Every value is JSON unless said otherwise; "\x00" is a NUL byte, BE a
// big-endian integer.
//
//	bucket     key                                    value
//	peers      peer name                              PeerState: usage and liveness of a peer
//	seen       Message-Id (hex-decoded)               Date, unix seconds (8 bytes BE): the replay table
//	outbox     sequence (8 bytes BE)                  OutMessage: a message waiting to be sealed
//	requests   Message-Id                             PendingRequest: a request we sent, for retries
//	objects    object id                              Object: a coded blob and where its pieces are
//	versions   stored name \x00 version (4 bytes BE)  FileVersion
//	pieceidx   piece id                               object id \x00 segment \x00 index (decimal): finds a piece from an ACK
//	statcache  stored name                            StatEntry: a local file as it was last stored
//	held       peer \x00 piece id                     HeldPiece: what we keep for others
//	recovery   job name                               RecoveryJob
//	probes     Message-Id of a PROBE                  ProbeState: a probe waiting for its answer
//	unstored   object id \x00 a versions key          Unstored: a dropped version its pack still carries
//	schedule   periodic task name                     time: when the task last ran
package books

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The buckets (see the schema above).
var (
	bucketPeers    = []byte("peers")
	bucketSeen     = []byte("seen")
	bucketOutbox   = []byte("outbox")
	bucketRequests = []byte("requests")
	bucketObjects  = []byte("objects")
	bucketVersions = []byte("versions")
	bucketPieceIdx = []byte("pieceidx")
	bucketStat     = []byte("statcache")
	bucketHeld     = []byte("held")
	bucketRecovery = []byte("recovery")
	bucketProbes   = []byte("probes")
	bucketUnstored = []byte("unstored")
	bucketSchedule = []byte("schedule")

	allBuckets = [][]byte{bucketSeen, bucketPeers, bucketOutbox, bucketRequests,
		bucketObjects, bucketVersions, bucketPieceIdx, bucketStat, bucketHeld, bucketRecovery, bucketProbes,
		bucketUnstored, bucketSchedule}
)

// ErrDBBusy means another process held the database for too long.
var ErrDBBusy = errors.New("the database is busy (another dibs command or the daemon holds it); try again")

// lockTimeout is how long Open waits for another process to let the file go (a
// variable for the test).
var lockTimeout = 60 * time.Second

// DB is an open database.
type DB struct{ b *bolt.DB }

// Open opens the database file at path, creating it and its buckets if need be. It waits
// up to a minute for another process holding the file to close it, then returns ErrDBBusy.
func Open(path string) (*DB, error) {
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
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
		return &DB{b: b}, nil
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
	return &DB{b: b}, nil
}

// Close closes the database file, releasing its lock.
func (d *DB) Close() error { return d.b.Close() }

// View runs fn in a read-only transaction.
func (d *DB) View(fn func(*Tx) error) error {
	return d.b.View(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// Update runs fn in a read-write transaction, committed if fn returns nil and rolled
// back otherwise.
func (d *DB) Update(fn func(*Tx) error) error {
	return d.b.Update(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// Batch is Update for many concurrent callers: their functions share one commit. fn may
// run more than once (a batch that fails is run again without the failing function,
// which then runs alone), so what it does outside the transaction must bear repeating.
func (d *DB) Batch(fn func(*Tx) error) error {
	return d.b.Batch(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// Tx is a transaction: View's read-only, or Update's and Batch's read-write. A missing
// record reads as the zero value (or nil, or false) with a nil error; an error is a
// record that does not decode or a write that failed.
type Tx struct{ tx *bolt.Tx }

// OnCommit runs fn once the transaction has committed; a transaction rolled back (or a
// batch run again without a failing function) never runs it. What a handler does to
// files that the books describe, such as deleting them, goes here: done inside the
// transaction, it would outlive a rollback.
func (t *Tx) OnCommit(fn func()) { t.tx.OnCommit(fn) }

func (t *Tx) bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

// get decodes the record under key into v; it reports whether there was one.
func (t *Tx) get(bucket, key []byte, v any) (bool, error) {
	raw := t.bucket(bucket).Get(key)
	if raw == nil {
		return false, nil
	}
	return true, decode(bucket, key, raw, v)
}

// decode reads the record raw stored under key in bucket into v.
func decode(bucket, key, raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("database: %s %q: %w", bucket, key, err)
	}
	return nil
}

// versionsFill is how full the versions bucket's pages are left when they split. Its keys
// (name, then version) come mostly in order: a store walks its tree sorted, and a
// recover_all rebuilds the books a pack's manifest at a time. At bbolt's default of half
// full, a recovery of 100,000 small files left a 136 MB database of which 80 MB were
// versions pages, half empty, and mapped whole into the owner's memory as it read them.
const versionsFill = 0.9

func (t *Tx) put(bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b := t.bucket(bucket)
	if bytes.Equal(bucket, bucketVersions) {
		b.FillPercent = versionsFill
	}
	return b.Put(key, raw)
}

func (t *Tx) delete(bucket, key []byte) error { return t.bucket(bucket).Delete(key) }

// each decodes every record of bucket in key order into a fresh V and calls fn with it.
func each[V any](t *Tx, bucket []byte, fn func(k []byte, v *V) error) error {
	return t.bucket(bucket).ForEach(func(k, raw []byte) error {
		v := new(V)
		if err := decode(bucket, k, raw, v); err != nil {
			return err
		}
		return fn(k, v)
	})
}

// empty drops every record of the buckets.
func (t *Tx) empty(buckets ...[]byte) error {
	for _, b := range buckets {
		if err := t.tx.DeleteBucket(b); err != nil {
			return err
		}
		if _, err := t.tx.CreateBucket(b); err != nil {
			return err
		}
	}
	return nil
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
