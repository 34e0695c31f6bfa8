package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/queue"
)

// A drill from the recovery kit (drill --from_kit) rehearses the disaster itself: a
// temporary node is made from the kit alone, in drill.tmp/kit/, and it runs recover_all
// there, with nothing of this node's books. This node only carries its mail: the
// kit node's RECOVER_ALL requests go out of our outgoing/ over our transports, and the
// answers to them (known by their In-Reply-To), once they have passed this node's
// checks, are handed to the kit node's incoming/ instead of being acted on. When its
// recover_all is over, every stored file's newest version must be in its recovery/
// with the content hash our books keep. A kit that holds another key, or lacks a
// peer, fails the drill; so does any file that does not come back.
//
// Unlike a sample drill it fetches everything the peers hold, as recover_all does, and
// needs the disk space of the whole backup for the time it runs: the daemon never runs
// one on its own.

const kitTarget = "from_kit" // the Target of a kit drill's job

func (n *Node) kitDir() string { return filepath.Join(n.Dir, drillDir, "kit") }

func isKitDrill(j *RecoveryJob) bool { return j.Kind == books.JobDrill && j.Target == kitTarget }

// DrillFromKit starts a drill from the recovery kit read from kit.
func (n *Node) DrillFromKit(kit io.Reader) (DrillStarted, error) {
	var st DrillStarted
	if _, err := n.ExpireDrills(); err != nil {
		return st, err
	}
	if err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error { return n.noDrillWaiting(tx) })
	}); err != nil {
		return st, err
	}
	dir := n.kitDir()
	if err := os.RemoveAll(dir); err != nil {
		return st, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return st, err
	}
	k, err := ImportRecoveryKit(dir, kit)
	if err != nil {
		os.RemoveAll(dir)
		return st, fmt.Errorf("the recovery kit does not load: %w", err)
	}
	fail := func(err error) (DrillStarted, error) {
		k.Close()
		os.RemoveAll(dir)
		return st, err
	}
	if k.Fingerprint() != n.Fingerprint() {
		return fail(fmt.Errorf("the kit holds key %s, this node's is %s: it would not recover this node", k.Fingerprint(), n.Fingerprint()))
	}
	ours, err := n.Peers()
	if err != nil {
		return fail(err)
	}
	theirs, err := k.Peers()
	if err != nil {
		return fail(fmt.Errorf("the kit's peer list: %w", err))
	}
	inKit := map[string]string{}
	for _, p := range theirs {
		inKit[p.Name] = p.Fingerprint
	}
	now := n.Now().UTC()
	job := &RecoveryJob{Name: drillPrefix + now.Format("2006-01-02T15:04:05.000000000Z"), Kind: books.JobDrill, Target: kitTarget,
		State: RecoveryWaiting, Started: now, Objects: map[string]bool{}, Pieces: map[string]bool{}, Bad: map[string]string{},
		Sample: map[string]int{}, Requests: map[string]string{}}
	known := map[string]bool{}
	for _, p := range ours {
		switch fp, ok := inKit[p.Name]; {
		case !ok:
			job.Bad["peer "+p.Name] = "kit: not in its peer list, so recover_all from it never asks this peer"
		case fp != p.Fingerprint:
			job.Bad["peer "+p.Name] = "kit: another key for this peer (" + fp + ")"
		default:
			known[p.Name] = true
		}
	}
	if len(known) == 0 {
		return fail(errors.New("the kit lists none of this node's peers: it would recover nothing"))
	}
	if err := k.RecoverAll(); err != nil {
		return fail(fmt.Errorf("recover_all in the kit's node: %w", err))
	}
	if err := k.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			return tx.EachRequest(func(id string, r books.PendingRequest) error {
				job.Requests[id] = r.Peer
				return nil
			})
		})
	}); err != nil {
		return fail(err)
	}
	// Its requests leave through our outgoing/: ours are the transports that work.
	moved, err := n.adoptOutgoing(k, known)
	if err != nil {
		return fail(fmt.Errorf("moving the kit node's requests into outgoing/: %w", err))
	}
	k.Close()
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			if err := n.noDrillWaiting(tx); err != nil {
				return err
			}
			if err := forgetOldDrills(tx); err != nil {
				return err
			}
			return tx.PutJob(job)
		})
	})
	if err != nil {
		os.RemoveAll(dir)
		return st, err
	}
	return DrillStarted{Name: job.Name, Peers: moved, Deadline: now.Add(optDrillTimeout.Get(n.Opts))}, nil
}

