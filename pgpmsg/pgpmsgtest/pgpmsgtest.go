// Package pgpmsgtest gives tests fixed, committed OpenPGP identities:
// alice, bob, carol, dave, erin and mallory (uids "<name>.dibs@example.org",
// EdDSA/cv25519 v4 keys created 2025-01-01, no passphrase). Loading them is
// fast and they are the same on every run.
package pgpmsgtest

import (
	"bytes"
	"embed"
	"sync"
	"testing"

	"github.com/dibs-backup/dibs/pgpmsg"
)

//go:embed keys/*.sec.asc
var keyFiles embed.FS

// Names lists the fixture identities.
var Names = []string{"alice", "bob", "carol", "dave", "erin", "mallory"}

var (
	mu    sync.Mutex
	cache = map[string]*pgpmsg.Identity{}
)

// Identity returns the fixture identity called name (one of Names). The
// same *Identity is returned on every call; it must not be modified.
func Identity(t testing.TB, name string) *pgpmsg.Identity {
	t.Helper()
	id, err := load(name)
	if err != nil {
		t.Fatalf("pgpmsgtest: %v", err)
	}
	return id
}

// Key returns the public key of the fixture identity called name.
func Key(t testing.TB, name string) *pgpmsg.Key {
	t.Helper()
	return Identity(t, name).Public()
}

// Keyring returns a new keyring with the public keys of the named fixtures.
func Keyring(t testing.TB, names ...string) *pgpmsg.Keyring {
	t.Helper()
	kr := pgpmsg.NewKeyring()
	for _, n := range names {
		kr.Add(Key(t, n))
	}
	return kr
}

// SecretKey returns the armored secret key file of the fixture called name.
func SecretKey(t testing.TB, name string) []byte {
	t.Helper()
	b, err := keyFiles.ReadFile("keys/" + name + ".sec.asc")
	if err != nil {
		t.Fatalf("pgpmsgtest: no fixture %q: %v", name, err)
	}
	return b
}

func load(name string) (*pgpmsg.Identity, error) {
	mu.Lock()
	defer mu.Unlock()
	if id, ok := cache[name]; ok {
		return id, nil
	}
	b, err := keyFiles.ReadFile("keys/" + name + ".sec.asc")
	if err != nil {
		return nil, err
	}
	id, err := pgpmsg.ReadIdentity(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	cache[name] = id
	return id, nil
}
