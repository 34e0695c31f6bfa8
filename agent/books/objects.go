package books

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The backup engine's books. An owner stores objects: one large file's content, or a
// pack of small files (so that the number of messages grows with bytes, not with files).
// An object is cut into segments; each segment is Reed-Solomon coded into n pieces, each
// on a different peer. A file version names the object and the range of it that holds
// its content; a directory or a symlink is a version without content.

// Piece states, from the owner's side.
const (
	PieceSent      = "sent"      // sealed into outgoing/, no answer yet
	PieceStored    = "stored"    // the peer acknowledged it
	PieceLost      = "lost"      // refused, failed a probe, forgotten, or its peer is gone
	PieceUnstoring = "unstoring" // an UNSTORE was sent; the record goes when it is acknowledged
)

// Object is one coded blob and where its pieces are.
type Object struct {
	ID          string    `json:"id"`
	Size        int64     `json:"size"`
	K           int       `json:"k"`
	N           int       `json:"n"`
	SegmentSize int64     `json:"segment_size"` // every segment but the last has this size
	Created     time.Time `json:"created"`
	Segments    []Segment `json:"segments"`
	// Manifest is what the pieces carry: the file versions whose content is in this object.
	Manifest []ManifestEntry `json:"manifest"`
	// Refs counts file versions that still use this object; at zero its pieces are unstored.
	Refs int `json:"refs"`
	// LastRefusal is the last NACK of one of its pieces, "PEER refused OP: reason".
	LastRefusal string `json:"last_refusal,omitempty"`
}

// Segment is one coded part of an object.
type Segment struct {
	Size   int64   `json:"size"`
	Pieces []Piece `json:"pieces"`
}

// Piece is one shard of a segment, sealed and held by one peer.
type Piece struct {
	ID        string    `json:"id"`
	Index     int       `json:"index"`
	Peer      string    `json:"peer"`
	Size      int64     `json:"size"`       // bytes the peer holds (the sealed piece)
	ShardHash string    `json:"shard_hash"` // SHA-256 of the shard, hex
	Pin       string    `json:"pin"`        // SHA-256 of the sealed piece's preamble, for probes (pgpmsg.ChunkLayout)
	Chunks    int       `json:"chunks"`     // its AEAD chunks, which probes ask for
	State     string    `json:"state"`
	SentAt    time.Time `json:"sent_at"`
	AckAt     time.Time `json:"ack_at,omitzero"`
	Why       string    `json:"why,omitempty"` // why it was lost

	MsgFile string `json:"-"` // the STORE file in outgoing/, while the store runs; never recorded
}

// Healthy reports whether the piece counts: placed, and stored or on its way.
func (p Piece) Healthy() bool {
	return p.ID != "" && (p.State == PieceStored || p.State == PieceSent)
}

// HasPieces reports whether any piece of the object is still placed.
func (o *Object) HasPieces() bool {
	for _, seg := range o.Segments {
		for _, p := range seg.Pieces {
			if p.ID != "" {
				return true
			}
		}
	}
	return false
}

// NeedRepair lists the segments missing pieces that have at most spare spare pieces
// (healthy beyond k) left, and those with
// a piece that never landed (refused over quota, or no peer had room): such a piece is
// placed elsewhere at once, whatever the spares.
func (o *Object) NeedRepair(spare int) []int {
	var out []int
	for s, seg := range o.Segments {
		c, unplaced := 0, false
		for _, p := range seg.Pieces {
			if p.Healthy() {
				c++
			} else if p.AckAt.IsZero() {
				unplaced = true
			}
		}
		if c < o.N && (unplaced || c-o.K <= spare) {
			out = append(out, s)
		}
	}
	return out
}

// Kinds of stored entries.
const (
	KindFile    = "file"
	KindDir     = "dir"
	KindSymlink = "symlink"
)

