package agent_test

import (
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/testenv"
)

// A node run from cron, with no daemon, exchanges storage lists too: auto_check does it
// once a day, keeping the time in the books from one run to the next. Bob holds a piece
// for alice that her books do not know (a store whose record she lost); the exchange
// makes him drop it.
func TestAutoCheck_ExchangesStorageListsDaily(t *testing.T) {
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{{Name: "alice"}, {Name: "bob"}}})
	alice, bob := env.Node("alice"), env.Node("bob")
	clock := &offsetClock{}
	alice.Now, bob.Now = clock.Now, clock.Now
	put(t, bob, "stray.pgp", store(t, pgpmsgtest.Identity(t, "alice"), bob.ID, pgpmsgtest.Key(t, "bob"), 10_000))
	env.Settle(ctx, 5)
	if n := len(piecesOn(t, bob, "alice")); n != 1 {
		t.Fatalf("bob holds %d pieces for alice, want the stray one", n)
	}
	autoCheck := func(want int) {
		t.Helper()
		res, err := alice.AutoCheck(ctx)
		if err != nil || res.StorageLists != want {
			t.Fatalf("auto_check: %+v, %v; want the storage list sent to %d peers", res, err, want)
		}
		env.Settle(ctx, 5)
	}
	autoCheck(0) // the first run starts the clock
	clock.Set(12 * time.Hour)
	autoCheck(0)
	if n := len(piecesOn(t, bob, "alice")); n != 1 {
		t.Fatalf("bob holds %d pieces for alice before any exchange", n)
	}
	clock.Set(24*time.Hour - time.Minute) // a daily cron job, a little early
	autoCheck(1)
	if n := len(piecesOn(t, bob, "alice")); n != 0 {
		t.Fatalf("bob still holds %d pieces alice's books do not know", n)
	}
	autoCheck(0) // done for the day
	// An exchange by hand (SyncPeers: auto_check --sync) counts as the day's.
	clock.Set(47 * time.Hour)
	if sent, err := alice.SyncPeers(); err != nil || sent != 1 {
		t.Fatalf("SyncPeers: %d, %v", sent, err)
	}
	clock.Set(48 * time.Hour)
	autoCheck(0)
}
