package pgpmsg_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// A message from a stranger: Peek shows what key it claims, and only Open with that key
// accepts it.
func TestPeekUnverified_ThenOpenWithTheCarriedKey(t *testing.T) {
	carol, bob := pgpmsgtest.Identity(t, "carol"), pgpmsgtest.Identity(t, "bob")
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, "PEER_CONTRACT_PROPOSAL")
	h.Set(pgpmsg.FieldFrom, string(carol.Fingerprint()))
	h.Set(pgpmsg.FieldTo, string(bob.Fingerprint()))
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, time.Now().UTC().Format(time.RFC3339))
	var key bytes.Buffer
	carol.Public().WriteArmored(&key)
	var sealed bytes.Buffer
	if err := pgpmsg.Seal(&sealed, h, bytes.NewReader(key.Bytes()), carol, bob.Public()); err != nil {
		t.Fatal(err)
	}
	if _, err := pgpmsg.Open(bytes.NewReader(sealed.Bytes()), bob, pgpmsg.NewKeyring(), pgpmsg.OpenOptions{}); !errors.Is(err, pgpmsg.ErrUnknownSigner) {
		t.Fatalf("Open without carol's key: %v, want ErrUnknownSigner", err)
	}
	ph, payload, err := pgpmsg.PeekUnverified(sealed.Bytes(), bob, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if ph.From() != carol.Fingerprint() || !strings.Contains(string(payload), "PUBLIC KEY") {
		t.Fatalf("Peek: From %s, payload %q", ph.From(), payload)
	}
	k, err := pgpmsg.ReadKey(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	o, err := pgpmsg.Open(bytes.NewReader(sealed.Bytes()), bob, pgpmsg.NewKeyring(k), pgpmsg.OpenOptions{})
	if err != nil || o.Signer.Fingerprint() != carol.Fingerprint() {
		t.Fatalf("Open with the carried key: %v", err)
	}
	// The wrong carried key does not open it.
	if _, err := pgpmsg.Open(bytes.NewReader(sealed.Bytes()), bob, pgpmsgtest.Keyring(t, "mallory"), pgpmsg.OpenOptions{}); err == nil {
		t.Errorf("Open with mallory's key accepted carol's message")
	}
	if _, _, err := pgpmsg.PeekUnverified(sealed.Bytes(), bob, 100); !errors.Is(err, pgpmsg.ErrTooLarge) {
		t.Errorf("Peek over maxSize: %v", err)
	}
	if _, _, err := pgpmsg.PeekUnverified(sealed.Bytes(), pgpmsgtest.Identity(t, "alice"), 64<<10); !errors.Is(err, pgpmsg.ErrNotForUs) {
		t.Errorf("Peek by alice of a message to bob: %v", err)
	}
}
