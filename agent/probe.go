package agent

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
)

// Probe limits.
const (
	// probeChunks is how many random chunks one probe asks a piece for.
	probeChunks = 3
	// maxProbeChunks bounds what a peer answers for one probe.
	maxProbeChunks = 16
)

// ProbeState is a probe waiting for its answer, keyed by the PROBE's Message-Id.
type ProbeState = books.ProbeState

// handleProbeNack fails a probe the peer refused.
func handleProbeNack(r *Request) error {
	return r.Node.probeAnswered(r, false, "peer says: "+r.Header.Get(fieldReason))
}

// ProbeResult says what a probe asked.
type ProbeResult struct {
	Name   string // the stored name probed
	Pieces int    // pieces challenged
}

// Probe challenges the peers holding the pieces of a stored file (the named one, or one
// chosen at random): each must answer with the piece's preamble and a few random AEAD
// chunks of it. The preamble must hash to the pin we kept when the piece was sealed, and
// each chunk must authenticate under the piece's session key, which only we can decrypt
// (pgpmsg.ChunkChecker): a peer cannot answer without holding the chunks asked, and the
// piece never travels back whole.
func (n *Node) Probe(sname string) (ProbeResult, error) {
	var res ProbeResult
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			fv, err := pickProbeTarget(tx, sname)
			if err != nil {
				return err
			}
			res.Name = fv.Name
			o, err := tx.Object(fv.Object)
			if err != nil {
				return err
			}
			if o == nil {
				return fmt.Errorf("%s: its object is not in the books", fv.Name)
			}
			for _, seg := range o.Segments {
				for _, p := range seg.Pieces {
					if p.ID == "" || p.State != PieceStored || p.Pin == "" || p.Chunks == 0 {
						continue
					}
					if _, _, err := n.Peer(p.Peer); err != nil {
						continue
					}
					chunks := rand.Perm(p.Chunks)[:min(probeChunks, p.Chunks)]
					m := n.newOut(p.Peer, TypeProbe, [][2]string{{fieldPiece, p.ID}, {fieldChunks, joinInts(chunks)}}, nil)
					if err := tx.AddOutbox(m); err != nil {
						return err
					}
					st := ProbeState{Piece: p.ID, Peer: p.Peer, Object: o.ID, Chunks: chunks, Sent: m.Date}
					if err := tx.PutProbe(m.ID, st); err != nil {
						return err
					}
					res.Pieces++
				}
			}
			if res.Pieces == 0 {
				return fmt.Errorf("%s has no acknowledged piece to probe yet", fv.Name)
			}
			return nil
		})
	})
	if err != nil {
		return res, err
	}
	return res, n.FlushOutbox()
}

// pickProbeTarget returns the newest version of sname, or of a random stored file.
func pickProbeTarget(tx *books.Tx, sname string) (FileVersion, error) {
	if sname != "" {
		name, err := StoredName(sname)
		if err != nil {
			return FileVersion{}, err
		}
		vs, err := tx.Versions(name)
		if err != nil {
			return FileVersion{}, err
		}
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].Object != "" {
				return vs[i], nil
			}
		}
		if len(vs) == 0 {
			return FileVersion{}, fmt.Errorf("%s is not stored (dibs show_database --only files)", name)
		}
		return FileVersion{}, fmt.Errorf("%s has no content to probe", name)
	}
	var all []FileVersion
	err := tx.EachVersion(func(fv FileVersion) error {
		if fv.Object != "" {
			all = append(all, fv)
		}
		return nil
	})
	if err != nil {
		return FileVersion{}, err
	}
	if len(all) == 0 {
		return FileVersion{}, errors.New("nothing stored yet: nothing to probe")
	}
	return all[rand.IntN(len(all))], nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func parseInts(s string, limit int) ([]int, error) {
	parts := strings.Split(s, ",")
	if len(parts) > limit {
		return nil, fmt.Errorf("more than %d values", limit)
	}
	out := make([]int, 0, len(parts))
	for _, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad value %q", p)
		}
		out = append(out, v)
	}
	return out, nil
}

// handleProbe answers a probe from the piece on disk: its preamble and the chunks asked.
func handleProbe(r *Request) error {
	id := r.Header.Get(fieldPiece)
	if !validID(id) {
		return reject("PROBE: bad Piece-Id")
	}
	chunks, err := parseInts(r.Header.Get(fieldChunks), maxProbeChunks)
	if err != nil {
		return reject("PROBE: Chunks: %v", err)
	}
	if !r.Tx.Holds(r.Peer.Name, id) {
		return r.nack(TypeProbe, "unknown piece", [2]string{fieldPiece, id})
	}
	f, err := os.Open(r.Node.storagePath(r.Peer.Name, id))
	if err != nil {
		return r.nack(TypeProbe, "piece unreadable: "+err.Error(), [2]string{fieldPiece, id})
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return retryLater{err}
	}
	s, err := pgpmsg.ScanFile(f, fi.Size(), chunks...) // reads the chunks asked, not the piece
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return retryLater{err} // the disk, not the piece
		}
		return r.nack(TypeProbe, "piece damaged: "+err.Error(), [2]string{fieldPiece, id})
	}
	l, err := s.Layout()
	if err != nil {
		return r.nack(TypeProbe, "piece damaged: "+err.Error(), [2]string{fieldPiece, id})
	}
	answer := appendBytes(nil, l.Preamble)
	for _, i := range chunks {
		c, err := s.Chunk(i)
		if err != nil {
			return r.nack(TypeProbe, err.Error(), [2]string{fieldPiece, id})
		}
		answer = appendBytes(binary.AppendUvarint(answer, uint64(i)), c)
	}
	return r.Reply(TypeProbeResponse, [][2]string{{fieldPiece, id}}, answer)
}

