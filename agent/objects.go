package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
)

// The backup engine's books. An owner stores objects: one large file's content, or a
// pack of small files (so that the number of messages grows with bytes, not with files).
// An object is cut into segments; each segment is Reed-Solomon coded into n pieces, each
// on a different peer. A file version names the object and the range of it that holds
// its content; a directory or a symlink is a version without content.
var (
	bucketObjects  = []byte("objects")  // object id -> Object (JSON)
	bucketVersions = []byte("versions") // stored name \x00 version (4 bytes) -> FileVersion (JSON)
	bucketPieceIdx = []byte("pieceidx") // piece id -> object id \x00 segment \x00 index: finds a piece from an ACK
	bucketStat     = []byte("statcache")
	bucketHeld     = []byte("held")     // peer \x00 piece id -> HeldPiece (JSON): what we keep for others
	bucketRecovery = []byte("recovery") // job name -> RecoveryJob (JSON)
	bucketProbes   = []byte("probes")   // Message-Id of a PROBE -> ProbeState (JSON)
)

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

	msgFile string // the STORE file in outgoing/, while the store runs
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

// statEntry caches what a local file looked like when it was last stored.
type statEntry struct {
	Size    int64     `json:"size"`
	MTime   time.Time `json:"mtime"`
	Ino     uint64    `json:"ino"`
	CTime   time.Time `json:"ctime"`
	Mode    uint32    `json:"mode"`
	Name    string    `json:"name"`
	Version int       `json:"version"`
	Hash    string    `json:"hash"`
}

// HeldPiece is a piece we keep for a peer.
type HeldPiece struct {
	Size   int64     `json:"size"`
	Stored time.Time `json:"stored"`
	// Sent is the Date of the STORE: a storage list older than it does not free the piece.
	Sent time.Time `json:"sent"`
}

