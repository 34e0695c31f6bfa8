package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/dibs-backup/dibs/agent/books"
)

// Unstoring a small file. A small file lives in a pack with others, and the pack's
// pieces carry the manifest of all of them, so dropping the file's version from the
// books does not drop it from the peers: recover_all would bring it back. Two things
// follow a drop (unstore_file, maxVersions, cleanup) whose pack lives on:
//
//   - once packPrunePercent of a pack's bytes belong to dropped versions, the pack is
//     rewritten: its live files go into a new pack, read from the local files if they
//     are still as stored, else from the pack fetched back first, and the old one is
//     unstored whole (restic's prune);
//   - the drops from the packs that stay are listed in a tombstone: an object like any
//     other, sealed and signed by us to ourselves and coded into pieces on the peers,
//     whose manifest lists the dropped versions (KindUnstored) instead of files.
//     recover_all honours it, and it is unstored once the packs it names are gone.

// tombstoneEntries bounds the versions one tombstone lists (its manifest is in every
// one of its pieces).
const tombstoneEntries = 4096

// isTombstone reports whether an object is a tombstone, from its manifest.
func isTombstone(man []ManifestEntry) bool {
	return len(man) > 0 && man[0].Kind == KindUnstored
}

// tidyPacks closes what a disk lost mid-way leaves after recover_all (dropOrphans, and
// the unused objects prunePacks unstores), rewrites the packs that are mostly dead,
// then stores tombstones for the dropped versions no tombstone carries yet. It runs after unstore_file, after a store
// that made new versions, in cleanup and in the upkeep after auto_check (maintain).
// What it cannot do now (no peer has room, a pack is being fetched back) is done on a
// later run: the records of the drops are in the books.
func (n *Node) tidyPacks(ctx context.Context) error {
	err1 := n.dropOrphans()
	err2 := n.prunePacks(ctx)
	return errors.Join(err1, err2, n.storeTombstones(ctx))
}

// dropOrphans closes the records of drops from packs the books do not know, and so
// releases their tombstones. recover_all leaves such records when a tombstone comes
// back and its pack, already deleted from the peers, does not (the disk was lost before
// the tombstone's UNSTORE went out). Not while a recovery runs: its packs may yet come.
func (n *Node) dropOrphans() error {
	var orphans []string
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			if jobs, err := tx.ActiveJobs(); err != nil || len(jobs) > 0 {
				return err
			}
			seen := map[string]bool{}
			return tx.EachUnstored("", func(obj, _ string, _ int, _ books.Unstored) error {
				if seen[obj] {
					return nil
				}
				seen[obj] = true
				if o, err := tx.Object(obj); err != nil || o != nil {
					return err
				}
				orphans = append(orphans, obj)
				return nil
			})
		})
	})
	if err != nil || len(orphans) == 0 {
		return err
	}
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			for _, obj := range orphans {
				o, err := tx.Object(obj)
				if err != nil {
					return err
				}
				if o != nil {
					continue // it came meanwhile
				}
				if err := n.deleteObjectTx(tx, obj); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	return n.FlushOutbox()
}

// storeTombstones stores the dropped versions whose pack lives on and that no tombstone
// carries yet, in tombstones.
func (n *Node) storeTombstones(ctx context.Context) error {
	var todo []ManifestEntry
	now := n.Now().UTC()
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			return tx.EachUnstored("", func(obj, name string, version int, u books.Unstored) error {
				if u.Tombstone != "" {
					return nil
				}
				if o, err := tx.Object(obj); err != nil || o == nil || o.Refs <= 0 {
					return err // a pack being unstored whole needs no tombstone
				}
				todo = append(todo, ManifestEntry{Name: name, Version: version, Kind: KindUnstored, Dead: obj, Stored: now})
				return nil
			})
		})
	})
	if err != nil || len(todo) == 0 {
		return err
	}
	r, err := n.newStoreRun(ctx)
	if err != nil {
		return fmt.Errorf("tombstone: %w", err)
	}
	defer r.close()
	for len(todo) > 0 {
		man := todo[:min(len(todo), tombstoneEntries)]
		todo = todo[len(man):]
		if err := r.storeTombstone(man); err != nil {
			return fmt.Errorf("tombstone: %w", err)
		}
	}
	return n.FlushOutbox()
}

