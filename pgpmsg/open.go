package pgpmsg

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Defaults for OpenOptions.
const (
	DefaultMaxSize  = 1 << 30
	DefaultMemLimit = 1 << 20
)

// OpenOptions tunes Open. The zero value is usable.
type OpenOptions struct {
	MaxSize  int64  // max plaintext bytes (header+payload); 0 means DefaultMaxSize (1 GiB)
	MemLimit int    // payloads up to this many bytes stay in memory; 0 means DefaultMemLimit (1 MiB)
	TempDir  string // directory for larger payloads; "" means os.TempDir()
	Bound    bool   // also accept a bound message (SealBound) in place of a signed one
	// SizeHint, when known, is about the payload's size (the ciphertext's, say): a
	// payload that stays in memory is then read into one buffer of that size at once,
	// not one grown as it arrives. It is never trusted as a bound.
	SizeHint int64
}

// Opened is a message that passed every check of Open. Close it to release
// the temporary file a large payload is kept in.
type Opened struct {
	Header Header
	Signer *Key
	// Bound says the message was bound (SealBound): the payload after its first
	// Signed-Head bytes matched the header's Tail-Sha256.
	Bound bool

	mem  []byte   // payload, if it fit in MemLimit
	file *os.File // else the payload in a temporary file
	size int64
}

// Payload returns a new reader of the whole payload, positioned at 0.
// Readers are independent of each other. Call it before Close: readers of
// a payload kept in a temporary file fail once o is closed.
func (o *Opened) Payload() io.ReadSeeker {
	if o.file != nil {
		return io.NewSectionReader(o.file, 0, o.size)
	}
	return bytes.NewReader(o.mem)
}

// PayloadSize returns the payload length in bytes.
func (o *Opened) PayloadSize() int64 { return o.size }

// PayloadBytes returns a copy of the whole payload; meant for small messages.
func (o *Opened) PayloadBytes() ([]byte, error) {
	if o.file == nil {
		return bytes.Clone(o.mem), nil
	}
	b := make([]byte, o.size)
	if _, err := o.file.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("pgpmsg: payload: %w", err)
	}
	return b, nil
}

// TakePayload returns the whole payload and releases it from o: the buffer itself when
// it is in memory (no copy), else read from the temporary file. For a payload read once.
func (o *Opened) TakePayload() ([]byte, error) {
	if o.file == nil {
		b := o.mem
		o.mem = nil
		return b, nil
	}
	return o.PayloadBytes()
}

// Close removes the temporary file, if any. It is safe to call more than once.
func (o *Opened) Close() error {
	o.mem = nil
	if o.file == nil {
		return nil
	}
	f := o.file
	o.file = nil
	err := f.Close()
	if rerr := os.Remove(f.Name()); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("pgpmsg: close: %w", err)
	}
	return nil
}

