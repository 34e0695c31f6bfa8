package queue

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func content(t *testing.T, s *Spool, box Box, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir(box), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A file waiting in incoming/ is never replaced by one of the same name: a stranger who
// learned the name must not swap the real message out.
func TestPut_NeverReplacesInIncoming(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "m.pgp", "the real message")
	_, err := s.Put(Incoming, "m.pgp", strings.NewReader("a forgery"), 0)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("Put over a waiting file: %v, want ErrExists", err)
	}
	if got := content(t, s, Incoming, "m.pgp"); got != "the real message" {
		t.Fatalf("the waiting file now holds %q", got)
	}
	// The same bytes again are a duplicate delivery: accepted, one copy.
	put(t, s, Incoming, "m.pgp", "the real message")
	if got := names(t, s, Incoming); !slices.Equal(got, []string{"m.pgp"}) {
		t.Fatalf("incoming/ = %v", got)
	}
	if left := dirNames(t, filepath.Join(s.Root(), tmpDir)); len(left) != 0 {
		t.Fatalf("tmp/ keeps %v", left)
	}
	// Our own outgoing files are still replaced: a message sealed again after a crash.
	put(t, s, Outgoing("bob"), "o.pgp", "first seal")
	put(t, s, Outgoing("bob"), "o.pgp", "second seal")
	if got := content(t, s, Outgoing("bob"), "o.pgp"); got != "second seal" {
		t.Fatalf("outgoing file holds %q", got)
	}
}

func TestReceive_KeepsBoth(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "m.pgp", "the real message")
	as, n, err := s.Receive("m.pgp", strings.NewReader("a forgery"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if as == "m.pgp" || !strings.HasSuffix(as, ".pgp") || !ValidName(as) || n != 9 {
		t.Fatalf("Receive = %q, %d", as, n)
	}
	if got := content(t, s, Incoming, "m.pgp"); got != "the real message" {
		t.Fatalf("the waiting file now holds %q", got)
	}
	if got := content(t, s, Incoming, as); got != "a forgery" {
		t.Fatalf("the newcomer %s holds %q", as, got)
	}
	// A duplicate is dropped, not kept twice.
	as, _, err = s.Receive("m.pgp", strings.NewReader("the real message"), 0)
	if err != nil || as != "m.pgp" {
		t.Fatalf("Receive of a duplicate = %q, %v", as, err)
	}
	if got := names(t, s, Incoming); len(got) != 2 {
		t.Fatalf("incoming/ = %v, want the message and the newcomer", got)
	}
	// A free name is used as it is.
	if as, _, err := s.Receive("n.pgp", strings.NewReader("x"), 0); err != nil || as != "n.pgp" {
		t.Fatalf("Receive n.pgp = %q, %v", as, err)
	}
}

// The fallback for filesystems without renameat2's RENAME_NOREPLACE refuses too.
func TestLinkNoReplace(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("new"), 0o600)
	os.WriteFile(b, []byte("old"), 0o600)
	if err := linkNoReplace(a, b); !errors.Is(err, os.ErrExist) {
		t.Fatalf("linkNoReplace over a file: %v", err)
	}
	if got, _ := os.ReadFile(b); string(got) != "old" {
		t.Fatalf("b holds %q", got)
	}
	os.Remove(b)
	if err := linkNoReplace(a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Fatalf("a is still there: %v", err)
	}
}
