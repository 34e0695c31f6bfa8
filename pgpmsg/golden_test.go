package pgpmsg_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// Golden messages, alice -> bob: testdata/golden/<name>.pgp is the sealed
// message and <name>.plain its expected plaintext (canonical header, then
// payload). They guard the wire format: a change that makes old messages
// unreadable fails here. Regenerate with go test -run TestGolden -update.
var goldenMessages = []struct {
	name    string
	typ     string
	payload []byte
}{
	{"hello", "HELLO", nil},
	{"store-binary", "STORE", []byte("piece\x00\r\n\r\n\xff\x00 data\n")},
	{"store-70k", "STORE", patterned(70 << 10)},
}

func goldenPlain(t testing.TB, typ string, payload []byte) (pgpmsg.Header, []byte) {
	alice, bob := id(t, "alice"), id(t, "bob")
	h := fullHeader(typ, alice.Fingerprint(), bob.Fingerprint())
	h.Set(pgpmsg.FieldDate, fixedDate)
	h.Set(pgpmsg.FieldMessageID, "00112233445566778899aabbccddeeff")
	return h, append(marshal(t, h), payload...)
}

func TestGolden(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	alice, bob := id(t, "alice"), id(t, "bob")
	for _, g := range goldenMessages {
		t.Run(g.name, func(t *testing.T) {
			h, plain := goldenPlain(t, g.typ, g.payload)
			msgPath := filepath.Join(dir, g.name+".pgp")
			plainPath := filepath.Join(dir, g.name+".plain")
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(msgPath, seal(t, h, g.payload, alice, bob.Public()), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(plainPath, plain, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			msg, err := os.ReadFile(msgPath)
			if err != nil {
				t.Fatal(err)
			}
			wantPlain, err := os.ReadFile(plainPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(wantPlain, plain) {
				t.Fatalf("%s no longer matches what the test would write", plainPath)
			}
			o, err := openWith(t, msg, bob, pgpmsgtest.Keyring(t, "alice"), pgpmsg.OpenOptions{MemLimit: 64 << 10})
			if err != nil {
				t.Fatalf("Open golden: %v", err)
			}
			payload, err := o.PayloadBytes()
			if err != nil {
				t.Fatal(err)
			}
			if got := append(marshal(t, o.Header), payload...); !bytes.Equal(got, wantPlain) {
				t.Fatalf("golden plaintext differs")
			}
			ids, err := pgpmsg.Recipients(bytes.NewReader(msg))
			if err != nil || len(ids) != 1 || ids[0] != bob.EncryptionKeyIDs()[0] {
				t.Fatalf("Recipients = %x, %v", ids, err)
			}
		})
	}
}

// FuzzOpen feeds mutated golden messages to Open: it must never panic,
// and never accept anything but an unmodified golden message.
func FuzzOpen(f *testing.F) {
	var seeds [][]byte
	for _, g := range goldenMessages {
		b, err := os.ReadFile(filepath.Join("testdata", "golden", g.name+".pgp"))
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
		f.Add(b)
	}
	f.Add([]byte("-----BEGIN PGP MESSAGE-----\n\nwcBMA\n-----END PGP MESSAGE-----\n"))
	bob := id(f, "bob")
	peers := pgpmsgtest.Keyring(f, "alice", "carol")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, in []byte) {
		o, err := pgpmsg.Open(bytes.NewReader(in), bob, peers, pgpmsg.OpenOptions{MemLimit: 16 << 10, MaxSize: 1 << 20, TempDir: dir})
		if err == nil {
			o.Close()
			for _, s := range seeds {
				if bytes.Equal(s, in) {
					return
				}
			}
			t.Fatalf("Open accepted a modified message (%d bytes)", len(in))
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("temp file left behind: %v", err)
		}
	})
}