// noDrillWaiting is an error naming the drill that waits, if one does.
func (n *Node) noDrillWaiting(tx *books.Tx) error {
	jobs, err := tx.ActiveJobs()
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if j.Kind == books.JobDrill {
			return fmt.Errorf("the drill started %s is still waiting for answers (show_database --only recovery); it ends by %s",
				j.Started.Format(time.RFC3339), j.Started.Add(optDrillTimeout.Get(n.Opts)).Format(time.RFC3339))
		}
	}
	return nil
}

// adoptOutgoing moves the files k sealed for the peers in known into our outgoing/,
// and returns for how many peers. Each is committed here before it is removed there.
func (n *Node) adoptOutgoing(k *Node, known map[string]bool) (int, error) {
	peers, err := k.Spool.Peers()
	if err != nil {
		return 0, err
	}
	moved := 0
	for _, p := range peers {
		if !known[p] {
			continue
		}
		es, err := k.Spool.List(queue.Outgoing(p))
		if err != nil {
			return moved, err
		}
		for _, e := range es {
			src := filepath.Join(k.Spool.Dir(queue.Outgoing(p)), e.Name)
			f, err := os.Open(src)
			if err != nil {
				return moved, err
			}
			_, err = n.Spool.Put(queue.Outgoing(p), e.Name, f, OptMaxMsgSize.Get(n.Opts))
			f.Close()
			if err != nil {
				return moved, err
			}
			os.Remove(src)
		}
		if len(es) > 0 {
			moved++
		}
	}
	return moved, nil
}

// adoptResent moves the requests k sent again into our outgoing/ and adds them to the
// drill's.
func (n *Node) adoptResent(k *Node, name string) error {
	peers, err := n.Peers()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, p := range peers {
		known[p.Name] = true
	}
	if _, err := n.adoptOutgoing(k, known); err != nil {
		return err
	}
	ids := map[string]string{}
	if err := k.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			return tx.EachRequest(func(id string, r books.PendingRequest) error {
				ids[id] = r.Peer
				return nil
			})
		})
	}); err != nil {
		return err
	}
	return n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			j, err := tx.Job(name)
			if err != nil || j == nil {
				return err
			}
			for id, p := range ids {
				j.Requests[id] = p
			}
			return tx.PutJob(j)
		})
	})
}

// handToKit hands the claimed answer c to the kit node when it answers one of a
// waiting kit drill's requests (inReplyTo), and says whether it did. The file goes in
// whole, as it came: the kit node opens and checks it again with the kit's key.
func (n *Node) handToKit(db *books.DB, c *queue.Claim, inReplyTo string) (bool, error) {
	if inReplyTo == "" {
		return false, nil
	}
	var job *RecoveryJob
	err := db.View(func(tx *books.Tx) error {
		jobs, err := tx.ActiveJobs()
		for _, j := range jobs {
			if _, ok := j.Requests[inReplyTo]; ok && isKitDrill(j) {
				job = j
			}
		}
		return err
	})
	if err != nil || job == nil {
		return false, err
	}
	r := c.Reader()
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	k, err := queue.Open(n.kitDir())
	if err != nil {
		return false, retryLater{err}
	}
	if _, _, err := k.Receive(c.Name(), r, OptMaxMsgSize.Get(n.Opts)); err != nil {
		return false, retryLater{err}
	}
	err = db.Update(func(tx *books.Tx) error {
		j, err := tx.Job(job.Name)
		if err != nil || j == nil || j.State != RecoveryWaiting {
			return err
		}
		j.Bytes += c.Size()
		return tx.PutJob(j)
	})
	return true, err
}

// kitDrillWaiting is the waiting kit drill, or nil.
func (n *Node) kitDrillWaiting() (*RecoveryJob, error) {
	var job *RecoveryJob
	err := n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			jobs, err := tx.ActiveJobs()
			for _, j := range jobs {
				if isKitDrill(j) {
					job = j
				}
			}
			return err
		})
	})
	return job, err
}

