package pgpmsg

import (
	"bufio"
	"fmt"
	"io"
	"sync"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// copyBufSize is the size of the buffer payloads are moved with: large
// enough that per-Write costs of the OpenPGP layers vanish, small enough
// that the SEIPDv1 writer's per-Write temporary stays small.
const copyBufSize = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Seal writes one OpenPGP message to dst: the header h followed by payload
// (which may be nil), as binary literal data, signed by from and encrypted
// to to (SEIPDv1 given dibs keys, no compression).
//
// From and To are filled in from the keys if empty; Seal fails with
// ErrSignerMismatch or ErrWrongRecipient if they name other keys, and with
// ErrMalformed if h does not Validate. h itself is not modified. On error,
// dst may hold a partial message that must be discarded.
//
// Memory use does not depend on the payload size.
func Seal(dst io.Writer, h Header, payload io.Reader, from *Identity, to *Key) error {
	if from == nil || to == nil {
		return fmt.Errorf("pgpmsg: seal: %w: nil identity or key", ErrBadKey)
	}
	h = h.Clone()
	if err := setFingerprint(&h, FieldFrom, from.Fingerprint(), ErrSignerMismatch); err != nil {
		return err
	}
	if err := setFingerprint(&h, FieldTo, to.Fingerprint(), ErrWrongRecipient); err != nil {
		return err
	}
	if err := h.validate(); err != nil {
		return fmt.Errorf("pgpmsg: seal: %w", err)
	}
	hdr, err := h.marshal()
	if err != nil {
		return err
	}

	// The OpenPGP writers emit many tiny writes (packet length bytes);
	// batch them so that a file or socket dst sees few large writes.
	bw := bufio.NewWriterSize(dst, 64<<10)
	// Never a nil config: go-crypto v1.5.2 panics with one when the
	// recipient advertises SEIPDv2 (LIBRARIES.md §1.8).
	cfg := &packet.Config{DefaultCipher: packet.CipherAES256}
	w, err := pgp.Encrypt(bw, []*pgp.Entity{to.e}, nil, []*pgp.Entity{from.e}, &pgp.FileHints{} /* IsUTF8 false: literal format 'b' */, cfg)
	if err != nil {
		return fmt.Errorf("pgpmsg: seal to %s: %w", to.fp, err)
	}
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("pgpmsg: seal: %w", err)
	}
	if payload != nil {
		// Not io.Copy: a WriterTo payload (bytes.Reader) would hand the
		// whole payload to one Write, and the SEIPDv1 writer allocates a
		// temporary as large as each Write.
		bp := copyBufs.Get().(*[]byte)
		err := copyChunks(w, payload, *bp)
		copyBufs.Put(bp)
		if err != nil {
			return fmt.Errorf("pgpmsg: seal: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("pgpmsg: seal: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("pgpmsg: seal: %w", err)
	}
	return nil
}

func setFingerprint(h *Header, name string, fp Fingerprint, mismatch error) error {
	switch vs := h.Values(name); {
	case len(vs) == 0 || len(vs) == 1 && vs[0] == "":
		h.Set(name, string(fp))
	case len(vs) == 1 && vs[0] == string(fp):
	default:
		return fmt.Errorf("pgpmsg: seal: %w: header %s is %q, key is %s", mismatch, name, vs[0], fp)
	}
	return nil
}

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
