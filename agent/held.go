package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// storageDir is where we keep pieces for others.
const storageDir = "storage"

// storagePath is where the piece id of peer is kept: storage/<peer>/xx/yy/<id>.
func (n *Node) storagePath(peer, id string) string {
	return filepath.Join(n.Dir, storageDir, peer, id[:2], id[2:4], id)
}

// ReplyFile queues a reply whose payload is the content of path (a held piece).
func (r *Request) ReplyFile(typ string, fields [][2]string, path string) error {
	m := r.Node.newOut(r.Peer.Name, typ, fields, nil)
	m.InReplyTo = r.Header.Get(pgpmsg.FieldMessageID)
	m.PayloadFile = path
	return r.Tx.AddOutbox(m)
}

// payloadHeld reports whether the held piece that m carries (ReplyFile) is still in the
// books. dropHeld removes a piece's file only once the drop has committed, so a flush that
// runs in between must ask the books, not the disk.
func (n *Node) payloadHeld(m OutMessage) bool {
	id := ""
	for _, f := range m.Fields {
		if f[0] == fieldPiece {
			id = f[1]
		}
	}
	if id == "" {
		return true
	}
	held := true // if the books cannot say, the file does
	n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			held = tx.Holds(m.Peer, id)
			return nil
		})
	})
	return held
}

func (r *Request) ack(op string, fields ...[2]string) error {
	return r.Reply(TypeAck, append([][2]string{{fieldOp, op}}, fields...), nil)
}

func (r *Request) nack(op, reason string, fields ...[2]string) error {
	return r.Reply(TypeNack, append([][2]string{{fieldOp, op}, {fieldReason, reason}}, fields...), nil)
}

// handleStore keeps a piece for the sender, within the quota we granted it (less what
// it has in quarantine), and acknowledges it; over quota it answers NACK so the owner
// places the piece elsewhere.
// A STORE seen again (same piece) is acknowledged again without writing anything.
func handleStore(r *Request) error {
	id := r.Header.Get(fieldPiece)
	if !validID(id) {
		return reject("STORE: bad Piece-Id")
	}
	if r.Tx.Holds(r.Peer.Name, id) {
		return r.ack(TypeStore, [2]string{fieldPiece, id})
	}
	size := r.Msg.PayloadSize()
	ps, err := r.Tx.Peer(r.Peer.Name)
	if err != nil {
		return err
	}
	if q := r.Node.quarantinedFrom(r.Peer.Name); ps.LocalUsed+q+size > r.Peer.LocalQuota {
		return r.nack(TypeStore, fmt.Sprintf("over quota: %d of %d bytes used (%d of them by quarantined messages), piece is %d",
			ps.LocalUsed+q, r.Peer.LocalQuota, q, size), [2]string{fieldPiece, id})
	}
	path := r.Node.storagePath(r.Peer.Name, id)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return retryLater{err}
	}
	if _, err := queue.WriteAtomic(path, r.Msg.Payload(), 0o600); err != nil {
		return retryLater{fmt.Errorf("keep piece: %w", err)}
	}
	if err := r.Tx.PutHeld(r.Peer.Name, id, HeldPiece{Size: size, Stored: r.Now, Sent: mustDate(r.Header)}); err != nil {
		return err
	}
	ps.LocalUsed += size
	if err := r.Tx.PutPeer(r.Peer.Name, ps); err != nil {
		return err
	}
	return r.ack(TypeStore, [2]string{fieldPiece, id})
}

func mustDate(h pgpmsg.Header) (t time.Time) {
	t, _ = h.Date()
	return t
}

// readIDs parses a payload that lists piece ids, one per line.
func readIDs(b []byte) ([]string, error) {
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if !validID(line) {
			return nil, fmt.Errorf("bad piece id %q", line)
		}
		ids = append(ids, line)
	}
	return ids, sc.Err()
}

