package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
)

// A restore drill proves, on a schedule, that what is stored can be recovered: it asks
// the peers for every piece of a random sample of stored files (within drillBudget
// bytes of pieces), rebuilds the sample into a scratch directory, drill.tmp/, and checks
// each file against the content hash kept when it was stored. It is a recovery job of
// its own kind (books.JobDrill), so it travels over whatever transports the peers use and
// survives restarts; recovery/ is never touched.
//
// Every holder is asked for its piece, not only k of them: a drill is also an audit,
// and a piece that comes back damaged, or that its peer no longer has, fails the drill
// even when the file itself could be rebuilt from the others. A drill ends once every
// piece asked for is answered, or drillTimeout after it started, whichever comes
// first; a failed drill is an error report to dibsAdmin.

const (
	drillDir    = "drill.tmp"
	drillPrefix = "*drill* "
	keptDrills  = 20 // drills kept in the books; older ones are forgotten
)

// DrillStarted says what a drill asked for.
type DrillStarted struct {
	Name     string // the job, as show_database --only recovery lists it
	Files    int    // stored names in the sample
	Objects  int
	Pieces   int   // pieces asked for
	Peers    int   // peers asked
	Bytes    int64 // bytes of pieces asked for
	Deadline time.Time
}

// Drill starts a restore drill. A drill still waiting is an error, unless it is past
// drillTimeout: then it is ended first.
func (n *Node) Drill() (DrillStarted, error) {
	var st DrillStarted
	if _, err := n.ExpireDrills(); err != nil {
		return st, err
	}
	budget := optDrillBudget.Get(n.Opts)
	now := n.Now().UTC()
	asked := 0
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			if err := n.noDrillWaiting(tx); err != nil {
				return err
			}
			job := &RecoveryJob{Name: drillPrefix + now.Format("2006-01-02T15:04:05.000000000Z"), Kind: books.JobDrill,
				State: RecoveryWaiting, Started: now, Objects: map[string]bool{}, Pieces: map[string]bool{},
				Bad: map[string]string{}, Sample: map[string]int{}}
			if err := sampleForDrill(tx, job, budget); err != nil {
				return err
			}
			var err error
			if asked, err = n.askForObjects(tx, job); err != nil {
				return err
			}
			if len(job.Pieces) == 0 {
				return errors.New("no piece of the sample is stored at a peer yet: nothing to drill")
			}
			if err := forgetOldDrills(tx); err != nil {
				return err
			}
			st = DrillStarted{Name: job.Name, Files: len(job.Sample), Objects: len(job.Objects), Pieces: len(job.Pieces),
				Peers: asked, Bytes: job.Bytes, Deadline: now.Add(optDrillTimeout.Get(n.Opts))}
			return tx.PutJob(job)
		})
	})
	if err != nil {
		return st, err
	}
	return st, n.sealRequests(asked)
}

// drillCost is what fetching o costs a drill: the bytes of its pieces held at peers.
func drillCost(o *Object) int64 {
	var b int64
	for _, seg := range o.Segments {
		for _, p := range seg.Pieces {
			if p.ID != "" && (p.State == PieceStored || p.State == PieceSent) {
				b += p.Size
			}
		}
	}
	return b
}

