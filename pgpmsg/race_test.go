package pgpmsg_test

import (
	"bytes"
	"sync"
	"testing"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// TestConcurrentUse seals and opens from several goroutines with freshly
// read keys: go-crypto caches signature validity lazily inside entities,
// which must not race (run with -race).
func TestConcurrentUse(t *testing.T) {
	alice, err := pgpmsg.ReadIdentity(bytes.NewReader(pgpmsgtest.SecretKey(t, "alice")))
	if err != nil {
		t.Fatal(err)
	}
	bob, err := pgpmsg.ReadIdentity(bytes.NewReader(pgpmsgtest.SecretKey(t, "bob")))
	if err != nil {
		t.Fatal(err)
	}
	alicePub, err := pgpmsg.ReadKey(bytes.NewReader(pgpmsgtest.SecretKey(t, "alice")))
	if err != nil {
		t.Fatal(err)
	}
	peers := pgpmsg.NewKeyring(alicePub)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			if err := pgpmsg.Seal(&buf, newHeader("PROBE"), bytes.NewReader([]byte("x")), alice, bob.Public()); err != nil {
				t.Error(err)
				return
			}
			o, err := pgpmsg.Open(&buf, bob, peers, pgpmsg.OpenOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			o.Close()
			sig, _ := alice.SignDetached([]byte("c"))
			if _, err := pgpmsg.VerifyDetached(peers, []byte("c"), sig); err != nil {
				t.Error(err)
			}
			_ = alicePub.Name()
			_ = alice.EncryptionKeyIDs()
		}()
	}
	wg.Wait()
}
