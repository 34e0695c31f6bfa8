package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/erasure"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// Recovery states (show_database --only recovery).
const (
	RecoveryWaiting = books.RecoveryWaiting
	RecoveryDone    = books.RecoveryDone
	RecoveryFailed  = books.RecoveryFailed
)

const (
	recoveryDir  = "recovery"
	stagingDir   = "recovery.tmp"
	allJobName   = "*all*"
	objectFile   = "object"
	objectHash   = "object.rs1" // the object's shard hash (see assemble)
	repairPrefix = "*repair* "
	prunePrefix  = "*prune* "
)

// RecoveryJob is a recovery in progress: it lives in the database, with the shards
// received so far under recovery.tmp/, so it survives restarts.
type RecoveryJob = books.RecoveryJob

// RecoverFile asks the peers holding pieces of a stored file or tree (its latest
// version, or version) for them. The files appear under recovery/ once enough answers
// are processed.
func (n *Node) RecoverFile(sname string, version int) (string, error) {
	root, err := StoredName(sname)
	if err != nil {
		return "", err
	}
	job := &RecoveryJob{Name: root, Kind: books.JobFile, Target: root, Version: version, State: RecoveryWaiting, Started: n.Now().UTC(), Objects: map[string]bool{}}
	asked := 0
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			chosen, err := chooseVersions(tx, root, version)
			if err != nil {
				return err
			}
			if len(chosen) == 0 {
				if version > 0 {
					return fmt.Errorf("%s has no version %d (dibs show_database --only files)", root, version)
				}
				return fmt.Errorf("%s is not stored (dibs show_database --only files lists what is)", root)
			}
			for _, fv := range chosen {
				if fv.Object != "" {
					job.Objects[fv.Object] = false
				}
			}
			if asked, err = n.askForObjects(tx, job); err != nil {
				return err
			}
			if err := tx.PutJob(job); err != nil {
				return err
			}
			return n.checkJob(tx, job)
		})
	})
	if err != nil {
		return "", err
	}
	return job.Name, n.sealRequests(asked)
}

// sealRequests seals the requests a recovery queued into outgoing/: all that
// recover_file and recover_all do before the answers come, and what their progress
// counts.
func (n *Node) sealRequests(requests int) error {
	prog := n.progress()
	prog.Start(0, requests)
	defer prog.Done()
	err := n.FlushOutbox()
	if err == nil {
		prog.Add(0, requests)
	}
	return err
}

// chooseVersions picks, for every stored name under root, the requested version (or the
// newest when version is 0), sorted by name. A slice, not a map by name: a recovery of
// 100,000 files holds them all while it writes them.
func chooseVersions(tx *books.Tx, root string, version int) ([]FileVersion, error) {
	var chosen []FileVersion
	err := tx.EachVersionUnder(root, func(fv FileVersion) error {
		switch last := len(chosen) - 1; {
		case version != 0 && fv.Version != version:
		case last >= 0 && chosen[last].Name == fv.Name:
			chosen[last] = fv // versions come in order, a name's oldest first: the newest wins
		default:
			chosen = append(chosen, fv) // and names in order
		}
		return nil
	})
	return chosen, err
}

// askForObjects sends one RECOVER per peer, listing the pieces it holds of the job's
// objects not yet assembled, and returns how many it sent. Asking all holders costs
// little: the fastest k win.
func (n *Node) askForObjects(tx *books.Tx, job *RecoveryJob) (int, error) {
	byPeer := map[string][]string{}
	for id, done := range job.Objects {
		if done {
			continue
		}
		o, err := tx.Object(id)
		if err != nil {
			return 0, err
		}
		if o == nil {
			continue
		}
		for _, seg := range o.Segments {
			for _, p := range seg.Pieces {
				if p.ID != "" && (p.State == PieceStored || p.State == PieceSent) {
					byPeer[p.Peer] = append(byPeer[p.Peer], p.ID)
					if job.Kind == books.JobDrill {
						job.Pieces[p.ID] = false // a drill waits for every answer
					}
				}
			}
		}
	}
	sent := 0
	for _, peer := range sortedKeys(byPeer) {
		if _, _, err := n.Peer(peer); err != nil {
			continue
		}
		if err := n.requestTx(tx, peer, TypeRecover, nil, writeIDs(byPeer[peer])); err != nil {
			return sent, err
		}
		sent++
	}
	return sent, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// RecoverAll asks every peer for everything it holds for us. It needs only the key and
// the peer list: the pieces' manifests rebuild the file database as they arrive.
func (n *Node) RecoverAll() error {
	peers, err := n.Peers()
	if err != nil {
		return err
	}
	if len(peers) == 0 {
		return errors.New("no peers to recover from (import_recovery_kit sets them up)")
	}
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			job := &RecoveryJob{Name: allJobName, Kind: books.JobAll, State: RecoveryWaiting, Started: n.Now().UTC(),
				Objects: map[string]bool{}, Finished: map[string]int{}, Received: map[string]int{}, Pieces: map[string]bool{}}
			for _, p := range peers {
				job.Finished[p.Name] = -1
				if err := n.requestTx(tx, p.Name, TypeRecoverAll, nil, nil); err != nil {
					return err
				}
			}
			return tx.PutJob(job)
		})
	})
	if err != nil {
		return err
	}
	return n.sealRequests(len(peers))
}