// ManifestEntry describes one file version inside an object (or, for a directory or a
// symlink, the entry itself). Every piece carries its object's manifest, so recover_all
// rebuilds the file database from pieces alone.
type ManifestEntry struct {
	Name    string    `json:"name"` // stored name
	Version int       `json:"version"`
	Kind    string    `json:"kind"`
	Size    int64     `json:"size"`
	Mode    uint32    `json:"mode"` // permission bits (and setuid/setgid/sticky)
	MTime   time.Time `json:"mtime"`
	Link    string    `json:"link,omitempty"`
	Offset  int64     `json:"offset"` // where the content starts in the object
	Hash    string    `json:"hash,omitempty"`
	Stored  time.Time `json:"stored"`
}

// FileVersion is one stored version of a stored name.
type FileVersion struct {
	ManifestEntry
	Object string `json:"object,omitempty"` // empty for directories, symlinks and empty files
	// Source is the local path the version was read from (repair rereads it if unchanged).
	Source string `json:"source,omitempty"`
	// Deleted is when the file was found gone locally (it stays recoverable until retention).
	Deleted time.Time `json:"deleted,omitzero"`
}

// StatEntry caches what a local file looked like when it was last stored.
type StatEntry struct {
	Size    int64     `json:"size"`
	MTime   time.Time `json:"mtime"`
	Ino     uint64    `json:"ino"`
	CTime   time.Time `json:"ctime"`
	Mode    uint32    `json:"mode"`
	Name    string    `json:"name"`
	Version int       `json:"version"`
	Hash    string    `json:"hash"`
}

// Object returns the object with this id, or nil.
func (t *Tx) Object(id string) (*Object, error) {
	var o Object
	ok, err := t.get(bucketObjects, []byte(id), &o)
	if err != nil || !ok {
		return nil, err
	}
	return &o, nil
}

// PutObject records o under its id.
func (t *Tx) PutObject(o *Object) error { return t.put(bucketObjects, []byte(o.ID), o) }

// DeleteObject removes the object with this id (its piece index entries stay).
func (t *Tx) DeleteObject(id string) error { return t.delete(bucketObjects, []byte(id)) }

// EachObject calls fn with every object, by id. fn may PutObject the object it is given
// (repair does); it must not add or delete objects.
func (t *Tx) EachObject(fn func(o *Object) error) error {
	return each(t, bucketObjects, func(_ []byte, o *Object) error { return fn(o) })
}

// IndexPiece records where the piece is: segment seg of object obj, at index idx.
func (t *Tx) IndexPiece(piece, obj string, seg, idx int) error {
	return t.bucket(bucketPieceIdx).Put([]byte(piece), []byte(obj+"\x00"+strconv.Itoa(seg)+"\x00"+strconv.Itoa(idx)))
}

// UnindexPiece forgets where the piece is.
func (t *Tx) UnindexPiece(piece string) error { return t.delete(bucketPieceIdx, []byte(piece)) }

// FindPiece returns the object, segment and piece with the given id (a nil object if it
// is not in the books).
func (t *Tx) FindPiece(piece string) (*Object, int, int, error) {
	v := t.bucket(bucketPieceIdx).Get([]byte(piece))
	if v == nil {
		return nil, 0, 0, nil
	}
	parts := bytes.Split(v, []byte{0})
	if len(parts) != 3 {
		return nil, 0, 0, fmt.Errorf("piece index: bad entry for %s", piece)
	}
	seg, _ := strconv.Atoi(string(parts[1])) // the index (parts[2]) is informative: pieces are found by id
	o, err := t.Object(string(parts[0]))
	if err != nil || o == nil || seg >= len(o.Segments) {
		return nil, 0, 0, err
	}
	for i := range o.Segments[seg].Pieces {
		if o.Segments[seg].Pieces[i].ID == piece {
			return o, seg, i, nil
		}
	}
	return nil, 0, 0, nil
}

