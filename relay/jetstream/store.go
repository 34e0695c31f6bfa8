// Package jetstream is a relay.Store on a NATS JetStream cluster (relay_server --store
// nats://...): several relay_server processes in front of one cluster share its files, so
// any of them serves any user, and quotas, expiry and exclusive delivery hold across them.
//
// Three replicated buckets hold it all (R = min(3, servers in the cluster)):
//
//	<prefix>-files    object store: one object per deposit, named <to>.<deposit id>
//	<prefix>-index    KV: key <to> → that recipient's files (name, size, time, object)
//	                  and the deposits in flight for it; every change is a compare-and-swap
//	                  on the key's revision, so quota checks are exact across instances
//	<prefix>-leases   KV with a TTL: key <to>.<hex name> is held while a file is open,
//	                  created only if absent, so one instance at a time delivers or removes it
//
// A file is in the store once the index names it; that happens only after the object
// store has acknowledged every chunk and the object's metadata, and the index write is
// acknowledged in turn. For a replicated stream JetStream sends the publish
// acknowledgement only once the message is committed in the stream's RAFT group, that is
// stored by a quorum of its replicas (two of three): see "Replication and R=3" (quorum
// commit) in the NATS docs, docs.nats.io/learn/clustering/replication-and-r3; in the
// server, processClusteredInboundMsg proposes the message and the leader answers when it
// applies the committed entry (applyStreamEntries). So Deposit returns nil only when two
// of three nodes hold the file. They hold it in their files, flushed to disk every
// sync_interval (2 min by default); a cluster that must survive losing power on all
// nodes at once sets sync_interval: always.
package jetstream

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

// Options configure a Store.
type Options struct {
	// AllowFile, Quota, MaxFileSize and MaxAge mean what they mean in relay.DirOptions,
	// with the same defaults. Every instance in front of one cluster must have the same.
	AllowFile   string
	Quota       int64
	MaxFileSize int64
	MaxAge      time.Duration
	// Prefix names the buckets; "" means "dibs-relay".
	Prefix string
	// Replicas of each bucket; 0 means min(3, the servers of the cluster).
	Replicas int
	// Lease is how long an open file stays held after its instance stops renewing it
	// (it died); 0 means one minute. Deposits in flight are held the same way.
	Lease time.Duration
	// Timeout bounds each JetStream request; 0 means 10 s.
	Timeout time.Duration
}

// orphanAge is how old an object that no index names (left by an instance that died
// mid-deposit) must be before Expire removes it.
const orphanAge = time.Hour

// Store is a relay.Store on JetStream. Close it when done.
type Store struct {
	*relay.AllowList // Key, Recipient, Reload
	opts             Options
	nc               *nats.Conn // nil unless the Store opened it
	files            jetstream.ObjectStore
	index, leases    jetstream.KeyValue
	maxRecord        int // bytes an index value may take
}

var (
	_ relay.Store   = (*Store)(nil)
	_ relay.Expirer = (*Store)(nil)
)

