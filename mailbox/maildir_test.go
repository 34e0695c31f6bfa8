package mailbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dibs-backup/dibs/queue/queuetest"
)

func writeMaildir(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestImportMaildir_TakesOnlyOurMail(t *testing.T) {
	bin := queuetest.BinaryContent()
	noAttachment := []byte("From: alice@dibs.test\r\nX-Dibs-Message: lost.pgp\r\nX-Dibs-Key: " + bobKey + "\r\n\r\nnothing\r\n")
	files := map[string][]byte{
		"new/1700000001.M1P1.host":      rawMail(t, bob, bobKey, "md-a.pgp", bin),
		"cur/1700000002.M2P1.host:2,S":  rawMail(t, bob, bobKey, "md-b.pgp", []byte("b")),
		"new/1700000003.M3P1.host":      []byte(foreignMail),
		"new/1700000004.M4P1.host":      rawMail(t, bob, otherKy, "other.pgp", []byte("o")),
		"new/1700000005.M5P1.host":      noAttachment,
		"new/1700000006.M6P1.host":      {0, 1, 2, 0xff, '\n', ':', '\n'}, // not a mail at all
		"cur/1700000007.M7P1.host:2,RS": []byte("Subject: re: lunch\r\n\r\nyes\r\n"),
	}
	dir := writeMaildir(t, files)

	s := newStore()
	n, err := ImportMaildir(dir, bobKey, s.sink)
	if n != 2 || !errors.Is(err, ErrBadMail) {
		t.Fatalf("ImportMaildir = %d, %v; want 2 and ErrBadMail for the mail without attachment", n, err)
	}
	if !bytes.Equal(s.get(t, "md-a.pgp"), bin) || string(s.get(t, "md-b.pgp")) != "b" {
		t.Fatal("imported files differ")
	}
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		taken := name == "new/1700000001.M1P1.host" || name == "cur/1700000002.M2P1.host:2,S"
		switch {
		case taken && !errors.Is(err, os.ErrNotExist):
			t.Errorf("%s was imported but not removed", name)
		case !taken && (err != nil || !bytes.Equal(got, data)):
			t.Errorf("%s was touched: %v", name, err)
		}
	}
	// Without a key, the mail for the other node is ours too.
	n, err = ImportMaildir(dir, "", s.sink)
	if n != 1 || !errors.Is(err, ErrBadMail) {
		t.Fatalf("keyless ImportMaildir = %d, %v", n, err)
	}
}

func TestImportMaildir_SinkFailureKeepsMail(t *testing.T) {
	dir := writeMaildir(t, map[string][]byte{
		"new/1.a": rawMail(t, bob, bobKey, "a.pgp", []byte("a")),
		"new/2.b": rawMail(t, bob, bobKey, "b.pgp", []byte("b")),
	})
	s := newStore()
	s.fail = errDisk
	n, err := ImportMaildir(dir, bobKey, s.sink)
	if n != 0 || !errors.Is(err, errDisk) || s.calls != 1 {
		t.Fatalf("ImportMaildir with a failing sink = %d, %v after %d calls", n, err, s.calls)
	}
	s.fail = nil
	if n, err := ImportMaildir(dir, bobKey, s.sink); n != 2 || err != nil {
		t.Fatalf("second import = %d, %v", n, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "new")); len(ents) != 0 {
		t.Fatalf("%d files left in new/", len(ents))
	}
}

func TestImportMaildir_NotAMaildir(t *testing.T) {
	if _, err := ImportMaildir(t.TempDir(), "", newStore().sink); err == nil {
		t.Fatal("a directory without new/ and cur/ was accepted")
	}
}
