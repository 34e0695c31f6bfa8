package pgpmsg

import (
	"bufio"
	"fmt"
	"io"
	"sync"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// sealChunk is the size of the Writes Seal makes into the OpenPGP writers, and of the
// SEIPDv2 chunks. Each layer buffers about one Write (go-crypto's partial-length
// writers hold a whole one), freshly allocated per message: small chunks keep that
// memory few and hot in cache, while per-Write costs stay near 1 %.
const sealChunk = 64 << 10

var sealBufs = sync.Pool{New: func() any { b := make([]byte, sealChunk); return &b }}

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
	hdr, err := sealHeader(h, from, to)
	if err != nil {
		return err
	}
	return seal(dst, hdr, payload, from, to)
}

// addressed returns a copy of h with From and To filled in from the keys, or fails if
// they name other keys.
func addressed(h Header, from *Identity, to *Key) (Header, error) {
	h = h.Clone()
	if err := setFingerprint(&h, FieldFrom, from.Fingerprint(), ErrSignerMismatch); err != nil {
		return h, err
	}
	return h, setFingerprint(&h, FieldTo, to.Fingerprint(), ErrWrongRecipient)
}

// sealHeader is the header block of a message from from to to: h addressed, valid.
func sealHeader(h Header, from *Identity, to *Key) ([]byte, error) {
	h, err := addressed(h, from, to)
	if err != nil {
		return nil, err
	}
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("pgpmsg: seal: %w", err)
	}
	return h.marshal()
}

// seal encrypts hdr and payload to to, signed by from unless it is nil.
func seal(dst io.Writer, hdr []byte, payload io.Reader, from *Identity, to *Key) error {
	// The OpenPGP writers emit many tiny writes (packet length bytes);
	// batch them so that a file or socket dst sees few large writes.
	bw := bufio.NewWriterSize(dst, 64<<10)
	// Never a nil config: go-crypto v1.5.2 panics with one when the
	// recipient advertises SEIPDv2 (LIBRARIES.md §1.8).
	cfg := &packet.Config{DefaultCipher: packet.CipherAES256,
		// Used only when the recipient's key advertises SEIPDv2 (Key.WithAEAD).
		AEADConfig: &packet.AEADConfig{DefaultMode: packet.AEADModeGCM, ChunkSize: sealChunk}}
	var signers []*pgp.Entity
	if from != nil {
		signers = []*pgp.Entity{from.e}
	}
	w, err := pgp.Encrypt(bw, []*pgp.Entity{to.e}, nil, signers, &pgp.FileHints{} /* IsUTF8 false: literal format 'b' */, cfg)
	if err != nil {
		return fmt.Errorf("pgpmsg: seal to %s: %w", to.fp, err)
	}
	bp := sealBufs.Get().(*[]byte)
	err = writeChunks(w, hdr, payload, *bp)
	sealBufs.Put(bp)
	if err != nil {
		return fmt.Errorf("pgpmsg: seal: %w", err)
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

// writeChunks writes hdr and then payload (which may be nil) to dst in Writes of
// exactly len(buf) bytes, but for the last. Not io.Copy: a WriterTo payload
// (bytes.Reader) would hand the whole payload to one Write, and the SEIPDv1 writer
// allocates a temporary as large as each Write. And equal power-of-two Writes let
// go-crypto's partial-length writer pass each through whole instead of growing its
// buffer.
func writeChunks(dst io.Writer, hdr []byte, payload io.Reader, buf []byte) error {
	n := 0
	if len(hdr) >= len(buf) {
		if _, err := dst.Write(hdr); err != nil {
			return err
		}
	} else {
		n = copy(buf, hdr)
	}
	for payload != nil {
		m, rerr := payload.Read(buf[n:])
		n += m
		if n == len(buf) {
			if _, err := dst.Write(buf); err != nil {
				return err
			}
			n = 0
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if n > 0 {
		if _, err := dst.Write(buf[:n]); err != nil {
			return err
		}
	}
	return nil
}