// storeTombstone stores one tombstone listing man, and notes it in the records of the
// versions it lists.
func (r *storeRun) storeTombstone(man []ManifestEntry) error {
	po, err := r.encodeObject(bytes.NewReader(nil), 0, man, nil)
	if err != nil {
		return err
	}
	<-po.done
	if po.err != nil {
		r.discard(po.obj)
		return po.err
	}
	tomb := po.obj
	// The pieces' names in the stage must outlive a crash once the books point at them.
	if err := r.stage.Sync(); err != nil {
		r.discard(tomb)
		return err
	}
	err = r.n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			tomb.Refs = 0
			for _, me := range man {
				u, ok, err := tx.GetUnstored(me.Dead, me.Name, me.Version)
				if err != nil {
					return err
				}
				if !ok || u.Tombstone != "" {
					continue // its pack went meanwhile, or another tombstone took it
				}
				if err := tx.PutUnstored(me.Dead, me.Name, me.Version, books.Unstored{Tombstone: tomb.ID}); err != nil {
					return err
				}
				tomb.Refs++
			}
			if tomb.Refs == 0 {
				return errNothingLeft
			}
			return r.n.recordObjectTx(tx, tomb)
		})
	})
	if err != nil {
		r.discard(tomb)
		if errors.Is(err, errNothingLeft) {
			return nil
		}
		return err
	}
	return r.release(tomb) // a piece that fails to move on stays staged for the next sweep
}

var errNothingLeft = errors.New("nothing left to do")

// recordObjectTx records a newly sealed object: its pieces in the piece index, and the
// bytes on their way to each peer.
func (n *Node) recordObjectTx(tx *books.Tx, obj *Object) error {
	pending := map[string]int64{}
	for s, seg := range obj.Segments {
		for _, p := range seg.Pieces {
			if p.ID == "" {
				continue
			}
			if err := tx.IndexPiece(p.ID, obj.ID, s, p.Index); err != nil {
				return err
			}
			if p.State == PieceSent {
				pending[p.Peer] += p.Size
			}
		}
	}
	for _, peer := range sortedKeys(pending) {
		if err := addPeerUsage(tx, peer, 0, pending[peer]); err != nil {
			return err
		}
	}
	return tx.PutObject(obj)
}

// deleteObjectTx removes an object whose pieces are all gone from the peers. The
// versions dropped from it need no tombstone any more: each tombstone that listed them
// loses as many references, and one left with none is unstored in turn.
func (n *Node) deleteObjectTx(tx *books.Tx, id string) error {
	if err := tx.DeleteObject(id); err != nil {
		return err
	}
	tombs := map[string]int{}
	err := tx.EachUnstored(id, func(obj, name string, version int, u books.Unstored) error {
		if u.Tombstone != "" {
			tombs[u.Tombstone]++
		}
		return tx.DeleteUnstored(obj, name, version)
	})
	if err != nil {
		return err
	}
	for _, tid := range sortedKeys(tombs) {
		t, err := tx.Object(tid)
		if err != nil {
			return err
		}
		if t == nil {
			continue
		}
		if t.Refs -= tombs[tid]; t.Refs > 0 {
			if err := tx.PutObject(t); err != nil {
				return err
			}
			continue
		}
		if err := n.unstoreObjectTx(tx, t); err != nil {
			return err
		}
	}
	return nil
}

// healthy reports whether any piece of o is stored or on its way.
func healthy(o *Object) bool {
	for _, seg := range o.Segments {
		for _, p := range seg.Pieces {
			if p.Healthy() {
				return true
			}
		}
	}
	return false
}

// liveEntries returns the versions of a pack still in the books, in pack order.
func liveEntries(tx *books.Tx, o *Object) ([]FileVersion, error) {
	var live []FileVersion
	for _, me := range o.Manifest {
		fv, ok, err := tx.Version(me.Name, me.Version)
		if err != nil {
			return nil, err
		}
		if ok && fv.Object == o.ID {
			live = append(live, fv)
		}
	}
	return live, nil
}

// deadPercent is the share of a pack's bytes that belong to dropped versions (of its
// entries, for a pack of empty files, directories and links only).
func deadPercent(o *Object, live []FileVersion) int64 {
	var all, alive int64
	for _, me := range o.Manifest {
		all += me.Size
	}
	for _, fv := range live {
		alive += fv.Size
	}
	if all == 0 {
		all, alive = int64(len(o.Manifest)), int64(len(live))
	}
	if all == 0 {
		return 0
	}
	return (all - alive) * 100 / all
}

