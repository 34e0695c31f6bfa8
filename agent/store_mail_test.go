package agent_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/mailbox"
	"github.com/dibs-backup/dibs/testenv"
)

// Pieces for a peer who talks mail are cut small enough that each one's mail fits
// mailMaxSize, though kbPerFile and maxMsgSize allow far bigger ones.
func TestStore_MailPeerGetsPiecesThatFitAMail(t *testing.T) {
	const mailLimit = 200_000
	env := testenv.New(t, testenv.Setup{
		Nodes:   []testenv.NodeSpec{{Name: "alice", Mail: true}, {Name: "bob", Mail: true}},
		Options: map[string]string{"mailMaxSize": "200k", "kbPerFile": "2000"},
	})
	alice := env.Node("alice")
	data := make([]byte, 700_000)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.UintN(256))
	}
	src := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Store(ctx, src, "/big"); err != nil {
		t.Fatal(err)
	}
	out, err := alice.Spool.List("outgoing/bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 5 {
		t.Fatalf("%d files for 700 kB through 200 kB mails", len(out))
	}
	for _, e := range out {
		if size := mailbox.MailSize(e.Size); size > mailLimit {
			t.Errorf("%s: %d bytes make a %d-byte mail, over mailMaxSize %d", e.Name, e.Size, size, mailLimit)
		}
	}
	env.Settle(ctx, 20)
	if st := fileRows(t, alice.Node)[0].Status; st != agent.StatusStored {
		t.Fatalf("status after the mails: %s", st)
	}
}
