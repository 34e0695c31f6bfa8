package queue

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func newSpool(t *testing.T) *Spool {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *Spool, box Box, name, data string) {
	t.Helper()
	n, err := s.Put(box, name, strings.NewReader(data), 0)
	if err != nil {
		t.Fatalf("Put(%s, %s): %v", box, name, err)
	}
	if n != int64(len(data)) {
		t.Fatalf("Put(%s, %s) = %d bytes, want %d", box, name, n, len(data))
	}
}

// names lists box, failing the test on error.
func names(t *testing.T, s *Spool, box Box) []string {
	t.Helper()
	es, err := s.List(box)
	if err != nil {
		t.Fatalf("List(%s): %v", box, err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

// dirNames lists every entry of a directory, whatever its name.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func readBox(t *testing.T, s *Spool, box Box, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir(box), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpen_CreatesLayout(t *testing.T) {
	root := filepath.Join(t.TempDir(), "node")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if s.Root() != root {
		t.Errorf("Root() = %q, want %q", s.Root(), root)
	}
	for _, d := range []string{"tmp", "incoming", "quarantine", "outgoing"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s missing after Open: %v", d, err)
		}
	}
	if got, want := s.Dir(Outgoing("bob")), filepath.Join(root, "outgoing", "bob"); got != want {
		t.Errorf("Dir(Outgoing(bob)) = %q, want %q", got, want)
	}
	// Opening again is harmless.
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
}

func TestPutList_SortedByNameWithSizes(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "c.pgp", "ccc")
	put(t, s, Incoming, "a.pgp", "a")
	put(t, s, Incoming, "b.pgp", "")
	es, err := s.List(Incoming)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Name)
		if e.Box != Incoming {
			t.Errorf("%s: Box = %q", e.Name, e.Box)
		}
		if want := int64(map[string]int{"a.pgp": 1, "b.pgp": 0, "c.pgp": 3}[e.Name]); e.Size != want {
			t.Errorf("%s: Size = %d, want %d", e.Name, e.Size, want)
		}
		if e.ModTime.IsZero() {
			t.Errorf("%s: zero ModTime", e.Name)
		}
	}
	if want := []string{"a.pgp", "b.pgp", "c.pgp"}; !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
	if got := readBox(t, s, Incoming, "c.pgp"); got != "ccc" {
		t.Errorf("content = %q", got)
	}
	if left := dirNames(t, filepath.Join(s.Root(), "tmp")); len(left) != 0 {
		t.Errorf("tmp/ not empty after Put: %v", left)
	}
}

func TestList_SkipsForeignEntries(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "ok.pgp", "x")
	dir := s.Dir(Incoming)
	os.WriteFile(filepath.Join(dir, ".hidden"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "x"+ReasonSuffix), []byte("x"), 0o600)
	os.Mkdir(filepath.Join(dir, "subdir"), 0o700)
	os.Symlink("ok.pgp", filepath.Join(dir, "link"))
	if got := names(t, s, Incoming); !slices.Equal(got, []string{"ok.pgp"}) {
		t.Errorf("List = %v, want [ok.pgp]", got)
	}
}

func TestList_MissingOutgoingBoxIsEmpty(t *testing.T) {
	s := newSpool(t)
	es, err := s.List(Outgoing("nobody"))
	if err != nil || len(es) != 0 {
		t.Errorf("List(missing box) = %v, %v; want empty, nil", es, err)
	}
}

// In our own outgoing box a second file of a name replaces the first (in incoming/ it
// never does: TestPut_NeverReplacesInIncoming).
func TestPut_SameNameTwiceLeavesOneFile(t *testing.T) {
	s := newSpool(t)
	box := Outgoing("bob")
	put(t, s, box, "dup.pgp", "first")
	put(t, s, box, "dup.pgp", "second")
	if got := dirNames(t, s.Dir(box)); !slices.Equal(got, []string{"dup.pgp"}) {
		t.Errorf("%s = %v, want [dup.pgp]", box, got)
	}
	if got := readBox(t, s, box, "dup.pgp"); got != "second" {
		t.Errorf("content = %q, want the second copy", got)
	}
	if left := dirNames(t, filepath.Join(s.Root(), "tmp")); len(left) != 0 {
		t.Errorf("tmp/ = %v, want empty", left)
	}
}