// Open decrypts and verifies a message made by Seal (binary or ASCII-armored)
// and returns it only if all of these hold:
//   - it is encrypted to me (else ErrNotForUs);
//   - it was read to its end without error and its MDC is intact (else
//     ErrTruncated; ErrMalformed if it is not an OpenPGP message at all);
//   - it carries exactly one signature, which verifies (else ErrUnsigned,
//     ErrBadSignature), by a key in peers (else ErrUnknownSigner); or, with
//     opts.Bound, it is a bound message (SealBound) whose signature, by a key
//     in peers, verifies over its header and head, and whose tail matches the
//     hash in the header (else ErrTruncated);
//   - the plaintext is at most opts.MaxSize bytes (else ErrTooLarge);
//   - the header parses and Validates (else ErrMalformed);
//   - the header's From is the signer (else ErrSignerMismatch) and its To is
//     me (else ErrWrongRecipient).
//
// The payload is held in memory up to opts.MemLimit bytes and in a
// temporary file in opts.TempDir beyond that; on error nothing is left
// behind. Memory use does not depend on the payload size.
func Open(src io.Reader, me *Identity, peers *Keyring, opts OpenOptions) (*Opened, error) {
	if me == nil {
		return nil, fmt.Errorf("pgpmsg: open: %w: nil identity", ErrBadKey)
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.MemLimit <= 0 {
		opts.MemLimit = DefaultMemLimit
	}

	br := bufio.NewReaderSize(src, 64<<10)
	armored, err := peekArmor(br)
	if err != nil {
		return nil, fmt.Errorf("pgpmsg: open: %w: %w", ErrMalformed, err)
	}
	fr := &framer{r: br}
	if armored {
		blk, err := armor.Decode(br)
		if err != nil {
			return nil, fmt.Errorf("pgpmsg: open: %w: armor: %w", ErrMalformed, err)
		}
		if blk.Type != "PGP MESSAGE" {
			return nil, fmt.Errorf("pgpmsg: open: %w: armored block %q is not a message", ErrMalformed, blk.Type)
		}
		fr.r = bufio.NewReaderSize(blk.Body, 64<<10)
	}

	ring := &openRing{el: peers.entities(me.e), mine: make(map[uint64]bool)}
	for _, id := range me.EncryptionKeyIDs() {
		ring.mine[id] = true
	}
	md, err := pgp.ReadMessage(fr, ring, nil, &packet.Config{})
	if err != nil {
		if fr.bad != nil {
			return nil, fmt.Errorf("pgpmsg: open: %w", fr.bad)
		}
		return nil, fmt.Errorf("pgpmsg: open: %w", classifyReadMessage(err, ring.addressedToMe))
	}
	if !md.IsEncrypted {
		return nil, fmt.Errorf("pgpmsg: open: %w: not encrypted", ErrMalformed)
	}
	// Cheap early rejections: the one-pass signature packets are known now.
	// They are unauthenticated, but they only ever make us refuse.
	bound := !md.IsSigned && opts.Bound
	switch {
	case bound:
	case !md.IsSigned:
		return nil, fmt.Errorf("pgpmsg: open: %w", ErrUnsigned)
	case len(md.SignatureCandidates) != 1:
		return nil, fmt.Errorf("pgpmsg: open: %w: %d signatures, want 1", ErrBadSignature, len(md.SignatureCandidates))
	case md.SignatureCandidates[0].SignedByEntity == nil:
		return nil, fmt.Errorf("pgpmsg: open: %w: issuer key id %016X", ErrUnknownSigner, md.SignatureCandidates[0].IssuerKeyId)
	}

	// Never read UnverifiedBody again after it returned EOF: go-crypto
	// would verify the signature a second time, on a finished hash.
	plain := &limitReader{r: &stickyErrReader{r: md.UnverifiedBody}, n: opts.MaxSize}
	hbr := bufio.NewReaderSize(plain, 16<<10)
	sink := &spill{memLimit: opts.MemLimit, dir: opts.TempDir}
	if opts.SizeHint > 0 {
		sink.mem = make([]byte, 0, min(opts.SizeHint, int64(opts.MemLimit)))
	}
	ok := false
	defer func() {
		if !ok {
			sink.discard()
		}
	}()

	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	hdr, headerErr := readHeader(hbr)
	var head int64
	var tail *tailHasher
	if bound && headerErr == nil {
		head, headerErr = boundHead(hdr)
	}
	var readErr error
	switch {
	case headerErr == nil && bound:
		tail = &tailHasher{w: sink, skip: head, h: sha256.New()}
		readErr = drainInto(tail, hbr, plain, *bp)
	case headerErr == nil:
		readErr = drainInto(sink, hbr, plain, *bp)
	case errors.Is(headerErr, ErrMalformed) || errors.Is(headerErr, ErrUnsigned) || errors.Is(headerErr, ErrBadSignature) ||
		errors.Is(headerErr, ErrTooLarge) && !errors.Is(headerErr, errPlainTooLarge):
		// Read on, so that a damaged or forged message is reported as
		// such rather than by its header.
		readErr = drainInto(io.Discard, hbr, plain, *bp)
	default:
		readErr, headerErr = headerErr, nil
	}
	if readErr == nil {
		readErr = fr.finish()
	}
	if readErr == nil {
		readErr = sink.finish()
	}
	if fr.bad != nil {
		return nil, fmt.Errorf("pgpmsg: open: %w", fr.bad)
	}
	if readErr != nil {
		if errors.Is(readErr, errPlainTooLarge) {
			return nil, fmt.Errorf("pgpmsg: open: %w: plaintext over %d bytes", ErrTooLarge, opts.MaxSize)
		}
		if errors.Is(readErr, errSpill) {
			return nil, fmt.Errorf("pgpmsg: open: %w", readErr)
		}
		return nil, fmt.Errorf("pgpmsg: open: %w: %w", ErrTruncated, readErr)
	}

	if headerErr != nil && bound { // no signature to check first
		return nil, fmt.Errorf("pgpmsg: open: %w", headerErr)
	}
	var signer *Key
	if bound {
		var pay io.ReaderAt = bytes.NewReader(sink.mem)
		if sink.file != nil {
			pay = sink.file
		}
		signer, err = checkBound(hdr, pay, sink.size, head, tail.h.Sum(nil), peers)
	} else {
		signer, err = checkMessageSignature(md, peers, time.Now())
	}
	if err != nil {
		return nil, fmt.Errorf("pgpmsg: open: %w", err)
	}
	if headerErr != nil {
		return nil, fmt.Errorf("pgpmsg: open: %w", headerErr)
	}
	if err := hdr.validate(); err != nil {
		return nil, fmt.Errorf("pgpmsg: open: %w", err)
	}
	if from := hdr.From(); from != signer.fp {
		return nil, fmt.Errorf("pgpmsg: open: %w: From %s, signed by %s", ErrSignerMismatch, from, signer.fp)
	}
	if to := hdr.To(); to != me.Fingerprint() {
		return nil, fmt.Errorf("pgpmsg: open: %w: To %s, we are %s", ErrWrongRecipient, to, me.Fingerprint())
	}
	o := &Opened{Header: hdr, Signer: signer, Bound: bound, mem: sink.mem, file: sink.file, size: sink.size}
	if o.file != nil {
		o.mem = nil
	}
	ok = true
	return o, nil
}

// checkMessageSignature decides on the signature of a message read to EOF.
func checkMessageSignature(md *pgp.MessageDetails, peers *Keyring, now time.Time) (*Key, error) {
	switch {
	case !md.IsSigned:
		return nil, ErrUnsigned
	case len(md.SignatureCandidates) != 1:
		return nil, fmt.Errorf("%w: %d signatures, want 1", ErrBadSignature, len(md.SignatureCandidates))
	case !md.IsVerified:
		return nil, fmt.Errorf("%w: signature not checked", ErrBadSignature)
	case errors.Is(md.SignatureError, pgperrors.ErrUnknownIssuer):
		return nil, fmt.Errorf("%w: %w", ErrUnknownSigner, md.SignatureError)
	case md.SignatureError != nil:
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, md.SignatureError)
	case md.SignedBy == nil || md.SignedBy.Entity == nil || md.Signature == nil:
		return nil, fmt.Errorf("%w: no verified signer", ErrBadSignature)
	}
	if err := checkSignature(md.Signature, now); err != nil {
		return nil, err
	}
	fp := fingerprintOf(md.SignedBy.Entity.PrimaryKey.Fingerprint)
	k, ok := peers.Lookup(fp)
	if !ok {
		return nil, fmt.Errorf("%w: signed by %s", ErrUnknownSigner, fp)
	}
	return k, nil
}