func versionKey(name string, version int) []byte {
	k := make([]byte, 0, len(name)+5)
	k = append(k, name...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint32(k, uint32(version))
}

// eachVersion calls fn with every version of every stored name under root (root itself
// included), in key order: by name, then oldest version first.
func eachVersion(tx *books.Tx, root string, fn func(name string, version int, fv FileVersion) error) error {
	c := tx.Bucket(bucketVersions).Cursor()
	for k, v := c.Seek([]byte(root)); k != nil && bytes.HasPrefix(k, []byte(root)); k, v = c.Next() {
		name, ver, ok := splitVersionKey(k)
		if !ok || !under(name, root) {
			continue
		}
		var fv FileVersion
		if err := json.Unmarshal(v, &fv); err != nil {
			return err
		}
		if err := fn(name, ver, fv); err != nil {
			return err
		}
	}
	return nil
}

func splitVersionKey(k []byte) (string, int, bool) {
	if len(k) < 5 || k[len(k)-5] != 0 {
		return "", 0, false
	}
	return string(k[:len(k)-5]), int(binary.BigEndian.Uint32(k[len(k)-4:])), true
}

func heldKey(peer, piece string) []byte { return []byte(peer + "\x00" + piece) }

func getObject(tx *books.Tx, id string) (*Object, error) {
	var o Object
	ok, err := getJSON(tx.Bucket(bucketObjects), []byte(id), &o)
	if err != nil || !ok {
		return nil, err
	}
	return &o, nil
}

func putObject(tx *books.Tx, o *Object) error {
	return putJSON(tx.Bucket(bucketObjects), []byte(o.ID), o)
}

func pieceIdxValue(obj string, seg, idx int) []byte {
	return []byte(obj + "\x00" + strconv.Itoa(seg) + "\x00" + strconv.Itoa(idx))
}

// findPiece returns the object, segment and piece with the given id.
func findPiece(tx *books.Tx, piece string) (*Object, int, int, error) {
	v := tx.Bucket(bucketPieceIdx).Get([]byte(piece))
	if v == nil {
		return nil, 0, 0, nil
	}
	parts := bytes.Split(v, []byte{0})
	if len(parts) != 3 {
		return nil, 0, 0, fmt.Errorf("piece index: bad entry for %s", piece)
	}
	seg, _ := strconv.Atoi(string(parts[1])) // the index (parts[2]) is informative: pieces are found by id
	o, err := getObject(tx, string(parts[0]))
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

// versions returns every version of name, oldest first.
func versions(tx *books.Tx, name string) ([]FileVersion, error) {
	var out []FileVersion
	prefix := append([]byte(name), 0)
	c := tx.Bucket(bucketVersions).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != len(prefix)+4 {
			continue
		}
		var fv FileVersion
		if err := json.Unmarshal(v, &fv); err != nil {
			return nil, err
		}
		out = append(out, fv)
	}
	return out, nil
}

// The sealed piece. A piece is an OpenPGP message sealed by the owner to its own key:
// a header that says what the piece is, then the object's manifest and the shard.
const (
	TypePiece = "PIECE"

	fieldPiece       = "Piece-Id"
	fieldObject      = "Object"
	fieldSegment     = "Segment"
	fieldSegments    = "Segments"
	fieldIndex       = "Index"
	fieldK           = "K"
	fieldN           = "N"
	fieldObjectSize  = "Object-Size"
	fieldSegmentSize = "Segment-Size"
	fieldSegmentLen  = "Segment-Length"
	fieldShardHash   = "Shard-Hash"
	fieldManifestLen = "Manifest-Length"
)

// PieceInfo is what a sealed piece says about itself.
type PieceInfo struct {
	Piece       string
	Object      string
	Segment     int
	Segments    int
	Index       int
	K, N        int
	ObjectSize  int64
	SegmentSize int64 // nominal segment size of the object
	SegmentLen  int64 // this segment's length
	ShardHash   [32]byte
}

func (pi PieceInfo) header(owner pgpmsg.Fingerprint, date time.Time, manifestLen int) pgpmsg.Header {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, ProtocolVersion)
	h.Set(pgpmsg.FieldType, TypePiece)
	h.Set(pgpmsg.FieldFrom, string(owner))
	h.Set(pgpmsg.FieldTo, string(owner))
	h.Set(pgpmsg.FieldMessageID, pi.Piece)
	h.Set(pgpmsg.FieldDate, date.UTC().Format(time.RFC3339Nano))
	h.Set(fieldPiece, pi.Piece)
	h.Set(fieldObject, pi.Object)
	h.Set(fieldSegment, strconv.Itoa(pi.Segment))
	h.Set(fieldSegments, strconv.Itoa(pi.Segments))
	h.Set(fieldIndex, strconv.Itoa(pi.Index))
	h.Set(fieldK, strconv.Itoa(pi.K))
	h.Set(fieldN, strconv.Itoa(pi.N))
	h.Set(fieldObjectSize, strconv.FormatInt(pi.ObjectSize, 10))
	h.Set(fieldSegmentSize, strconv.FormatInt(pi.SegmentSize, 10))
	h.Set(fieldSegmentLen, strconv.FormatInt(pi.SegmentLen, 10))
	h.Set(fieldShardHash, hex.EncodeToString(pi.ShardHash[:]))
	h.Set(fieldManifestLen, strconv.Itoa(manifestLen))
	return h
}

// maxManifest bounds a piece's manifest: a pack of many small files has a long one.
const maxManifest = 64 << 20