// prunePacks rewrites every pack at least packPrunePercent dead. First it unstores the
// objects that no version (or record, for a tombstone) uses but whose pieces are still
// at the peers: recover_all can find both packs of a rewrite whose old pack's UNSTOREs
// were lost with the disk, and the first one met gets the versions.
func (n *Node) prunePacks(ctx context.Context) error {
	limit := optPackPrunePercent.Get(n.Opts)
	var todo, unused []string
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			if jobs, err := tx.ActiveJobs(); err != nil || len(jobs) > 0 {
				return err // books being rebuilt or objects fetched: not the time
			}
			return tx.EachObject(func(o *Object) error {
				if o.Refs <= 0 && healthy(o) {
					unused = append(unused, o.ID)
				}
				if o.Refs <= 0 || o.Refs >= len(o.Manifest) || isTombstone(o.Manifest) {
					return nil // unstored whole already, or nothing dropped from it
				}
				live, err := liveEntries(tx, o)
				if err != nil {
					return err
				}
				if deadPercent(o, live) >= limit {
					todo = append(todo, o.ID)
				}
				return nil
			})
		})
	})
	if err == nil && len(unused) > 0 {
		err = n.withDB(func(db *books.DB) error {
			return db.Update(func(tx *books.Tx) error {
				for _, id := range unused {
					o, err := tx.Object(id)
					if err != nil {
						return err
					}
					if o != nil && o.Refs <= 0 && healthy(o) {
						if err := n.unstoreObjectTx(tx, o); err != nil {
							return err
						}
					}
				}
				return nil
			})
		})
	}
	if err != nil || len(todo) == 0 {
		return errors.Join(err, n.FlushOutbox())
	}
	r, err := n.newStoreRun(ctx)
	if err != nil {
		return fmt.Errorf("rewrite packs: %w", err)
	}
	defer r.close()
	var errs []error
	for _, id := range todo {
		err := r.rewritePack(id)
		var nl notLocal
		if errors.As(err, &nl) {
			n.Log.Info("pack rewrite: a live file is not here as stored, fetching the pack back", "object", id, "why", err)
			err = n.startPruneFetch(id)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rewrite pack %s: %w", id, err))
		}
	}
	return errors.Join(append(errs, n.FlushOutbox())...)
}

// rewritePack stores the live versions of a pack in a new one, from the pack fetched
// back if it is staged, else from their local files, which must still hold what was
// stored (notLocal if not), and unstores the old pack.
func (r *storeRun) rewritePack(id string) error {
	var live []FileVersion
	err := r.n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			o, err := tx.Object(id)
			if err != nil || o == nil {
				return err
			}
			live, err = liveEntries(tx, o)
			return err
		})
	})
	if err != nil {
		return err
	}
	// The pack fetched back (startPruneFetch), if it is here; else the local files.
	fetched, err := os.Open(r.n.stagePath(id, objectFile))
	if err == nil {
		defer fetched.Close()
	}
	var data []byte
	entries := make([]ManifestEntry, len(live))
	for i, fv := range live {
		me := fv.ManifestEntry
		me.Offset = int64(len(data))
		if me.Kind == KindFile && me.Size > 0 {
			var src io.Reader
			if fetched != nil {
				src = io.NewSectionReader(fetched, fv.Offset, fv.Size)
			}
			b, err := readStored(fv, src)
			if err != nil && fetched != nil {
				r.n.releaseStagingNow(id) // not what was stored: fetched again next time
				return fmt.Errorf("the pack fetched back: %w", err)
			}
			if err != nil {
				return err
			}
			data = append(data, b...)
		}
		entries[i] = me
	}
	var po *pendingObj
	if len(entries) > 0 {
		if po, err = r.encodeObject(bytes.NewReader(data), int64(len(data)), entries, nil); err != nil {
			return err
		}
		<-po.done
		if po.err != nil {
			r.discard(po.obj)
			return po.err
		}
	}
	if po != nil {
		if err := r.stage.Sync(); err != nil { // the books are about to point at them
			r.discard(po.obj)
			return err
		}
	}
	err = r.n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			old, err := tx.Object(id)
			if err != nil {
				return err
			}
			if old == nil || old.Refs <= 0 {
				return errNothingLeft // rewritten or unstored meanwhile (another dibs process)
			}
			for _, me := range entries {
				fv, ok, err := tx.Version(me.Name, me.Version)
				if err != nil {
					return err
				}
				if !ok || fv.Object != id {
					return fmt.Errorf("%s changed while its pack was rewritten: next time", me.Name)
				}
				fv.Object, fv.Offset = po.obj.ID, me.Offset
				if err := tx.PutVersion(fv); err != nil {
					return err
				}
			}
			if po != nil {
				po.obj.Refs = len(entries)
				if err := r.n.recordObjectTx(tx, po.obj); err != nil {
					return err
				}
			}
			old.Refs = 0
			return r.n.unstoreObjectTx(tx, old)
		})
	})
	if err != nil && po != nil {
		r.discard(po.obj)
	}
	if err != nil && !errors.Is(err, errNothingLeft) {
		return err
	}
	r.n.releaseStagingNow(id) // a pack fetched back is done with
	if err == nil && po != nil {
		return r.release(po.obj) // a piece that fails to move on stays staged for the next sweep
	}
	return nil
}