// classifyReadMessage maps an error of pgp.ReadMessage (which reads the
// packets up to the start of the literal data) to our sentinels.
func classifyReadMessage(err error, addressedToMe bool) error {
	var decErr pgperrors.DecryptWithSessionKeyError
	switch {
	case errors.Is(err, pgperrors.ErrKeyIncorrect) && addressedToMe:
		return fmt.Errorf("%w: addressed to our key, but the session key or data does not decrypt: %w", ErrTruncated, err)
	case errors.Is(err, pgperrors.ErrKeyIncorrect):
		return fmt.Errorf("%w: %w", ErrNotForUs, err)
	case err == io.EOF:
		return fmt.Errorf("%w: ends before the encrypted data", ErrTruncated)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &decErr),
		errors.Is(err, pgperrors.ErrMDCHashMismatch), errors.Is(err, pgperrors.ErrMDCMissing),
		errors.Is(err, pgperrors.ErrAEADTagVerification):
		return fmt.Errorf("%w: %w", ErrTruncated, err)
	default:
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
}

// openRing is the keyring Open hands to go-crypto: our identity and the
// peers. It notes whether a session key was addressed to one of our keys,
// to tell "not for us" from "for us but damaged".
type openRing struct {
	el            pgp.EntityList
	mine          map[uint64]bool
	addressedToMe bool
}

func (r *openRing) KeysById(id uint64) []pgp.Key { return r.el.KeysById(id) }

func (r *openRing) EntitiesById(id uint64) []*pgp.Entity {
	if r.mine[id] {
		r.addressedToMe = true
	}
	return r.el.EntitiesById(id)
}