func parsePieceInfo(h pgpmsg.Header) (PieceInfo, int, error) {
	var pi PieceInfo
	if h.Get(pgpmsg.FieldType) != TypePiece {
		return pi, 0, fmt.Errorf("piece: type %q, want %s", h.Get(pgpmsg.FieldType), TypePiece)
	}
	pi.Piece = h.Get(fieldPiece)
	pi.Object = h.Get(fieldObject)
	if !validID(pi.Piece) || !validID(pi.Object) {
		return pi, 0, errors.New("piece: bad Piece-Id or Object")
	}
	ints := []struct {
		f   string
		dst *int
		max int
	}{{fieldSegment, &pi.Segment, 1 << 30}, {fieldSegments, &pi.Segments, 1 << 30}, {fieldIndex, &pi.Index, 255}, {fieldK, &pi.K, 255}, {fieldN, &pi.N, 256}}
	for _, x := range ints {
		v, err := strconv.Atoi(h.Get(x.f))
		if err != nil || v < 0 || v > x.max {
			return pi, 0, fmt.Errorf("piece: bad %s", x.f)
		}
		*x.dst = v
	}
	if pi.K < 1 || pi.N < pi.K || pi.Index >= pi.N || pi.Segment >= pi.Segments {
		return pi, 0, errors.New("piece: inconsistent code parameters")
	}
	var err error
	for _, x := range []struct {
		f   string
		dst *int64
	}{{fieldObjectSize, &pi.ObjectSize}, {fieldSegmentSize, &pi.SegmentSize}, {fieldSegmentLen, &pi.SegmentLen}} {
		*x.dst, err = strconv.ParseInt(h.Get(x.f), 10, 64)
		if err != nil || *x.dst < 0 {
			return pi, 0, fmt.Errorf("piece: bad %s", x.f)
		}
	}
	hb, err := hex.DecodeString(h.Get(fieldShardHash))
	if err != nil || len(hb) != 32 {
		return pi, 0, errors.New("piece: bad Shard-Hash")
	}
	copy(pi.ShardHash[:], hb)
	ml, err := strconv.Atoi(h.Get(fieldManifestLen))
	if err != nil || ml < 0 || ml > maxManifest {
		return pi, 0, errors.New("piece: bad Manifest-Length")
	}
	return pi, ml, nil
}

// validID reports whether s looks like our random ids: 32 lower-case hex digits.
func validID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// openedPiece is a verified piece: what it says, its manifest and its shard.
type openedPiece struct {
	Info     PieceInfo
	Manifest []ManifestEntry
	Shard    []byte
}

// openPiece opens and checks a sealed piece: sealed by us, to us, and its shard matches
// the hash it carries.
func (n *Node) openPiece(r io.Reader, maxSize int64) (*openedPiece, error) {
	msg, err := pgpmsg.Open(r, n.ID, pgpmsg.NewKeyring(n.ID.Public()), pgpmsg.OpenOptions{MaxSize: maxSize, TempDir: n.TmpDir(), Bound: true})
	if err != nil {
		return nil, fmt.Errorf("piece: %w", err)
	}
	defer msg.Close()
	if msg.Signer.Fingerprint() != n.Fingerprint() {
		return nil, errors.New("piece: not sealed by us")
	}
	pi, ml, err := parsePieceInfo(msg.Header)
	if err != nil {
		return nil, err
	}
	if msg.PayloadSize() < int64(ml) || msg.PayloadSize()-int64(ml) > 1<<31 {
		return nil, errors.New("piece: payload shorter than its manifest")
	}
	body, err := msg.PayloadBytes()
	if err != nil {
		return nil, fmt.Errorf("piece: %w", err)
	}
	op := &openedPiece{Info: pi, Shard: body[ml:]}
	if err := json.Unmarshal(body[:ml], &op.Manifest); err != nil {
		return nil, fmt.Errorf("piece: manifest: %w", err)
	}
	switch {
	case !msg.Bound: // signed whole, as pieces were before they were bound
		if sha256.Sum256(op.Shard) != pi.ShardHash {
			return nil, errors.New("piece: shard does not match its hash")
		}
	// Bound: Open checked all after the head against Tail-Sha256; the piece's own
	// fields must name the same head and hash.
	case msg.Header.Get(pgpmsg.FieldTailSHA256) != hex.EncodeToString(pi.ShardHash[:]) ||
		msg.Header.Get(pgpmsg.FieldSignedHead) != strconv.Itoa(ml):
		return nil, errors.New("piece: bound to another hash or manifest length than it says")
	}
	return op, nil
}
