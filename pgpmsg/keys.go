package pgpmsg

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// maxKeyInput bounds how much key material ReadKeys and ReadIdentity accept.
const maxKeyInput = 16 << 20

// keyConfig is the configuration used to generate identities: v4 EdDSA-legacy
// Ed25519 primary key and a cv25519 encryption subkey, AES-256 preferred, no
// AEAD feature (so peers encrypt to us with SEIPDv1, readable by GnuPG 2.2),
// no compression.
func keyConfig(now time.Time) *packet.Config {
	return &packet.Config{
		Algorithm:     packet.PubKeyAlgoEdDSA,
		Curve:         packet.Curve25519,
		DefaultCipher: packet.CipherAES256,
		DefaultHash:   0, // SHA-256
		Time:          func() time.Time { return now },
	}
}

// Identity is our own key pair: an entity with unprotected secret keys able
// to sign and to decrypt.
type Identity struct {
	e   *pgp.Entity
	pub *Key
}

// Generate makes a new identity. If name looks like an e-mail address, the
// user id is "<name>"; otherwise it is name. Either way Name returns name.
// The key is created at now.
func Generate(name string, now time.Time) (*Identity, error) {
	if name == "" {
		return nil, fmt.Errorf("pgpmsg: generate: %w: empty name", ErrBadKey)
	}
	uidName, email := name, ""
	if isEmail(name) {
		uidName, email = "", name
	}
	e, err := pgp.NewEntity(uidName, "", email, keyConfig(now))
	if err != nil {
		return nil, fmt.Errorf("pgpmsg: generate %q: %w", name, err)
	}
	return newIdentity(e)
}

func isEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s && !strings.ContainsAny(s, "<>() ")
}

