package agent

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/erasure"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// RepairResult says what one repair pass did.
type RepairResult struct {
	MarkedLost int // pieces newly counted as lost (silent peer, no answer)
	Rebuilt    int // pieces sealed again and placed on other peers
	Fetching   int // objects whose pieces are being fetched back to rebuild them
	Short      int // segments that still miss pieces (no peer with room)
	Moved      int // pieces taken off unreliable peers, to be placed on reliable ones
}

// Repair marks pieces lost whose peer has been silent for repairAfter, or that were
// never acknowledged in that time, moves pieces off unreliable peers where a segment's
// durability estimate nears durabilityTarget (markMoves), and rebuilds every segment
// whose healthy pieces leave fewer than repairSpare spares or whose estimate is below
// the trigger (repairSegments): from the local files if they are unchanged, else by
// fetching k pieces back. New pieces go to peers holding no piece of that segment, the
// most reliable first.
func (n *Node) Repair() (RepairResult, error) {
	var res RepairResult
	states, err := n.PeerStates()
	if err != nil {
		return res, err
	}
	now := n.Now().UTC()
	after := optRepairAfter.Get(n.Opts)
	silent := map[string]bool{}
	for name, ps := range states {
		if ps.LastHeard.IsZero() || now.Sub(ps.LastHeard) > after {
			silent[name] = true
		}
	}
	var todo []string
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			model, err := n.lossModelTx(tx)
			if err != nil {
				return err
			}
			peers, err := n.Peers()
			if err != nil {
				return err
			}
			return tx.EachObject(func(o *Object) error {
				if o.Refs <= 0 {
					return nil
				}
				changed := false
				unpend := map[string]int64{}
				for s := range o.Segments {
					for i := range o.Segments[s].Pieces {
						p := &o.Segments[s].Pieces[i]
						if p.ID == "" || (p.State != PieceStored && p.State != PieceSent) {
							continue
						}
						if _, _, err := n.Peer(p.Peer); err != nil {
							p.State, p.Why = PieceLost, "peer deleted"
						} else if silent[p.Peer] && now.Sub(p.SentAt) > after {
							p.State, p.Why = PieceLost, "peer silent for more than repairAfter"
						} else if p.State == PieceSent && now.Sub(p.SentAt) > after {
							p.State, p.Why = PieceLost, "never acknowledged"
						} else {
							continue
						}
						if p.AckAt.IsZero() {
							unpend[p.Peer] += p.Size
						}
						res.MarkedLost++
						changed = true
					}
				}
				moved, err := n.markMoves(tx, o, model, peers)
				if err != nil {
					return err
				}
				res.Moved += moved
				changed = changed || moved > 0
				if changed {
					if err := tx.PutObject(o); err != nil {
						return err
					}
				}
				for peer, b := range unpend {
					if err := addPeerUsage(tx, peer, 0, -b); err != nil {
						return err
					}
				}
				if len(n.repairSegments(o, model)) > 0 {
					todo = append(todo, o.ID)
				}
				return nil
			})
		})
	})
	if err != nil {
		return res, err
	}
	var errs []error
	var stage *queue.Stage // new pieces wait there until their object is recorded
	if len(todo) > 0 {
		if stage, err = n.Spool.NewStage(); err != nil {
			return res, err
		}
		defer stage.Close()
	}
	for _, id := range todo {
		var fixed *Object
		err := n.withDB(func(db *books.DB) error {
			return db.Update(func(tx *books.Tx) error {
				o, err := tx.Object(id)
				if err != nil || o == nil {
					return err
				}
				if j, err := tx.Job(repairPrefix + id); err != nil || (j != nil && j.State == RecoveryWaiting) {
					return err // already fetching
				}
				model, err := n.lossModelTx(tx)
				if err != nil {
					return err
				}
				shards, err := n.localShards(tx, o, n.repairSegments(o, model))
				if err != nil {
					n.Log.Info("repair: local copy unusable, fetching pieces back", "object", id, "why", err)
					res.Fetching++
					return n.startRepairFetch(tx, o)
				}
				fixed = o
				placed, short, err := n.replace(tx, o, shards, stage)
				if err == nil {
					err = stage.Sync() // the books are about to point at them
				}
				res.Rebuilt += placed
				res.Short += short
				return err
			})
		})
		switch {
		case err != nil && fixed != nil:
			dropStaged(stage, fixed)
		case fixed != nil:
			err = releaseStaged(stage, fixed)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("object %s: %w", id, err))
		}
	}
	if err := n.FlushOutbox(); err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// spare is repairSpare: a segment that lost pieces is repaired once it has that many
