package books

import (
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dibs.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func update(t *testing.T, db *DB, fn func(*Tx) error) {
	t.Helper()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func view(t *testing.T, db *DB, fn func(*Tx) error) {
	t.Helper()
	if err := db.View(fn); err != nil {
		t.Fatal(err)
	}
}

var day = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Every record reads back as it was put, survives a reopen, and a missing one reads as
// the zero value without an error.
func TestRoundTrip(t *testing.T) {
	db, path := open(t)
	ps := PeerState{LastHeard: day, LocalUsed: 10, RemotePending: 3, ProbeRTTTotal: time.Second}
	o := &Object{ID: "obj1", Size: 5, K: 1, N: 2, Created: day, Refs: 1,
		Segments: []Segment{{Size: 5, Pieces: []Piece{{ID: "p0", Index: 0, Peer: "bob", State: PieceStored, SentAt: day}, {ID: "p1", Index: 1, Peer: "carol", State: PieceSent, SentAt: day}}}},
		Manifest: []ManifestEntry{{Name: "/f", Version: 1, Kind: KindFile, Size: 5, MTime: day, Stored: day}}}
	fv := FileVersion{ManifestEntry: o.Manifest[0], Object: o.ID, Source: "/home/f"}
	se := StatEntry{Size: 5, MTime: day, Ino: 7, Name: "/f", Version: 1}
	hp := HeldPiece{Size: 9, Stored: day, Sent: day}
	j := &RecoveryJob{Name: "/f", Kind: JobFile, Target: "/f", State: RecoveryWaiting, Started: day, Objects: map[string]bool{"obj1": false}}
	st := ProbeState{Piece: "p0", Peer: "bob", Object: "obj1", Chunks: []int{2, 0}, Sent: day}
	req := PendingRequest{Peer: "bob", Type: "UNSTORE", Payload: []byte("p0\n"), Sent: day, Tries: 1}
	update(t, db, func(tx *Tx) error {
		return errors.Join(tx.PutPeer("bob", ps), tx.PutObject(o), tx.IndexPiece("p1", o.ID, 0, 1),
			tx.PutVersion(fv), tx.PutStat("/f", se), tx.PutHeld("bob", "h1", hp), tx.PutJob(j),
			tx.PutProbe("m1", st), tx.PutRequest("m2", req), tx.MarkSeen([]byte{1, 2}, day))
	})
	db.Close()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	view(t, db, func(tx *Tx) error {
		same := func(what string, got, want any) {
			t.Helper()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: got %+v, want %+v", what, got, want)
			}
		}
		gotPS, err := tx.Peer("bob")
		same("peer", gotPS, ps)
		gotO, err2 := tx.Object("obj1")
		same("object", gotO, o)
		fo, seg, idx, err3 := tx.FindPiece("p1")
		same("found piece", []any{fo, seg, idx}, []any{o, 0, 1})
		gotFV, ok, err4 := tx.Version("/f", 1)
		same("version", []any{gotFV, ok}, []any{fv, true})
		gotHP, ok, err5 := tx.Held("bob", "h1")
		same("held", []any{gotHP, ok}, []any{hp, true})
		gotJ, err6 := tx.Job("/f")
		same("job", gotJ, j)
		gotST, ok, err7 := tx.Probe("m1")
		same("probe", []any{gotST, ok}, []any{st, true})
		same("seen", tx.Seen([]byte{1, 2}), true)
		same("holds", tx.Holds("bob", "h1"), true)
		same("has version", tx.HasVersion("/f", 1), true)
		var reqs []PendingRequest
		err8 := tx.EachRequest(func(id string, r PendingRequest) error {
			same("request id", id, "m2")
			reqs = append(reqs, r)
			return nil
		})
		same("requests", reqs, []PendingRequest{req})
		var stats []StatEntry
		err9 := tx.EachStatUnder("/", func(name string, se StatEntry) error {
			stats = append(stats, se)
			return nil
		})
		same("stat", stats, []StatEntry{se})
		return errors.Join(err, err2, err3, err4, err5, err6, err7, err8, err9)
	})
	view(t, db, func(tx *Tx) error { // what is not there
		ps, err := tx.Peer("nobody")
		if err != nil || !reflect.DeepEqual(ps, PeerState{}) {
			t.Errorf("missing peer: %+v, %v", ps, err)
		}
		if o, err := tx.Object("none"); o != nil || err != nil {
			t.Errorf("missing object: %+v, %v", o, err)
		}
		if o, _, _, err := tx.FindPiece("p9"); o != nil || err != nil {
			t.Errorf("missing piece: %+v, %v", o, err)
		}
		if _, ok, err := tx.Version("/f", 2); ok || err != nil {
			t.Errorf("missing version: %v, %v", ok, err)
		}
		if _, ok, err := tx.Held("carol", "h1"); ok || err != nil || tx.Holds("carol", "h1") {
			t.Errorf("missing held piece: %v, %v", ok, err)
		}
		if j, err := tx.Job("none"); j != nil || err != nil {
			t.Errorf("missing job: %+v, %v", j, err)
		}
		if _, ok, err := tx.Probe("m9"); ok || err != nil {
			t.Errorf("missing probe: %v, %v", ok, err)
		}
		if tx.Seen([]byte{1, 3}) || tx.HasVersion("/g", 1) {
			t.Error("a missing Message-Id or version reads as there")
		}
		return nil
	})
}

// The iterations go in key order: versions by name, then oldest first (10 after 9 and
// 256 after 10, as the big-endian key sorts); only the names under the root, not those that merely
// share its prefix; held pieces by peer, and one peer's ids not another's.
func TestIterationOrder(t *testing.T) {
	db, _ := open(t)
	put := []struct {
		name string
		ver  int
	}{{"/ab", 1}, {"/a/b", 1}, {"/a", 10}, {"/a", 256}, {"/a", 9}, {"/a", 1}, {"/b", 1}}
	update(t, db, func(tx *Tx) error {
		for _, v := range put {
			if err := tx.PutVersion(FileVersion{ManifestEntry: ManifestEntry{Name: v.name, Version: v.ver}}); err != nil {
				return err
			}
		}
		for _, k := range []string{"bobby\x00h3", "bob\x00h2", "bob\x00h1", "alice\x00h4"} {
			peer, id, _ := strings.Cut(k, "\x00")
			if err := tx.PutHeld(peer, id, HeldPiece{}); err != nil {
				return err
			}
		}
		for i := range 3 {
			if err := tx.AddOutbox(OutMessage{ID: string(rune('x' + i))}); err != nil {
				return err
			}
		}
		return nil
	})
	names := func(fvs []FileVersion) []string {
		var out []string
		for _, fv := range fvs {
			out = append(out, fmt.Sprintf("%s@%d", fv.Name, fv.Version))
		}
		return out
	}
	collect := func(each func(func(FileVersion) error) error) []FileVersion {
		var out []FileVersion
		if err := each(func(fv FileVersion) error { out = append(out, fv); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	view(t, db, func(tx *Tx) error {
		want := func(what string, got, want any) {
			t.Helper()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: got %q, want %q", what, got, want)
			}
		}
		vs, err := tx.Versions("/a")
		want("Versions(/a)", names(vs), []string{"/a@1", "/a@9", "/a@10", "/a@256"})
		want("EachVersionUnder(/a)", names(collect(func(fn func(FileVersion) error) error { return tx.EachVersionUnder("/a", fn) })),
			[]string{"/a@1", "/a@9", "/a@10", "/a@256", "/a/b@1"})
		want("EachVersionUnder(/)", len(collect(func(fn func(FileVersion) error) error { return tx.EachVersionUnder("/", fn) })), len(put))
		want("EachVersion", names(collect(tx.EachVersion)), []string{"/a@1", "/a@9", "/a@10", "/a@256", "/a/b@1", "/ab@1", "/b@1"})
		want("HeldIDs(bob)", tx.HeldIDs("bob"), []string{"h1", "h2"})
		var held []string
		err2 := tx.EachHeld(func(peer, id string, _ HeldPiece) error {
			held = append(held, peer+"/"+id)
			return nil
		})
		want("EachHeld", held, []string{"alice/h4", "bob/h1", "bob/h2", "bobby/h3"})
		var out []string
		var seqs []uint64
		err3 := tx.EachOutbox(func(seq uint64, m OutMessage) error {
			out, seqs = append(out, m.ID), append(seqs, seq)
			return nil
		})
		want("EachOutbox", out, []string{"x", "y", "z"})
		want("outbox sequence", seqs, []uint64{1, 2, 3})
		return errors.Join(err, err2, err3)
	})
	update(t, db, func(tx *Tx) error { return tx.DeleteOutbox(2) })
	view(t, db, func(tx *Tx) error {
		var out []string
		err := tx.EachOutbox(func(_ uint64, m OutMessage) error { out = append(out, m.ID); return nil })
		if !reflect.DeepEqual(out, []string{"x", "z"}) {
			t.Errorf("outbox after deleting 2: %q", out)
		}
		return err
	})
}

// A database written before the books (its records put by hand here as agent put them)
// reads the same through the accessors.
func TestExistingFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dibs.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	raw := map[string][][2]string{
		"peers":     {{"bob", `{"last_heard":"2025-03-01T12:00:00Z","local_used":10,"remote_used":2,"remote_pending":3}`}},
		"seen":      {{string(id), "\x00\x00\x00\x00\x67\xc2\xf6\xc0"}}, // 2025-03-01T12:00:00Z
		"objects":   {{"o1", `{"id":"o1","size":5,"k":1,"n":1,"segments":[{"size":5,"pieces":[{"id":"p1","index":0,"peer":"bob","state":"stored"}]}],"refs":1}`}},
		"pieceidx":  {{"p1", "o1\x000\x000"}},
		"versions":  {{"/f\x00\x00\x00\x01\x00", `{"name":"/f","version":256,"kind":"file","object":"o1"}`}},
		"statcache": {{"/f", `{"size":5,"name":"/f","version":256}`}},
		"held":      {{"carol\x00h1", `{"size":9}`}},
		"recovery":  {{"*all*", `{"name":"*all*","kind":"all","state":"waiting","objects":null}`}},
		"probes":    {{"m1", `{"piece":"p1","peer":"bob","chunks":[1]}`}},
		"outbox":    {{"\x00\x00\x00\x00\x00\x00\x00\x07", `{"peer":"bob","type":"HELLO","id":"m3"}`}},
		"requests":  {{"m4", `{"peer":"bob","type":"RECOVER_ALL","tries":2}`}},
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for bucket, kvs := range raw {
			bk, err := tx.CreateBucket([]byte(bucket))
			if err != nil {
				return err
			}
			for _, kv := range kvs {
				if err := bk.Put([]byte(kv[0]), []byte(kv[1])); err != nil {
					return err
				}
			}
		}
		return nil
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	view(t, db, func(tx *Tx) error {
		ps, err := tx.Peer("bob")
		if err != nil || ps.LocalUsed != 10 || ps.RemotePending != 3 || !ps.LastHeard.Equal(day) {
			t.Errorf("peer: %+v, %v", ps, err)
		}
		if !tx.Seen(id) {
			t.Error("Message-Id not seen")
		}
		o, s, i, err := tx.FindPiece("p1")
		if err != nil || o == nil || o.ID != "o1" || s != 0 || i != 0 || !o.Segments[0].Pieces[0].Healthy() {
			t.Errorf("piece: %+v %d %d, %v", o, s, i, err)
		}
		if vs, err := tx.Versions("/f"); err != nil || len(vs) != 1 || vs[0].Version != 256 || vs[0].Object != "o1" {
			t.Errorf("versions: %+v, %v", vs, err)
		}
		if fv, ok, err := tx.Version("/f", 256); !ok || err != nil || fv.Object != "o1" || !tx.HasVersion("/f", 256) {
			t.Errorf("version 256: %+v %v, %v", fv, ok, err)
		}
		if hp, ok, err := tx.Held("carol", "h1"); !ok || err != nil || hp.Size != 9 {
			t.Errorf("held: %+v %v, %v", hp, ok, err)
		}
		if jobs, err := tx.ActiveJobs(); err != nil || len(jobs) != 1 || jobs[0].Objects == nil || jobs[0].Finished == nil || jobs[0].Pieces == nil {
			t.Errorf("jobs (maps made on reading): %+v, %v", jobs, err)
		}
		if st, ok, err := tx.Probe("m1"); !ok || err != nil || st.Peer != "bob" {
			t.Errorf("probe: %+v %v, %v", st, ok, err)
		}
		var seqs []uint64
		tx.EachOutbox(func(seq uint64, m OutMessage) error { seqs = append(seqs, seq); return nil })
		if !reflect.DeepEqual(seqs, []uint64{7}) {
			t.Errorf("outbox: %v", seqs)
		}
		return nil
	})
	// The replay table expires by the Date it stored.
	if err := db.ExpireSeen(day); err != nil {
		t.Fatal(err)
	}
	view(t, db, func(tx *Tx) error {
		if !tx.Seen(id) {
			t.Error("a Message-Id dated at the horizon expired")
		}
		return nil
	})
	if err := db.ExpireSeen(day.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	view(t, db, func(tx *Tx) error {
		if tx.Seen(id) {
			t.Error("a Message-Id dated before the horizon did not expire")
		}
		return nil
	})
}

// A record that does not decode is an error naming it; a pending request that does not
// decode is dropped instead, so that the others are still resent.
func TestUndecodable(t *testing.T) {
	db, _ := open(t)
	err := db.b.Update(func(tx *bolt.Tx) error {
		return errors.Join(tx.Bucket(bucketObjects).Put([]byte("bad"), []byte("{")),
			tx.Bucket(bucketRequests).Put([]byte("m1"), []byte("[")))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *Tx) error {
		_, err := tx.Object("bad")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), `objects "bad"`) {
		t.Errorf("Object of a bad record: %v", err)
	}
	err = db.View(func(tx *Tx) error { return tx.EachObject(func(*Object) error { return nil }) })
	if err == nil {
		t.Error("EachObject over a bad record: no error")
	}
	update(t, db, func(tx *Tx) error {
		if err := tx.PutRequest("m2", PendingRequest{Peer: "bob"}); err != nil {
			return err
		}
		var ids []string
		err := tx.EachRequest(func(id string, _ PendingRequest) error { ids = append(ids, id); return nil })
		if !reflect.DeepEqual(ids, []string{"m2"}) {
			t.Errorf("requests: %q", ids)
		}
		return err
	})
	db.b.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRequests).Get([]byte("m1")) != nil {
			t.Error("the undecodable request is still there")
		}
		return nil
	})
}

// ClearStored empties the owner's books and nothing else.
func TestClearStored(t *testing.T) {
	db, _ := open(t)
	update(t, db, func(tx *Tx) error {
		return errors.Join(tx.PutObject(&Object{ID: "o"}), tx.IndexPiece("p", "o", 0, 0),
			tx.PutVersion(FileVersion{ManifestEntry: ManifestEntry{Name: "/f", Version: 1}}), tx.PutStat("/f", StatEntry{}),
			tx.PutProbe("m", ProbeState{}), tx.PutHeld("bob", "h", HeldPiece{}), tx.PutPeer("bob", PeerState{LocalUsed: 1}))
	})
	update(t, db, func(tx *Tx) error { return tx.ClearStored() })
	view(t, db, func(tx *Tx) error {
		o, _ := tx.Object("o")
		po, _, _, _ := tx.FindPiece("p")
		_, probe, _ := tx.Probe("m")
		var stats int
		tx.EachStatUnder("/", func(string, StatEntry) error { stats++; return nil })
		if o != nil || po != nil || tx.HasVersion("/f", 1) || stats != 0 || probe {
			t.Error("ClearStored left some of the owner's books")
		}
		ps, _ := tx.Peer("bob")
		if !tx.Holds("bob", "h") || ps.LocalUsed != 1 {
			t.Error("ClearStored dropped what we hold for others, or a peer's state")
		}
		return nil
	})
}

// A second opening waits for the first to close, then says the database is busy.
func TestBusy(t *testing.T) {
	_, path := open(t)
	defer func(d time.Duration) { lockTimeout = d }(lockTimeout)
	lockTimeout = 50 * time.Millisecond
	db, err := Open(path)
	if err == nil {
		db.Close()
	}
	if !errors.Is(err, ErrDBBusy) {
		t.Fatalf("second Open: %v, want ErrDBBusy", err)
	}
}

// The records of unstored versions are found by object, and only that object's; fn may
// delete the record it is given; ClearStored empties them.
func TestUnstored_ByObject(t *testing.T) {
	db, _ := open(t)
	a, b := strings.Repeat("a", 32), strings.Repeat("b", 32)
	update(t, db, func(tx *Tx) error {
		for _, r := range []struct {
			obj, name string
			v         int
		}{{a, "/x", 1}, {a, "/x", 2}, {a, "/x/y", 1}, {b, "/x", 1}} {
			if err := tx.PutUnstored(r.obj, r.name, r.v, Unstored{Tombstone: r.obj[:1]}); err != nil {
				return err
			}
		}
		return nil
	})
	list := func(obj string) []string {
		var out []string
		view(t, db, func(tx *Tx) error {
			return tx.EachUnstored(obj, func(o, name string, v int, u Unstored) error {
				out = append(out, fmt.Sprintf("%s %s %d %s", o[:1], name, v, u.Tombstone))
				return nil
			})
		})
		return out
	}
	if got, want := list(a), []string{"a /x 1 a", "a /x 2 a", "a /x/y 1 a"}; !reflect.DeepEqual(got, want) {
		t.Errorf("records of a: %q, want %q", got, want)
	}
	if got := list(""); len(got) != 4 {
		t.Errorf("all records: %q", got)
	}
	update(t, db, func(tx *Tx) error {
		return tx.EachUnstored(a, func(o, name string, v int, _ Unstored) error { return tx.DeleteUnstored(o, name, v) })
	})
	if got, want := list(""), []string{"b /x 1 b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after deleting a's: %q, want %q", got, want)
	}
	view(t, db, func(tx *Tx) error {
		if u, ok, err := tx.GetUnstored(b, "/x", 1); err != nil || !ok || u.Tombstone != "b" {
			t.Errorf("GetUnstored: %+v %v %v", u, ok, err)
		}
		if _, ok, _ := tx.GetUnstored(a, "/x", 1); ok {
			t.Error("a deleted record is still there")
		}
		return nil
	})
	update(t, db, func(tx *Tx) error { return tx.ClearStored() })
	if got := list(""); len(got) != 0 {
		t.Errorf("after ClearStored: %q", got)
	}
}

// Versions written in name order, as a store or a recover_all writes them, leave the
// versions pages nearly full (bbolt's default leaves them half empty): the database a
// recovery of many files maps into memory is that much smaller.
func TestVersionsPagesPacked(t *testing.T) {
	db, _ := open(t)
	err := db.Update(func(tx *Tx) error {
		for i := range 20_000 {
			fv := FileVersion{ManifestEntry: ManifestEntry{Name: fmt.Sprintf("/tree/d%03d/f%06d.txt", i/100, i), Version: 1, Kind: KindFile, Size: 1000,
				Hash: strings.Repeat("ab", 32)}, Object: strings.Repeat("cd", 16)}
			if err := tx.PutVersion(fv); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.b.View(func(tx *bolt.Tx) error {
		s := tx.Bucket(bucketVersions).Stats()
		if fill := float64(s.LeafInuse) / float64(s.LeafAlloc); fill < 0.8 {
			t.Errorf("versions leaf pages %.0f%% full (%d pages for %d bytes); want at least 80%%", 100*fill, s.LeafPageN, s.LeafInuse)
		}
		return nil
	})
}
