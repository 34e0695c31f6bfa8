package books

import (
	"bytes"
	"time"
)

// HeldPiece is a piece we keep for a peer.
type HeldPiece struct {
	Size   int64     `json:"size"`
	Stored time.Time `json:"stored"`
	// Sent is the Date of the STORE: a storage list older than it does not free the piece.
	Sent time.Time `json:"sent"`
}

func heldKey(peer, piece string) []byte { return []byte(peer + "\x00" + piece) }

// Holds reports whether we keep the piece for peer.
func (t *Tx) Holds(peer, piece string) bool {
	return t.bucket(bucketHeld).Get(heldKey(peer, piece)) != nil
}

// Held returns the record of a piece we keep for peer, and whether there is one.
func (t *Tx) Held(peer, piece string) (HeldPiece, bool, error) {
	var hp HeldPiece
	ok, err := t.get(bucketHeld, heldKey(peer, piece), &hp)
	return hp, ok, err
}

// PutHeld records that we keep the piece for peer.
func (t *Tx) PutHeld(peer, piece string, hp HeldPiece) error {
	return t.put(bucketHeld, heldKey(peer, piece), hp)
}

// DeleteHeld forgets a piece we kept for peer.
func (t *Tx) DeleteHeld(peer, piece string) error { return t.delete(bucketHeld, heldKey(peer, piece)) }

// HeldIDs lists the pieces we keep for peer, by id.
func (t *Tx) HeldIDs(peer string) []string {
	var ids []string
	prefix := []byte(peer + "\x00")
	c := t.bucket(bucketHeld).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, string(k[len(prefix):]))
	}
	return ids
}

// EachHeld calls fn with every piece we keep, by peer, then by id.
func (t *Tx) EachHeld(fn func(peer, piece string, hp HeldPiece) error) error {
	return each(t, bucketHeld, func(k []byte, hp *HeldPiece) error {
		i := bytes.LastIndexByte(k, 0)
		return fn(string(k[:i]), string(k[i+1:]), *hp)
	})
}
