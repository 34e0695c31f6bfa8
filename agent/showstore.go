package agent

import (
	"strings"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
)

// Status of a stored file version (show_database --only files).
const (
	StatusStored   = "stored"   // every segment has k acknowledged pieces, and no piece is lost
	StatusPending  = "pending"  // pieces are on their way, not yet acknowledged
	StatusDegraded = "degraded" // recoverable, but pieces are lost: repair rebuilds them (repairSpare)
	StatusLost     = "lost"     // a segment has fewer than k pieces left
)

// status rates an object: see the Status constants. It also returns the healthy pieces
// and the spares: the fewest healthy pieces beyond k in any segment (0 when lost).
func (n *Node) status(o *Object) (status string, pieces, spares int) {
	status, spares = StatusStored, o.N-o.K
	for _, seg := range o.Segments {
		acked, ok := 0, 0
		for _, p := range seg.Pieces {
			if p.Healthy() {
				ok++
				if p.State == PieceStored {
					acked++
				}
			}
		}
		pieces += ok
		spares = min(spares, max(0, ok-o.K))
		switch {
		case ok < o.K:
			return StatusLost, pieces, 0
		case acked < o.K:
			status = StatusPending
		case ok < o.N && status == StatusStored:
			status = StatusDegraded
		}
	}
	return status, pieces, spares
}

// ProbeRow is one peer's probe record.
type ProbeRow struct {
	Peer          string  `json:"peer"`
	Good          int     `json:"good"`
	Failed        int     `json:"failed"`
	Timeout       int     `json:"timeout"`
	Waiting       int     `json:"waiting"`
	AvgResponseMS int64   `json:"avg_response_ms"`
	LastProbe     *string `json:"last_probe"`
}

// StatsRow sums up one peer: what it holds for us, what we hold for it, its probes.
type StatsRow struct {
	Peer          string  `json:"peer"`
	PiecesThere   int     `json:"pieces_there"`
	BytesThere    int64   `json:"bytes_there"`
	PiecesHere    int     `json:"pieces_here"`
	BytesHere     int64   `json:"bytes_here"`
	LostPieces    int     `json:"lost_pieces"`
	Answers       int     `json:"answers"`
	Refusals      int     `json:"refusals"`
	ProbesGood    int     `json:"probes_good"`
	ProbesFailed  int     `json:"probes_failed"`
	ProbesTimeout int     `json:"probes_timeout"`
	AvgResponseMS int64   `json:"avg_response_ms"`
	LastHeard     *string `json:"last_heard"`
}

func timePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}

// engineSections fills the backup engine's sections of show_database.
func (n *Node) engineSections(out map[string]any, want func(string) bool) error {
	states, err := n.PeerStates()
	if err != nil {
		return err
	}
	peers, err := n.Peers()
	if err != nil {
		return err
	}
	return n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			objs := map[string]*Object{}
			there := map[string]*StatsRow{}
			row := func(p string) *StatsRow {
				if there[p] == nil {
					there[p] = &StatsRow{Peer: p}
				}
				return there[p]
			}
			err := tx.EachObject(func(o *Object) error {
				objs[o.ID] = o
				for _, seg := range o.Segments {
					for _, p := range seg.Pieces {
						switch {
						case p.ID == "":
						case p.Healthy():
							row(p.Peer).PiecesThere++
							row(p.Peer).BytesThere += p.Size
						case p.State == PieceLost:
							row(p.Peer).LostPieces++
						}
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			if want("files") {
				files := []FileRow{}
				d := newDurabilityRows(n.newLossModel(peers, states), objs)
				err := tx.EachVersion(func(fv FileVersion) error {
					r := FileRow{Name: fv.Name, Version: fv.Version, Size: fv.Size, Status: StatusStored, Kind: fv.Kind, Deleted: timePtr(fv.Deleted)}
					if o := objs[fv.Object]; o != nil {
						var spares int
						r.Status, r.Pieces, spares = n.status(o)
						r.Spares, r.LastRefusal = &spares, o.LastRefusal
					} else if fv.Object != "" {
						r.Status = StatusLost
					}
					files = append(files, r)
					d.add(fv)
					return nil
				})
				if err != nil {
					return err
				}
				d.fill(files)
				out["files"] = files
			}
			held := map[string]*StorageRow{}
			err = tx.EachHeld(func(peer, _ string, hp HeldPiece) error {
				if held[peer] == nil {
					held[peer] = &StorageRow{Peer: peer}
				}
				held[peer].Pieces++
				held[peer].Bytes += hp.Size
				return nil
			})
			if err != nil {
				return err
			}
			if want("storage") {
				rows := []StorageRow{}
				for _, p := range sortedKeys(held) {
					rows = append(rows, *held[p])
				}
				out["storage"] = rows
			}
			if want("recovery") {
				rows := []RecoveryRow{}
				err := tx.EachJob(func(j *RecoveryJob) error {
					r := RecoveryRow{Name: j.Name, State: j.State, Kind: j.Kind, Written: j.Written, Error: j.Error, Objects: len(j.Objects), Ended: timePtr(j.Ended)}
					if silent := silentPeers(j); j.Kind == books.JobAll && j.State != RecoveryWaiting && len(silent) > 0 {
						r.Error = "no answer from " + strings.Join(silent, ", ")
						if j.Error != "" {
							r.Error += "; " + j.Error
						}
					}
					for _, done := range j.Objects {
						if done {
							r.Assembled++
						}
					}
					rows = append(rows, r)
					return nil
				})
				if err != nil {
					return err
				}
				out["recovery"] = rows
			}
			waiting := map[string]int{}
			tx.EachProbe(func(_ string, st ProbeState) error {
				waiting[st.Peer]++
				return nil
			})
			var probes []ProbeRow
			var stats []StatsRow
			for _, p := range peers {
				ps := states[p.Name]
				avg := int64(0)
				if ps.ProbesGood > 0 {
					avg = (ps.ProbeRTTTotal / time.Duration(ps.ProbesGood)).Milliseconds()
				}
				probes = append(probes, ProbeRow{Peer: p.Name, Good: ps.ProbesGood, Failed: ps.ProbesFailed, Timeout: ps.ProbesTimeout,
					Waiting: waiting[p.Name], AvgResponseMS: avg, LastProbe: timePtr(ps.LastProbe)})
				st := *row(p.Name)
				if h := held[p.Name]; h != nil {
					st.PiecesHere, st.BytesHere = h.Pieces, h.Bytes
				}
				st.Answers, st.Refusals = ps.Answers, ps.Refusals
				st.ProbesGood, st.ProbesFailed, st.ProbesTimeout, st.AvgResponseMS = ps.ProbesGood, ps.ProbesFailed, ps.ProbesTimeout, avg
				st.LastHeard = timePtr(ps.LastHeard)
				stats = append(stats, st)
			}
			if want("probe") {
				if probes == nil {
					probes = []ProbeRow{}
				}
				out["probe"] = probes
			}
			if want("stats") {
				if stats == nil {
					stats = []StatsRow{}
				}
				out["stats"] = stats
				drills, err := drillRows(tx)
				if err != nil {
					return err
				}
				out["drills"] = drills // printed after stats: not a section --only names
			}
			return nil
		})
	})
}
