package agent

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dibs-backup/dibs/agent/merkle"
	"github.com/dibs-backup/dibs/pgpmsg"
)

// Probe messages.
const (
	TypeProbe         = "PROBE"
	TypeProbeResponse = "PROBE_RESPONSE"
	fieldBlocks       = "Blocks"
	// probeBlocks is how many random blocks one probe asks a piece for.
	probeBlocks = 3
	// maxProbeBlocks bounds what a peer answers for one probe.
	maxProbeBlocks = 64
)

// ProbeState is a probe waiting for its answer, keyed by the PROBE's Message-Id.
type ProbeState struct {
	Piece  string    `json:"piece"`
	Peer   string    `json:"peer"`
	Object string    `json:"object"`
	Blocks []int     `json:"blocks"`
	Sent   time.Time `json:"sent"`
}

func init() {
	handlers[TypeProbe] = handleProbe
	handlers[TypeProbeResponse] = answering(handleProbeResponse)
	nackHandlers[TypeProbe] = func(r *Request) error {
		return r.Node.probeAnswered(r, false, "peer says: "+r.Header.Get(fieldReason))
	}
}

// ProbeResult says what a probe asked.
type ProbeResult struct {
	Name   string // the stored name probed
	Pieces int    // pieces challenged
}

// Probe challenges the peers holding the pieces of a stored file (the named one, or one
// chosen at random): each must answer with a few random blocks of the piece and their
// hash-tree paths, which we check against the root kept when the piece was sealed.
func (n *Node) Probe(sname string) (ProbeResult, error) {
	var res ProbeResult
	err := n.withDB(func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			fv, err := pickProbeTarget(tx, sname)
			if err != nil {
				return err
			}
			res.Name = fv.Name
			o, err := getObject(tx, fv.Object)
			if err != nil {
				return err
			}
			if o == nil {
				return fmt.Errorf("%s: its object is not in the books", fv.Name)
			}
			for _, seg := range o.Segments {
				for _, p := range seg.Pieces {
					if p.ID == "" || p.State != PieceStored || p.Root == "" {
						continue
					}
					if _, _, err := n.Peer(p.Peer); err != nil {
						continue
					}
					nb := merkle.Blocks(p.Size, merkle.DefaultBlockSize)
					blocks := make([]int, 0, probeBlocks)
					for range min(probeBlocks, nb) {
						blocks = append(blocks, rand.IntN(nb))
					}
					m := n.newOut(p.Peer, TypeProbe, [][2]string{{fieldPiece, p.ID}, {fieldBlocks, joinInts(blocks)}}, nil)
					if err := addOutbox(tx, m); err != nil {
						return err
					}
					st := ProbeState{Piece: p.ID, Peer: p.Peer, Object: o.ID, Blocks: blocks, Sent: m.Date}
					if err := putJSON(tx.Bucket(bucketProbes), []byte(m.ID), st); err != nil {
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
func pickProbeTarget(tx *bolt.Tx, sname string) (FileVersion, error) {
	if sname != "" {
		name, err := StoredName(sname)
		if err != nil {
			return FileVersion{}, err
		}
		vs, err := versions(tx, name)
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
	err := tx.Bucket(bucketVersions).ForEach(func(k, v []byte) error {
		var fv FileVersion
		if err := json.Unmarshal(v, &fv); err != nil {
			return err
		}
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

// handleProbe answers a probe from the piece on disk: the blocks asked and their paths.
func handleProbe(r *Request) error {
	id := r.Header.Get(fieldPiece)
	if !validID(id) {
		return reject("PROBE: bad Piece-Id")
	}
	blocks, err := parseInts(r.Header.Get(fieldBlocks), maxProbeBlocks)
	if err != nil {
		return reject("PROBE: Blocks: %v", err)
	}
	if r.Tx.Bucket(bucketHeld).Get(heldKey(r.Peer.Name, id)) == nil {
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
	proofs, err := merkle.Prove(f, fi.Size(), merkle.DefaultBlockSize, blocks)
	if err != nil {
		return r.nack(TypeProbe, err.Error(), [2]string{fieldPiece, id})
	}
	return r.Reply(TypeProbeResponse, [][2]string{{fieldPiece, id}}, merkle.EncodeProofs(proofs))
}

// handleProbeResponse checks the proofs against the root we kept.
func handleProbeResponse(r *Request) error {
	return r.Node.probeAnswered(r, true, "")
}

// probeAnswered closes a probe: good answers count for the peer; a wrong or refused
// answer marks the piece lost, and repair rebuilds it elsewhere.
func (n *Node) probeAnswered(r *Request, answered bool, why string) error {
	key := []byte(r.Header.Get(pgpmsg.FieldInReplyTo))
	var st ProbeState
	ok, err := getJSON(r.Tx.Bucket(bucketProbes), key, &st)
	if err != nil || !ok {
		return err // not ours, or timed out already
	}
	if st.Peer != r.Peer.Name {
		return reject("probe answer from %s, asked %s", r.Peer.Name, st.Peer)
	}
	if err := r.Tx.Bucket(bucketProbes).Delete(key); err != nil {
		return err
	}
	o, s, i, err := findPiece(r.Tx, st.Piece)
	if err != nil {
		return err
	}
	good := false
	if answered && o != nil {
		p := o.Segments[s].Pieces[i]
		why = checkProofs(r, p, st.Blocks)
		good = why == ""
	}
	ps, err := peerState(r.Tx, r.Peer.Name)
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
	if err := putPeerState(r.Tx, r.Peer.Name, ps); err != nil {
		return err
	}
	if good || o == nil {
		return nil
	}
	p := &o.Segments[s].Pieces[i]
	if healthy(*p) {
		p.State, p.Why = PieceLost, "failed probe: "+why
	}
	return putObject(r.Tx, o)
}

// checkProofs returns why a probe answer is wrong, or "".
func checkProofs(r *Request, p Piece, blocks []int) string {
	if r.Msg.PayloadSize() > int64(maxProbeBlocks)*(merkle.DefaultBlockSize+64*40) {
		return "answer too long"
	}
	b, err := r.Msg.PayloadBytes()
	if err != nil {
		return err.Error()
	}
	proofs, err := merkle.DecodeProofs(b, merkle.DefaultBlockSize)
	if err != nil {
		return "undecodable answer: " + err.Error()
	}
	if len(proofs) != len(blocks) {
		return fmt.Sprintf("%d proofs for %d blocks", len(proofs), len(blocks))
	}
	rb, err := hex.DecodeString(p.Root)
	if err != nil || len(rb) != len(merkle.Hash{}) {
		return "no root kept"
	}
	var root merkle.Hash
	copy(root[:], rb)
	for i, pr := range proofs {
		if pr.Index != blocks[i] {
			return fmt.Sprintf("proof for block %d, asked %d", pr.Index, blocks[i])
		}
		if err := merkle.Verify(root, p.Size, merkle.DefaultBlockSize, pr); err != nil {
			return fmt.Sprintf("block %d: %v", pr.Index, err)
		}
	}
	return ""
}

// ExpireProbes counts the probes unanswered for probeTimeout as timeouts.
func (n *Node) ExpireProbes() (int, error) {
	now := n.Now()
	limit := n.Opts.Duration("probeTimeout")
	expired := 0
	err := n.withDB(func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketProbes)
			var old [][]byte
			var peers []string
			err := b.ForEach(func(k, v []byte) error {
				var st ProbeState
				if err := json.Unmarshal(v, &st); err != nil {
					return err
				}
				if now.Sub(st.Sent) > limit {
					old = append(old, append([]byte(nil), k...))
					peers = append(peers, st.Peer)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for i, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
				ps, err := peerState(tx, peers[i])
				if err != nil {
					return err
				}
				ps.ProbesTimeout++
				if err := putPeerState(tx, peers[i], ps); err != nil {
					return err
				}
			}
			expired = len(old)
			return nil
		})
	})
	return expired, err
}