// spares (healthy pieces beyond k) or fewer. The default, 1, repairs while one spare is
// still there; a peer that is only briefly away is not counted lost (repairAfter).
func (n *Node) spare(o *Object) int { return int(optRepairSpare.Get(n.Opts)) }

// localShards rebuilds the shards of segments segs from the local files, if they still
// hold exactly what was stored (every shard hash must match).
func (n *Node) localShards(tx *books.Tx, o *Object, segs []int) (map[int][]erasure.Shard, error) {
	code, err := erasure.New(o.K, o.N-o.K)
	if err != nil {
		return nil, err
	}
	sources := map[string]string{} // stored name -> local path
	for _, me := range o.Manifest {
		if me.Kind != KindFile || me.Size == 0 {
			continue
		}
		fv, ok, err := tx.Version(me.Name, me.Version)
		if err != nil {
			return nil, err
		}
		if !ok || fv.Source == "" {
			return nil, fmt.Errorf("%s: no local source known", me.Name)
		}
		sources[me.Name] = fv.Source
	}
	out := map[int][]erasure.Shard{}
	for _, s := range segs {
		seg := o.Segments[s]
		start := int64(s) * o.SegmentSize
		buf := make([]byte, code.BufferSize(int(seg.Size)))
		for _, me := range o.Manifest {
			if me.Kind != KindFile || me.Size == 0 {
				continue
			}
			lo, hi := max(start, me.Offset), min(start+seg.Size, me.Offset+me.Size)
			if lo >= hi {
				continue
			}
			f, err := os.Open(sources[me.Name])
			if err != nil {
				return nil, err
			}
			_, err = f.ReadAt(buf[lo-start:hi-start], lo-me.Offset)
			f.Close()
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			if err != nil {
				return nil, fmt.Errorf("%s is shorter than stored", me.Name)
			}
		}
		shards, err := code.SplitBuffer(buf, int(seg.Size))
		if err != nil {
			return nil, err
		}
		for _, p := range seg.Pieces {
			if p.ShardHash != "" && p.ShardHash != hex.EncodeToString(shards[p.Index].Hash[:]) {
				return nil, fmt.Errorf("segment %d: local content changed since it was stored", s)
			}
		}
		if len(seg.Pieces) == 0 {
			return nil, fmt.Errorf("segment %d: no shard hash to check against", s)
		}
		out[s] = shards
	}
	return out, nil
}

// startRepairFetch asks the holders of an object's pieces for them; the repair finishes
// when the object is assembled (finishRepairTx).
func (n *Node) startRepairFetch(tx *books.Tx, o *Object) error {
	job := &RecoveryJob{Name: repairPrefix + o.ID, Kind: books.JobRepair, Target: o.ID, State: RecoveryWaiting,
		Started: n.Now().UTC(), Objects: map[string]bool{o.ID: false}}
	if _, err := n.askForObjects(tx, job); err != nil {
		return err
	}
	return tx.PutJob(job)
}

