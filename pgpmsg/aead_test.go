package pgpmsg_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// dataPacket returns the message's encrypted data packet, with the versions of the
// session key packets before it.
func dataPacket(t testing.TB, msg []byte) (*packet.SymmetricallyEncrypted, []int) {
	t.Helper()
	var pkesk []int
	r := packet.NewReader(bytes.NewReader(msg))
	for {
		p, err := r.Next()
		if err != nil {
			t.Fatalf("no encrypted data packet: %v", err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			pkesk = append(pkesk, p.Version)
		case *packet.SymmetricallyEncrypted:
			return p, pkesk
		}
	}
}

func TestWithAEAD_SealsSEIPDv2GCM(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	orig := bob.Public()
	aead := orig.WithAEAD()
	if aead == orig || aead.Fingerprint() != orig.Fingerprint() {
		t.Fatalf("WithAEAD gave %p %s, original %p %s", aead, aead.Fingerprint(), orig, orig.Fingerprint())
	}
	se, pkesk := dataPacket(t, seal(t, newHeader("STORE"), patterned(1000), alice, aead))
	if se.Version != 2 || se.Cipher != packet.CipherAES256 || se.Mode != packet.AEADModeGCM {
		t.Fatalf("sealed with SEIPD v%d cipher %d mode %d, want v2 AES-256 (%d) GCM (%d)",
			se.Version, se.Cipher, se.Mode, packet.CipherAES256, packet.AEADModeGCM)
	}
	if len(pkesk) != 1 || pkesk[0] != 6 {
		t.Fatalf("session key packets %v, want one v6", pkesk)
	}

	// The original key is untouched: sealing to it still gives SEIPDv1, which
	// GnuPG 2.2 reads. So does a key read afresh from its armored form.
	se, pkesk = dataPacket(t, seal(t, newHeader("STORE"), patterned(1000), alice, orig))
	if se.Version != 1 || len(pkesk) != 1 || pkesk[0] != 3 {
		t.Fatalf("after WithAEAD the original key seals SEIPD v%d with PKESK %v, want v1 with [3]", se.Version, pkesk)
	}
	var arm bytes.Buffer
	if err := aead.WriteArmored(&arm); err != nil {
		t.Fatal(err)
	}
	reread, err := pgpmsg.ReadKey(&arm)
	if err != nil {
		t.Fatal(err)
	}
	if se, _ = dataPacket(t, seal(t, newHeader("STORE"), nil, alice, reread)); se.Version != 1 {
		t.Fatalf("the AEAD copy, written out and read back, seals v%d: the override leaked into the key", se.Version)
	}
}

func TestWithAEAD_RoundTrip(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	const chunk = 64 << 10 // Seal's AEAD chunk and Write size
	if se, _ := dataPacket(t, seal(t, newHeader("STORE"), nil, alice, bob.Public().WithAEAD())); se.ChunkSizeByte != 10 {
		t.Fatalf("chunk size byte %d, want 10 (64 KiB)", se.ChunkSizeByte)
	}
	for _, size := range []int{0, 1, 1000, chunk - 300, chunk - 1, chunk, chunk + 1, 256<<10 + 1, 3*chunk + 17} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			payload := patterned(size)
			msg := seal(t, newHeader("STORE"), payload, alice, bob.Public().WithAEAD())
			// MemLimit 64 KiB: the larger payloads go through the temp-file spill.
			o, err := openWith(t, msg, bob, pgpmsgtest.Keyring(t, "alice"), pgpmsg.OpenOptions{MemLimit: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			got, err := o.PayloadBytes()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("payload of %d bytes came back as %d different bytes", len(payload), len(got))
			}
			if o.Signer.Fingerprint() != alice.Fingerprint() {
				t.Fatalf("signer %s", o.Signer.Fingerprint())
			}
		})
	}
	// Sealing to ourselves, as a node does with its pieces: the identity's public key is
	// the key to seal to.
	msg := seal(t, newHeader("STORE"), patterned(5000), alice, alice.Public().WithAEAD())
	if se, _ := dataPacket(t, msg); se.Version != 2 {
		t.Fatalf("sealed to self with SEIPD v%d", se.Version)
	}
	o, err := openWith(t, msg, alice, pgpmsg.NewKeyring(alice.Public()), pgpmsg.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := o.PayloadBytes(); !bytes.Equal(got, patterned(5000)) {
		t.Fatal("payload sealed to self differs")
	}
}