// stepKitDrill lets the kit node process what was handed to it, and ends the drill once
// its recover_all is over (or, with expired, as it stands).
func (n *Node) stepKitDrill(ctx context.Context, expired bool) error {
	job, err := n.kitDrillWaiting()
	if err != nil || job == nil {
		return err
	}
	unlock, err := n.lockJob(ctx, "kitdrill") // a daemon and a cron process_message alike
	if err != nil {
		return err
	}
	defer unlock()
	k, err := Open(n.kitDir())
	if err != nil {
		return n.endKitDrill(job.Name, nil, fmt.Errorf("the kit's node does not open: %w", err))
	}
	defer k.Close()
	k.Now = n.Now
	if _, err := k.ProcessIncoming(ctx); err != nil {
		return err
	}
	// As recover_all after a disaster would, it asks again what went unanswered past
	// resendAfter (an answer refused in transit); those requests leave through us too.
	if sent, err := k.ResendRequests(); err != nil {
		return err
	} else if sent > 0 {
		if err := n.adoptResent(k, job.Name); err != nil {
			return err
		}
	}
	refused, _ := k.Spool.QuarantineFiles()
	var why string
	if len(refused) > 0 {
		why, _ = k.Spool.Reason(refused[0].Name)
		why = fmt.Sprintf("the kit's node refused %s, the first from %s: %s", Count(len(refused), "answer"), refused[0].From, why)
	}
	var all *RecoveryJob
	err = k.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			all, err = tx.Job(allJobName)
			return err
		})
	})
	if err != nil {
		return err
	}
	if all != nil && all.State == RecoveryWaiting && !expired {
		return nil
	}
	var broken error
	if why != "" {
		broken = errors.New(why)
	}
	return n.endKitDrill(job.Name, all, broken)
}

// endKitDrill checks what the kit node recovered against our books, records the result
// and removes the kit node.
func (n *Node) endKitDrill(name string, all *RecoveryJob, broken error) error {
	dir := n.kitDir()
	var failed []string
	var report *RecoveryJob
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			j, err := tx.Job(name)
			if err != nil || j == nil || j.State != RecoveryWaiting {
				return err
			}
			failed, j.Written, j.Files = nil, 0, 0
			if broken != nil {
				failed = append(failed, broken.Error())
			}
			switch {
			case all == nil && broken != nil:
			case all == nil:
				failed = append(failed, "the kit's node started no recover_all")
			case all.State == RecoveryWaiting:
				failed = append(failed, "recover_all from the kit did not end within drillTimeout")
			case all.Error != "":
				failed = append(failed, "recover_all from the kit: "+all.Error)
			}
			newest := map[string]FileVersion{}
			if err := tx.EachVersion(func(fv FileVersion) error {
				if cur, ok := newest[fv.Name]; fv.Kind == KindFile && (!ok || fv.Version > cur.Version) {
					newest[fv.Name] = fv
				}
				return nil
			}); err != nil {
				return err
			}
			var lost []string
			for _, name := range sortedKeys(newest) {
				fv := newest[name]
				if !fv.Deleted.IsZero() {
					continue
				}
				j.Files++
				if why := checkRecovered(filepath.Join(dir, recoveryDir), fv); why != "" {
					lost = append(lost, name+": "+why)
					continue
				}
				j.Written++
			}
			if len(lost) > 0 {
				failed = append(failed, fmt.Sprintf("%s not recovered from the kit: %s", Count(len(lost), "file"), strings.Join(lost[:min(len(lost), 5)], ", ")))
			}
			for _, id := range sortedKeys(j.Bad) {
				failed = append(failed, id+" ("+j.Bad[id]+")")
			}
			j.State, j.Ended, j.Error = RecoveryDone, n.Now().UTC(), ""
			if len(failed) > 0 {
				j.State, j.Error = RecoveryFailed, strings.Join(failed, "; ")
			}
			report = j
			return tx.PutJob(j)
		})
	})
	if err != nil {
		return err
	}
	os.RemoveAll(dir)
	if report != nil {
		if report.State == RecoveryFailed {
			n.Log.Error("drill from the kit failed", "job", report.Name, "err", report.Error)
			n.ReportError(context.Background(), "drill --from_kit", errors.New(report.Error+"\n\ndibs show_database --only stats tells more."))
		} else {
			n.Log.Info("drill from the kit passed", "job", report.Name, "files", report.Written, "bytes", report.Bytes)
		}
	}
	return nil
}

// checkRecovered says what is wrong with fv as recovered under root ("" if nothing).
func checkRecovered(root string, fv FileVersion) string {
	rel := filepath.FromSlash(strings.TrimPrefix(fv.Name, "/"))
	if !filepath.IsLocal(rel) {
		return "its name leaves the recovery directory"
	}
	f, err := os.Open(filepath.Join(root, rel))
	if err != nil {
		return "missing"
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return "not a regular file"
	}
	if fi.Size() != fv.Size {
		return fmt.Sprintf("%d bytes, stored %d", fi.Size(), fv.Size)
	}
	if fv.Hash == "" {
		return ""
	}
	got, err := readContentHash(f, fv.Hash)
	if err != nil {
		return err.Error()
	}
	if got != fv.Hash {
		return "content does not match its hash"
	}
	return ""
}