// finishRepairTx re-codes an object fetched back for repair and places its missing pieces.
func (n *Node) finishRepairTx(tx *books.Tx, j *RecoveryJob) error {
	o, err := tx.Object(j.Target)
	if err != nil {
		return err
	}
	j.State, j.Ended = RecoveryDone, n.Now().UTC()
	release, err := n.releaseStaging(tx, j.Name, j.Target)
	if err != nil {
		return err
	}
	// Deferred, so that it runs after the hooks replace adds, which read the staging area.
	defer tx.OnCommit(release)
	if o == nil || !j.Objects[j.Target] {
		if o != nil {
			j.State, j.Error = RecoveryFailed, "fewer than k pieces came back"
		}
		return tx.PutJob(j)
	}
	code, err := erasure.New(o.K, o.N-o.K)
	if err != nil {
		return err
	}
	f, err := os.Open(n.stagePath(o.ID, objectFile))
	if err != nil {
		return retryLater{err}
	}
	defer f.Close()
	model, err := n.lossModelTx(tx)
	if err != nil {
		return err
	}
	shards := map[int][]erasure.Shard{}
	for _, s := range n.repairSegments(o, model) {
		seg := o.Segments[s]
		buf := make([]byte, code.BufferSize(int(seg.Size)))
		if _, err := f.ReadAt(buf[:seg.Size], int64(s)*o.SegmentSize); err != nil && !errors.Is(err, io.EOF) {
			return retryLater{err}
		}
		if shards[s], err = code.SplitBuffer(buf, int(seg.Size)); err != nil {
			return err
		}
	}
	// Sealed straight into outgoing/: this runs inside a message's transaction, which
	// releases nothing after its commit. A kill before that commit leaves pieces the
	// books do not know (the storage list exchange frees them at the peer).
	placed, short, err := n.replace(tx, o, shards, nil)
	if err != nil {
		return err
	}
	n.Log.Info("repaired from fetched pieces", "object", o.ID, "placed", placed, "short", short)
	return tx.PutJob(j)
}

// replace seals the missing pieces of the given segments and places each on a peer that
// holds no piece of that segment: into stage, if not nil, for the caller to release once
// tx is committed (releaseStaged), else straight into outgoing/. Lost pieces are dropped
// from the books (their peer is asked to delete them, in case it still has them).
func (n *Node) replace(tx *books.Tx, o *Object, shards map[int][]erasure.Shard, stage *queue.Stage) (placed, short int, err error) {
	man, err := json.Marshal(o.Manifest)
	if err != nil {
		return 0, 0, err
	}
	peers, err := n.Peers()
	if err != nil {
		return 0, 0, err
	}
	model, err := n.lossModelTx(tx)
	if err != nil {
		return 0, 0, err
	}
	byReliability(peers, model)
	unstore := map[string][]string{}
	pending := map[string]int64{}
	for s, sh := range shards {
		seg := &o.Segments[s]
		busy := map[string]bool{}
		lostHere := map[string]bool{}
		have := map[int]bool{}
		var keep []Piece
		for _, p := range seg.Pieces {
			if p.Healthy() {
				busy[p.Peer] = true
				have[p.Index] = true
				keep = append(keep, p)
				continue
			}
			if p.ID != "" {
				lostHere[p.Peer] = true // put it back there only if no other peer can take it
				unstore[p.Peer] = append(unstore[p.Peer], p.ID)
				if err := tx.UnindexPiece(p.ID); err != nil {
					return placed, short, err
				}
				if !p.AckAt.IsZero() {
					if err := addPeerUsage(tx, p.Peer, -p.Size, 0); err != nil {
						return placed, short, err
					}
				}
			}
		}
		seg.Pieces = keep
		for idx := 0; idx < o.N; idx++ {
			if have[idx] {
				continue
			}
			var cand *candidate
			for _, p := range append(notIn(peers, lostHere), inSet(peers, lostHere)...) {
				if busy[p.Name] {
					continue
				}
				_, key, err := n.Peer(p.Name)
				if err != nil || key == nil {
					continue
				}
				ps, err := tx.Peer(p.Name)
				if err != nil {
					return placed, short, err
				}
				if !ps.Forgotten.IsZero() && ps.LastHeard.Before(ps.Forgotten) {
					continue
				}
				size := int64(len(sh[idx].Data)) + pieceOverhead
				if p.RemoteQuota-ps.RemoteUsed-ps.RemotePending-pending[p.Name] < size {
					continue
				}
				cand = &candidate{name: p.Name, key: n.wireKey(key), repair: true}
				break
			}
			if cand == nil {
				short++
				continue
			}
			info := PieceInfo{Piece: pgpmsg.NewMessageID(), Object: o.ID, Segment: s, Segments: len(o.Segments), Index: idx, K: o.K, N: o.N,
				ObjectSize: o.Size, SegmentSize: o.SegmentSize, SegmentLen: seg.Size, ShardHash: sh[idx].Hash}
			var p Piece
			if stage != nil {
				p, err = n.sealStore(stage, cand, info, man, sh[idx].Data, nil)
			} else {
				p, err = n.sealStoreTx(tx, o, cand, info, man, sh[idx].Data)
				p.MsgFile = "" // queued into outgoing/ on commit: nothing to release
			}
			if err != nil {
				return placed, short, retryLater{err}
			}
			seg.Pieces = append(seg.Pieces, p)
			busy[cand.name] = true
			pending[cand.name] += p.Size
			if err := tx.IndexPiece(p.ID, o.ID, s, idx); err != nil {
				return placed, short, err
			}
			placed++
		}
	}
	for peer, b := range pending {
		ps, err := tx.Peer(peer)
		if err != nil {
			return placed, short, err
		}
		ps.RemotePending += b
		if err := tx.PutPeer(peer, ps); err != nil {
			return placed, short, err
		}
	}
	for _, peer := range sortedKeys(unstore) {
		if _, _, err := n.Peer(peer); err != nil {
			continue
		}
		if err := n.requestTx(tx, peer, TypeUnstore, nil, writeIDs(unstore[peer])); err != nil {
			return placed, short, err
		}
	}
	return placed, short, tx.PutObject(o)
}

