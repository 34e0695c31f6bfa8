package pgpmsg_test

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// dataPacketVersion returns the version of the message's encrypted data packet.
func dataPacketVersion(t *testing.T, msg []byte) (int, packet.AEADMode) {
	t.Helper()
	r := packet.NewReader(bytes.NewReader(msg))
	for {
		p, err := r.Next()
		if err != nil {
			t.Fatalf("no encrypted data packet: %v", err)
		}
		if se, ok := p.(*packet.SymmetricallyEncrypted); ok {
			return se.Version, se.Mode
		}
	}
}

func aeadHeader() pgpmsg.Header {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, "HELLO")
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, "2026-11-23T00:00:00Z")
	return h
}

func TestWithAEADSealsSEIPDv2GCM(t *testing.T) {
	alice, bob := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Identity(t, "bob")
	payload := bytes.Repeat([]byte("aead \x00\r\n"), 100_000)
	var v2 bytes.Buffer
	if err := pgpmsg.Seal(&v2, aeadHeader(), bytes.NewReader(payload), alice, bob.Public().WithAEAD()); err != nil {
		t.Fatal(err)
	}
	if v, mode := dataPacketVersion(t, v2.Bytes()); v != 2 || mode != packet.AEADModeGCM {
		t.Fatalf("encrypted data packet v%d mode %d, want v2 GCM", v, mode)
	}
	// The original key is untouched: sealing to it still gives SEIPDv1.
	var v1 bytes.Buffer
	if err := pgpmsg.Seal(&v1, aeadHeader(), bytes.NewReader(payload), alice, bob.Public()); err != nil {
		t.Fatal(err)
	}
	if v, _ := dataPacketVersion(t, v1.Bytes()); v != 1 {
		t.Fatalf("after WithAEAD, the original key gives v%d", v)
	}
	m, err := pgpmsg.Open(bytes.NewReader(v2.Bytes()), bob, pgpmsg.NewKeyring(alice.Public()), pgpmsg.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(m.Payload())
	m.Close()
	if !bytes.Equal(got, payload) {
		t.Fatal("payload differs")
	}
	// Tampered and truncated v2 messages are refused like v1 ones.
	bad := append([]byte(nil), v2.Bytes()...)
	bad[len(bad)/2] ^= 1
	if _, err := pgpmsg.Open(bytes.NewReader(bad), bob, pgpmsg.NewKeyring(alice.Public()), pgpmsg.OpenOptions{}); err == nil {
		t.Fatal("a tampered SEIPDv2 message opened")
	}
	cut := v2.Bytes()[:v2.Len()-100]
	if _, err := pgpmsg.Open(bytes.NewReader(cut), bob, pgpmsg.NewKeyring(alice.Public()), pgpmsg.OpenOptions{}); err == nil {
		t.Fatal("a truncated SEIPDv2 message opened")
	}
	// Signed by someone else than expected: still refused.
	if _, err := pgpmsg.Open(bytes.NewReader(v2.Bytes()), bob, pgpmsg.NewKeyring(pgpmsgtest.Key(t, "carol")), pgpmsg.OpenOptions{}); !errors.Is(err, pgpmsg.ErrUnknownSigner) {
		t.Fatalf("unknown signer: %v", err)
	}
}

func TestWithAEADConcurrent(t *testing.T) {
	alice, bob := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Identity(t, "bob")
	k := bob.Public()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b bytes.Buffer
			if err := pgpmsg.Seal(&b, aeadHeader(), bytes.NewReader([]byte("x")), alice, k.WithAEAD()); err != nil {
				t.Error(err)
			}
			if err := pgpmsg.Seal(&b, aeadHeader(), bytes.NewReader([]byte("x")), alice, k); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}