// TestWithAEAD_RejectsLikeV1 damages a SEIPDv1 and a SEIPDv2 message the same way and
// requires the sentinel the v1 message is known to give (TestOpen_Rejects) for both.
func TestWithAEAD_RejectsLikeV1(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	payload := patterned(600 << 10) // several AEAD chunks; spills at MemLimit 64 KiB
	msgs := map[string][]byte{
		"v1": seal(t, newHeader("STORE"), payload, alice, bob.Public()),
		"v2": seal(t, newHeader("STORE"), payload, alice, bob.Public().WithAEAD()),
	}
	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x40
		return c
	}
	type damage struct {
		name string
		do   func([]byte) []byte
		want error
	}
	damages := []damage{
		{"tampered middle", func(b []byte) []byte { return flip(b, len(b)/2) }, pgpmsg.ErrTruncated},
		{"tampered first chunk", func(b []byte) []byte { return flip(b, 1000) }, pgpmsg.ErrTruncated},
		{"tampered near end", func(b []byte) []byte { return flip(b, len(b)-3) }, pgpmsg.ErrTruncated},
		{"tampered last byte", func(b []byte) []byte { return flip(b, len(b)-1) }, pgpmsg.ErrTruncated},
		{"trailing garbage", func(b []byte) []byte { return append(bytes.Clone(b), 0xca, 3, 'P', 'G', 'P') }, pgpmsg.ErrMalformed},
		{"trailing zero bytes", func(b []byte) []byte { return append(bytes.Clone(b), 0, 0, 0, 0) }, pgpmsg.ErrMalformed},
	}
	for _, cut := range []int{1, 20, 100, 1000, 256 << 10, 300 << 10} {
		damages = append(damages, damage{"cut to " + strconv.Itoa(cut), func(b []byte) []byte { return b[:cut] }, pgpmsg.ErrTruncated})
	}
	for _, back := range []int{1, 2, 16, 17, 30, 100, 200, 1000} {
		damages = append(damages, damage{"cut by " + strconv.Itoa(back), func(b []byte) []byte { return b[:len(b)-back] }, pgpmsg.ErrTruncated})
	}
	peers := pgpmsgtest.Keyring(t, "alice")
	for _, d := range damages {
		for _, v := range []string{"v1", "v2"} {
			t.Run(d.name+"/"+v, func(t *testing.T) {
				_, err := openWith(t, d.do(msgs[v]), bob, peers, pgpmsg.OpenOptions{MemLimit: 64 << 10})
				wantErr(t, err, d.want)
			})
		}
	}
	// The undamaged messages open, and the signer checks hold for v2 as for v1.
	for v, msg := range msgs {
		if _, err := openWith(t, msg, bob, peers, pgpmsg.OpenOptions{MemLimit: 64 << 10}); err != nil {
			t.Fatalf("%s undamaged: %v", v, err)
		}
		_, err := openWith(t, msg, bob, pgpmsgtest.Keyring(t, "carol"), pgpmsg.OpenOptions{})
		if !errors.Is(err, pgpmsg.ErrUnknownSigner) {
			t.Fatalf("%s, signer not a peer: %v", v, err)
		}
		_, err = openWith(t, msg, id(t, "carol"), peers, pgpmsg.OpenOptions{})
		if !errors.Is(err, pgpmsg.ErrNotForUs) {
			t.Fatalf("%s, opened by another node: %v", v, err)
		}
	}
}