// sealStoreTx seals a STORE of a repair into the object's staging area and queues it in
// outgoing/<peer>/ only once tx commits: a transaction rolled back (a batch run again
// without a message that failed in it) sends no piece the books do not know, and its
// file goes with the staging area.
func (n *Node) sealStoreTx(tx *books.Tx, o *Object, peer *candidate, pi PieceInfo, manifest, shard []byte) (Piece, error) {
	return n.sealStoreWith(peer, pi, manifest, shard, nil, func(name string, write func(io.Writer) error) error {
		dir := n.stagePath(o.ID, "out")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		f, err := os.CreateTemp(dir, ".seal-*")
		if err != nil {
			return err
		}
		bw := bufio.NewWriterSize(f, 256<<10)
		err = write(bw)
		if err == nil {
			err = bw.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(f.Name())
			return err
		}
		tx.OnCommit(func() {
			src, err := os.Open(f.Name())
			if err == nil {
				_, err = n.Spool.Put(queue.Outgoing(peer.name), name, src, 0)
				src.Close()
			}
			if err != nil { // the piece is counted as sent: it times out, and repair runs again
				n.Log.Error("repair: queue STORE", "peer", peer.name, "piece", pi.Piece, "err", err)
			}
			os.Remove(f.Name())
		})
		return nil
	})
}

// addPeerUsage moves a peer's counts of bytes it holds for us (used) and of bytes sent
// and not yet acknowledged (pending), never below zero.
func addPeerUsage(tx *books.Tx, peer string, used, pending int64) error {
	ps, err := tx.Peer(peer)
	if err != nil {
		return err
	}
	ps.RemoteUsed = max(0, ps.RemoteUsed+used)
	ps.RemotePending = max(0, ps.RemotePending+pending)
	return tx.PutPeer(peer, ps)
}

func notIn(peers []*Peer, set map[string]bool) []*Peer {
	var out []*Peer
	for _, p := range peers {
		if !set[p.Name] {
			out = append(out, p)
		}
	}
	return out
}

func inSet(peers []*Peer, set map[string]bool) []*Peer {
	var out []*Peer
	for _, p := range peers {
		if set[p.Name] {
			out = append(out, p)
		}
	}
	return out
}