func TestPut_TooLargeLeavesNothing(t *testing.T) {
	s := newSpool(t)
	data := strings.Repeat("x", 1000)
	if _, err := s.Put(Incoming, "exact.pgp", strings.NewReader(data), 1000); err != nil {
		t.Fatalf("Put of exactly maxSize: %v", err)
	}
	_, err := s.Put(Incoming, "big.pgp", strings.NewReader(data+"y"), 1000)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put over maxSize: err = %v, want ErrTooLarge", err)
	}
	if !strings.HasPrefix(err.Error(), "queue: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
	// A reader far bigger than the limit is not read to the end either.
	_, err = s.Put(Outgoing("bob"), "huge.pgp", io.LimitReader(zeros{}, 1<<40), 1<<20)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put of 1 TiB with 1 MiB limit: err = %v, want ErrTooLarge", err)
	}
	if got := dirNames(t, s.Dir(Incoming)); !slices.Equal(got, []string{"exact.pgp"}) {
		t.Errorf("incoming/ = %v, want [exact.pgp]", got)
	}
	if got := names(t, s, Outgoing("bob")); len(got) != 0 {
		t.Errorf("outgoing/bob = %v, want empty", got)
	}
	if left := dirNames(t, filepath.Join(s.Root(), "tmp")); len(left) != 0 {
		t.Errorf("tmp/ = %v, want empty", left)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestPut_ReaderErrorLeavesNothing(t *testing.T) {
	s := newSpool(t)
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(boom))
	if _, err := s.Put(Incoming, "half.pgp", r, 0); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the reader's error", err)
	}
	if got := dirNames(t, s.Dir(Incoming)); len(got) != 0 {
		t.Errorf("incoming/ = %v, want empty", got)
	}
	if left := dirNames(t, filepath.Join(s.Root(), "tmp")); len(left) != 0 {
		t.Errorf("tmp/ = %v, want empty", left)
	}
}

var badNames = []string{
	"", "../x", "..", ".", "a/b", "/abs", ".hidden", "-dash", "x" + ReasonSuffix,
	"a..b", "sp ace", "new\nline", "nul\x00", strings.Repeat("a", 161), "é",
}

func TestBadNames_Refused(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "good.pgp", "x")
	for _, name := range badNames {
		if ValidName(name) {
			t.Errorf("ValidName(%q) = true", name)
		}
		if _, err := s.Put(Incoming, name, strings.NewReader("x"), 0); !errors.Is(err, ErrBadName) {
			t.Errorf("Put(%q): err = %v, want ErrBadName", name, err)
		}
		if _, err := s.Claim(Incoming, name); !errors.Is(err, ErrBadName) {
			t.Errorf("Claim(%q): err = %v, want ErrBadName", name, err)
		}
		if _, err := s.Reason(name); !errors.Is(err, ErrBadName) {
			t.Errorf("Reason(%q): err = %v, want ErrBadName", name, err)
		}
	}
	for _, name := range []string{"a", "A.b", "0-1_2+3.pgp", strings.Repeat("a", 160), "x.reasons"} {
		if !ValidName(name) {
			t.Errorf("ValidName(%q) = false", name)
		}
	}
	// Nothing escaped: the root holds only the four boxes, and incoming only good.pgp.
	if got := dirNames(t, s.Root()); !slices.Equal(got, []string{"incoming", "outgoing", "quarantine", "tmp"}) {
		t.Errorf("root = %v", got)
	}
	if got := dirNames(t, s.Dir(Incoming)); !slices.Equal(got, []string{"good.pgp"}) {
		t.Errorf("incoming/ = %v", got)
	}
}

