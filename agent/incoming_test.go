package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/testenv"
)

// A stranger who knows the name of a file waiting in incoming/ cannot replace it by
// sending a file of that name (by mail, a relay, a carried directory): both are kept, the
// real message is acted on and the stranger's goes to quarantine.
func TestIncoming_SameNameNeverReplacesWaitingFile(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}})
	bob := env.Node("bob")
	alice, mallory := pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Identity(t, "mallory")
	bobKey := pgpmsgtest.Key(t, "bob")
	now := time.Now()

	put(t, bob, "waiting.pgp", seal(t, hello(alice, bob.ID, now), alice, bobKey))
	forged := seal(t, hello(mallory, bob.ID, now), mallory, bobKey)
	// By the poll and mail sink.
	if err := bob.Sink()("waiting.pgp", bytes.NewReader(forged)); err != nil {
		t.Fatal(err)
	}
	// By import_messages.
	carried := t.TempDir()
	mine := filepath.Join(carried, string(bob.Fingerprint()))
	os.MkdirAll(mine, 0o700)
	forged2 := seal(t, hello(mallory, bob.ID, now.Add(time.Second)), mallory, bobKey)
	os.WriteFile(filepath.Join(mine, "waiting.pgp"), forged2, 0o600)
	if res, err := bob.ImportMessages(carried); err != nil || res.Imported != 1 {
		t.Fatalf("import_messages: %+v, %v", res, err)
	}
	if es, _ := bob.Spool.List(queue.Incoming); len(es) != 3 {
		t.Fatalf("incoming/ holds %d files, want the waiting one and both newcomers", len(es))
	}
	res, err := bob.ProcessIncoming(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Processed != 1 || res.Quarantined != 2 {
		t.Fatalf("processed %d, quarantined %d; want 1 and 2", res.Processed, res.Quarantined)
	}
	if bob.LastHeard("alice").IsZero() {
		t.Fatal("alice's waiting HELLO was lost")
	}
	q := bob.Quarantined()
	for name, reason := range q {
		if name == "waiting.pgp" || !strings.Contains(reason, "signer") {
			t.Errorf("quarantined %s: %s", name, reason)
		}
	}
}