// sampleForDrill fills job with a random sample of the newest versions of the stored
// files still present, object by object while their pieces fit in budget; a file whose
// object is already in the sample (a pack of small files) comes free.
func sampleForDrill(tx *books.Tx, job *RecoveryJob, budget int64) error {
	newest := map[string]FileVersion{}
	err := tx.EachVersion(func(fv FileVersion) error {
		if fv.Kind == KindFile && fv.Object != "" {
			if cur, ok := newest[fv.Name]; !ok || fv.Version > cur.Version {
				newest[fv.Name] = fv
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	names := sortedKeys(newest)
	rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	cost := map[string]int64{}
	smallest := int64(-1)
	for _, name := range names {
		fv := newest[name]
		if !fv.Deleted.IsZero() {
			continue
		}
		if _, in := job.Objects[fv.Object]; in {
			job.Sample[name] = fv.Version
			continue
		}
		c, ok := cost[fv.Object]
		if !ok {
			o, err := tx.Object(fv.Object)
			if err != nil {
				return err
			}
			if o == nil {
				continue
			}
			c = drillCost(o)
			cost[fv.Object] = c
		}
		if c == 0 {
			continue // nothing of it at a peer yet
		}
		if smallest < 0 || c < smallest {
			smallest = c
		}
		if job.Bytes+c > budget {
			continue
		}
		job.Objects[fv.Object] = false
		job.Sample[name] = fv.Version
		job.Bytes += c
	}
	switch {
	case len(job.Sample) > 0:
		return nil
	case smallest < 0:
		return errors.New("nothing stored at the peers yet: nothing to drill")
	}
	return fmt.Errorf("no stored file fits in drillBudget (%d bytes): the smallest needs %d bytes of pieces; raise drillBudget (dibs set_option drillBudget N)", budget, smallest)
}

// forgetOldDrills keeps the books to the last keptDrills drills.
func forgetOldDrills(tx *books.Tx) error {
	var ended []string
	err := tx.EachJob(func(j *RecoveryJob) error {
		if j.Kind == books.JobDrill && j.State != RecoveryWaiting {
			ended = append(ended, j.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(ended) // the names sort by start
	for len(ended) >= keptDrills {
		if err := tx.DeleteJob(ended[0]); err != nil {
			return err
		}
		ended = ended[1:]
	}
	return nil
}

// drillAnswered notes in every waiting drill that piece was answered: good (why empty)
// or not.
func drillAnswered(jobs []*RecoveryJob, piece, why string) (changed []*RecoveryJob) {
	for _, j := range jobs {
		if j.Kind != books.JobDrill {
			continue
		}
		if answered, asked := j.Pieces[piece]; asked && !answered {
			j.Pieces[piece] = true
			if why != "" {
				j.Bad[piece] = why
			}
			changed = append(changed, j)
		}
	}
	return changed
}

// handleRecoverNack: a peer no longer holds a piece a drill asked for. (Other
// recoveries need nothing: the other holders' pieces will do.)
func handleRecoverNack(r *Request) error {
	id := r.Header.Get(fieldPiece)
	if !validID(id) {
		return nil
	}
	jobs, err := r.Tx.ActiveJobs()
	if err != nil {
		return err
	}
	for _, j := range drillAnswered(jobs, id, r.Peer.Name+": "+r.Header.Get(fieldReason)) {
		if err := r.Tx.PutJob(j); err != nil {
			return err
		}
		if err := r.Node.checkJob(r.Tx, j); err != nil {
			return err
		}
	}
	return nil
}

// drillPieceRefused notes that the answer carrying piece, from peer, was refused (it goes
// to quarantine/): a drill that asked for the piece fails on it. Best effort: a drill
// that misses it ends on drillTimeout, with the piece unanswered.
func (n *Node) drillPieceRefused(db *books.DB, peer, piece, why string) {
	if !validID(piece) {
		return
	}
	err := db.Update(func(tx *books.Tx) error {
		jobs, err := tx.ActiveJobs()
		if err != nil {
			return err
		}
		for _, j := range drillAnswered(jobs, piece, peer+": "+why) {
			if err := tx.PutJob(j); err != nil {
				return err
			}
			if err := n.checkJob(tx, j); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		n.Log.Warn("drill: refused piece not noted", "piece", piece, "err", err)
	}
}

// drillDone says whether a waiting drill has every answer it asked for.
func drillDone(j *RecoveryJob) bool {
	for _, answered := range j.Pieces {
		if !answered {
			return false
		}
	}
	return true
}

// ExpireDrills ends the drills waiting longer than drillTimeout: the pieces still
// unanswered count as bad; a drill from the kit ends with what its node has recovered.
// It returns how many it ended.
func (n *Node) ExpireDrills() (int, error) {
	timeout := optDrillTimeout.Get(n.Opts)
	ended := 0
	if k, err := n.kitDrillWaiting(); err != nil {
		return 0, err
	} else if k != nil && n.Now().Sub(k.Started) >= timeout {
		if err := n.stepKitDrill(context.Background(), true); err != nil {
			return 0, err
		}
		ended++
	}
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			jobs, err := tx.ActiveJobs()
			if err != nil {
				return err
			}
			for _, j := range jobs {
				if j.Kind != books.JobDrill || isKitDrill(j) || n.Now().Sub(j.Started) < timeout {
					continue
				}
				holders := pieceHolders(tx, j)
				for id, answered := range j.Pieces {
					if !answered {
						j.Pieces[id] = true
						j.Bad[id] = holders[id] + ": no answer within drillTimeout (" + timeout.String() + ")"
					}
				}
				if err := n.finishDrillTx(tx, j); err != nil {
					return err
				}
				ended++
			}
			return nil
		})
	})
	return ended, err
}

// pieceHolders maps the pieces of j's objects to the peers that hold them.
func pieceHolders(tx *books.Tx, j *RecoveryJob) map[string]string {
	out := map[string]string{}
	for id := range j.Objects {
		o, err := tx.Object(id)
		if err != nil || o == nil {
			continue
		}
		for _, seg := range o.Segments {
			for _, p := range seg.Pieces {
				out[p.ID] = p.Peer
			}
		}
	}
	return out
}

// finishDrillTx writes a drill's sample into its scratch directory, checks every file
// against its stored hash, records the result and removes the scratch directory. A
// failed drill is reported to dibsAdmin once committed.
func (n *Node) finishDrillTx(tx *books.Tx, j *RecoveryJob) error {
	scratch := filepath.Join(n.Dir, drillDir, strings.NewReplacer(" ", "-", "*", "", ":", "").Replace(j.Name))
	os.RemoveAll(scratch)
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return retryLater{fmt.Errorf("drill: %w", err)}
	}
	defer os.RemoveAll(scratch) // the result is in the books; the files are not kept
	root, err := os.OpenRoot(scratch)
	if err != nil {
		return retryLater{fmt.Errorf("drill: %w", err)}
	}
	defer root.Close()
	w, err := newDirWalker(root, false) // a scratch directory: nothing in it needs to survive a crash
	if err != nil {
		return retryLater{fmt.Errorf("drill: %w", err)}
	}
	defer w.Close()
	var failed []string
	j.Written = 0
	for _, name := range sortedKeys(j.Sample) {
		fv, ok, err := versionOf(tx, name, j.Sample[name])
		if err != nil {
			return err
		}
		switch {
		case !ok:
			continue // unstored since the drill began: nothing to check
		case !j.Objects[fv.Object]:
			failed = append(failed, name+": not rebuilt (fewer than k good pieces came back)")
			continue
		case fv.Hash == "":
			failed = append(failed, name+": no content hash to check it against")
			continue
		}
		if _, err := n.writeRecovered(w, fv, hashForm(tx, fv), false); err != nil {
			failed = append(failed, name+": "+err.Error())
			continue
		}
		j.Written++
	}
	j.State, j.Ended, j.Error = RecoveryDone, n.Now().UTC(), ""
	var problems []string
	if len(j.Bad) > 0 {
		ids := sortedKeys(j.Bad)
		var list []string
		for _, id := range ids[:min(len(ids), 5)] {
			list = append(list, id+" ("+j.Bad[id]+")")
		}
		problems = append(problems, fmt.Sprintf("%s bad or missing: %s", Count(len(ids), "piece"), strings.Join(list, ", ")))
	}
	if len(failed) > 0 {
		problems = append(problems, fmt.Sprintf("%s not recovered: %s", Count(len(failed), "file"), strings.Join(failed[:min(len(failed), 5)], ", ")))
	}
	if len(problems) > 0 {
		j.State, j.Error = RecoveryFailed, strings.Join(problems, "; ")
	}
	release, err := n.releaseStaging(tx, j.Name, sortedKeys(j.Objects)...)
	if err != nil {
		return err
	}
	tx.OnCommit(func() {
		release()
		if j.State == RecoveryFailed {
			n.Log.Error("drill failed", "job", j.Name, "err", j.Error)
			n.ReportError(context.Background(), "drill", errors.New(j.Error+"\n\ndibs show_database --only stats tells more."))
		} else {
			n.Log.Info("drill passed", "job", j.Name, "files", j.Written, "bytes", j.Bytes)
		}
	})
	return tx.PutJob(j)
}

// versionOf is the given version of a stored name.
func versionOf(tx *books.Tx, name string, version int) (FileVersion, bool, error) {
	vs, err := tx.Versions(name)
	if err != nil {
		return FileVersion{}, false, err
	}
	for _, fv := range vs {
		if fv.Version == version {
			return fv, true, nil
		}
	}
	return FileVersion{}, false, nil
}

// DrillRow is one drill as show_database --only stats lists it, newest first.
type DrillRow struct {
	Started    string  `json:"started"`
	State      string  `json:"state"` // waiting, done (passed) or failed
	Files      int     `json:"files"` // in the sample
	Checked    int     `json:"checked"`
	Bytes      int64   `json:"bytes"` // of pieces fetched
	Pieces     int     `json:"pieces"`
	BadPieces  int     `json:"bad_pieces"`
	Seconds    float64 `json:"seconds"` // from start to end (null while waiting: 0)
	Ended      *string `json:"ended"`
	Error      string  `json:"error"`
	Unanswered int     `json:"unanswered"` // pieces still waited for
	// FromKit: a drill --from_kit, which checks every stored file (files), not a sample.
	FromKit bool `json:"from_kit"`
}

// drillRows lists the drills in the books, newest first.
func drillRows(tx *books.Tx) ([]DrillRow, error) {
	var jobs []*RecoveryJob
	err := tx.EachJob(func(j *RecoveryJob) error {
		if j.Kind == books.JobDrill {
			jobs = append(jobs, j)
		}
		return nil
	})
	// By the start to the nanosecond: Started is to the second, and two drills a second
	// apart would tie on it.
	sort.SliceStable(jobs, func(a, b int) bool { return jobs[a].Started.After(jobs[b].Started) })
	rows := make([]DrillRow, 0, len(jobs))
	for _, j := range jobs {
		r := DrillRow{Started: j.Started.UTC().Format(time.RFC3339), State: j.State, Files: len(j.Sample), Checked: j.Written,
			Bytes: j.Bytes, Pieces: len(j.Pieces), BadPieces: len(j.Bad), Error: j.Error, FromKit: isKitDrill(j)}
		if r.FromKit {
			r.Files = j.Files
		}
		for _, answered := range j.Pieces {
			if !answered {
				r.Unanswered++
			}
		}
		if !j.Ended.IsZero() {
			r.Ended = timePtr(j.Ended)
			r.Seconds = j.Ended.Sub(j.Started).Seconds()
		}
		rows = append(rows, r)
	}
	return rows, err
}

// lastDrill is when the newest drill in the books started.
func (n *Node) lastDrill() (at time.Time, known bool, err error) {
	err = n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			return tx.EachJob(func(j *RecoveryJob) error {
				if j.Kind == books.JobDrill && j.Started.After(at) {
					at, known = j.Started, true
				}
				return nil
			})
		})
	})
	return at, known, err
}