// drainInto moves what hbr has buffered, then the rest of plain, to dst.
// It reads plain directly, in buf-sized reads, to keep the per-Read cost
// of the OpenPGP layers low.
func drainInto(dst io.Writer, hbr *bufio.Reader, plain io.Reader, buf []byte) error {
	if n := hbr.Buffered(); n > 0 {
		b, _ := hbr.Peek(n)
		if _, err := dst.Write(b); err != nil {
			return err
		}
		hbr.Discard(n)
	}
	// hbr may hold an error from plain (e.g. EOF); plain repeats it.
	return copyChunks(dst, plain, buf)
}

var errPlainTooLarge = fmt.Errorf("%w: plaintext limit", ErrTooLarge)

// limitReader fails with errPlainTooLarge once more than n bytes come from r.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			return 0, errPlainTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// stickyErrReader returns the first error of r forever after, without
// calling r again.
type stickyErrReader struct {
	r   io.Reader
	err error
}

func (s *stickyErrReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	s.err = err
	return n, err
}

var errSpill = errors.New("temporary file")

// spill keeps up to memLimit bytes in memory and moves everything to a
// temporary file once more arrive. File writes run on their own goroutine,
// double-buffered, so that disk I/O overlaps decryption.
type spill struct {
	memLimit int
	dir      string
	mem      []byte
	file     *os.File
	size     int64

	free, full chan *[]byte // buffers from copyBufs, empty / to be written
	done       chan struct{}
	mu         sync.Mutex
	werr       error
	finished   bool
}

func (s *spill) Write(p []byte) (int, error) {
	if s.file == nil && len(s.mem)+len(p) <= s.memLimit {
		s.mem = append(s.mem, p...)
		s.size += int64(len(p))
		return len(p), nil
	}
	if s.file == nil {
		if err := s.start(); err != nil {
			return 0, err
		}
	}
	total := len(p)
	for len(p) > 0 {
		if err := s.writeErr(); err != nil {
			return 0, fmt.Errorf("%w: %w", errSpill, err)
		}
		bp := <-s.free
		b := (*bp)[:min(len(p), cap(*bp))]
		copy(b, p)
		*bp = b
		s.full <- bp
		p = p[len(b):]
	}
	s.size += int64(total)
	return total, nil
}

// start creates the temporary file, moves the memory buffer there and
// starts the writer.
func (s *spill) start() error {
	f, err := os.CreateTemp(s.dir, "pgpmsg-*.tmp")
	if err != nil {
		return fmt.Errorf("%w: %w", errSpill, err)
	}
	s.file = f
	if _, err := f.Write(s.mem); err != nil {
		return fmt.Errorf("%w: %w", errSpill, err)
	}
	s.mem = nil
	s.free, s.full, s.done = make(chan *[]byte, 2), make(chan *[]byte, 2), make(chan struct{})
	for range 2 {
		s.free <- copyBufs.Get().(*[]byte)
	}
	go s.writer()
	return nil
}

func (s *spill) writer() {
	defer close(s.done)
	for bp := range s.full {
		if s.writeErr() == nil {
			if _, err := s.file.Write(*bp); err != nil {
				s.mu.Lock()
				s.werr = err
				s.mu.Unlock()
			}
		}
		*bp = (*bp)[:cap(*bp)]
		s.free <- bp
	}
}

func (s *spill) writeErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.werr
}

// finish waits for pending writes and returns the first write error.
func (s *spill) finish() error {
	if s.full == nil || s.finished {
		return nil
	}
	s.finished = true
	close(s.full)
	<-s.done
	for range 2 {
		copyBufs.Put(<-s.free)
	}
	if err := s.writeErr(); err != nil {
		return fmt.Errorf("%w: %w", errSpill, err)
	}
	return nil
}

// discard stops the writer and removes the temporary file, if any.
func (s *spill) discard() {
	s.finish()
	s.mem = nil
	if s.file != nil {
		s.file.Close()
		os.Remove(s.file.Name())
		s.file = nil
	}
}

// copyBufSize is the size of the buffers Open moves plaintext with: large enough that
// the per-Read costs of the OpenPGP layers vanish.
const copyBufSize = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyChunks copies src to dst through buf, one Write per Read.
func copyChunks(dst io.Writer, src io.Reader, buf []byte) error {
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