// startPruneFetch asks the holders of a pack's pieces for them, so that it can be
// rewritten without files that are not here as stored. The next tidyPacks rewrites it
// from what came back.
func (n *Node) startPruneFetch(id string) error {
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			o, err := tx.Object(id)
			if err != nil || o == nil || o.Refs <= 0 {
				return err
			}
			if j, err := tx.Job(prunePrefix + id); err != nil || j != nil && j.State == RecoveryWaiting {
				return err // already fetching
			}
			for s, seg := range o.Segments {
				c := 0
				for _, p := range seg.Pieces {
					if p.Healthy() {
						c++
					}
				}
				if c < o.K {
					return fmt.Errorf("segment %d has %d pieces left, fewer than k: repair first", s, c)
				}
			}
			job := &RecoveryJob{Name: prunePrefix + id, Kind: books.JobPrune, Target: id, State: RecoveryWaiting,
				Started: n.Now().UTC(), Objects: map[string]bool{id: false}}
			if _, err := n.askForObjects(tx, job); err != nil {
				return err
			}
			return tx.PutJob(job)
		})
	})
	if err != nil {
		return err
	}
	return n.FlushOutbox()
}

// finishPruneFetchTx closes a prune fetch. The pack stays staged for the next
// tidyPacks to rewrite it (a message handler cannot run a store).
func (n *Node) finishPruneFetchTx(tx *books.Tx, j *RecoveryJob) error {
	j.State, j.Ended = RecoveryDone, n.Now().UTC()
	if !j.Objects[j.Target] {
		j.State, j.Error = RecoveryFailed, "fewer than k pieces came back"
		release, err := n.releaseStaging(tx, j.Name, j.Target)
		if err != nil {
			return err
		}
		tx.OnCommit(release) // a batch run again still finds it
	}
	return tx.PutJob(j)
}

// notLocal is why a pack cannot be rewritten now: a live file of it is not here as it
// was stored (changed, gone, or never read here: books rebuilt by recover_all). The pack
// stays as it is; its drops go into a tombstone.
type notLocal struct{ error }

// readStored reads a small file's stored content back from fetched (its range of the
// pack fetched back), or else from its local source; either must hold exactly what was
// stored.
func readStored(fv FileVersion, fetched io.Reader) ([]byte, error) {
	src := fetched
	if src == nil {
		if fv.Source == "" {
			return nil, notLocal{fmt.Errorf("%s: no local copy known", fv.Name)}
		}
		f, err := os.Open(fv.Source)
		if err != nil {
			return nil, notLocal{fmt.Errorf("%s: %w", fv.Name, unwrapPath(err))}
		}
		defer f.Close()
		src = f
	}
	b, err := io.ReadAll(io.LimitReader(src, fv.Size+1))
	if err != nil {
		return nil, notLocal{fmt.Errorf("%s: %w", fv.Name, unwrapPath(err))}
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != fv.Size || hex.EncodeToString(sum[:]) != fv.Hash {
		return nil, notLocal{fmt.Errorf("%s: the local file changed since it was stored", fv.Name)}
	}
	return b, nil
}
