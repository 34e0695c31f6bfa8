package agent

import (
	"crypto/sha256"
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

// The backup engine's books (their types are package books'). An owner stores objects:
// one large file's content, or a pack of small files (so that the number of messages
// grows with bytes, not with files). An object is cut into segments; each segment is
// Reed-Solomon coded into n pieces, each on a different peer. A file version names the
// object and the range of it that holds its content; a directory or a symlink is a
// version without content.

// Piece states, from the owner's side.
const (
	PieceSent      = books.PieceSent      // sealed into outgoing/, no answer yet
	PieceStored    = books.PieceStored    // the peer acknowledged it
	PieceLost      = books.PieceLost      // refused, failed a probe, forgotten, or its peer is gone
	PieceUnstoring = books.PieceUnstoring // an UNSTORE was sent; the record goes when it is acknowledged
)

type (
	// Object is one coded blob and where its pieces are.
	Object = books.Object
	// Segment is one coded part of an object.
	Segment = books.Segment
	// Piece is one shard of a segment, sealed and held by one peer.
	Piece = books.Piece
	// ManifestEntry describes one file version inside an object (or, for a directory or
	// a symlink, the entry itself).
	ManifestEntry = books.ManifestEntry
	// FileVersion is one stored version of a stored name.
	FileVersion = books.FileVersion
	// HeldPiece is a piece we keep for a peer.
	HeldPiece = books.HeldPiece
)

// Kinds of stored entries.
const (
	KindFile    = books.KindFile
	KindDir     = books.KindDir
	KindSymlink = books.KindSymlink
	// KindUnstored is an entry of a tombstone (tombstone.go), not a stored entry.
	KindUnstored = books.KindUnstored
)

// The sealed piece. A piece is an OpenPGP message sealed by the owner to its own key:
// a header that says what the piece is, then the object's manifest and the shard.
// Its Type is TypePiece and its Piece-Id fieldPiece (protocol.go).
const (
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
//
// The piece is kept whole in memory (its shard is staged from there), so it is opened
// into memory, in one buffer of about size bytes (the ciphertext's), and never spilled
// to a temporary file to be read back.
func (n *Node) openPiece(r io.Reader, maxSize, size int64) (*openedPiece, error) {
	msg, err := pgpmsg.Open(r, n.ID, pgpmsg.NewKeyring(n.ID.Public()), pgpmsg.OpenOptions{
		MaxSize: maxSize, MemLimit: int(min(maxSize, 1<<31)), SizeHint: size, TempDir: n.TmpDir(), Bound: true})
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
	body, err := msg.TakePayload()
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