// TestWithAEAD_DamageSweep flips one bit at offsets all through a SEIPDv2 message and
// cuts it at many lengths: Open never accepts it, and says why with a damage sentinel.
func TestWithAEAD_DamageSweep(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	msg := seal(t, newHeader("STORE"), patterned(300<<10), alice, bob.Public().WithAEAD())
	sweepDamage(t, msg, bob, pgpmsgtest.Keyring(t, "alice"), patterned(300<<10), 997, 4099)
}

// sweepDamage flips one bit at offsets all through msg (every byte of the session key
// packet and the data packet's header, then every stride bytes) and cuts it every cut
// bytes: Open never accepts it, and says why with a damage sentinel. The session key
// packet is not authenticated, and go-crypto reads a v6 one's "length of the next two
// fields" octet only as zero or not: a flip there may still open, acceptable only if
// what opens is exactly payload.
func sweepDamage(t *testing.T, msg []byte, me *pgpmsg.Identity, peers *pgpmsg.Keyring, payload []byte, stride, cut int) {
	t.Helper()
	keyPacketEnd := 2 + int(msg[1])
	try := func(what string, at int, m []byte) {
		t.Helper()
		o, err := openWith(t, m, me, peers, pgpmsg.OpenOptions{MemLimit: 64 << 10})
		if err == nil {
			got, rerr := io.ReadAll(o.Payload())
			o.Close()
			if at < 0 || at >= keyPacketEnd || rerr != nil || !bytes.Equal(got, payload) {
				t.Fatalf("%s: opened (%d bytes, %v)", what, len(got), rerr)
			}
			return
		}
		if !errors.Is(err, pgpmsg.ErrTruncated) && !errors.Is(err, pgpmsg.ErrMalformed) && !errors.Is(err, pgpmsg.ErrNotForUs) {
			t.Fatalf("%s: %v, want ErrTruncated, ErrMalformed or ErrNotForUs", what, err)
		}
	}
	for at := 0; at < len(msg); at += max(1, min(at/64, stride)) {
		m := bytes.Clone(msg)
		m[at] ^= 0x01
		try(fmt.Sprintf("bit flipped at %d of %d", at, len(msg)), at, m)
	}
	for n := 0; n < len(msg); n += cut {
		try(fmt.Sprintf("cut to %d of %d", n, len(msg)), -1, msg[:n])
	}
}

// TestWithAEAD_Concurrent derives AEAD copies of one shared key and seals to both it and
// them, and opens, from several goroutines (run with -race).
func TestWithAEAD_Concurrent(t *testing.T) {
	alice, bob := id(t, "alice"), id(t, "bob")
	shared, err := pgpmsg.ReadKey(bytes.NewReader(pgpmsgtest.SecretKey(t, "bob")))
	if err != nil {
		t.Fatal(err)
	}
	peers := pgpmsgtest.Keyring(t, "alice")
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			payload := patterned(10_000 + g)
			for _, k := range []*pgpmsg.Key{shared.WithAEAD(), shared} {
				var b bytes.Buffer
				if err := pgpmsg.Seal(&b, newHeader("STORE"), bytes.NewReader(payload), alice, k); err != nil {
					t.Error(err)
					return
				}
				o, err := pgpmsg.Open(bytes.NewReader(b.Bytes()), bob, peers, pgpmsg.OpenOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				got, _ := io.ReadAll(o.Payload())
				o.Close()
				if !bytes.Equal(got, payload) {
					t.Error("payload differs")
				}
			}
		})
	}
	wg.Wait()
	// And afterwards the shared key still seals SEIPDv1.
	if se, _ := dataPacket(t, seal(t, newHeader("STORE"), nil, alice, shared)); se.Version != 1 {
		t.Fatalf("shared key seals v%d after concurrent WithAEAD", se.Version)
	}
}
