package queue

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestQuarantineWith_KeepsTheStart(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "big.pgp", strings.Repeat("x", 1000))
	put(t, s, Incoming, "small.pgp", "tiny")
	put(t, s, Incoming, "none.pgp", strings.Repeat("y", 500))
	if err := claim(t, s, Incoming, "big.pgp").QuarantineWith("unknown type", QuarantineOpts{From: "alice", Keep: 100}); err != nil {
		t.Fatal(err)
	}
	if err := claim(t, s, Incoming, "small.pgp").QuarantineWith("bad", QuarantineOpts{Keep: 100}); err != nil {
		t.Fatal(err)
	}
	if err := claim(t, s, Incoming, "none.pgp").QuarantineWith("too much", QuarantineOpts{From: "bob", Keep: -1}); err != nil {
		t.Fatal(err)
	}
	if got := readBox(t, s, Quarantine, "big.pgp"); got != strings.Repeat("x", 100) {
		t.Errorf("kept %d bytes of big.pgp, want its first 100", len(got))
	}
	if got := readBox(t, s, Quarantine, "small.pgp"); got != "tiny" {
		t.Errorf("small.pgp = %q", got)
	}
	if r, _ := s.Reason("big.pgp"); r != "incoming: unknown type; from: alice; kept: the first 100 of 1000 bytes" {
		t.Errorf("Reason(big.pgp) = %q", r)
	}
	if r, _ := s.Reason("none.pgp"); !strings.Contains(r, "too much") || !strings.Contains(r, "dropped: 500 bytes") {
		t.Errorf("Reason(none.pgp) = %q", r)
	}
	qs, err := s.QuarantineFiles()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]QuarantinedFile{}
	for _, q := range qs {
		got[q.Name] = q
	}
	if len(got) != 2 || got["big.pgp"].From != "alice" || got["big.pgp"].Size != 100 || got["small.pgp"].From != "" {
		t.Errorf("QuarantineFiles = %+v", qs)
	}
	if got := names(t, s, Incoming); len(got) != 0 {
		t.Errorf("incoming/ = %v", got)
	}
}

// TrimQuarantine drops the files quarantined first, whatever their names, and keeps
// their reasons with their times.
func TestTrimQuarantine_DropsOldestKeepsReasons(t *testing.T) {
	s := newSpool(t)
	qdir := s.Dir(Quarantine)
	base := time.Now().Add(-time.Hour)
	for i, name := range []string{"c.pgp", "a.pgp", "b.pgp"} { // quarantined in this order
		put(t, s, Incoming, name, strings.Repeat("z", 400))
		if err := claim(t, s, Incoming, name).Quarantine("bad"); err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i) * time.Minute)
		os.Chtimes(filepath.Join(qdir, name+ReasonSuffix), at, at)
	}
	left, err := s.TrimQuarantine(900)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0].Name != "a.pgp" || left[1].Name != "b.pgp" {
		t.Fatalf("left %+v, want a.pgp and b.pgp", left)
	}
	if got := names(t, s, Quarantine); !slices.Equal(got, []string{"a.pgp", "b.pgp"}) {
		t.Errorf("quarantine/ = %v", got)
	}
	r, err := s.Reason("c.pgp")
	if err != nil || !strings.Contains(r, "bad") || !strings.Contains(r, "dropped: 400 bytes") {
		t.Errorf("Reason(c.pgp) = %q, %v", r, err)
	}
	info, _ := os.Stat(filepath.Join(qdir, "c.pgp"+ReasonSuffix))
	if !info.ModTime().Equal(base) {
		t.Errorf("the reason's time moved: %v, want %v", info.ModTime(), base)
	}
	if left, _ := s.TrimQuarantine(0); len(left) != 0 || len(names(t, s, Quarantine)) != 0 {
		t.Errorf("TrimQuarantine(0) left %v", left)
	}
	if n := len(dirNames(t, qdir)); n != 3 {
		t.Errorf("quarantine/ holds %d files, want the 3 reasons", n)
	}
}