// handleRecover sends back the listed pieces we hold for the sender; a piece we do not
// hold gets a NACK.
func handleRecover(r *Request) error {
	ids, err := r.idList()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !r.Tx.Holds(r.Peer.Name, id) {
			if err := r.nack(TypeRecover, "unknown piece", [2]string{fieldPiece, id}); err != nil {
				return err
			}
			continue
		}
		if err := r.ReplyFile(TypeRecoverResponse, [][2]string{{fieldPiece, id}}, r.Node.storagePath(r.Peer.Name, id)); err != nil {
			return err
		}
	}
	return nil
}

// handleRecoverAll sends back every piece we hold for the sender, then says how many.
func handleRecoverAll(r *Request) error {
	ids := r.Tx.HeldIDs(r.Peer.Name)
	for _, id := range ids {
		if err := r.ReplyFile(TypeRecoverResponse, [][2]string{{fieldPiece, id}}, r.Node.storagePath(r.Peer.Name, id)); err != nil {
			return err
		}
	}
	return r.Reply(TypeFinishedAll, [][2]string{{fieldCount, strconv.Itoa(len(ids))}}, nil)
}

// handleFinishedAll records that a peer sent all it holds for us. A peer that answers
// after the job ended (it was not waited for) is recorded too, so that show_database no
// longer counts it among the peers that did not answer.
func handleFinishedAll(r *Request) error {
	job, err := r.Tx.Job(allJobName)
	if err != nil || job == nil {
		return err
	}
	c, err := strconv.Atoi(r.Header.Get(fieldCount))
	if err != nil || c < 0 {
		return reject("FINISHED_RECOVER_ALL: bad Count")
	}
	if job.State != RecoveryWaiting {
		if f, asked := job.Finished[r.Peer.Name]; !asked || f >= 0 {
			return nil
		}
		job.Finished[r.Peer.Name] = c
		return r.Tx.PutJob(job)
	}
	job.Finished[r.Peer.Name] = c
	if err := r.Tx.PutJob(job); err != nil {
		return err
	}
	if job.Received[r.Peer.Name] < c {
		// Some of its answers have not come, or came damaged and were refused: the
		// first answer ended our request, so record it again, and ResendRequests asks
		// the peer again after resendAfter unless the job is done by then.
		req := books.PendingRequest{Peer: r.Peer.Name, Type: TypeRecoverAll, Sent: r.Node.Now(), Tries: 1}
		if err := r.Tx.PutRequest(askAgainID(r.Peer.Name), req); err != nil {
			return err
		}
	}
	return r.Node.checkJob(r.Tx, job)
}

// askAgainID is the pending request that asks peer again for everything it holds, after
// its FINISHED_RECOVER_ALL counted more pieces than arrived whole.
func askAgainID(peer string) string { return "recover-all-again-" + peer }

// silentPeers are the peers a recover_all asked that have sent nothing, not even
// FINISHED_RECOVER_ALL, sorted.
func silentPeers(j *RecoveryJob) []string {
	var silent []string
	for _, peer := range sortedKeys(j.Finished) {
		if j.Finished[peer] < 0 && j.Received[peer] == 0 {
			silent = append(silent, peer)
		}
	}
	return silent
}

// handleRecoverResponse takes a piece back: it checks it, rebuilds the books from its
// manifest if they were lost, keeps the shard, and assembles the object once k shards of
// every segment are here.
func handleRecoverResponse(r *Request) error {
	n := r.Node
	id := r.Header.Get(fieldPiece)
	if !validID(id) {
		return reject("RECOVER_RESPONSE: bad Piece-Id")
	}
	jobs, err := r.Tx.ActiveJobs()
	if err != nil {
		return err
	}
	pp, _ := r.Pre.(*preparedPiece)
	if pp == nil { // not opened before the batch (a caller that does not prepare)
		pp = n.openForRecovery(r.Msg, id, nil)
	}
	op, layout := pp.op, pp.layout
	if pp.err != nil {
		return reject("RECOVER_RESPONSE from %s: %v", r.Peer.Name, pp.err)
	}
	if op.Info.Piece != id {
		return reject("RECOVER_RESPONSE: piece %s carries %s", id, op.Info.Piece)
	}
	if len(jobs) == 0 {
		pp.unstage(n)
		// A late answer (a recover_all finished without this peer): the piece is not
		// needed, but the books learn that the peer holds it, and a tombstone is
		// honoured still.
		lastAll, err := r.Tx.Job(allJobName)
		if err != nil || lastAll == nil {
			return err
		}
		o, err := r.Tx.Object(op.Info.Object)
		switch {
		case err != nil:
			return err
		case o != nil:
			return n.notePiece(r.Tx, o, op, r.Peer.Name, id, layout)
		case isTombstone(op.Manifest):
			_, err := n.rebuildBooks(r.Tx, op, r.Peer.Name, id, layout)
			return err
		}
		return nil
	}
	var all *RecoveryJob
	wanted := false
	for _, j := range jobs {
		if j.Kind == books.JobAll {
			all = j
			if !j.Pieces[id] {
				j.Pieces[id] = true
				j.Received[r.Peer.Name]++
			}
			if _, ok := j.Objects[op.Info.Object]; !ok {
				j.Objects[op.Info.Object] = false
			}
		}
		if done, ok := j.Objects[op.Info.Object]; ok && !done {
			wanted = true
		}
	}
	o, err := r.Tx.Object(op.Info.Object)
	if err != nil {
		return err
	}
	if o == nil && all != nil {
		if o, err = n.rebuildBooks(r.Tx, op, r.Peer.Name, id, layout); err != nil {
			return err
		}
	} else if o != nil && all != nil {
		if err := n.notePiece(r.Tx, o, op, r.Peer.Name, id, layout); err != nil {
			return err
		}
	}
	if wanted && o != nil {
		if pp.stageErr != nil {
			return retryLater{pp.stageErr}
		}
		if !pp.staged {
			if err := n.stageShard(op); err != nil {
				return retryLater{err}
			}
		}
		ok, err := n.assemble(o)
		if err != nil {
			return err
		}
		if ok {
			for _, j := range jobs {
				if _, in := j.Objects[o.ID]; in {
					j.Objects[o.ID] = true
				}
			}
		}
	}
	if !wanted || o == nil {
		pp.unstage(n)
	}
	drillAnswered(jobs, id, "")
	for _, j := range jobs {
		if err := r.Tx.PutJob(j); err != nil {
			return err
		}
		if err := n.checkJob(r.Tx, j); err != nil {
			return err
		}
	}
	return nil
}

