package pgpmsg

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// maxFutureSkew is how far in the future a signature's creation time may
// lie before we call the signature bad.
const maxFutureSkew = 24 * time.Hour

// SignDetached returns a binary detached signature of data by id.
func (id *Identity) SignDetached(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := pgp.DetachSign(&buf, []*pgp.Entity{id.e}, bytes.NewReader(data), &packet.Config{}); err != nil {
		return nil, fmt.Errorf("pgpmsg: sign: %w", err)
	}
	return buf.Bytes(), nil
}

// VerifyDetached checks a detached signature (binary or armored) of data
// and returns the signer. The signature must verify with a key in kr
// (ErrUnknownSigner otherwise) and must not be bad (ErrBadSignature: also
// weak hashes such as SHA-1, several signatures, or a creation time far in
// the future).
func VerifyDetached(kr *Keyring, data, sig []byte) (*Key, error) {
	if bytes.HasPrefix(bytes.TrimLeft(sig, " \t\r\n"), []byte("-----BEGIN ")) {
		blk, err := armor.Decode(bytes.NewReader(sig))
		if err != nil {
			return nil, fmt.Errorf("pgpmsg: verify: %w: armor: %w", ErrBadSignature, err)
		}
		if blk.Type != pgp.SignatureType {
			return nil, fmt.Errorf("pgpmsg: verify: %w: armored block %q is not a signature", ErrBadSignature, blk.Type)
		}
		if sig, err = io.ReadAll(blk.Body); err != nil {
			return nil, fmt.Errorf("pgpmsg: verify: %w: armor: %w", ErrBadSignature, err)
		}
	}
	if n, err := countSignatures(sig); err != nil {
		return nil, fmt.Errorf("pgpmsg: verify: %w: %w", ErrBadSignature, err)
	} else if n != 1 {
		return nil, fmt.Errorf("pgpmsg: verify: %w: want one signature, have %d", ErrBadSignature, n)
	}
	s, signer, err := pgp.VerifyDetachedSignature(kr.entities(), bytes.NewReader(data), bytes.NewReader(sig), &packet.Config{})
	if err != nil {
		if errors.Is(err, pgperrors.ErrUnknownIssuer) {
			return nil, fmt.Errorf("pgpmsg: verify: %w: %w", ErrUnknownSigner, err)
		}
		return nil, fmt.Errorf("pgpmsg: verify: %w: %w", ErrBadSignature, err)
	}
	if err := checkSignature(s, time.Now()); err != nil {
		return nil, fmt.Errorf("pgpmsg: verify: %w", err)
	}
	k, ok := kr.Lookup(fingerprintOf(signer.PrimaryKey.Fingerprint))
	if !ok { // cannot happen: signer came from kr
		return nil, fmt.Errorf("pgpmsg: verify: %w", ErrUnknownSigner)
	}
	return k, nil
}

// checkSignature applies our own rules on top of go-crypto's.
func checkSignature(s *packet.Signature, now time.Time) error {
	if s == nil {
		return fmt.Errorf("%w: no signature", ErrBadSignature)
	}
	if s.SigType != packet.SigTypeBinary {
		return fmt.Errorf("%w: signature type %#x, want binary (0x00)", ErrBadSignature, int(s.SigType))
	}
	switch s.Hash {
	case crypto.SHA256, crypto.SHA384, crypto.SHA512, crypto.SHA3_256, crypto.SHA3_512:
	default:
		return fmt.Errorf("%w: weak or unknown hash %v", ErrBadSignature, s.Hash)
	}
	if s.CreationTime.After(now.Add(maxFutureSkew)) {
		return fmt.Errorf("%w: signature made in the future (%s)", ErrBadSignature, s.CreationTime.UTC().Format(time.RFC3339))
	}
	return nil
}

// countSignatures counts the signature packets in a detached signature.
func countSignatures(sig []byte) (int, error) {
	pr := packet.NewReader(bytes.NewReader(sig))
	n := 0
	for {
		p, err := pr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if _, ok := p.(*packet.Signature); !ok {
			return n, fmt.Errorf("unexpected %T packet in a detached signature", p)
		}
		n++
	}
}

// Recipients lists the key ids a message is encrypted to, read from the
// public-key encrypted session key packets in front of the encrypted data.
// It reads no further than the start of the encrypted data and accepts
// binary or ASCII-armored input. The answer is unauthenticated: a cheap
// filter ("is this file for us?"), never a security decision on its own.
// A key id of 0 stands for a hidden recipient.
func Recipients(r io.Reader) ([]uint64, error) {
	br := bufio.NewReader(r)
	armored, err := peekArmor(br)
	if err != nil {
		return nil, fmt.Errorf("pgpmsg: recipients: %w: %w", ErrMalformed, err)
	}
	var src io.Reader = br
	if armored {
		blk, err := armor.Decode(br)
		if err != nil {
			return nil, fmt.Errorf("pgpmsg: recipients: %w: armor: %w", ErrMalformed, err)
		}
		if blk.Type != "PGP MESSAGE" {
			return nil, fmt.Errorf("pgpmsg: recipients: %w: armored block %q is not a message", ErrMalformed, blk.Type)
		}
		src = blk.Body
	}
	pr := packet.NewReader(src)
	var ids []uint64
	for {
		p, err := pr.Next()
		if err != nil {
			if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("pgpmsg: recipients: %w: no encrypted data", ErrTruncated)
			}
			return nil, fmt.Errorf("pgpmsg: recipients: %w: %w", ErrMalformed, err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			ids = append(ids, p.KeyId)
		case *packet.SymmetricKeyEncrypted:
			// passphrase-encrypted session key: no recipient key
		case *packet.SymmetricallyEncrypted, *packet.AEADEncrypted:
			if len(ids) == 0 {
				return nil, fmt.Errorf("pgpmsg: recipients: %w: no public-key recipients", ErrMalformed)
			}
			return ids, nil
		default:
			return nil, fmt.Errorf("pgpmsg: recipients: %w: not an encrypted message (found %T)", ErrMalformed, p)
		}
	}
}