func writeIDs(ids []string) []byte {
	var b bytes.Buffer
	for _, id := range ids {
		b.WriteString(id)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// maxListPayload bounds a payload listing piece ids.
const maxListPayload = 64 << 20

func (r *Request) idList() ([]string, error) {
	if r.Msg.PayloadSize() > maxListPayload {
		return nil, reject("%s: piece list too long", r.Header.Get(pgpmsg.FieldType))
	}
	b, err := r.Msg.PayloadBytes()
	if err != nil {
		return nil, err
	}
	ids, err := readIDs(b)
	if err != nil {
		return nil, reject("%s: %v", r.Header.Get(pgpmsg.FieldType), err)
	}
	return ids, nil
}

// handleUnstore drops the listed pieces we hold for the sender; a piece we do not have
// is already gone. The ACK lists the pieces, so the owner can close its books.
func handleUnstore(r *Request) error {
	ids, err := r.idList()
	if err != nil {
		return err
	}
	if err := r.Node.dropHeld(r.Tx, r.Peer.Name, ids); err != nil {
		return err
	}
	return r.Reply(TypeAck, [][2]string{{fieldOp, TypeUnstore}, {fieldCount, fmt.Sprint(len(ids))}}, writeIDs(ids))
}

// dropHeld removes pieces we hold for peer, from disk and from the books.
func (n *Node) dropHeld(tx *books.Tx, peer string, ids []string) error {
	ps, err := tx.Peer(peer)
	if err != nil {
		return err
	}
	for _, id := range ids {
		hp, ok, err := tx.Held(peer, id)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		path := n.storagePath(peer, id)
		tx.OnCommit(func() { // a rolled-back run must find the piece still there
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				n.Log.Warn("drop held piece", "peer", peer, "piece", id, "err", err)
			}
		})
		if err := tx.DeleteHeld(peer, id); err != nil {
			return err
		}
		ps.LocalUsed = max(0, ps.LocalUsed-hp.Size)
	}
	return tx.PutPeer(peer, ps)
}

// handleAck closes the owner's books on a request the peer carried out, as the route of
// its Op says (protocol.go).
func handleAck(r *Request) error {
	if rt, _ := routeOf(r.Header.Get(fieldOp)); rt.acked != nil {
		return rt.acked(r)
	}
	return nil // an ACK of something we do not track changes nothing
}

// handleNack logs a refusal, records it as the peer's last_refusal, and acts on it as
// the route of its Op says.
func handleNack(r *Request) error {
	op, reason := r.Header.Get(fieldOp), r.Header.Get(fieldReason)
	r.Node.Log.Warn("refused", "peer", r.Peer.Name, "op", op, "reason", reason)
	ps, err := r.Tx.Peer(r.Peer.Name)
	if err != nil {
		return err
	}
	ps.LastRefusal, ps.LastRefusalAt = op+": "+reason, r.Now
	ps.Refusals++
	if err := r.Tx.PutPeer(r.Peer.Name, ps); err != nil {
		return err
	}
	if rt, _ := routeOf(r.Header.Get(fieldOp)); rt.refused != nil {
		return rt.refused(r)
	}
	return nil
}

// handleStoreAck counts an acknowledged piece as stored.
func handleStoreAck(r *Request) error {
	return r.Node.pieceAnswered(r, r.Header.Get(fieldPiece), true, "")
}

// handleStoreNack records a refused piece as lost; repair places it elsewhere.
func handleStoreNack(r *Request) error {
	return r.Node.pieceAnswered(r, r.Header.Get(fieldPiece), false, "refused: "+r.Header.Get(fieldReason))
}

// handleUnstoreAck closes the books on the pieces the peer dropped.
func handleUnstoreAck(r *Request) error {
	ids, err := r.idList()
	if err != nil {
		return err
	}
	return r.Node.piecesUnstored(r.Tx, r.Peer.Name, ids)
}

// pieceAnswered applies a peer's ACK or NACK of a STORE.
func (n *Node) pieceAnswered(r *Request, id string, ok bool, why string) error {
	if !validID(id) {
		return reject("%s: bad Piece-Id", r.Header.Get(pgpmsg.FieldType))
	}
	o, s, i, err := r.Tx.FindPiece(id)
	if err != nil {
		return err
	}
	if o == nil {
		// Not in our books. It may be a piece we dropped, or our books may be new (lost
		// and being rebuilt by recover_all): never ask for a delete on this ground. The
		// storage list, which is dated, frees what we really no longer reference.
		return nil
	}
	p := &o.Segments[s].Pieces[i]
	if p.Peer != r.Peer.Name {
		return reject("%s of piece %s from %s, but it was sent to %s", r.Header.Get(pgpmsg.FieldType), id, r.Peer.Name, p.Peer)
	}
	ps, err := r.Tx.Peer(p.Peer)
	if err != nil {
		return err
	}
	switch {
	case p.State == PieceSent && ok:
		p.State, p.AckAt = PieceStored, r.Now
		ps.RemotePending = max(0, ps.RemotePending-p.Size)
		ps.RemoteUsed += p.Size
	case p.State == PieceSent:
		p.State, p.Why = PieceLost, why
		ps.RemotePending = max(0, ps.RemotePending-p.Size)
		o.LastRefusal = p.Peer + " refused STORE: " + r.Header.Get(fieldReason)
	case ok && (p.State == PieceLost || p.State == PieceUnstoring):
		// Given up on, or dropped meanwhile: the peer holds a piece we do not count.
		return r.Reply(TypeUnstore, nil, writeIDs([]string{id}))
	default:
		return nil // a duplicate answer
	}
	if err := r.Tx.PutPeer(p.Peer, ps); err != nil {
		return err
	}
	return r.Tx.PutObject(o)
}

// piecesUnstored closes the books on pieces a peer confirmed it dropped.
func (n *Node) piecesUnstored(tx *books.Tx, peer string, ids []string) error {
	ps, err := tx.Peer(peer)
	if err != nil {
		return err
	}
	touched := map[string]*Object{}
	for _, id := range ids {
		o, s, i, err := tx.FindPiece(id)
		if err != nil {
			return err
		}
		if o == nil {
			continue
		}
		if t, ok := touched[o.ID]; ok {
			o = t
		}
		p := &o.Segments[s].Pieces[i]
		if p.Peer != peer {
			continue
		}
		switch p.State {
		case PieceStored, PieceUnstoring:
			if !p.AckAt.IsZero() {
				ps.RemoteUsed = max(0, ps.RemoteUsed-p.Size)
			}
		case PieceSent:
			ps.RemotePending = max(0, ps.RemotePending-p.Size)
		}
		p.State, p.ID = "", ""
		if err := tx.UnindexPiece(id); err != nil {
			return err
		}
		touched[o.ID] = o
	}
	for _, o := range touched {
		if o.Refs <= 0 && !o.HasPieces() {
			if err := n.deleteObjectTx(tx, o.ID); err != nil {
				return err
			}
			continue
		}
		if err := tx.PutObject(o); err != nil {
			return err
		}
	}
	return tx.PutPeer(peer, ps)
}

// unstoreObjectTx asks the peers to drop every piece of an object no version uses any
// more: one UNSTORE per peer, listing its pieces. The object goes when all are answered.
func (n *Node) unstoreObjectTx(tx *books.Tx, o *Object) error {
	byPeer := map[string][]string{}
	for s := range o.Segments {
		for i := range o.Segments[s].Pieces {
			p := &o.Segments[s].Pieces[i]
			if p.ID == "" {
				continue
			}
			if p.State == PieceLost {
				// Lost pieces may still sit at the peer; asking costs one line.
				if _, _, err := n.Peer(p.Peer); err != nil {
					p.ID = ""
					continue
				}
			}
			p.State = PieceUnstoring
			byPeer[p.Peer] = append(byPeer[p.Peer], p.ID)
		}
	}
	peers := make([]string, 0, len(byPeer))
	for p := range byPeer {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, peer := range peers {
		if _, _, err := n.Peer(peer); err != nil {
			continue // a deleted peer: nothing to tell
		}
		if err := n.requestTx(tx, peer, TypeUnstore, nil, writeIDs(byPeer[peer])); err != nil {
			return err
		}
	}
	if !o.HasPieces() {
		return n.deleteObjectTx(tx, o.ID)
	}
	return tx.PutObject(o)
}

// dropVersionTx removes one file version and releases its object.
func (n *Node) dropVersionTx(tx *books.Tx, fv FileVersion) error {
	if err := tx.DeleteVersion(fv.Name, fv.Version); err != nil {
		return err
	}
	if fv.Object == "" {
		return nil
	}
	o, err := tx.Object(fv.Object)
	if err != nil || o == nil {
		return err
	}
	o.Refs--
	if o.Refs > 0 {
		// A pack that lives on: its pieces still list the version. A tombstone will tell
		// the peers (tidyPacks), unless the pack is rewritten first.
		if err := tx.PutUnstored(o.ID, fv.Name, fv.Version, books.Unstored{}); err != nil {
			return err
		}
		return tx.PutObject(o)
	}
	return n.unstoreObjectTx(tx, o)
}

// pruneVersionsTx keeps the newest maxVersions versions of name.
func (n *Node) pruneVersionsTx(tx *books.Tx, name string) error {
	vs, err := tx.Versions(name)
	if err != nil {
		return err
	}
	keep := int(optMaxVersions.Get(n.Opts))
	for i := 0; i < len(vs)-keep; i++ {
		if err := n.dropVersionTx(tx, vs[i]); err != nil {
			return err
		}
	}
	return nil
}

// UnstoreResult says what unstore_file dropped.
type UnstoreResult struct {
	Versions int
	Names    int
}

// Unstore drops a stored file or tree (every version) and asks the peers to drop the
// pieces no other version uses.
func (n *Node) Unstore(sname string) (UnstoreResult, error) {
	var res UnstoreResult
	root, err := StoredName(sname)
	if err != nil {
		return res, err
	}
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			var all []FileVersion
			names := map[string]bool{}
			err := tx.EachVersionUnder(root, func(fv FileVersion) error {
				all = append(all, fv)
				names[fv.Name] = true
				return nil
			})
			if err != nil {
				return err
			}
			if len(all) == 0 {
				return fmt.Errorf("%s is not stored (dibs show_database --only files lists what is)", root)
			}
			for _, fv := range all {
				if err := n.dropVersionTx(tx, fv); err != nil {
					return err
				}
			}
			for name := range names {
				if err := tx.DeleteStat(name); err != nil {
					return err
				}
			}
			res.Versions, res.Names = len(all), len(names)
			return nil
		})
	})
	if err != nil {
		return res, err
	}
	if err := n.FlushOutbox(); err != nil {
		return res, err
	}
	if err := n.tidyPacks(context.Background()); err != nil {
		// The drops are in the books: cleanup and auto_check try again.
		n.Log.Warn("unstore: small files stay in their packs at the peers for now", "err", err)
	}
	return res, nil
}

// wireKey is the copy of a peer's key that seals with SEIPDv2-GCM: every peer runs dibs,
// so messages between nodes use the fast AEAD mode whatever the key advertises. The
// copies are cached by fingerprint.
func (n *Node) wireKey(k *pgpmsg.Key) *pgpmsg.Key {
	if v, ok := n.wire.Load(k.Fingerprint()); ok {
		return v.(*pgpmsg.Key)
	}
	w := k.WithAEAD()
	n.wire.Store(k.Fingerprint(), w)
	return w
}

// selfKey is the key pieces are sealed to: ours.
func (n *Node) selfKey() *pgpmsg.Key { return n.wireKey(n.ID.Public()) }
