package agent_test

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// hello is a HELLO header from -> to, dated at.
func hello(from, to *pgpmsg.Identity, at time.Time) pgpmsg.Header {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, agent.TypeHello)
	h.Set(pgpmsg.FieldFrom, string(from.Fingerprint()))
	h.Set(pgpmsg.FieldTo, string(to.Fingerprint()))
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, at.UTC().Format(time.RFC3339Nano))
	return h
}

func seal(t *testing.T, h pgpmsg.Header, from *pgpmsg.Identity, to *pgpmsg.Key) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := pgpmsg.Seal(&b, h, nil, from, to); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rawSeal signs as from and encrypts to `to` whatever header it is given, bypassing
// Seal's own checks: what a forger or a re-addressing peer could produce.
func rawSeal(t *testing.T, h pgpmsg.Header, from *pgpmsg.Identity, to *pgpmsg.Key) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := pgp.Encrypt(&b, []*pgp.Entity{to.Entity()}, nil, []*pgp.Entity{from.Entity()}, nil, &packet.Config{DefaultCipher: packet.CipherAES256})
	if err != nil {
		t.Fatal(err)
	}
	h.WriteTo(w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func put(t *testing.T, n *testenv.Node, name string, data []byte) {
	t.Helper()
	if _, err := n.Spool.Put(queue.Incoming, name, bytes.NewReader(data), 0); err != nil {
		t.Fatal(err)
	}
}

func TestProcess_BadFilesQuarantinedAndNextProcessed(t *testing.T) {
	env := testenv.New(t, testenv.Setup{
		Nodes:   []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}, {Name: "carol"}},
		Options: map[string]string{"maxMsgSize": "20k"},
	})
	bob := env.Node("bob")
	alice, carol := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Identity(t, "carol")
	mallory := pgpmsgtest.Identity(t, "mallory")
	bobKey := pgpmsgtest.Key(t, "bob")
	now := time.Now()

	good := seal(t, hello(alice, bob.ID, now), alice, bobKey)
	tampered := bytes.Clone(good)
	tampered[len(tampered)/2] ^= 1
	tamperedEnd := bytes.Clone(good)
	tamperedEnd[len(tamperedEnd)-3] ^= 1
	forgedFrom := hello(mallory, bob.ID, now)
	forgedFrom.Set(pgpmsg.FieldFrom, string(alice.Fingerprint()))
	readdressed := hello(alice, bob.ID, now)
	readdressed.Set(pgpmsg.FieldTo, string(carol.Fingerprint()))
	unknownType := hello(alice, bob.ID, now)
	unknownType.Set(pgpmsg.FieldType, "LAUNCH_MISSILES")
	big := bytes.Repeat([]byte{'x'}, 30_000)

	cases := []struct {
		name, reason string
		data         []byte
	}{
		{"a-forged-by-stranger.pgp", "signer", seal(t, hello(mallory, bob.ID, now), mallory, bobKey)},
		{"b-forged-from.pgp", "", rawSeal(t, forgedFrom, mallory, bobKey)},
		{"c-signer-not-from.pgp", "", rawSeal(t, func() pgpmsg.Header {
			h := hello(carol, bob.ID, now)
			h.Set(pgpmsg.FieldFrom, string(alice.Fingerprint()))
			return h
		}(), carol, bobKey)},
		{"d-readdressed.pgp", "", rawSeal(t, readdressed, alice, bobKey)},
		{"e-for-carol.pgp", "", seal(t, hello(alice, carol, now), alice, pgpmsgtest.Key(t, "carol"))},
		{"f-truncated.pgp", "", good[:len(good)/2]},
		{"g-truncated-end.pgp", "", good[:len(good)-5]},
		{"h-tampered.pgp", "", tampered},
		{"i-tampered-end.pgp", "", tamperedEnd},
		{"j-stale.pgp", "stale", seal(t, hello(alice, bob.ID, now.Add(-11*24*time.Hour)), alice, bobKey)},
		{"k-future.pgp", "future", seal(t, hello(alice, bob.ID, now.Add(time.Hour)), alice, bobKey)},
		{"l-garbage.pgp", "", []byte("this is not OpenPGP at all\n")},
		{"m-empty.pgp", "", nil},
		{"n-oversized.pgp", "oversized", big},
		{"o-unknown-type.pgp", "unknown message type", rawSeal(t, unknownType, alice, bobKey)},
		{"p-unsigned.pgp", "", func() []byte {
			var b bytes.Buffer
			w, _ := pgp.Encrypt(&b, []*pgp.Entity{bobKey.Entity()}, nil, nil, nil, &packet.Config{})
			h := hello(alice, bob.ID, now)
			h.WriteTo(w)
			w.Close()
			return b.Bytes()
		}()},
	}
	for _, c := range cases {
		put(t, bob, c.name, c.data)
	}
	put(t, bob, "z-good.pgp", good)
	res, err := bob.ProcessIncoming(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Processed != 1 || res.Quarantined != len(cases) {
		t.Fatalf("processed %d, quarantined %d; want 1 and %d", res.Processed, res.Quarantined, len(cases))
	}
	q := bob.Quarantined()
	for _, c := range cases {
		r, ok := q[c.name]
		if !ok {
			t.Errorf("%s was not quarantined", c.name)
			continue
		}
		if !strings.Contains(r, c.reason) {
			t.Errorf("%s quarantined for %q, want it to mention %q", c.name, r, c.reason)
		}
		t.Logf("%s: %s", c.name, r)
	}
	if bob.LastHeard("alice").IsZero() {
		t.Error("the good HELLO after the bad ones was not acted on")
	}

	// The same good file again is a replay: quarantined, and no second reply.
	before := countFiles(t, bob.Spool.Dir(queue.Outgoing("alice")))
	put(t, bob, "z-good-again.pgp", good)
	res, _ = bob.ProcessIncoming(ctx)
	if res.Quarantined != 1 || !strings.Contains(bob.Quarantined()["z-good-again.pgp"], "replay") {
		t.Fatalf("replay: %+v %v", res, bob.Quarantined()["z-good-again.pgp"])
	}
	if after := countFiles(t, bob.Spool.Dir(queue.Outgoing("alice"))); after != before {
		t.Fatalf("a replay queued another reply (%d -> %d files)", before, after)
	}
}

func countFiles(t *testing.T, dir string) int {
	des, _ := os.ReadDir(dir)
	return len(des)
}
