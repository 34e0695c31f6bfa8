package queue

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func claim(t *testing.T, s *Spool, box Box, name string) *Claim {
	t.Helper()
	c, err := s.Claim(box, name)
	if err != nil {
		t.Fatalf("Claim(%s, %s): %v", box, name, err)
	}
	return c
}

func TestClaim_ReadsTheFile(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "m.pgp", "hello, world")
	c := claim(t, s, Incoming, "m.pgp")
	defer c.Release()
	if c.Name() != "m.pgp" || c.Box() != Incoming || c.Size() != 12 {
		t.Errorf("claim = %s %s %d", c.Box(), c.Name(), c.Size())
	}
	if c.Path() != filepath.Join(s.Dir(Incoming), "m.pgp") {
		t.Errorf("Path() = %q", c.Path())
	}
	for range 2 { // a second Reader starts again from the beginning
		b, err := io.ReadAll(c.Reader())
		if err != nil || string(b) != "hello, world" {
			t.Fatalf("Reader: %q, %v", b, err)
		}
	}
	buf := make([]byte, 5)
	if _, err := c.File().ReadAt(buf, 7); err != nil || string(buf) != "world" {
		t.Errorf("ReadAt: %q, %v", buf, err)
	}
}

func TestClaim_TwiceIsBusy(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "m.pgp", "x")
	c := claim(t, s, Incoming, "m.pgp")
	if _, err := s.Claim(Incoming, "m.pgp"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Claim: err = %v, want ErrBusy", err)
	}
	// A second Spool on the same root (another worker in this process) is refused too.
	s2, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Claim(Incoming, "m.pgp"); !errors.Is(err, ErrBusy) {
		t.Fatalf("Claim through a second Spool: err = %v, want ErrBusy", err)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	// Released: the file is still there and can be claimed again.
	if got := names(t, s, Incoming); !slices.Equal(got, []string{"m.pgp"}) {
		t.Fatalf("incoming after Release = %v", got)
	}
	c2 := claim(t, s2, Incoming, "m.pgp")
	c2.Release()
}

func TestClaim_GoneAfterAck(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "m.pgp", "x")
	c := claim(t, s, Incoming, "m.pgp")
	if err := c.Ack(); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, s.Dir(Incoming)); len(got) != 0 {
		t.Errorf("incoming after Ack = %v", got)
	}
	if _, err := s.Claim(Incoming, "m.pgp"); !errors.Is(err, ErrGone) {
		t.Errorf("Claim after Ack: err = %v, want ErrGone", err)
	}
	if _, err := s.Claim(Incoming, "never.pgp"); !errors.Is(err, ErrGone) {
		t.Errorf("Claim of a file never there: err = %v, want ErrGone", err)
	}
	// A finished claim ignores further calls and changes nothing.
	put(t, s, Incoming, "m.pgp", "again")
	for _, f := range []func() error{c.Ack, c.Release, func() error { return c.Quarantine("x") },
		func() error { return c.MoveTo(Outgoing("bob")) }} {
		if err := f(); err != nil {
			t.Errorf("call on a finished claim: %v", err)
		}
	}
	if got := names(t, s, Incoming); !slices.Equal(got, []string{"m.pgp"}) {
		t.Errorf("a finished claim touched the new file: incoming = %v", got)
	}
}

func TestClaim_HolderAcksWhileOtherWaits(t *testing.T) {
	// The other worker opened the file before the holder removed it: its lock then
	// succeeds on an unlinked inode, and Claim must notice and say ErrGone.
	s := newSpool(t)
	put(t, s, Incoming, "m.pgp", "x")
	c := claim(t, s, Incoming, "m.pgp")
	f, err := os.Open(c.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c.Ack()
	if _, err := s.Claim(Incoming, "m.pgp"); !errors.Is(err, ErrGone) {
		t.Errorf("Claim after the holder acked: err = %v, want ErrGone", err)
	}
}

func TestClaim_Quarantine(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "bad.pgp", "garbage")
	c := claim(t, s, Incoming, "bad.pgp")
	if err := c.Quarantine("signature does not verify\r\nby any known key\n"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s, Incoming); len(got) != 0 {
		t.Errorf("incoming after Quarantine = %v", got)
	}
	// List hides the reason file; Reason reads it.
	if got := names(t, s, Quarantine); !slices.Equal(got, []string{"bad.pgp"}) {
		t.Errorf("List(quarantine) = %v, want [bad.pgp]", got)
	}
	if got := readBox(t, s, Quarantine, "bad.pgp"); got != "garbage" {
		t.Errorf("quarantined content = %q", got)
	}
	reason, err := s.Reason("bad.pgp")
	if err != nil {
		t.Fatal(err)
	}
	if want := "incoming: signature does not verify  by any known key"; reason != want {
		t.Errorf("Reason = %q, want %q", reason, want)
	}
	if strings.ContainsAny(reason, "\r\n") {
		t.Errorf("Reason holds a line break: %q", reason)
	}
	if _, err := s.Reason("other.pgp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reason of a file not quarantined: err = %v, want ErrNotExist", err)
	}
	// An empty reason still says something.
	put(t, s, Outgoing("bob"), "x.pgp", "x")
	c = claim(t, s, Outgoing("bob"), "x.pgp")
	if err := c.Quarantine("  "); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Reason("x.pgp"); r != "outgoing/bob: unknown reason" {
		t.Errorf("Reason = %q", r)
	}
	if left := dirNames(t, filepath.Join(s.Root(), "tmp")); len(left) != 0 {
		t.Errorf("tmp/ = %v, want empty", left)
	}
}

func TestClaim_MoveTo(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "m.pgp", "payload")
	c := claim(t, s, Incoming, "m.pgp")
	if err := c.MoveTo(Outgoing("carol@example.org")); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s, Incoming); len(got) != 0 {
		t.Errorf("incoming after MoveTo = %v", got)
	}
	if got := readBox(t, s, Outgoing("carol@example.org"), "m.pgp"); got != "payload" {
		t.Errorf("moved content = %q", got)
	}
	if ps, _ := s.Peers(); !slices.Equal(ps, []string{"carol@example.org"}) {
		t.Errorf("Peers() = %v", ps)
	}
	// The moved file can be claimed in its new box: the old claim is over.
	c = claim(t, s, Outgoing("carol@example.org"), "m.pgp")
	if err := c.MoveTo(Quarantine); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s, Quarantine); !slices.Equal(got, []string{"m.pgp"}) {
		t.Errorf("quarantine = %v", got)
	}
}