// A probe answer is the preamble, then each chunk after its index, every byte string
// after its length (unsigned varints).
func appendBytes(b, v []byte) []byte { return append(binary.AppendUvarint(b, uint64(len(v))), v...) }

// probeAnswer reads a probe answer.
type probeAnswer struct {
	b   []byte
	err error
}

func (a *probeAnswer) uvarint(limit uint64) uint64 {
	v, n := binary.Uvarint(a.b)
	if a.err == nil && (n <= 0 || v > limit) {
		a.err = errors.New("undecodable answer")
	}
	if a.err != nil {
		return 0
	}
	a.b = a.b[n:]
	return v
}

func (a *probeAnswer) bytes() []byte {
	n := a.uvarint(uint64(len(a.b)))
	if a.err != nil {
		return nil
	}
	v := a.b[:n]
	a.b = a.b[n:]
	return v
}

// handleProbeResponse checks the chunks against the pin we kept.
func handleProbeResponse(r *Request) error {
	return r.Node.probeAnswered(r, true, "")
}

// probeAnswered closes a probe: good answers count for the peer; a wrong or refused
// answer marks the piece lost, and repair rebuilds it elsewhere.
func (n *Node) probeAnswered(r *Request, answered bool, why string) error {
	id := r.Header.Get(pgpmsg.FieldInReplyTo)
	st, ok, err := r.Tx.Probe(id)
	if err != nil || !ok {
		return err // not ours, or timed out already
	}
	if st.Peer != r.Peer.Name {
		return reject("probe answer from %s, asked %s", r.Peer.Name, st.Peer)
	}
	if err := r.Tx.DeleteProbe(id); err != nil {
		return err
	}
	o, s, i, err := r.Tx.FindPiece(st.Piece)
	if err != nil {
		return err
	}
	good := false
	if answered && o != nil {
		p := o.Segments[s].Pieces[i]
		why = checkChunks(r, p, st.Chunks)
		good = why == ""
	}
	ps, err := r.Tx.Peer(r.Peer.Name)
	if err != nil {
		return err
	}
	ps.LastProbe = r.Now
	if good {
		ps.ProbesGood++
		ps.ProbeRTTTotal += r.Now.Sub(st.Sent)
	} else {
		ps.ProbesFailed++
		n.Log.Warn("probe failed", "peer", r.Peer.Name, "piece", st.Piece, "why", why)
	}
	if err := r.Tx.PutPeer(r.Peer.Name, ps); err != nil {
		return err
	}
	if good || o == nil {
		return nil
	}
	p := &o.Segments[s].Pieces[i]
	if p.Healthy() {
		p.State, p.Why = PieceLost, "failed probe: "+why
	}
	if !answered {
		o.LastRefusal = r.Peer.Name + " refused PROBE: " + r.Header.Get(fieldReason)
	}
	return r.Tx.PutObject(o)
}

// checkChunks returns why a probe answer is wrong, or "".
func checkChunks(r *Request, p Piece, chunks []int) string {
	if r.Msg.PayloadSize() > int64(maxProbeChunks)*(pgpmsg.MaxChunkSize+20)+8192 {
		return "answer too long"
	}
	b, err := r.Msg.PayloadBytes()
	if err != nil {
		return err.Error()
	}
	a := &probeAnswer{b: b}
	pre := a.bytes()
	if a.err != nil {
		return a.err.Error()
	}
	if sum := sha256.Sum256(pre); hex.EncodeToString(sum[:]) != p.Pin {
		return "preamble is not the piece's"
	}
	c, err := pgpmsg.NewChunkChecker(r.Node.ID, pre, p.Chunks)
	if err != nil {
		return err.Error()
	}
	for _, want := range chunks {
		i := a.uvarint(uint64(p.Chunks))
		chunk := a.bytes()
		if a.err != nil {
			return a.err.Error()
		}
		if int(i) != want {
			return fmt.Sprintf("chunk %d answered, %d asked", i, want)
		}
		if err := c.Check(want, chunk); err != nil {
			return err.Error()
		}
	}
	if len(a.b) != 0 {
		return "more chunks than asked"
	}
	return ""
}

// ExpireProbes counts the probes unanswered for probeTimeout as timeouts.
func (n *Node) ExpireProbes() (int, error) {
	now := n.Now()
	limit := optProbeTimeout.Get(n.Opts)
	expired := 0
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			var old []string
			var peers []string
			err := tx.EachProbe(func(id string, st ProbeState) error {
				if now.Sub(st.Sent) > limit {
					old = append(old, id)
					peers = append(peers, st.Peer)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for i, id := range old {
				if err := tx.DeleteProbe(id); err != nil {
					return err
				}
				ps, err := tx.Peer(peers[i])
				if err != nil {
					return err
				}
				ps.ProbesTimeout++
				if err := tx.PutPeer(peers[i], ps); err != nil {
					return err
				}
			}
			expired = len(old)
			return nil
		})
	})
	return expired, err
}