// Connect dials the servers (comma-separated nats:// URLs) and opens the store on them.
// The connection reconnects by itself for as long as the store is open.
func Connect(ctx context.Context, urls string, opts Options) (*Store, error) {
	nc, err := nats.Connect(urls, nats.Name("dibs relay_server"), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(false))
	if err != nil {
		return nil, fmt.Errorf("relay: nats %s: %w", urls, err)
	}
	s, err := Open(ctx, nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	s.nc = nc
	return s, nil
}

// Open opens (creating if needed) the store's buckets over nc.
func Open(ctx context.Context, nc *nats.Conn, opts Options) (*Store, error) {
	if opts.AllowFile == "" {
		return nil, errors.New("relay: open JetStream store: no allow file")
	}
	allow, err := relay.NewAllowList(opts.AllowFile)
	if err != nil {
		return nil, err
	}
	if opts.Quota <= 0 {
		opts.Quota = relay.DefaultQuota
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = relay.DefaultMaxFileSize
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = relay.DefaultMaxAge
	}
	if opts.Prefix == "" {
		opts.Prefix = "dibs-relay"
	}
	if opts.Lease <= 0 {
		opts.Lease = time.Minute
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Replicas <= 0 {
		opts.Replicas = min(3, max(1, len(nc.Servers())))
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(opts.Timeout))
	if err != nil {
		return nil, fmt.Errorf("relay: jetstream: %w", err)
	}
	s := &Store{AllowList: allow, opts: opts, maxRecord: int(nc.MaxPayload()) - 4096}
	// A cluster just started may not place replicas yet: try until ctx is done.
	for {
		err = s.buckets(ctx, js)
		if err == nil {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *Store) buckets(ctx context.Context, js jetstream.JetStream) error {
	opts := s.opts
	var err error
	s.files, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: opts.Prefix + "-files", Description: "dibs relay: deposited files",
		Storage: jetstream.FileStorage, Replicas: opts.Replicas})
	if err != nil {
		return fmt.Errorf("relay: jetstream object store: %w", err)
	}
	s.index, err = kv(ctx, js, jetstream.KeyValueConfig{Bucket: opts.Prefix + "-index",
		Description: "dibs relay: files by recipient", Storage: jetstream.FileStorage, Replicas: opts.Replicas})
	if err != nil {
		return err
	}
	s.leases, err = kv(ctx, js, jetstream.KeyValueConfig{Bucket: opts.Prefix + "-leases",
		Description: "dibs relay: files being delivered", Storage: jetstream.FileStorage,
		Replicas: opts.Replicas, TTL: opts.Lease})
	return err
}

// kv creates or opens a KV bucket whose reads are answered by the stream's leader: KV
// buckets allow direct gets, which any replica answers, and one behind the leader can
// miss a deposit just acknowledged, or show a file already removed.
func kv(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
		return nil, fmt.Errorf("relay: jetstream bucket %s: %w", cfg.Bucket, err)
	}
	st, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("relay: jetstream bucket %s: %w", cfg.Bucket, err)
	}
	if sc := st.CachedInfo().Config; sc.AllowDirect {
		sc.AllowDirect = false
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("relay: jetstream bucket %s: %w", cfg.Bucket, err)
		}
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("relay: jetstream bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// Replicas returns the number of replicas of the store's buckets.
func (s *Store) Replicas() int { return s.opts.Replicas }

// Close closes the connection if Connect opened it.
func (s *Store) Close() {
	if s.nc != nil {
		s.nc.Close()
	}
}

// record is the index value of one recipient.
type record struct {
	Files   map[string]file    `json:"f,omitempty"` // by name
	Pending map[string]pending `json:"p,omitempty"` // deposits in flight, by name
}

type file struct {
	Size int64  `json:"s"`
	Time int64  `json:"t"` // unix nanoseconds
	Obj  string `json:"o"` // object name
}

// pending is a deposit in flight. Its bytes count against the quota for its depositor
// until its body is in (Admitted), then for everyone. An instance that dies mid-deposit
// stops renewing Until, and the entry counts no more once it passed.
type pending struct {
	ID       string `json:"i"`
	From     string `json:"f"`
	Size     int64  `json:"s"`
	Admitted bool   `json:"a,omitempty"`
	Until    int64  `json:"u"` // unix nanoseconds
}

func (p pending) live(now time.Time) bool { return now.UnixNano() < p.Until }

// held is what to's quota holds: its files, and the deposits admitted and not yet
// listed. It drops pending entries that are dead.
func (r *record) held(now time.Time) int64 {
	n := int64(0)
	for _, f := range r.Files {
		n += f.Size
	}
	for name, p := range r.Pending {
		if !p.live(now) {
			delete(r.Pending, name)
		} else if p.Admitted {
			n += p.Size
		}
	}
	return n
}

// errUnchanged from an update function leaves the record as it is.
var errUnchanged = errors.New("unchanged")

// update applies fn to to's record and writes it back if nobody changed it meanwhile,
// else tries again on the new record. fn must be idempotent: a write whose answer is
// lost (a node died) is tried again, and may have been applied already.
func (s *Store) update(to pgpmsg.Fingerprint, fn func(r *record) error) error {
	key := string(to)
	deadline := time.Now().Add(3 * s.opts.Timeout)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		err := s.tryUpdate(ctx, key, fn)
		cancel()
		if err == nil || errors.Is(err, errUnchanged) {
			return nil
		}
		var fnErr fnError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && time.Now().After(deadline) {
			return fmt.Errorf("relay: jetstream index: %w", err)
		}
		// A lost race, or the cluster electing a leader: back off a little, at random.
		time.Sleep(time.Duration(rand.IntN(min(1+attempt, 50))+1) * time.Millisecond)
	}
}

// fnError carries the error of an update function out of tryUpdate.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

func (s *Store) tryUpdate(ctx context.Context, key string, fn func(r *record) error) error {
	r, rev, err := s.get(ctx, key)
	if err != nil {
		return err
	}
	if err := fn(r); err != nil {
		if errors.Is(err, errUnchanged) {
			return err
		}
		return fnError{err}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fnError{err}
	}
	if len(b) > s.maxRecord {
		return fnError{fmt.Errorf("%s has too many files waiting (%d bytes of index): %w", key, len(b), relay.ErrOverQuota)}
	}
	if rev == 0 {
		_, err = s.index.Create(ctx, key, b)
	} else {
		_, err = s.index.Update(ctx, key, b, rev)
	}
	return err
}

// get returns to's record and its revision, 0 if there is none.
func (s *Store) get(ctx context.Context, key string) (*record, uint64, error) {
	r := &record{Files: map[string]file{}, Pending: map[string]pending{}}
	e, err := s.index.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return r, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	if err := json.Unmarshal(e.Value(), r); err != nil {
		return nil, 0, fmt.Errorf("relay: jetstream index of %s: %w", key, err)
	}
	if r.Files == nil {
		r.Files = map[string]file{}
	}
	if r.Pending == nil {
		r.Pending = map[string]pending{}
	}
	return r, e.Revision(), nil
}

// read returns to's record as it is now, retrying while the cluster elects a leader.
func (s *Store) read(to pgpmsg.Fingerprint) (*record, error) {
	deadline := time.Now().Add(3 * s.opts.Timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		r, _, err := s.get(ctx, string(to))
		cancel()
		if err == nil || time.Now().After(deadline) {
			if err != nil {
				err = fmt.Errorf("relay: jetstream index: %w", err)
			}
			return r, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newID() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Deposit stores a file for to within to's quota, as relay.DirStore does: while the body
// arrives its size counts against the quota for its depositor only, and once it is in,
// the quota is checked again against everyone's files.
func (s *Store) Deposit(from, to pgpmsg.Fingerprint, name string, size int64, r io.Reader) error {
	if _, err := s.Recipient(from, to); err != nil {
		return err
	}
	if size > s.opts.MaxFileSize {
		return fmt.Errorf("%d bytes, this relay takes at most %d: %w", size, s.opts.MaxFileSize, relay.ErrTooLarge)
	}
	if !queue.ValidName(name) {
		return fmt.Errorf("%w: file %q", queue.ErrBadName, name)
	}
	id := newID()
	duplicate := false
	err := s.update(to, func(rec *record) error {
		now := time.Now()
		held := rec.held(now)
		if p, ok := rec.Pending[name]; ok && p.ID == id {
			return errUnchanged // our own write, whose answer was lost
		}
		if _, ok := rec.Files[name]; ok {
			duplicate = true
			return errUnchanged
		}
		if _, ok := rec.Pending[name]; ok {
			return fmt.Errorf("%s is being deposited right now: %w", name, relay.ErrBusy)
		}
		own := int64(0)
		for _, p := range rec.Pending {
			if !p.Admitted && p.From == string(from) {
				own += p.Size
			}
		}
		if held+own+size > s.opts.Quota {
			return fmt.Errorf("%s holds %d bytes, and %d more from %s would pass its quota of %d: %w",
				to, held, own+size, from, s.opts.Quota, relay.ErrOverQuota)
		}
		rec.Pending[name] = pending{ID: id, From: string(from), Size: size, Until: now.Add(s.opts.Lease).UnixNano()}
		return nil
	})
	if err != nil || duplicate {
		return err
	}
	// Keep the entry alive while the body arrives, however slowly.
	stop := make(chan struct{})
	var renewed sync.WaitGroup
	renewed.Go(func() {
		t := time.NewTicker(s.opts.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.update(to, func(rec *record) error {
					p, ok := rec.Pending[name]
					if !ok || p.ID != id {
						return errUnchanged
					}
					p.Until = time.Now().Add(s.opts.Lease).UnixNano()
					rec.Pending[name] = p
					return nil
				})
			}
		}
	})
	err = s.store(to, name, id, size, r)
	close(stop)
	renewed.Wait()
	if err != nil {
		s.update(to, func(rec *record) error { // give the reservation back
			if p, ok := rec.Pending[name]; !ok || p.ID != id {
				return errUnchanged
			}
			delete(rec.Pending, name)
			return nil
		})
	}
	return err
}

// store puts the body into the object store and then names it in the index.
func (s *Store) store(to pgpmsg.Fingerprint, name, id string, size int64, r io.Reader) error {
	obj := string(to) + "." + id
	body := relay.AdmitBody(r, size, func() error { return s.admit(to, name, id, size) })
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout+s.opts.Timeout*time.Duration(size>>20))
	defer cancel()
	if _, err := s.files.Put(ctx, jetstream.ObjectMeta{Name: obj}, body); err != nil {
		s.removeObject(obj) // whatever of it was stored
		return fmt.Errorf("relay: jetstream: storing %s: %w", name, err)
	}
	err := s.update(to, func(rec *record) error {
		if f, ok := rec.Files[name]; ok && f.Obj == obj {
			return errUnchanged // our own write, whose answer was lost
		}
		p, ok := rec.Pending[name]
		if !ok || p.ID != id {
			// Our entry died (this instance stalled past the lease) and another
			// deposit of the name may have taken its place.
			return fmt.Errorf("relay: jetstream: deposit of %s outlived its lease", name)
		}
		delete(rec.Pending, name)
		rec.Files[name] = file{Size: size, Time: time.Now().UnixNano(), Obj: obj}
		return nil
	})
	if err != nil {
		s.removeObject(obj)
	}
	return err
}

// admit marks the deposit's body as in, if it still fits to's quota.
func (s *Store) admit(to pgpmsg.Fingerprint, name, id string, size int64) error {
	return s.update(to, func(rec *record) error {
		p, ok := rec.Pending[name]
		if !ok || p.ID != id {
			return fmt.Errorf("relay: jetstream: deposit of %s outlived its lease", name)
		}
		if p.Admitted {
			return errUnchanged
		}
		delete(rec.Pending, name) // not counted against itself
		if held := rec.held(time.Now()); held+size > s.opts.Quota {
			return fmt.Errorf("%s holds %d bytes, %d more would pass its quota of %d: %w",
				to, held, size, s.opts.Quota, relay.ErrOverQuota)
		}
		p.Admitted = true
		rec.Pending[name] = p
		return nil
	})
}

func (s *Store) removeObject(obj string) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	err := s.files.Delete(ctx, obj)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	return err
}

// List returns the files waiting for to, in name order (names sort by creation time).
func (s *Store) List(to pgpmsg.Fingerprint) ([]queue.Entry, error) {
	if err := s.Collector(to); err != nil {
		return nil, err
	}
	rec, err := s.read(to)
	if err != nil {
		return nil, err
	}
	box := queue.Outgoing(string(to))
	es := make([]queue.Entry, 0, len(rec.Files))
	for name, f := range rec.Files {
		es = append(es, queue.Entry{Box: box, Name: name, Size: f.Size, ModTime: time.Unix(0, f.Time)})
	}
	slices.SortFunc(es, func(a, b queue.Entry) int { return strings.Compare(a.Name, b.Name) })
	return es, nil
}

// lease is a held lease on one file.
type lease struct {
	s    *Store
	key  string
	mu   sync.Mutex
	rev  uint64
	stop chan struct{}
	done sync.WaitGroup
}

// hold takes the lease on to's file name, or fails with ErrBusy if another holds it.
func (s *Store) hold(to pgpmsg.Fingerprint, name string) (*lease, error) {
	key := string(to) + "." + hex.EncodeToString([]byte(name))
	var rev uint64
	var err error
	for try := 0; try < 3; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
		rev, err = s.leases.Create(ctx, key, []byte(newID()))
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrKeyExists) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("%s: %w", name, relay.ErrBusy)
	}
	if err != nil {
		return nil, fmt.Errorf("relay: jetstream lease: %w", err)
	}
	l := &lease{s: s, key: key, rev: rev, stop: make(chan struct{})}
	l.done.Go(l.renew)
	return l, nil
}

