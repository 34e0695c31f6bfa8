package pgpmsg

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// PeekUnverified decrypts a small message (at most maxSize bytes of plaintext) and
// returns its header and payload WITHOUT checking its signature. It serves one purpose:
// to learn which key to check a message with whose signer is not known in advance (a
// contract proposal carries its sender's key). Nothing it returns may be believed until
// Open, given that key, has accepted the same bytes.
func PeekUnverified(data []byte, me *Identity, maxSize int64) (Header, []byte, error) {
	var r io.Reader = bytes.NewReader(data)
	br := bufio.NewReader(r)
	armored, err := peekArmor(br)
	if err != nil {
		return Header{}, nil, fmt.Errorf("pgpmsg: peek: %w: %w", ErrMalformed, err)
	}
	r = br
	if armored {
		blk, err := armor.Decode(br)
		if err != nil || blk.Type != "PGP MESSAGE" {
			return Header{}, nil, fmt.Errorf("pgpmsg: peek: %w: not an armored message", ErrMalformed)
		}
		r = blk.Body
	}
	ring := &openRing{el: NewKeyring().entities(me.e), mine: make(map[uint64]bool)}
	md, err := pgp.ReadMessage(r, ring, nil, &packet.Config{})
	if err != nil {
		return Header{}, nil, fmt.Errorf("pgpmsg: peek: %w", classifyReadMessage(err, ring.addressedToMe))
	}
	if !md.IsEncrypted {
		return Header{}, nil, fmt.Errorf("pgpmsg: peek: %w: not encrypted", ErrMalformed)
	}
	plain, err := io.ReadAll(io.LimitReader(&stickyErrReader{r: md.UnverifiedBody}, maxSize+1))
	if err != nil {
		return Header{}, nil, fmt.Errorf("pgpmsg: peek: %w: %w", ErrTruncated, err)
	}
	if int64(len(plain)) > maxSize {
		return Header{}, nil, fmt.Errorf("pgpmsg: peek: %w: plaintext over %d bytes", ErrTooLarge, maxSize)
	}
	hbr := bufio.NewReader(bytes.NewReader(plain))
	h, err := readHeader(hbr)
	if err != nil {
		return Header{}, nil, fmt.Errorf("pgpmsg: peek: %w", err)
	}
	payload, _ := io.ReadAll(hbr)
	return h, payload, nil
}
