package pgpmsg_test

import (
	"bytes"
	"crypto"
	_ "crypto/sha1"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

func TestParseFingerprint(t *testing.T) {
	const canon = "83BC8FD7D87072905492EA39D969CAE3EB3CE80C"
	for _, in := range []string{canon, strings.ToLower(canon), "83BC 8FD7 D870 7290 5492  EA39 D969 CAE3 EB3C E80C"} {
		fp, err := pgpmsg.ParseFingerprint(in)
		if err != nil || fp != canon {
			t.Errorf("ParseFingerprint(%q) = %q, %v", in, fp, err)
		}
	}
	for _, in := range []string{"", canon[1:], canon + "0", "G" + canon[1:], "0x" + canon[2:], canon[:39] + "\t"} {
		if fp, err := pgpmsg.ParseFingerprint(in); err == nil {
			t.Errorf("ParseFingerprint(%q) = %q, want error", in, fp)
		}
	}
	if id := pgpmsg.Fingerprint(canon).KeyID(); id != 0xD969CAE3EB3CE80C {
		t.Errorf("KeyID = %X", id)
	}
}

func TestGenerate(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, name := range []string{"alice.dibs@example.org", "Plain Name", "node-7"} {
		i, err := pgpmsg.Generate(name, now)
		if err != nil {
			t.Fatal(err)
		}
		if i.Name() != name || i.Public().Name() != name {
			t.Errorf("Name() = %q / %q, want %q", i.Name(), i.Public().Name(), name)
		}
		e := i.Public().Entity()
		if e.PrimaryKey.PubKeyAlgo != packet.PubKeyAlgoEdDSA || e.PrimaryKey.Version != 4 || !e.PrimaryKey.CreationTime.Equal(now) {
			t.Errorf("primary key: algo %v version %d created %v", e.PrimaryKey.PubKeyAlgo, e.PrimaryKey.Version, e.PrimaryKey.CreationTime)
		}
		if len(e.Subkeys) != 1 || e.Subkeys[0].PublicKey.PubKeyAlgo != packet.PubKeyAlgoECDH {
			t.Errorf("want one ECDH subkey")
		}
		sig, err := e.PrimarySelfSignature(time.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if sig.SEIPDv2 || len(sig.PreferredCipherSuites) > 0 {
			t.Error("key advertises SEIPDv2: GnuPG 2.2 could not read messages to it")
		}
		if len(sig.PreferredSymmetric) == 0 || sig.PreferredSymmetric[0] != uint8(packet.CipherAES256) {
			t.Errorf("preferred ciphers %v, want AES256 first", sig.PreferredSymmetric)
		}
		for _, c := range sig.PreferredCompression {
			if c != 0 {
				t.Errorf("key advertises compression %v", sig.PreferredCompression)
			}
		}
		if len(i.EncryptionKeyIDs()) != 1 || i.EncryptionKeyIDs()[0] != e.Subkeys[0].PublicKey.KeyId {
			t.Errorf("EncryptionKeyIDs = %x", i.EncryptionKeyIDs())
		}
	}
	if _, err := pgpmsg.Generate("", now); err == nil {
		t.Error("empty name accepted")
	}
	if _, err := pgpmsg.Generate("bad <name>", now); err == nil {
		t.Error("name with <> accepted")
	}
	// The uid of an e-mail name is "<addr>".
	i, _ := pgpmsg.Generate("x@example.org", now)
	for uid := range i.Public().Entity().Identities {
		if uid != "<x@example.org>" {
			t.Errorf("uid %q", uid)
		}
	}
}

func TestIdentity_WriteReadSecret(t *testing.T) {
	alice := id(t, "alice")
	var buf bytes.Buffer
	if err := alice.WriteSecret(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")) {
		t.Fatal("not armored")
	}
	// Written as is, not re-signed: identical to the fixture file.
	if !bytes.Equal(buf.Bytes(), pgpmsgtest.SecretKey(t, "alice")) {
		t.Error("WriteSecret of a loaded key differs from its input")
	}
	back, err := pgpmsg.ReadIdentity(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if back.Fingerprint() != alice.Fingerprint() || back.Name() != "alice.dibs@example.org" {
		t.Fatalf("read back %s %q", back.Fingerprint(), back.Name())
	}
	// Binary input works too.
	blk, _ := armor.Decode(bytes.NewReader(pgpmsgtest.SecretKey(t, "alice")))
	var bin bytes.Buffer
	bin.ReadFrom(blk.Body)
	if back, err := pgpmsg.ReadIdentity(&bin); err != nil || back.Fingerprint() != alice.Fingerprint() {
		t.Fatalf("binary: %v", err)
	}
}

func TestReadIdentity_Rejects(t *testing.T) {
	// passphrase-protected
	fresh, _ := pgpmsg.Generate("p@example.org", time.Now().Add(-time.Hour))
	e := fresh.Entity()
	if err := e.EncryptPrivateKeys([]byte("secret"), nil); err != nil {
		t.Fatal(err)
	}
	var prot bytes.Buffer
	if err := e.SerializePrivateWithoutSigning(&prot, nil); err != nil {
		t.Fatal(err)
	}
	_, err := pgpmsg.ReadIdentity(&prot)
	wantErr(t, err, pgpmsg.ErrKeyProtected)
	if !strings.Contains(err.Error(), "passphrase") {
		t.Errorf("error does not mention the passphrase: %v", err)
	}

	var pub bytes.Buffer
	id(t, "alice").Public().WriteArmored(&pub)
	_, err = pgpmsg.ReadIdentity(&pub)
	wantErr(t, err, pgpmsg.ErrBadKey)

	two := append(bytes.Clone(pgpmsgtest.SecretKey(t, "alice")), pgpmsgtest.SecretKey(t, "bob")...)
	_, err = pgpmsg.ReadIdentity(bytes.NewReader(two))
	wantErr(t, err, pgpmsg.ErrBadKey)

	_, err = pgpmsg.ReadIdentity(strings.NewReader(""))
	wantErr(t, err, pgpmsg.ErrBadKey)
	_, err = pgpmsg.ReadIdentity(strings.NewReader("garbage garbage"))
	wantErr(t, err, pgpmsg.ErrBadKey)

	// A sign-only key (no encryption subkey) is no identity.
	signOnly, err := pgp.NewEntity("s", "", "s@example.org", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519})
	if err != nil {
		t.Fatal(err)
	}
	signOnly.Subkeys = nil
	var so bytes.Buffer
	signOnly.SerializePrivateWithoutSigning(&so, nil)
	_, err = pgpmsg.ReadIdentity(&so)
	wantErr(t, err, pgpmsg.ErrBadKey)
}

func TestReadKeys(t *testing.T) {
	var armored, binary bytes.Buffer
	names := []string{"alice", "bob", "carol"}
	for _, n := range names {
		k := pgpmsgtest.Key(t, n)
		if err := k.WriteArmored(&armored); err != nil {
			t.Fatal(err)
		}
		k.Entity().Serialize(&binary)
	}
	for what, in := range map[string][]byte{"armored": armored.Bytes(), "binary": binary.Bytes()} {
		keys, err := pgpmsg.ReadKeys(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(keys) != len(names) {
			t.Fatalf("%s: %d keys", what, len(keys))
		}
		for i, k := range keys {
			if k.Fingerprint() != pgpmsgtest.Key(t, names[i]).Fingerprint() || k.Name() != names[i]+".dibs@example.org" {
				t.Errorf("%s: key %d = %s %q", what, i, k.Fingerprint(), k.Name())
			}
			if k.Entity().PrivateKey != nil {
				t.Errorf("%s: public key has a private part", what)
			}
		}
	}
	// A secret key yields its public part only.
	k, err := pgpmsg.ReadKey(bytes.NewReader(pgpmsgtest.SecretKey(t, "dave")))
	if err != nil {
		t.Fatal(err)
	}
	if k.Entity().PrivateKey != nil || k.Fingerprint() != id(t, "dave").Fingerprint() {
		t.Fatal("ReadKey(secret) kept secret material or changed key")
	}
	for _, sk := range k.Entity().Subkeys {
		if sk.PrivateKey != nil {
			t.Fatal("secret subkey kept")
		}
	}
	var out bytes.Buffer
	k.WriteArmored(&out)
	if bytes.Contains(out.Bytes(), []byte("PRIVATE")) {
		t.Fatal("WriteArmored wrote a private key block")
	}
	if _, err := pgpmsg.ReadKey(bytes.NewReader(armored.Bytes())); err == nil {
		t.Error("ReadKey accepted three keys")
	}
	_, err = pgpmsg.ReadKeys(strings.NewReader(""))
	wantErr(t, err, pgpmsg.ErrBadKey)
	_, err = pgpmsg.ReadKeys(strings.NewReader("-----BEGIN PGP MESSAGE-----\n\nwcBMA\n-----END PGP MESSAGE-----\n"))
	wantErr(t, err, pgpmsg.ErrBadKey)
}

func TestKeyring(t *testing.T) {
	kr := pgpmsgtest.Keyring(t, "alice", "bob")
	if _, ok := kr.Lookup(id(t, "carol").Fingerprint()); ok {
		t.Fatal("carol found")
	}
	if k, ok := kr.Lookup(id(t, "bob").Fingerprint()); !ok || k.Name() != "bob.dibs@example.org" {
		t.Fatal("bob not found")
	}
	kr.Add(pgpmsgtest.Key(t, "alice")) // again: no duplicate
	kr.Add(nil)
	if n := len(kr.Keys()); n != 2 {
		t.Fatalf("%d keys", n)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				kr.Add(pgpmsgtest.Key(t, pgpmsgtest.Names[i%len(pgpmsgtest.Names)]))
			}
			kr.Lookup(id(t, "alice").Fingerprint())
			kr.Keys()
		}()
	}
	wg.Wait()
}

func TestDetached(t *testing.T) {
	alice := id(t, "alice")
	kr := pgpmsgtest.Keyring(t, "alice", "bob")
	data := []byte("challenge 1234\r\n\x00")
	sig, err := alice.SignDetached(data)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pgpmsg.VerifyDetached(kr, data, sig)
	if err != nil || k.Fingerprint() != alice.Fingerprint() {
		t.Fatalf("VerifyDetached: %v", err)
	}
	// armored signature
	var asig bytes.Buffer
	aw, _ := armor.Encode(&asig, "PGP SIGNATURE", nil)
	aw.Write(sig)
	aw.Close()
	if _, err := pgpmsg.VerifyDetached(kr, data, asig.Bytes()); err != nil {
		t.Fatalf("armored: %v", err)
	}
	_, err = pgpmsg.VerifyDetached(kr, append(bytes.Clone(data), 'x'), sig)
	wantErr(t, err, pgpmsg.ErrBadSignature)
	_, err = pgpmsg.VerifyDetached(pgpmsgtest.Keyring(t, "bob"), data, sig)
	wantErr(t, err, pgpmsg.ErrUnknownSigner)
	_, err = pgpmsg.VerifyDetached(pgpmsg.NewKeyring(), data, sig)
	wantErr(t, err, pgpmsg.ErrUnknownSigner)
	_, err = pgpmsg.VerifyDetached(kr, data, nil)
	wantErr(t, err, pgpmsg.ErrBadSignature)
	_, err = pgpmsg.VerifyDetached(kr, data, []byte("garbage"))
	wantErr(t, err, pgpmsg.ErrBadSignature)
	bad := bytes.Clone(sig)
	bad[len(bad)-5] ^= 1
	_, err = pgpmsg.VerifyDetached(kr, data, bad)
	wantErr(t, err, pgpmsg.ErrBadSignature)
	// two signatures
	sig2, _ := id(t, "bob").SignDetached(data)
	_, err = pgpmsg.VerifyDetached(kr, data, append(bytes.Clone(sig), sig2...))
	wantErr(t, err, pgpmsg.ErrBadSignature)
	// SHA-1 is refused.
	_, err = pgpmsg.VerifyDetached(kr, data, sha1Sig(t, alice, data))
	wantErr(t, err, pgpmsg.ErrBadSignature)
	// A signature from the future is refused.
	var fut bytes.Buffer
	later := time.Now().Add(48 * time.Hour)
	if err := pgp.DetachSign(&fut, []*pgp.Entity{alice.Entity()}, bytes.NewReader(data), &packet.Config{Time: func() time.Time { return later }}); err != nil {
		t.Fatal(err)
	}
	_, err = pgpmsg.VerifyDetached(kr, data, fut.Bytes())
	wantErr(t, err, pgpmsg.ErrBadSignature)
}

// sha1Sig makes a detached v4 signature over data with SHA-1, which no
// go-crypto writer will choose on its own.
func sha1Sig(t testing.TB, signer *pgpmsg.Identity, data []byte) []byte {
	t.Helper()
	priv := signer.Entity().PrivateKey
	sig := &packet.Signature{
		Version:      4,
		SigType:      packet.SigTypeBinary,
		PubKeyAlgo:   priv.PubKeyAlgo,
		Hash:         crypto.SHA1,
		CreationTime: time.Now(),
		IssuerKeyId:  &priv.KeyId,
	}
	h := crypto.SHA1.New()
	h.Write(data)
	no := false
	if err := sig.Sign(h, priv, &packet.Config{NonDeterministicSignaturesViaNotation: &no}); err != nil {
		t.Skipf("go-crypto refuses to make a SHA-1 signature: %v", err)
	}
	var buf bytes.Buffer
	if err := sig.Serialize(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