func (l *lease) renew() {
	t := time.NewTicker(l.s.opts.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			ctx, cancel := context.WithTimeout(context.Background(), l.s.opts.Timeout)
			if rev, err := l.s.leases.Update(ctx, l.key, []byte("renewed"), l.rev); err == nil {
				l.rev = rev
			}
			cancel()
			l.mu.Unlock()
		}
	}
}

// release gives the lease back.
func (l *lease) release() {
	close(l.stop)
	l.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), l.s.opts.Timeout)
	defer cancel()
	// If this fails the lease ends at its TTL.
	_ = l.s.leases.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
}

// Open holds the file against other instances' deliveries and removals while it is open.
func (s *Store) Open(to pgpmsg.Fingerprint, name string) (io.ReadCloser, int64, error) {
	if err := s.Collector(to); err != nil {
		return nil, 0, err
	}
	l, err := s.hold(to, name)
	if err != nil {
		return nil, 0, err
	}
	rec, err := s.read(to)
	if err != nil {
		l.release()
		return nil, 0, err
	}
	f, ok := rec.Files[name]
	if !ok {
		l.release()
		return nil, 0, fmt.Errorf("%s: %w", name, relay.ErrNotFound)
	}
	// The object is read as the server sends it, within the server's transfer deadline.
	ctx, cancel := context.WithCancel(context.Background())
	res, err := s.files.Get(ctx, f.Obj)
	if err != nil {
		cancel()
		l.release()
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, 0, fmt.Errorf("%s: %w", name, relay.ErrNotFound)
		}
		return nil, 0, fmt.Errorf("relay: jetstream: %s: %w", name, err)
	}
	return &object{res: res, cancel: cancel, l: l}, f.Size, nil
}