func versionKey(name string, version int) []byte {
	k := make([]byte, 0, len(name)+5)
	k = append(k, name...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint32(k, uint32(version))
}

func splitVersionKey(k []byte) (string, int, bool) {
	if len(k) < 5 || k[len(k)-5] != 0 {
		return "", 0, false
	}
	return string(k[:len(k)-5]), int(binary.BigEndian.Uint32(k[len(k)-4:])), true
}

// under reports whether the stored name is root or inside it.
func under(name, root string) bool {
	return name == root || root == "/" || strings.HasPrefix(name, root+"/")
}

// Version returns the given version of a stored name, and whether there is one.
func (t *Tx) Version(name string, version int) (FileVersion, bool, error) {
	var fv FileVersion
	ok, err := t.get(bucketVersions, versionKey(name, version), &fv)
	return fv, ok, err
}

// HasVersion reports whether the given version of a stored name is recorded.
func (t *Tx) HasVersion(name string, version int) bool {
	return t.bucket(bucketVersions).Get(versionKey(name, version)) != nil
}

// PutVersion records fv under its name and version.
func (t *Tx) PutVersion(fv FileVersion) error {
	return t.put(bucketVersions, versionKey(fv.Name, fv.Version), fv)
}

// DeleteVersion removes one version of a stored name.
func (t *Tx) DeleteVersion(name string, version int) error {
	return t.delete(bucketVersions, versionKey(name, version))
}

// Versions returns every version of name, oldest first.
func (t *Tx) Versions(name string) ([]FileVersion, error) {
	var out []FileVersion
	err := t.eachVersion(append([]byte(name), 0), func(k []byte) bool { return len(k) == len(name)+5 }, func(fv FileVersion) error {
		out = append(out, fv)
		return nil
	})
	return out, err
}

// EachVersion calls fn with every version of every stored name, by name, then oldest
// version first.
func (t *Tx) EachVersion(fn func(fv FileVersion) error) error {
	return each(t, bucketVersions, func(_ []byte, fv *FileVersion) error { return fn(*fv) })
}

// EachVersionUnder calls fn with every version of every stored name under root (root
// itself included), in the order of EachVersion.
func (t *Tx) EachVersionUnder(root string, fn func(fv FileVersion) error) error {
	return t.eachVersion([]byte(root), func(k []byte) bool {
		name, _, ok := splitVersionKey(k)
		return ok && under(name, root)
	}, fn)
}

// eachVersion calls fn with the versions whose key has prefix and passes keep.
func (t *Tx) eachVersion(prefix []byte, keep func(k []byte) bool, fn func(fv FileVersion) error) error {
	c := t.bucket(bucketVersions).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if !keep(k) {
			continue
		}
		var fv FileVersion
		if err := decode(bucketVersions, k, v, &fv); err != nil {
			return err
		}
		if err := fn(fv); err != nil {
			return err
		}
	}
	return nil
}

// PutStat records what the local file stored as name looked like.
func (t *Tx) PutStat(name string, se StatEntry) error { return t.put(bucketStat, []byte(name), se) }

// DeleteStat forgets the local file stored as name.
func (t *Tx) DeleteStat(name string) error { return t.delete(bucketStat, []byte(name)) }

// EachStatUnder calls fn with the stat cache entry of every stored name under root (root
// itself included), by name.
func (t *Tx) EachStatUnder(root string, fn func(name string, se StatEntry) error) error {
	c := t.bucket(bucketStat).Cursor()
	for k, v := c.Seek([]byte(root)); k != nil && bytes.HasPrefix(k, []byte(root)); k, v = c.Next() {
		if !under(string(k), root) {
			continue
		}
		var se StatEntry
		if err := decode(bucketStat, k, v, &se); err != nil {
			return err
		}
		if err := fn(string(k), se); err != nil {
			return err
		}
	}
	return nil
}

// ClearStored empties the owner's books: objects, versions, the piece index, the stat
// cache and the probes waiting. What we hold for others, the peers' states and the
// message side stay.
func (t *Tx) ClearStored() error {
	return t.empty(bucketVersions, bucketObjects, bucketPieceIdx, bucketStat, bucketProbes)
}