// ReadIdentity reads our secret key, armored or binary (for example the
// output of gpg --export-secret-keys --armor, exported without passphrase).
// The input must hold exactly one entity, whose secret keys are present and
// unprotected, that can sign and decrypt.
func ReadIdentity(r io.Reader) (*Identity, error) {
	el, err := readEntities(r)
	if err != nil {
		return nil, fmt.Errorf("pgpmsg: read identity: %w", err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("pgpmsg: read identity: %w: want exactly one key, have %d", ErrBadKey, len(el))
	}
	id, err := newIdentity(el[0])
	if err != nil {
		return nil, err
	}
	return id, nil
}

func newIdentity(e *pgp.Entity) (*Identity, error) {
	fail := func(format string, args ...any) (*Identity, error) {
		return nil, fmt.Errorf("pgpmsg: identity %s: "+format, append([]any{fingerprintOf(e.PrimaryKey.Fingerprint)}, args...)...)
	}
	if e.PrimaryKey.Version != 4 {
		return fail("%w: version %d key, want v4", ErrBadKey, e.PrimaryKey.Version)
	}
	if e.PrivateKey == nil {
		return fail("%w: no secret key (this is a public key)", ErrBadKey)
	}
	if e.PrivateKey.Dummy() {
		return fail("%w: secret primary key is a stub (gpg offline key); export the full key", ErrBadKey)
	}
	if e.PrivateKey.Encrypted {
		return fail("%w", ErrKeyProtected)
	}
	for _, sk := range e.Subkeys {
		if sk.PrivateKey != nil && sk.PrivateKey.Encrypted {
			return fail("%w (subkey %X)", ErrKeyProtected, sk.PublicKey.KeyId)
		}
	}
	warm(e)
	now := time.Now()
	sk, ok := e.SigningKey(now, nil)
	if !ok || sk.PrivateKey == nil || sk.PrivateKey.Dummy() {
		return fail("%w: no usable secret signing key", ErrBadKey)
	}
	ek, err := e.EncryptionKeyWithError(now, nil)
	if err != nil {
		return fail("%w: no usable encryption key: %v", ErrBadKey, err)
	}
	if ek.PrivateKey == nil || ek.PrivateKey.Dummy() {
		return fail("%w: no secret part for encryption key %X", ErrBadKey, ek.PublicKey.KeyId)
	}
	pub, err := publicPart(e)
	if err != nil {
		return fail("%w", err)
	}
	return &Identity{e: e, pub: pub}, nil
}

// Fingerprint returns the primary key's fingerprint.
func (id *Identity) Fingerprint() Fingerprint { return id.pub.fp }

// Name returns the primary user id's e-mail address if it has one, else its name.
func (id *Identity) Name() string { return entityName(id.e) }

// Public returns our public key, as peers see it.
func (id *Identity) Public() *Key { return id.pub }

// Entity returns the underlying go-crypto entity, secret keys included.
// Callers must not modify it.
func (id *Identity) Entity() *pgp.Entity { return id.e }

// WriteSecret writes the secret key, ASCII-armored and unprotected, in a
// form gpg --import accepts. Self-signatures are written as they are, not
// re-made.
func (id *Identity) WriteSecret(w io.Writer) error {
	aw, err := armor.Encode(w, pgp.PrivateKeyType, nil)
	if err != nil {
		return fmt.Errorf("pgpmsg: write secret key: %w", err)
	}
	serializeMu.Lock()
	err = id.e.SerializePrivateWithoutSigning(aw, nil)
	serializeMu.Unlock()
	if err != nil {
		return fmt.Errorf("pgpmsg: write secret key: %w", err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("pgpmsg: write secret key: %w", err)
	}
	// armor ends without a newline; gpg ends with one, and without it
	// concatenated blocks would run into each other.
	if _, err := io.WriteString(w, "\n"); err != nil {
		return fmt.Errorf("pgpmsg: write secret key: %w", err)
	}
	return nil
}

// EncryptionKeyIDs returns the key ids of our encryption-capable (sub)keys.
func (id *Identity) EncryptionKeyIDs() []uint64 { return encryptionKeyIDs(id.e) }

// Key is a peer's public key.
type Key struct {
	e    *pgp.Entity
	fp   Fingerprint
	aead bool // a WithAEAD copy: sealed to with SEIPDv2 AES-GCM
}

// ReadKeys reads one or more public keys, armored or binary. Several keys
// may be concatenated, also as several armored blocks. A secret key is
// accepted and reduced to its public part. Only v4 keys are accepted.
func ReadKeys(r io.Reader) ([]*Key, error) {
	el, err := readEntities(r)
	if err != nil {
		return nil, fmt.Errorf("pgpmsg: read keys: %w", err)
	}
	keys := make([]*Key, 0, len(el))
	for _, e := range el {
		k, err := publicPart(e)
		if err != nil {
			return nil, fmt.Errorf("pgpmsg: read keys: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// ReadKey is ReadKeys for input that must hold exactly one key.
func ReadKey(r io.Reader) (*Key, error) {
	keys, err := ReadKeys(r)
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("pgpmsg: read key: %w: want exactly one key, have %d", ErrBadKey, len(keys))
	}
	return keys[0], nil
}

// serializeMu serializes the serializing of entities: go-crypto's Signature.Serialize
// fills a field of the signature on first use, so two goroutines writing out one shared
// key (WithAEAD for two seals at once) race on it.
var serializeMu sync.Mutex

// publicPart returns e without any secret key material, as a new entity
// (e is serialized and read back, so nothing is shared).
func publicPart(e *pgp.Entity) (*Key, error) {
	if e.PrimaryKey.Version != 4 {
		return nil, fmt.Errorf("%w: key %X is version %d, want v4", ErrBadKey, e.PrimaryKey.Fingerprint, e.PrimaryKey.Version)
	}
	var buf bytes.Buffer
	serializeMu.Lock()
	err := e.Serialize(&buf)
	serializeMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	el, err := pgp.ReadKeyRing(&buf)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	if len(el) != 1 {
		return nil, fmt.Errorf("%w: public part of %X does not read back", ErrBadKey, e.PrimaryKey.Fingerprint)
	}
	warm(el[0])
	return &Key{e: el[0], fp: fingerprintOf(el[0].PrimaryKey.Fingerprint)}, nil
}

// warm verifies every self-signature and revocation of e once, now.
// go-crypto caches each signature's validity inside the entity on first
// use; doing it here, before e is shared, keeps concurrent Seal, Open and
// VerifyDetached calls from racing on those caches. The zero time makes
// go-crypto consider every signature and leave expiry to later checks.
func warm(e *pgp.Entity) {
	var zero time.Time
	e.Revoked(zero)
	e.LatestValidDirectSignature(zero, nil)
	for _, ident := range e.Identities {
		ident.Verify(zero, nil)
		ident.Revoked(nil, zero, nil)
	}
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		sk.LatestValidBindingSignature(zero, nil)
		sk.Revoked(nil, zero)
	}
}

// Fingerprint returns the primary key's fingerprint.
func (k *Key) Fingerprint() Fingerprint { return k.fp }

// Name returns the primary user id's e-mail address if it has one, else its name.
func (k *Key) Name() string { return entityName(k.e) }

// WriteArmored writes the public key ASCII-armored, as gpg --export --armor does.
func (k *Key) WriteArmored(w io.Writer) error {
	aw, err := armor.Encode(w, pgp.PublicKeyType, nil)
	if err != nil {
		return fmt.Errorf("pgpmsg: write key: %w", err)
	}
	serializeMu.Lock()
	err = k.e.Serialize(aw)
	serializeMu.Unlock()
	if err != nil {
		return fmt.Errorf("pgpmsg: write key: %w", err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("pgpmsg: write key: %w", err)
	}
	// armor ends without a newline; gpg ends with one, and without it
	// concatenated blocks would run into each other.
	if _, err := io.WriteString(w, "\n"); err != nil {
		return fmt.Errorf("pgpmsg: write key: %w", err)
	}
	return nil
}

// Entity returns the underlying go-crypto entity. Callers must not modify it.
func (k *Key) Entity() *pgp.Entity { return k.e }

// EncryptionKeyIDs returns the key ids of the key's encryption-capable (sub)keys.
func (k *Key) EncryptionKeyIDs() []uint64 { return encryptionKeyIDs(k.e) }

func encryptionKeyIDs(e *pgp.Entity) []uint64 {
	var ids []uint64
	for _, k := range e.DecryptionKeys(0, time.Time{}, nil) {
		ids = append(ids, k.PublicKey.KeyId)
	}
	return ids
}

func entityName(e *pgp.Entity) string {
	_, ident := e.PrimaryIdentity(time.Now(), nil)
	if ident == nil {
		// No currently valid identity: fall back to the first by name, so
		// the answer is at least stable.
		names := make([]string, 0, len(e.Identities))
		for n := range e.Identities {
			names = append(names, n)
		}
		if len(names) == 0 {
			return ""
		}
		sort.Strings(names)
		ident = e.Identities[names[0]]
	}
	if ident.UserId == nil {
		return ident.Name
	}
	if ident.UserId.Email != "" {
		return ident.UserId.Email
	}
	if ident.UserId.Name != "" {
		return ident.UserId.Name
	}
	return ident.Name
}

// readEntities reads key material, armored (possibly several blocks) or binary.
func readEntities(r io.Reader) (pgp.EntityList, error) {
	br := bufio.NewReader(io.LimitReader(r, maxKeyInput+1))
	armored, err := peekArmor(br)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	var el pgp.EntityList
	if !armored {
		data, err := io.ReadAll(br)
		if err != nil {
			return nil, err
		}
		if len(data) > maxKeyInput {
			return nil, fmt.Errorf("%w: key input over %d bytes", ErrTooLarge, maxKeyInput)
		}
		el, err = pgp.ReadKeyRing(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
	} else {
		// armor.Decode reads through br unchanged when it is a
		// *bufio.Reader of sufficient size, so blocks can follow each other.
		for {
			blk, err := armor.Decode(br)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%w: armor: %v", ErrBadKey, err)
			}
			if blk.Type != pgp.PublicKeyType && blk.Type != pgp.PrivateKeyType {
				return nil, fmt.Errorf("%w: armored block %q is not a key", ErrBadKey, blk.Type)
			}
			part, err := pgp.ReadKeyRing(blk.Body)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
			}
			// Drain the block so that its checksum is verified.
			if _, err := io.Copy(io.Discard, blk.Body); err != nil {
				return nil, fmt.Errorf("%w: armor: %v", ErrBadKey, err)
			}
			el = append(el, part...)
		}
		if _, err := br.Peek(1); err == nil {
			return nil, fmt.Errorf("%w: key input over %d bytes", ErrTooLarge, maxKeyInput)
		}
	}
	if len(el) == 0 {
		return nil, fmt.Errorf("%w: no key found", ErrBadKey)
	}
	return el, nil
}

// peekArmor reports whether br starts (after white space) with an armor
// header line. Binary OpenPGP never starts with white space or '-'.
func peekArmor(br *bufio.Reader) (bool, error) {
	b, err := br.Peek(512)
	if len(b) == 0 {
		if err == io.EOF {
			return false, errors.New("empty input")
		}
		return false, err
	}
	b = bytes.TrimLeft(b, " \t\r\n")
	return bytes.HasPrefix(b, []byte("-----BEGIN ")), nil
}