type object struct {
	res    jetstream.ObjectResult
	cancel context.CancelFunc
	l      *lease
	once   sync.Once
}

func (o *object) Read(p []byte) (int, error) { return o.res.Read(p) }

func (o *object) Close() error {
	o.once.Do(func() {
		o.res.Close()
		o.cancel()
		o.l.release()
	})
	return nil
}

// Remove deletes a file once its recipient committed it.
func (s *Store) Remove(to pgpmsg.Fingerprint, name string) error {
	if err := s.Collector(to); err != nil {
		return err
	}
	_, err := s.remove(to, name, nil)
	return err
}

// remove deletes to's file name under its lease, if keep (given the file) is not true. It
// reports whether it removed it.
func (s *Store) remove(to pgpmsg.Fingerprint, name string, keep func(file) bool) (bool, error) {
	l, err := s.hold(to, name)
	if err != nil {
		return false, err
	}
	defer l.release()
	var gone file
	err = s.update(to, func(rec *record) error {
		f, ok := rec.Files[name]
		if !ok || (keep != nil && keep(f)) {
			return errUnchanged
		}
		gone = f
		delete(rec.Files, name)
		return nil
	})
	if err != nil || gone.Obj == "" {
		return false, err
	}
	// The index no longer names the object: if deleting it fails, Expire removes it
	// as an orphan.
	s.removeObject(gone.Obj)
	return true, nil
}

