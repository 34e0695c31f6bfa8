package queue

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStamp_TellsVersionsApart(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if s, err := StampOf(p); !errors.Is(err, fs.ErrNotExist) || s != (Stamp{}) {
		t.Fatalf("missing file: %v, %v", s, err)
	}
	if err := os.WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	first, err := StampOf(p)
	if err != nil || first == (Stamp{}) {
		t.Fatalf("StampOf: %v, %v", first, err)
	}
	if again, _ := StampOf(p); again != first {
		t.Fatal("the same file stamped twice differs")
	}

	// Same size and mtime, content rewritten in place: the ctime tells.
	mt := time.Unix(1_700_000_000, 0)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	before, _ := StampOf(p)
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	if after, _ := StampOf(p); after == before {
		t.Fatal("a same-size rewrite with the old mtime went unnoticed")
	}

	// Replaced by rename with a file of the same size and mtime: the inode tells.
	q := filepath.Join(dir, "g")
	if err := os.WriteFile(q, []byte("333"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(q, mt, mt); err != nil {
		t.Fatal(err)
	}
	before, _ = StampOf(p)
	if err := os.Rename(q, p); err != nil {
		t.Fatal(err)
	}
	if after, _ := StampOf(p); after == before {
		t.Fatal("a replacement by rename went unnoticed")
	}
}