// A preparedPiece is the piece of a RECOVER_RESPONSE opened, checked and (when a job
// wants it) staged before the database batch the handler runs in: inside it, every
// decrypt, hash and fsync of every answer ran one after another, on one core.
type preparedPiece struct {
	op       *openedPiece // its Shard is dropped once staged
	layout   *pgpmsg.ChunkScanner
	err      error // it does not open: the handler refuses the message
	staged   bool  // the shard is under recovery.tmp/
	stageErr error // staging it failed: the handler leaves the message for a later run
}

// openSlots bounds the pieces opened at once outside the batch: each holds its shard in
// memory until it is staged, and the processor runs many more workers than cores.
var openSlots = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

// prepareRecoverResponse opens the piece a RECOVER_RESPONSE carries and, if a recovery
// is waiting for its object, stages its shard and assembles the object once k shards of
// every segment are staged, all outside the database batch. Nothing here is committed:
// the books change only in handleRecoverResponse, which trusts only what is on disk
// (stageShard and assemble are idempotent), so a message that fails or is killed later
// is simply processed again.
func (n *Node) prepareRecoverResponse(db *books.DB, msg *pgpmsg.Opened) any {
	return n.openForRecovery(msg, msg.Header.Get(fieldPiece), db)
}

// openForRecovery opens and checks the piece in msg; with db it also stages it as
// prepareRecoverResponse says.
func (n *Node) openForRecovery(msg *pgpmsg.Opened, id string, db *books.DB) *preparedPiece {
	openSlots <- struct{}{}
	defer func() { <-openSlots }()
	pp := &preparedPiece{layout: pgpmsg.NewChunkScanner()} // the piece's pin and chunk count, for probes
	pp.op, pp.err = n.openPiece(io.TeeReader(msg.Payload(), tolerant{pp.layout}), OptMaxMsgSize.Get(n.Opts), msg.PayloadSize())
	if pp.err != nil || db == nil || pp.op.Info.Piece != id {
		return pp
	}
	var wanted bool
	var o *Object
	err := db.View(func(tx *books.Tx) error {
		jobs, err := tx.ActiveJobs()
		if err != nil {
			return err
		}
		for _, j := range jobs {
			done, in := j.Objects[pp.op.Info.Object]
			wanted = wanted || j.Kind == books.JobAll || in && !done
		}
		if wanted {
			o, err = tx.Object(pp.op.Info.Object)
		}
		return err
	})
	if err != nil || !wanted {
		return pp // the handler decides, in its transaction
	}
	if pp.stageErr = n.stageShard(pp.op); pp.stageErr != nil {
		return pp
	}
	pp.staged, pp.op.Shard = true, nil
	if o != nil && o.K == pp.op.Info.K && o.N == pp.op.Info.N {
		n.assemble(o) // best effort: the handler assembles what is still missing
	}
	return pp
}

// unstage removes a shard staged before the batch found that no job wants it.
func (pp *preparedPiece) unstage(n *Node) {
	if pp.staged {
		os.Remove(n.stagePath(pp.op.Info.Object, fmt.Sprintf("%d.%d", pp.op.Info.Segment, pp.op.Info.Index)))
	}
}

// tolerant passes what it reads to a chunk scanner, whose complaint must not stop the
// piece from opening: a piece that opens but does not scan is kept, though not probed.
type tolerant struct{ s *pgpmsg.ChunkScanner }

func (t tolerant) Write(p []byte) (int, error) {
	t.s.Write(p)
	return len(p), nil
}

// rebuildBooks creates the record of an object we had lost, from one of its pieces, and
// the file versions its manifest lists.
func (n *Node) rebuildBooks(tx *books.Tx, op *openedPiece, peer, id string, layout *pgpmsg.ChunkScanner) (*Object, error) {
	pi := op.Info
	o := &Object{ID: pi.Object, Size: pi.ObjectSize, K: pi.K, N: pi.N, SegmentSize: pi.SegmentSize, Created: n.Now().UTC(),
		Manifest: op.Manifest, Segments: make([]Segment, pi.Segments)}
	for s := range o.Segments {
		o.Segments[s].Size = min(pi.SegmentSize, pi.ObjectSize-int64(s)*pi.SegmentSize)
		if pi.ObjectSize == 0 {
			o.Segments[s].Size = 0
		}
	}
	tomb := isTombstone(op.Manifest)
	for _, me := range op.Manifest {
		name, err := StoredName(me.Name)
		if err != nil || name != me.Name || me.Version < 1 || tomb != (me.Kind == KindUnstored) || tomb && !validID(me.Dead) {
			return nil, reject("RECOVER_RESPONSE: bad manifest entry %q", me.Name)
		}
		if tomb {
			buried, err := n.buryTx(tx, o.ID, me)
			if err != nil {
				return nil, err
			}
			if buried {
				o.Refs++
			}
			continue
		}
		if tx.HasVersion(me.Name, me.Version) {
			continue
		}
		if _, dead, err := tx.GetUnstored(o.ID, me.Name, me.Version); err != nil {
			return nil, err
		} else if dead {
			continue // unstored: a tombstone came first
		}
		if err := tx.PutVersion(FileVersion{ManifestEntry: me, Object: o.ID}); err != nil {
			return nil, err
		}
		o.Refs++
	}
	return o, n.notePiece(tx, o, op, peer, id, layout)
}