// Expire removes files older than MaxAge, and objects no index names that are older than
// an hour (left by an instance that died mid-deposit). Files open in any instance are
// skipped until the next call. It goes on past errors and returns the first.
func (s *Store) Expire(now time.Time) (int, error) {
	var first error
	keep := func(err error) {
		if first == nil && err != nil {
			first = fmt.Errorf("relay: expire: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	keys, err := s.index.Keys(ctx)
	cancel()
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		err = nil
	}
	keep(err)
	cutoff := now.Add(-s.opts.MaxAge).UnixNano()
	// The objects the index names, and of deposits in flight. Unless every record was
	// read, no object is taken for an orphan.
	named := map[string]bool{}
	complete := err == nil
	n := 0
	for _, key := range keys {
		to := pgpmsg.Fingerprint(key)
		rec, err := s.read(to)
		if err != nil {
			keep(err)
			complete = false
			continue
		}
		for _, p := range rec.Pending {
			named[key+"."+p.ID] = true
		}
		for name, f := range rec.Files {
			named[f.Obj] = true
			if f.Time > cutoff {
				continue
			}
			gone, err := s.remove(to, name, func(f file) bool { return f.Time > cutoff })
			if errors.Is(err, relay.ErrBusy) {
				continue
			}
			keep(err)
			if gone {
				n++
			}
		}
	}
	if complete {
		keep(s.removeOrphans(now, named))
	}
	return n, first
}

func (s *Store) removeOrphans(now time.Time, named map[string]bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	objs, err := s.files.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, o := range objs {
		if !named[o.Name] && now.Sub(o.ModTime) > orphanAge {
			if err := s.removeObject(o.Name); err != nil {
				return err
			}
		}
	}
	return nil
}