func TestBadBoxes_Refused(t *testing.T) {
	s := newSpool(t)
	put(t, s, Incoming, "f.pgp", "x")
	for _, box := range []Box{"", "tmp", "outgoing", "outgoing/", "../x", "incoming/..",
		Outgoing(".."), Outgoing("../x"), Outgoing("a/b"), Outgoing(".hidden"), "/etc"} {
		if _, err := s.Put(box, "f.pgp", strings.NewReader("x"), 0); !errors.Is(err, ErrBadName) {
			t.Errorf("Put(%q): err = %v, want ErrBadName", box, err)
		}
		if _, err := s.List(box); !errors.Is(err, ErrBadName) {
			t.Errorf("List(%q): err = %v, want ErrBadName", box, err)
		}
		if _, err := s.Claim(box, "f.pgp"); !errors.Is(err, ErrBadName) {
			t.Errorf("Claim(%q): err = %v, want ErrBadName", box, err)
		}
		c, err := s.Claim(Incoming, "f.pgp")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.MoveTo(box); !errors.Is(err, ErrBadName) {
			t.Errorf("MoveTo(%q): err = %v, want ErrBadName", box, err)
		}
		if got := names(t, s, Incoming); !slices.Equal(got, []string{"f.pgp"}) {
			t.Fatalf("after MoveTo(%q) incoming = %v", box, got)
		}
	}
	for _, p := range []string{"bob", "alice@example.org", "n0de.1+x"} {
		if !ValidPeer(p) {
			t.Errorf("ValidPeer(%q) = false", p)
		}
		if got := Outgoing(p).Peer(); got != p {
			t.Errorf("Outgoing(%q).Peer() = %q", p, got)
		}
	}
	if Incoming.Peer() != "" || Quarantine.Peer() != "" {
		t.Error("Peer() of a non-outgoing box is not empty")
	}
}

func TestPeers_ListsOutgoingDirs(t *testing.T) {
	s := newSpool(t)
	if ps, err := s.Peers(); err != nil || len(ps) != 0 {
		t.Fatalf("Peers() on a new spool = %v, %v", ps, err)
	}
	put(t, s, Outgoing("zed"), "1.pgp", "x")
	put(t, s, Outgoing("alice@example.org"), "2.pgp", "y")
	put(t, s, Outgoing("bob"), "3.pgp", "z")
	os.Mkdir(filepath.Join(s.Dir(outgoing), ".junk"), 0o700)
	os.WriteFile(filepath.Join(s.Dir(outgoing), "file"), nil, 0o600)
	ps, err := s.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"alice@example.org", "bob", "zed"}; !slices.Equal(ps, want) {
		t.Errorf("Peers() = %v, want %v", ps, want)
	}
	if got := names(t, s, Outgoing("bob")); !slices.Equal(got, []string{"3.pgp"}) {
		t.Errorf("outgoing/bob = %v", got)
	}
}