// buryTx applies one entry of a tombstone that recover_all brought back: the version it
// names is dropped from the rebuilt books if its pack came first, and is not rebuilt if
// the pack comes later. It reports whether the entry is this tombstone's to keep.
func (n *Node) buryTx(tx *books.Tx, tomb string, me ManifestEntry) (bool, error) {
	if u, ok, err := tx.GetUnstored(me.Dead, me.Name, me.Version); err != nil || ok && u.Tombstone != "" {
		return false, err
	}
	if err := tx.PutUnstored(me.Dead, me.Name, me.Version, books.Unstored{Tombstone: tomb}); err != nil {
		return false, err
	}
	fv, ok, err := tx.Version(me.Name, me.Version)
	if err != nil || !ok || fv.Object != me.Dead {
		return true, err
	}
	if err := tx.DeleteVersion(me.Name, me.Version); err != nil {
		return true, err
	}
	o, err := tx.Object(me.Dead)
	if err != nil || o == nil {
		return true, err
	}
	o.Refs--
	return true, tx.PutObject(o)
}

// notePiece records that peer holds a piece (learnt from recover_all).
func (n *Node) notePiece(tx *books.Tx, o *Object, op *openedPiece, peer, id string, layout *pgpmsg.ChunkScanner) error {
	pi := op.Info
	if pi.Segment >= len(o.Segments) || pi.K != o.K || pi.N != o.N {
		return reject("RECOVER_RESPONSE: piece %s does not fit object %s", id, o.ID)
	}
	seg := &o.Segments[pi.Segment]
	for _, p := range seg.Pieces {
		if p.ID == id {
			return nil
		}
	}
	p := Piece{ID: id, Index: pi.Index, Peer: peer, Size: layout.Size(), ShardHash: hex.EncodeToString(pi.ShardHash[:]),
		State: PieceStored, SentAt: n.Now().UTC(), AckAt: n.Now().UTC()}
	if l, err := layout.Layout(); err == nil { // else it opened, but cannot be probed
		pin := l.Pin()
		p.Pin, p.Chunks = hex.EncodeToString(pin[:]), l.Chunks
	}
	seg.Pieces = append(seg.Pieces, p)
	sort.Slice(seg.Pieces, func(a, b int) bool { return seg.Pieces[a].Index < seg.Pieces[b].Index })
	if err := tx.IndexPiece(id, o.ID, pi.Segment, pi.Index); err != nil {
		return err
	}
	ps, err := tx.Peer(peer)
	if err != nil {
		return err
	}
	ps.RemoteUsed += p.Size
	if err := tx.PutPeer(peer, ps); err != nil {
		return err
	}
	return tx.PutObject(o)
}

func (n *Node) stagePath(obj string, parts ...string) string {
	return filepath.Join(append([]string{n.Dir, stagingDir, obj}, parts...)...)
}

// stageShard keeps a received shard on disk until its object can be assembled.
func (n *Node) stageShard(op *openedPiece) error {
	p := n.stagePath(op.Info.Object, fmt.Sprintf("%d.%d", op.Info.Segment, op.Info.Index))
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	_, err := queue.WriteAtomic(p, bytes.NewReader(op.Shard), 0o600)
	return err
}

// releaseStaging returns what removes the staged shards and assembled objects ids once
// the job name is done, for its transaction's commit. An object another waiting job
// needs (the daemon's repair of the books recover_all rebuilds, say) is left for that
// job's end to remove: else the first of the two to end takes the other's object.
func (n *Node) releaseStaging(tx *books.Tx, name string, ids ...string) (func(), error) {
	others, err := tx.ActiveJobs()
	if err != nil {
		return nil, err
	}
	return func() {
		for _, id := range ids {
			if !wantedByOther(others, name, id) {
				os.RemoveAll(n.stagePath(id))
				assembling.Delete(n.stagePath(id))
			}
		}
	}, nil
}

// releaseStagingNow removes the staging of objects ids at once, outside a job's
// transaction, but for an object a waiting job still wants (see releaseStaging). Best
// effort: what it cannot release is logged, and cleanup removes what no job wants.
func (n *Node) releaseStagingNow(ids ...string) {
	var release func()
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) (err error) {
			release, err = n.releaseStaging(tx, "", ids...)
			return err
		})
	})
	if err != nil {
		n.Log.Warn("staging not released", "objects", ids, "err", err)
		return
	}
	release()
}

// wantedByOther says whether a waiting job other than name needs object id.
func wantedByOther(jobs []*RecoveryJob, name, id string) bool {
	for _, o := range jobs {
		if _, in := o.Objects[id]; in && o.Name != name && o.State == RecoveryWaiting {
			return true
		}
	}
	return false
}

// assembling holds a mutex per object being assembled (by its staging directory).
var assembling sync.Map

