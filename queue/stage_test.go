package queue

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func stagePut(t *testing.T, st *Stage, box Box, name, data string) {
	t.Helper()
	if _, err := st.PutWith(box, name, func(w io.Writer) error {
		_, err := io.WriteString(w, data)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// A staged file is in no box until it is released; a dropped one never is.
func TestStage_ReleaseAndDrop(t *testing.T) {
	s := newSpool(t)
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	bob := Outgoing("bob")
	stagePut(t, st, bob, "a", "piece a")
	stagePut(t, st, bob, "b", "piece b")
	if got := names(t, s, bob); len(got) != 0 {
		t.Fatalf("staged files visible in %s: %v", bob, got)
	}
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := st.Release(bob, "a"); err != nil {
		t.Fatal(err)
	}
	if err := st.Drop(bob, "b"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s, bob); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("%s holds %v, want [a]", bob, got)
	}
	if b, _ := os.ReadFile(filepath.Join(s.Dir(bob), "a")); string(b) != "piece a" {
		t.Fatalf("released file holds %q", b)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if des, _ := os.ReadDir(filepath.Join(s.Root(), stagedDir)); len(des) != 0 {
		t.Fatalf("an emptied stage stays after Close: %v", des)
	}
}

// A failed write leaves nothing in the stage.
func TestStage_FailedWriteLeavesNothing(t *testing.T) {
	s := newSpool(t)
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	_, err = st.PutWith(Outgoing("bob"), "a", func(w io.Writer) error {
		io.WriteString(w, strings.Repeat("x", 3<<20))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("PutWith = %v, want boom", err)
	}
	st.Close()
	if des, _ := os.ReadDir(filepath.Join(s.Root(), stagedDir)); len(des) != 0 {
		t.Fatalf("a failed write left %v", des)
	}
}

// The sweep leaves a live stage alone, and settles a dead one as keep says.
func TestSweepStages_SettlesOnlyDeadStages(t *testing.T) {
	s := newSpool(t)
	bob, carol := Outgoing("bob"), Outgoing("carol")
	live, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	stagePut(t, live, bob, "live", "x")

	dead, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	stagePut(t, dead, bob, "known", "k")
	stagePut(t, dead, bob, "unknown", "u")
	stagePut(t, dead, carol, "known2", "k2")
	dead.Sync()
	dead.lock.Close() // what a killed process leaves: the files, no lock

	var asked []string
	released, dropped, err := s.SweepStages(func(box Box, name string) (bool, error) {
		asked = append(asked, string(box)+"/"+name)
		return strings.HasPrefix(name, "known"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if released != 2 || dropped != 1 {
		t.Fatalf("released %d, dropped %d; want 2 and 1", released, dropped)
	}
	slices.Sort(asked)
	if want := []string{"outgoing/bob/known", "outgoing/bob/unknown", "outgoing/carol/known2"}; !slices.Equal(asked, want) {
		t.Fatalf("keep asked about %v, want %v", asked, want)
	}
	if got := names(t, s, bob); !slices.Equal(got, []string{"known"}) {
		t.Fatalf("%s holds %v", bob, got)
	}
	if got := names(t, s, carol); !slices.Equal(got, []string{"known2"}) {
		t.Fatalf("%s holds %v", carol, got)
	}
	if _, err := os.Stat(dead.dir); !os.IsNotExist(err) {
		t.Fatalf("the dead stage is still there: %v", err)
	}
	// The live one is untouched and still releases.
	if err := live.Release(bob, "live"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s, bob); !slices.Equal(got, []string{"known", "live"}) {
		t.Fatalf("%s holds %v", bob, got)
	}
}

// CleanTemps removes WriteAtomic's stale temp files at any depth, and nothing else.
func TestCleanTemps_RemovesStaleTempFilesAnywhere(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "storage", "bob", "ab", "cd")
	if err := os.MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	mk := func(p string, when time.Time) {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, when, when)
	}
	mk(filepath.Join(deep, ".tmp-123"), old)        // a killed write: goes
	mk(filepath.Join(root, ".tmp-456"), old)        // beside dibsrc.toml: goes
	mk(filepath.Join(deep, ".tmp-789"), time.Now()) // a write in progress: stays
	mk(filepath.Join(deep, "abcd1234"), old)        // a held piece: stays
	mk(filepath.Join(root, "tmp-1"), old)           // not a temp name: stays
	n, err := CleanTemps(root, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("removed %d, want 2", n)
	}
	for _, p := range []string{filepath.Join(deep, ".tmp-123"), filepath.Join(root, ".tmp-456")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there", p)
		}
	}
	for _, p := range []string{filepath.Join(deep, ".tmp-789"), filepath.Join(deep, "abcd1234"), filepath.Join(root, "tmp-1")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if n, err := CleanTemps(filepath.Join(root, "missing"), time.Hour, time.Now()); n != 0 || err != nil {
		t.Errorf("missing root: %d, %v", n, err)
	}
}

// A file the sweep cannot decide on stays staged, and a later sweep settles it.
func TestSweepStages_UndecidedFileStays(t *testing.T) {
	s := newSpool(t)
	bob := Outgoing("bob")
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	stagePut(t, st, bob, "a", "x")
	st.lock.Close()
	busy := errors.New("database busy")
	if _, _, err := s.SweepStages(func(Box, string) (bool, error) { return false, busy }); !errors.Is(err, busy) {
		t.Fatalf("sweep = %v, want the keep error", err)
	}
	if _, err := os.Stat(filepath.Join(st.boxDir(bob), "a")); err != nil {
		t.Fatalf("the undecided file is gone: %v", err)
	}
	released, _, err := s.SweepStages(func(Box, string) (bool, error) { return true, nil })
	if err != nil || released != 1 {
		t.Fatalf("second sweep: released %d, %v", released, err)
	}
	if got := names(t, s, bob); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("%s holds %v", bob, got)
	}
}