func TestCleanTmp_RemovesOnlyOldFiles(t *testing.T) {
	s := newSpool(t)
	tmp := filepath.Join(s.Root(), "tmp")
	now := time.Now()
	for name, age := range map[string]time.Duration{"old1": 2 * time.Hour, "old2": 25 * time.Hour, "young": time.Minute} {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.CleanTmp(time.Hour, now)
	if err != nil || n != 2 {
		t.Fatalf("CleanTmp = %d, %v; want 2, nil", n, err)
	}
	if got := dirNames(t, tmp); !slices.Equal(got, []string{"young"}) {
		t.Errorf("tmp/ = %v, want [young]", got)
	}
}

func TestExpireQuarantine_CountsFromQuarantineTime(t *testing.T) {
	s := newSpool(t)
	qdir := s.Dir(Quarantine)
	now := time.Now()
	age := func(name string, d time.Duration) {
		t.Helper()
		if err := os.Chtimes(filepath.Join(qdir, name), now.Add(-d), now.Add(-d)); err != nil {
			t.Fatal(err)
		}
	}
	quarantine := func(name string) {
		t.Helper()
		put(t, s, Incoming, name, "x")
		c, err := s.Claim(Incoming, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Quarantine("bad"); err != nil {
			t.Fatal(err)
		}
	}
	// Quarantined long ago: expires with its reason.
	quarantine("old.pgp")
	age("old.pgp", 48*time.Hour)
	age("old.pgp"+ReasonSuffix, 48*time.Hour)
	// Arrived long ago but quarantined just now: a person must still get to see it.
	quarantine("late.pgp")
	age("late.pgp", 48*time.Hour)
	// Quarantined just now.
	quarantine("new.pgp")
	// A reason left without its file by a crash, long ago; and a young one.
	os.WriteFile(filepath.Join(qdir, "orphan.pgp"+ReasonSuffix), []byte("x"), 0o600)
	age("orphan.pgp"+ReasonSuffix, 48*time.Hour)
	os.WriteFile(filepath.Join(qdir, "young.pgp"+ReasonSuffix), []byte("x"), 0o600)
	// A file moved here without a reason counts from its own time.
	os.WriteFile(filepath.Join(qdir, "bare.pgp"), []byte("x"), 0o600)
	age("bare.pgp", 48*time.Hour)

	n, err := s.ExpireQuarantine(24*time.Hour, now)
	if err != nil || n != 2 {
		t.Errorf("ExpireQuarantine = %d, %v; want 2, nil", n, err)
	}
	want := []string{"late.pgp", "late.pgp" + ReasonSuffix, "new.pgp", "new.pgp" + ReasonSuffix, "young.pgp" + ReasonSuffix}
	if got := dirNames(t, qdir); !slices.Equal(got, want) {
		t.Errorf("quarantine/ = %v, want %v", got, want)
	}
}

func TestNewName_ValidAndSortedByTime(t *testing.T) {
	t0 := time.Date(2024, 5, 6, 7, 8, 9, 10, time.FixedZone("x", 3600))
	var prev string
	for i := range 100 {
		n := NewName(t0.Add(time.Duration(i)*time.Nanosecond*997), ".pgp")
		if !ValidName(n) {
			t.Fatalf("NewName = %q, not a valid name", n)
		}
		if !strings.HasPrefix(n, "20240506T060809.") || !strings.HasSuffix(n, ".pgp") {
			t.Fatalf("NewName = %q, want UTC time first and .pgp last", n)
		}
		if n <= prev {
			t.Fatalf("NewName not increasing: %q after %q", n, prev)
		}
		prev = n
	}
	if a, b := NewName(t0, ""), NewName(t0, ""); a == b {
		t.Errorf("two names at one instant collide: %q", a)
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("550 no such user")
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	p := Permanent(base)
	if !IsPermanent(p) || !errors.Is(p, base) || p.Error() != base.Error() {
		t.Errorf("Permanent(%v) = %v: IsPermanent %v, Is %v", base, p, IsPermanent(p), errors.Is(p, base))
	}
	wrapped := errors.Join(errors.New("send"), p)
	if !IsPermanent(wrapped) {
		t.Error("IsPermanent of a wrapped permanent error = false")
	}
	if IsPermanent(base) || IsPermanent(nil) {
		t.Error("IsPermanent of a plain error = true")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "conf.toml")
	if err := WriteFileAtomic(p, []byte("a = 1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("a = 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(b, []byte("a = 2\n")) {
		t.Errorf("content = %q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"conf.toml"}) {
		t.Errorf("dir = %v, want only conf.toml", got)
	}
}

func TestWriteAtomic_StreamsIntoNewDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "carry", "bob")
	p := filepath.Join(dir, "m.pgp")
	n, err := WriteAtomic(p, strings.NewReader("payload"), 0o600)
	if err != nil || n != 7 {
		t.Fatalf("WriteAtomic = %d, %v", n, err)
	}
	if got := readFile(t, p); got != "payload" {
		t.Errorf("content = %q", got)
	}
	boom := errors.New("boom")
	if _, err := WriteAtomic(filepath.Join(dir, "half.pgp"), io.MultiReader(strings.NewReader("x"), iotest.ErrReader(boom)), 0o600); !errors.Is(err, boom) {
		t.Errorf("WriteAtomic with a failing reader: err = %v", err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"m.pgp"}) {
		t.Errorf("dir = %v, want only m.pgp", got)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPutBatch(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	items := []Item{{Name: "20260101T000000Z-a.pgp", Data: []byte("a")}, {Name: "20260101T000000Z-b.pgp", Data: []byte("bb")}}
	if err := s.PutBatch(Outgoing("bob"), items); err != nil {
		t.Fatal(err)
	}
	es, err := s.List(Outgoing("bob"))
	if err != nil || len(es) != 2 {
		t.Fatalf("%d entries, %v", len(es), err)
	}
	if err := s.PutBatch(Outgoing("bob"), []Item{{Name: "../evil", Data: nil}}); err == nil {
		t.Fatal("a bad name was accepted")
	}
	if left, _ := os.ReadDir(filepath.Join(s.root, tmpDir)); len(left) != 0 {
		t.Fatalf("%d temp files left", len(left))
	}
}

func TestPutWith_CommitsWhatIsWrittenOrNothing(t *testing.T) {
	s := newSpool(t)
	n, err := s.PutWith(Outgoing("bob"), "w.pgp", func(w io.Writer) error {
		for _, part := range []string{"sealed ", "by a ", "writer"} {
			if _, err := io.WriteString(w, part); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || n != int64(len("sealed by a writer")) {
		t.Fatalf("PutWith: %d, %v", n, err)
	}
	if got := readBox(t, s, Outgoing("bob"), "w.pgp"); got != "sealed by a writer" {
		t.Fatalf("content %q", got)
	}
	// A writer that fails half way leaves nothing, in the box or in tmp/.
	boom := errors.New("boom")
	_, err = s.PutWith(Outgoing("bob"), "half.pgp", func(w io.Writer) error {
		io.WriteString(w, "half a message")
		return boom
	})
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "queue: ") {
		t.Fatalf("failing writer: %v", err)
	}
	if got := names(t, s, Outgoing("bob")); !slices.Equal(got, []string{"w.pgp"}) {
		t.Errorf("outgoing/bob = %v, want [w.pgp]", got)
	}
	if left := dirNames(t, filepath.Join(s.Root(), "tmp")); len(left) != 0 {
		t.Errorf("tmp/ = %v, want empty", left)
	}
	if _, err := s.PutWith(Outgoing("bob"), "../x", func(io.Writer) error { t.Fatal("called"); return nil }); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestPutWith_LargeAndOddSizes(t *testing.T) {
	// Whole MiBs go out with O_DIRECT (where the filesystem allows), the rest through the
	// page cache: every size around the chunk and alignment edges comes back exact, from
	// writes of awkward lengths.
	s := newSpool(t)
	for _, size := range []int{0, 1, 4095, 4096, 1<<20 - 1, 1 << 20, 1<<20 + 1, 3<<20 + 4097} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*31 + i>>11)
		}
		name := fmt.Sprintf("f%d.pgp", size)
		n, err := s.PutWith(Outgoing("bob"), name, func(w io.Writer) error {
			for rest := data; len(rest) > 0; {
				step := min(len(rest), 65537)
				if _, err := w.Write(rest[:step]); err != nil {
					return err
				}
				rest = rest[step:]
			}
			return nil
		})
		if err != nil || n != int64(size) {
			t.Fatalf("size %d: %d, %v", size, n, err)
		}
		if got, _ := os.ReadFile(filepath.Join(s.Dir(Outgoing("bob")), name)); !bytes.Equal(got, data) {
			t.Fatalf("size %d: read back %d different bytes", size, len(got))
		}
	}
}