// assemble joins the object from staged shards once every segment has k of them. The
// object file is kept until its job is done.
func (n *Node) assemble(o *Object) (bool, error) {
	// Before the batch and in it: one assembly removes the shards another reads. Per
	// object, so that the batch does not wait on another object's assembly.
	mu, _ := assembling.LoadOrStore(n.stagePath(o.ID), new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	dst := n.stagePath(o.ID, objectFile)
	if _, err := os.Stat(dst); err == nil {
		return true, nil
	}
	code, err := erasure.New(o.K, o.N-o.K)
	if err != nil {
		return false, err
	}
	// Enough shards everywhere?
	have := make([][]string, len(o.Segments))
	entries, err := os.ReadDir(n.stagePath(o.ID))
	if err != nil {
		return false, nil
	}
	for _, e := range entries {
		var s, i int
		if _, err := fmt.Sscanf(e.Name(), "%d.%d", &s, &i); err != nil || s < 0 || s >= len(o.Segments) {
			continue
		}
		have[s] = append(have[s], e.Name())
	}
	for _, h := range have {
		if len(h) < o.K {
			return false, nil
		}
	}
	tmp, err := os.CreateTemp(n.stagePath(o.ID), ".object-*")
	if err != nil {
		return false, retryLater{err}
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	sh := newShardHash(o.K, int(o.SegmentSize))
	for s, names := range have {
		var shards []erasure.Shard
		for _, name := range names {
			data, err := os.ReadFile(n.stagePath(o.ID, name))
			if err != nil {
				return false, retryLater{err}
			}
			var idx int
			fmt.Sscanf(name, "%d.%d", new(int), &idx)
			var sum [32]byte
			for _, seg := range o.Segments[s].Pieces {
				if seg.Index == idx && seg.ShardHash != "" {
					hb, _ := hex.DecodeString(seg.ShardHash)
					copy(sum[:], hb)
				}
			}
			if sum == ([32]byte{}) {
				sum = sha256.Sum256(data) // learnt from the piece itself, which was checked when staged
			}
			shards = append(shards, erasure.Shard{Index: idx, K: o.K, M: o.N - o.K, SegmentSize: o.Segments[s].Size, Hash: sum, Data: data})
		}
		sums, err := code.JoinHashes(tmp, shards)
		if err != nil {
			return false, fmt.Errorf("object %s segment %d: %w", o.ID, s, err)
		}
		for _, sum := range sums {
			sh.addHash(sum[:])
		}
	}
	if err := tmp.Sync(); err != nil {
		return false, retryLater{err}
	}
	// The content hash of a file that is the whole object, in its large-file form, known
	// from the shards without reading the object again (linkRecovered). Written before
	// the object appears, so an object never goes without it.
	if o.SegmentSize > 0 {
		if _, err := queue.WriteAtomic(n.stagePath(o.ID, objectHash), strings.NewReader(sh.sum()), 0o600); err != nil {
			return false, retryLater{err}
		}
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return false, retryLater{err}
	}
	for _, names := range have {
		for _, name := range names {
			os.Remove(n.stagePath(o.ID, name))
		}
	}
	return true, nil
}

// checkJob finishes a job whose objects are all here: it writes the files.
func (n *Node) checkJob(tx *books.Tx, j *RecoveryJob) error {
	if j.State != RecoveryWaiting {
		return nil
	}
	if j.Kind == books.JobDrill {
		if isKitDrill(j) || !drillDone(j) { // a drill from the kit ends in stepKitDrill
			return nil
		}
		return n.finishDrillTx(tx, j)
	}
	if j.Kind == books.JobAll {
		// Done when the peers that answered have sent all they hold and every object
		// learnt of is assembled; a peer that has not answered at all (it may be gone for
		// good) is not waited for once another one has sent all it held. A peer that held
		// nothing proves nothing about the others, so its answer alone does not end the
		// wait (else the first empty answer would end a recovery with 0 objects).
		// Who did not answer is not written into the job's error: show_database says it
		// (RecoveryRow), and a peer that answers late drops out of it.
		sentSome := false
		for _, peer := range sortedKeys(j.Finished) {
			switch c := j.Finished[peer]; {
			case c >= 0 && j.Received[peer] >= c:
				sentSome = sentSome || c > 0
			case c < 0 && j.Received[peer] == 0:
			default:
				return nil
			}
		}
		if len(silentPeers(j)) > 0 {
			if !sentSome {
				return nil
			}
			for _, done := range j.Objects {
				if !done {
					return nil // the silent peers may still bring what is missing
				}
			}
		}
	}
	missing := 0
	for _, done := range j.Objects {
		if !done {
			missing++
		}
	}
	if missing > 0 {
		if j.Kind != books.JobAll {
			return nil
		}
		// Every peer has answered: what is still missing cannot be rebuilt.
		if j.Error != "" {
			j.Error += "; "
		}
		j.Error += Count(missing, "object") + " cannot be rebuilt (fewer than k pieces left)"
	}
	switch j.Kind {
	case books.JobRepair:
		return n.finishRepairTx(tx, j)
	case books.JobPrune:
		return n.finishPruneFetchTx(tx, j)
	case books.JobAll:
		for peer := range j.Finished {
			if err := tx.DeleteRequest(askAgainID(peer)); err != nil {
				return err
			}
		}
		chosen, err := chooseVersions(tx, "/", 0)
		if err != nil {
			return err
		}
		return n.writeJob(tx, j, chosen)
	default:
		chosen, err := chooseVersions(tx, j.Target, j.Version)
		if err != nil {
			return err
		}
		return n.writeJob(tx, j, chosen)
	}
}

// fileWrite is one file writeFiles writes, and how that went.
type fileWrite struct {
	fv      *FileVersion // in writeJob's chosen
	like    string       // the form of its content hash (hashForm)
	mayLink bool         // the first file of its object: it may be linked (writeRecovered)
	got     string       // its content hash, as written
	err     error
}

// writeFiles writes files (sorted by name) under root, on as many goroutines as there are
// cores, up to 4, each a run of neighbours with its own directories open: creating,
// writing and renaming a file is mostly system time, which a recovery of many small files
// spends one file after another otherwise. The books are not touched here (the caller's
// transaction is not shared): each file's outcome is left in it.
func (n *Node) writeFiles(root *os.Root, files []fileWrite, eachSync bool) {
	workers := min(runtime.GOMAXPROCS(0), 4, max(1, len(files)/64))
	var wg sync.WaitGroup
	for i := range workers {
		part := files[i*len(files)/workers : (i+1)*len(files)/workers]
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := newDirWalker(root, eachSync)
			if err != nil {
				for k := range part {
					part[k].err = err
				}
				return
			}
			defer w.Close()
			for k := range part {
				f := &part[k]
				f.got, f.err = n.writeRecovered(w, *f.fv, f.like, f.mayLink)
			}
		}()
	}
	wg.Wait()
}

// writeJob writes the chosen versions into recovery/ and closes the job.
//
// setuid, setgid and sticky bits are not applied, and the job's error names the entries
// that lost them: the books do not record owners, and a recovered file belongs to
// whoever recovers it (root, often, after a disk loss), who never chose to run it
// setuid. libarchive's extraction drops them likewise unless asked.
func (n *Node) writeJob(tx *books.Tx, j *RecoveryJob, chosen []FileVersion) error {
	root, err := n.recoveryRoot()
	if err != nil {
		return retryLater{fmt.Errorf("recovery: %w", err)}
	}
	defer root.Close()
	// On Linux the files are not fsynced one by one (two fsyncs a file cost most of a
	// recovery of many small files): one syncfs after the last makes them all durable
	// before the job is committed as done; a crash before that leaves the job waiting,
	// and the next run writes every file again.
	eachSync := !haveSyncfs
	w, err := newDirWalker(root, eachSync)
	if err != nil {
		return retryLater{fmt.Errorf("recovery: %w", err)}
	}
	defer w.Close()
	var failed, dropped []string
	var dirs, links []*FileVersion
	var files []fileWrite
	linked := make(map[string]bool) // objects a file may be hard-linked from (writeRecovered)
	for i := range chosen {
		fv, name := &chosen[i], chosen[i].Name
		switch fv.Kind {
		case KindDir:
			// Made first, so that the files in a directory find a real one where an
			// earlier recovery left a symlink.
			parent, base, err := w.parent(name)
			if err == nil {
				err = realDir(parent, base, eachSync)
			}
			if err != nil {
				failed = append(failed, name+": "+err.Error())
				continue
			}
			dirs = append(dirs, fv)
		case KindSymlink:
			links = append(links, fv)
		default:
			if fv.Object != "" && !j.Objects[fv.Object] {
				failed = append(failed, name)
				continue
			}
			files = append(files, fileWrite{fv: fv, like: hashForm(tx, *fv), mayLink: !linked[fv.Object]})
			linked[fv.Object] = true
		}
	}
	n.writeFiles(root, files, eachSync)
	for _, f := range files {
		if f.err != nil {
			n.Log.Error("recover", "name", f.fv.Name, "err", f.err)
			failed = append(failed, f.fv.Name+": "+f.err.Error())
			continue
		}
		j.Written++
		if fs.FileMode(f.fv.Mode)&specialBits != 0 {
			dropped = append(dropped, f.fv.Name)
		}
		if f.fv.Hash == "" && f.like != "" { // note it: the next store finds the file unchanged
			f.fv.Hash = f.got
			if err := tx.PutVersion(*f.fv); err != nil {
				return err
			}
		}
	}
	for _, fv := range links {
		if _, err := n.writeRecovered(w, *fv, "", false); err != nil {
			failed = append(failed, fv.Name+": "+err.Error())
			continue
		}
		j.Written++
	}
	for i := len(dirs) - 1; i >= 0; i-- { // deepest first: children do not touch a finished parent
		if _, err := n.writeRecovered(w, *dirs[i], "", false); err != nil {
			failed = append(failed, dirs[i].Name+": "+err.Error())
			continue
		}
		j.Written++
		if fs.FileMode(dirs[i].Mode)&specialBits != 0 {
			dropped = append(dropped, dirs[i].Name)
		}
	}
	if !eachSync {
		if err := syncAll(root); err != nil {
			return retryLater{fmt.Errorf("recovery: %w", err)}
		}
	}
	j.State, j.Ended = RecoveryDone, n.Now().UTC()
	note := func(msg string) {
		if j.Error != "" {
			j.Error += "; "
		}
		j.Error += msg
	}
	if len(failed) > 0 {
		j.State = RecoveryFailed
		note(fmt.Sprintf("%d not recovered: %s", len(failed), strings.Join(failed[:min(len(failed), 5)], ", ")))
	}
	if len(dropped) > 0 {
		sort.Strings(dropped)
		n.Log.Warn("recover: setuid/setgid/sticky bits not applied", "job", j.Name, "names", dropped)
		note(fmt.Sprintf("setuid/setgid/sticky bits not applied to %d: %s", len(dropped), strings.Join(dropped[:min(len(dropped), 5)], ", ")))
	}
	release, err := n.releaseStaging(tx, j.Name, sortedKeys(j.Objects)...)
	if err != nil {
		return err
	}
	tx.OnCommit(func() { // not before: a rolled-back run is run again and needs them
		release()
		n.mailRecovered(*j)
	})
	return tx.PutJob(j)
}

// mailRecovered tells dibsAdmin that a recover_file or recover_all job is over, when
// mailUserOnRecovery is on. A mail that fails is logged: the job is in the books.
func (n *Node) mailRecovered(j RecoveryJob) {
	if !optMailUserOnRecovery.Get(n.Opts) || n.Transports.Admin == nil {
		return
	}
	what := "recover_all"
	if j.Kind != books.JobAll {
		what = "recover_file " + j.Target
	}
	dir := filepath.Join(n.Dir, recoveryDir)
	body := fmt.Sprintf("%s on %s: %s, %s written into %s (started %s, ended %s).\n",
		what, optHostname.Get(n.Opts), j.State, Count(j.Written, "entry"), dir,
		j.Started.UTC().Format(time.RFC3339), j.Ended.UTC().Format(time.RFC3339))
	if j.Error != "" {
		body += "\n" + j.Error + "\n"
	}
	body += "\ndibs show_database --only recovery tells more.\n"
	subject := fmt.Sprintf("dibs on %s: %s %s", optHostname.Get(n.Opts), what, j.State)
	if err := n.Transports.Admin.MailAdmin(context.Background(), subject, body); err != nil {
		n.Log.Warn("recovery mail not sent", "job", j.Name, "err", err)
	}
}

// hashForm is the form of fv's content hash: fv.Hash itself, or for a large file whose
// books were rebuilt from a manifest (recover_all: the manifest in its pieces was written
// before the hash was known) the form its object's code gives, so that writeRecovered
// computes the hash to note.
func hashForm(tx *books.Tx, fv FileVersion) string {
	if fv.Hash != "" || fv.Kind != KindFile || fv.Object == "" {
		return fv.Hash
	}
	o, err := tx.Object(fv.Object)
	if err != nil || o == nil {
		return ""
	}
	return fmt.Sprintf("rs1-%d-%d:", o.K, o.SegmentSize)
}

// recoveryRoot opens recovery/ as an os.Root, through which every recovered entry is
// written: no symlink there, left by an earlier recovery or by the user, can lead a
// write, a chmod or a chtimes outside it.
func (n *Node) recoveryRoot() (*os.Root, error) {
	dir := filepath.Join(n.Dir, recoveryDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.OpenRoot(dir)
}

// dirWalker opens the directories under a recovery root that stored names are recovered
// in, making what is missing of them. No directory on the way may be a symlink: the root
// would keep a write through one inside recovery/, but it would still land elsewhere than
// the name says. Each step is taken from the directory opened before it, and the root
// refuses to leave recovery/, so a path changed meanwhile cannot lead outside either.
//
// It keeps the chain of directories it opened last, from the root down: names come
// sorted, so the next one's directory is mostly that one or a neighbour, and is reached
// from the directories already open (a recovery of 1,306 files in 40 directories made
// ~8,600 openat calls when each name was walked from the root).
type dirWalker struct {
	parts []string   // the open chain's path elements
	open  []*os.Root // open[0] is the root, open[i+1] is parts[i] in open[i]
	sync  bool       // fsync what is written through it: a new directory's parent, a file and its directory (else the caller syncs all)
}

func newDirWalker(root *os.Root, sync bool) (*dirWalker, error) {
	d, err := root.OpenRoot(".")
	if err != nil {
		return nil, err
	}
	return &dirWalker{open: []*os.Root{d}, sync: sync}, nil
}

// Close closes every directory the walker holds open.
func (w *dirWalker) Close() {
	for _, d := range w.open {
		d.Close()
	}
	w.open, w.parts = nil, nil
}

// parent returns the directory a stored name is recovered in, with the name's last
// element. The directory stays the walker's: it is closed by a later call or by Close.
func (w *dirWalker) parent(name string) (*os.Root, string, error) {
	rel := filepath.Clean(filepath.FromSlash(strings.TrimPrefix(name, "/")))
	if !filepath.IsLocal(rel) {
		return nil, "", fmt.Errorf("stored name %q leaves the recovery directory", name)
	}
	parts := strings.Split(rel, string(filepath.Separator))
	dirs := parts[:len(parts)-1]
	keep := 0
	for keep < len(w.parts) && keep < len(dirs) && w.parts[keep] == dirs[keep] {
		keep++
	}
	for i := len(w.parts); i > keep; i-- {
		w.open[i].Close()
	}
	w.open, w.parts = w.open[:keep+1], w.parts[:keep]
	for i := keep; i < len(dirs); i++ {
		d, part := w.open[i], dirs[i]
		fi, err := d.Lstat(part)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Another walker (writeFiles runs several) may make it at the same time.
			if err = mkdirDurable(d, part, w.sync); errors.Is(err, fs.ErrExist) {
				err = nil
			}
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			err = fmt.Errorf("its parent /%s is a symlink", strings.Join(dirs[:i+1], "/"))
		}
		if err != nil {
			return nil, "", err
		}
		next, err := d.OpenRoot(part)
		if err != nil {
			return nil, "", err
		}
		w.open, w.parts = append(w.open, next), append(w.parts, part)
	}
	return w.open[len(dirs)], parts[len(parts)-1], nil
}

// specialBits are the mode bits a recovery does not apply (see writeJob).
const specialBits = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// realDir makes base in parent a directory. A symlink there (an earlier recovery's,
// where this one has a directory) is replaced, as one at a file's or a link's path is:
// what a recovery writes wins at its own path, and the link's target is left alone.
func realDir(parent *os.Root, base string, sync bool) error {
	if fi, err := parent.Lstat(base); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := parent.Remove(base); err != nil {
			return err
		}
	}
	if err := mkdirDurable(parent, base, sync); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// mkdirDurable makes the directory name in parent and, with sync, syncs parent, so that
// the files about to be committed into it survive a crash with it; without, the caller
// makes everything durable at once (syncAll).
func mkdirDurable(parent *os.Root, name string, sync bool) error {
	if err := parent.Mkdir(name, 0o700); err != nil || !sync {
		return err
	}
	d, err := parent.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeRecovered writes one version under root with its content, permission bits and
// mtime. For a file it returns the content hash in the form of like (see hashForm),
// checked against fv.Hash when fv has one. When w syncs, the file and its directory are
// fsynced; else the caller makes them durable (syncAll).
//
// With mayLink, a file that is the whole of its object is hard-linked from the assembled
// object instead of copied out of it (see linkRecovered); the caller allows it once per
// object, so that two files never share an inode.
func (n *Node) writeRecovered(w *dirWalker, fv FileVersion, like string, mayLink bool) (string, error) {
	parent, base, err := w.parent(fv.Name)
	if err != nil {
		return "", err
	}
	mode := fs.FileMode(fv.Mode).Perm()
	switch fv.Kind {
	case KindDir:
		if err := realDir(parent, base, w.sync); err != nil {
			return "", err
		}
		if err := parent.Chmod(base, mode); err != nil {
			return "", err
		}
		return "", parent.Chtimes(base, fv.MTime, fv.MTime)
	case KindSymlink:
		parent.Remove(base)
		if err := parent.Symlink(fv.Link, base); err != nil {
			return "", err
		}
		if d, err := parent.Open("."); err == nil { // best effort: not every filesystem keeps it
			ts := unix.NsecToTimespec(fv.MTime.UnixNano())
			_ = unix.UtimesNanoAt(int(d.Fd()), base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
			d.Close()
		}
		return "", nil
	}
	// Written to a hidden temp file and renamed into place: a file or symlink at base is
	// replaced, never written through, and one whose content is wrong never appears.
	tmp := ".tmp-" + rand.Text()
	defer parent.Remove(tmp) // fails once renamed
	f, got, err := n.linkRecovered(parent, tmp, fv, like, mayLink)
	if err == nil && f == nil {
		f, got, err = n.copyRecovered(parent, tmp, fv, like)
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fv.Hash != "" && got != fv.Hash {
		return "", errors.New("content does not match its hash")
	}
	if err := f.Chmod(mode); err != nil {
		return "", err
	}
	if w.sync {
		if err := f.Sync(); err != nil {
			return "", err
		}
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := parent.Chtimes(tmp, fv.MTime, fv.MTime); err != nil {
		return "", err
	}
	if err := parent.Rename(tmp, base); err != nil {
		return "", err
	}
	if !w.sync {
		return got, nil
	}
	d, err := parent.Open(".")
	if err != nil {
		return "", err
	}
	defer d.Close()
	return got, d.Sync()
}

// linkRecovered hard-links fv's assembled object to tmp in parent when fv is the whole
// object (a large file, or one stored alone), which saves writing its bytes a second
// time, and returns it opened with its content hash in the form of like. It returns no
// file, and no error, where it cannot link (not the whole object, another filesystem,
// one without hard links): the caller copies. The object stays in the staging directory
// until the job is committed (its name is removed then, not the recovered file), so a
// rolled-back run finds it again.
func (n *Node) linkRecovered(parent *os.Root, tmp string, fv FileVersion, like string, mayLink bool) (*os.File, string, error) {
	if !mayLink || fv.Object == "" || fv.Offset != 0 || fv.Size <= 0 {
		return nil, "", nil
	}
	obj := n.stagePath(fv.Object, objectFile)
	if fi, err := os.Stat(obj); err != nil || fi.Size() != fv.Size {
		return nil, "", nil
	}
	d, err := parent.Open(".")
	if err != nil {
		return nil, "", err
	}
	err = unix.Linkat(unix.AT_FDCWD, obj, int(d.Fd()), tmp, 0)
	d.Close()
	if err != nil {
		return nil, "", nil // EXDEV, EPERM...: copy
	}
	f, err := parent.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return nil, "", err
	}
	if rs1, err := os.ReadFile(n.stagePath(fv.Object, objectHash)); err == nil && like != "" && strings.HasPrefix(string(rs1), like) {
		return f, string(rs1), nil // the hash assemble computed from the shards: no pass over the bytes
	}
	got, err := readContentHash(f, like)
	if err != nil {
		f.Close()
		return nil, "", err
	}
	return f, got, nil
}

// copyRecovered copies fv's bytes out of its assembled object into a new file tmp in
// parent, and returns it opened with the content hash in the form of like, computed as
// the bytes go by.
func (n *Node) copyRecovered(parent *os.Root, tmp string, fv FileVersion, like string) (*os.File, string, error) {
	var src io.Reader = bytes.NewReader(nil)
	if fv.Object != "" && fv.Size > 0 {
		o, err := os.Open(n.stagePath(fv.Object, objectFile))
		if err != nil {
			return nil, "", err
		}
		defer o.Close()
		src = io.NewSectionReader(o, fv.Offset, fv.Size)
	}
	f, err := parent.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, "", err
	}
	got, err := readContentHash(io.TeeReader(src, f), like)
	if err != nil {
		f.Close()
		return nil, "", err
	}
	return f, got, nil
}
