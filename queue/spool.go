package queue

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Box names one spool directory: Incoming, Quarantine, or Outgoing(peer).
type Box string

const (
	// Incoming holds received files not yet processed.
	Incoming Box = "incoming"
	// Quarantine holds files that failed to open or to process, each with a reason file.
	Quarantine Box = "quarantine"
	outgoing   Box = "outgoing"
	tmpDir         = "tmp"
	// ReasonSuffix ends the name of the file beside a quarantined one that says why.
	ReasonSuffix = ".reason"
)

// Outgoing is the box of files waiting for delivery to peer.
func Outgoing(peer string) Box { return Box(string(outgoing) + "/" + peer) }

// Peer returns the peer of an Outgoing box, or "" for any other box.
func (b Box) Peer() string {
	p, ok := strings.CutPrefix(string(b), string(outgoing)+"/")
	if !ok {
		return ""
	}
	return p
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,159}$`)
	peerRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+@-]{0,127}$`)
)

// ValidName reports whether name can be a spool file name: letters, digits and ._+-,
// not starting with a dot or dash, at most 160 characters. Names that come from the
// network are checked with it before they touch the filesystem.
func ValidName(name string) bool {
	return nameRE.MatchString(name) && !strings.HasSuffix(name, ReasonSuffix) && !strings.Contains(name, "..")
}

// ValidPeer reports whether name can name a peer's outgoing directory
// (the ValidName set plus '@', so that mail addresses work).
func ValidPeer(name string) bool {
	return peerRE.MatchString(name) && !strings.Contains(name, "..")
}

// NewName returns a fresh file name that sorts by creation time: UTC time to the
// nanosecond, then 64 random bits, then ext (".pgp" for sealed messages).
func NewName(now time.Time, ext string) string {
	var r [8]byte
	_, _ = rand.Read(r[:])
	return now.UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(r[:]) + ext
}

// Spool is one node's set of spool directories.
type Spool struct {
	root string
}

// Entry describes one file in a box.
type Entry struct {
	Box     Box
	Name    string
	Size    int64
	ModTime time.Time
}

// Open returns the spool rooted at root, creating its directories if needed.
func Open(root string) (*Spool, error) {
	for _, d := range []string{tmpDir, string(Incoming), string(Quarantine), string(outgoing)} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("queue: open %s: %w", root, err)
		}
	}
	return &Spool{root: root}, nil
}

// Root is the directory holding the spool's boxes.
func (s *Spool) Root() string { return s.root }

// Dir is the filesystem path of box.
func (s *Spool) Dir(box Box) string { return filepath.Join(s.root, filepath.FromSlash(string(box))) }

func (s *Spool) checkBox(box Box) error {
	switch box {
	case Incoming, Quarantine:
		return nil
	}
	if p := box.Peer(); p != "" && ValidPeer(p) {
		return nil
	}
	return fmt.Errorf("%w: box %q", ErrBadName, box)
}

// Put commits the contents of r as box/name: written to tmp/, fsynced, renamed into place,
// and the directory fsynced. When Put returns nil the file survives a crash; when it returns
// an error nothing is left behind. If maxSize > 0 and r holds more than maxSize bytes, Put
// fails with ErrTooLarge. It returns the number of bytes written.
//
// A file already there under name is never replaced in incoming/, where others' files
// arrive: if it holds the same bytes, the new copy is dropped and Put returns nil (one
// file delivered twice leaves one copy); if not, Put fails with ErrExists and the waiting
// file stays as it is. Receive keeps both instead. In an outgoing box, which holds our own
// files, the new file replaces the old one (a message sealed again after a crash).
func (s *Spool) Put(box Box, name string, r io.Reader, maxSize int64) (int64, error) {
	_, n, err := s.put(box, name, replace, func(f *os.File) (int64, error) { return copyLimited(f, r, maxSize) })
	return n, err
}

// Receive commits the contents of r into incoming/ as Put does, for a file whose name
// came from elsewhere. When a different file is already waiting under name, both are
// kept: the newcomer goes in under a fresh name (NewName, with name's extension). It
// returns the name the file is in incoming/ under, which is name unless it was taken.
func (s *Spool) Receive(name string, r io.Reader, maxSize int64) (string, int64, error) {
	return s.put(Incoming, name, keepBoth, func(f *os.File) (int64, error) { return copyLimited(f, r, maxSize) })
}

// put checks box and name, makes a peer's box if needed, and commits what fill writes.
// In incoming/ a taken name is never replaced: there replace means refuse.
func (s *Spool) put(box Box, name string, taken onTaken, fill func(*os.File) (int64, error)) (string, int64, error) {
	if err := s.checkBox(box); err != nil {
		return "", 0, err
	}
	if box == Incoming && taken == replace {
		taken = refuse
	}
	if !ValidName(name) {
		return "", 0, fmt.Errorf("%w: file %q", ErrBadName, name)
	}
	dir := s.Dir(box)
	if box.Peer() != "" {
		if err := mkdirDurable(dir); err != nil {
			return "", 0, fmt.Errorf("queue: put %s/%s: %w", box, name, err)
		}
	}
	as, n, err := commitAs(filepath.Join(s.root, tmpDir), "put-*.tmp", dir, name, taken, fill)
	if err != nil {
		return "", n, fmt.Errorf("queue: put %s/%s: %w", box, name, err)
	}
	return as, n, nil
}

// PutWith is Put for a producer that writes rather than is read: write gets the
// temporary file to write the whole content into, and the file is committed as Put
// commits it only if write returns nil. Nothing is left behind on error. It saves the
// pipe and the goroutine a Put from a writer would need. Whole chunks are written with
// O_DIRECT where the filesystem allows (see direct.go).
func (s *Spool) PutWith(box Box, name string, write func(io.Writer) error) (int64, error) {
	_, n, err := s.put(box, name, replace, directFill(write))
	return n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writerOnly hides a file's ReadFrom, whose generic path copies in 32 KiB steps, so
// that io.CopyBuffer uses the buffer it is given.
type writerOnly struct{ io.Writer }

// copyLimited copies r into f through a pooled buffer; with maxSize > 0, more than
// maxSize bytes is ErrTooLarge (and r is not read much further).
func copyLimited(f *os.File, r io.Reader, maxSize int64) (int64, error) {
	if maxSize > 0 {
		r = io.LimitReader(r, maxSize+1)
	}
	bp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(writerOnly{f}, r, *bp)
	copyBufs.Put(bp)
	if err == nil && maxSize > 0 && n > maxSize {
		err = fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxSize)
	}
	return n, err
}

// commit is the write → fsync → rename → fsync dir sequence, for r.
func commit(tmp, dir, name string, r io.Reader, maxSize int64) (int64, error) {
	return commitWith(tmp, "put-*.tmp", dir, name, func(f *os.File) (int64, error) { return copyLimited(f, r, maxSize) })
}

// commitWith is the write → fsync → rename → fsync dir sequence, for what fill writes.
// A file already at name is replaced.
func commitWith(tmp, pattern, dir, name string, fill func(*os.File) (int64, error)) (int64, error) {
	_, n, err := commitAs(tmp, pattern, dir, name, replace, fill)
	return n, err
}

// onTaken says what a commit does when its name is taken.
type onTaken int

const (
	replace  onTaken = iota // the new file replaces the old one
	refuse                  // ErrExists, unless the old one holds the same bytes
	keepBoth                // the new file goes in under a fresh name, unless the old one holds the same bytes
)

// commitAs is commitWith with a choice of what a taken name does (see onTaken). It
// returns the name the file was committed as.
func commitAs(tmp, pattern, dir, name string, taken onTaken, fill func(*os.File) (int64, error)) (as string, n int64, err error) {
	f, err := os.CreateTemp(tmp, pattern)
	if err != nil {
		return "", 0, err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if n, err = fill(f); err != nil {
		return "", n, err
	}
	if err = f.Sync(); err != nil {
		return "", n, err
	}
	if err = f.Close(); err != nil {
		return "", n, err
	}
	as = name
	if taken == replace {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	} else {
		err = renameNoReplace(f.Name(), filepath.Join(dir, name))
	}
	for try := 0; errors.Is(err, fs.ErrExist); try++ {
		if sameFile(f.Name(), filepath.Join(dir, as)) {
			return name, n, nil // a duplicate: the one waiting is kept, the temp file removed
		}
		if taken == refuse || try == 3 {
			return "", n, fmt.Errorf("%w: %s", ErrExists, name)
		}
		as = freshName(name)
		err = renameNoReplace(f.Name(), filepath.Join(dir, as))
	}
	if err != nil {
		return "", n, err
	}
	committed = true
	return as, n, syncDir(dir)
}

// freshName is a new name for a file whose name was taken: NewName, ending as name did.
func freshName(name string) string {
	if ext := filepath.Ext(name); ext != "" && len(ext) <= 16 && ValidName("x"+ext) {
		return NewName(time.Now(), ext)
	}
	return NewName(time.Now(), "")
}

// sameFile reports whether the files at a and b hold the same bytes.
func sameFile(a, b string) bool {
	fa, err := os.Open(a)
	if err != nil {
		return false
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false
	}
	defer fb.Close()
	sa, err1 := fa.Stat()
	sb, err2 := fb.Stat()
	if err1 != nil || err2 != nil || sa.Size() != sb.Size() {
		return false
	}
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if erra != nil || errb != nil {
			return (erra == io.EOF || erra == io.ErrUnexpectedEOF) && (errb == io.EOF || errb == io.ErrUnexpectedEOF)
		}
	}
}

// linkNoReplace renames old to new unless new exists, for filesystems without an atomic
// rename that refuses to replace: a hard link (which never replaces) and an unlink.
func linkNoReplace(old, new string) error {
	if err := os.Link(old, new); err != nil {
		return err
	}
	return os.Remove(old)
}

// WriteFileAtomic commits data as path with the same write → fsync → rename → fsync dir
// sequence as Put, for files outside the boxes (configuration, keys, stored pieces).
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	_, err := WriteAtomic(path, bytes.NewReader(data), perm)
	return err
}

// mkdirDurable creates dir (one level: its parent must exist) if it is missing, and then
// fsyncs the parent, so that the new directory entry survives a crash together with the
// files about to be committed into it.
func mkdirDurable(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// List returns the files in box, oldest name first. A missing box is empty.
func (s *Spool) List(box Box) ([]Entry, error) {
	if err := s.checkBox(box); err != nil {
		return nil, err
	}
	des, err := os.ReadDir(s.Dir(box))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: list %s: %w", box, err)
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		if !de.Type().IsRegular() || !ValidName(de.Name()) {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // removed since ReadDir: someone acked it
		}
		out = append(out, Entry{Box: box, Name: de.Name(), Size: info.Size(), ModTime: info.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Peers returns the peers that have an outgoing directory, sorted.
func (s *Spool) Peers() ([]string, error) {
	des, err := os.ReadDir(s.Dir(outgoing))
	if err != nil {
		return nil, fmt.Errorf("queue: peers: %w", err)
	}
	var out []string
	for _, de := range des {
		if de.IsDir() && ValidPeer(de.Name()) {
			out = append(out, de.Name())
		}
	}
	return out, nil
}

// Reason returns why a quarantined file was quarantined: the box it came from, a colon,
// and the reason given to Claim.Quarantine; then, each after "; ", whom it came from and
// what of it was kept (see QuarantineWith).
func (s *Spool) Reason(name string) (string, error) {
	if !ValidName(name) {
		return "", fmt.Errorf("%w: file %q", ErrBadName, name)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir(Quarantine), name+ReasonSuffix))
	if err != nil {
		return "", fmt.Errorf("queue: reason %s: %w", name, err)
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "; "), nil
}

// CleanTmp removes files in tmp/ older than age: leftovers of writers that crashed.
func (s *Spool) CleanTmp(age time.Duration, now time.Time) (int, error) {
	dir := filepath.Join(s.root, tmpDir)
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("queue: clean tmp: %w", err)
	}
	n := 0
	for _, de := range des {
		info, err := de.Info()
		if err != nil || now.Sub(info.ModTime()) < age {
			continue
		}
		if os.Remove(filepath.Join(dir, de.Name())) == nil {
			n++
		}
	}
	return n, nil
}

// ExpireQuarantine removes quarantined files (and their reasons) that were quarantined
// longer than age ago. The age counts from the reason file, written when the file was
// quarantined: a rename keeps the file's own time, which is when it arrived. Reason files
// left without their file (a crash inside Claim.Quarantine) expire the same way.
func (s *Spool) ExpireQuarantine(age time.Duration, now time.Time) (int, error) {
	dir := s.Dir(Quarantine)
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("queue: expire quarantine: %w", err)
	}
	names := make(map[string]bool, len(des))
	for _, de := range des {
		names[de.Name()] = true
	}
	old := func(name string) bool {
		info, err := os.Stat(filepath.Join(dir, name))
		return err == nil && now.Sub(info.ModTime()) >= age
	}
	n := 0
	for _, de := range des {
		name := de.Name()
		if base, ok := strings.CutSuffix(name, ReasonSuffix); ok && ValidName(base) {
			if !names[base] && old(name) {
				os.Remove(filepath.Join(dir, name)) // orphan reason
			}
			continue
		}
		if !de.Type().IsRegular() || !ValidName(name) {
			continue
		}
		when := name
		if names[name+ReasonSuffix] {
			when = name + ReasonSuffix
		}
		if !old(when) {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			os.Remove(filepath.Join(dir, name+ReasonSuffix))
			n++
		}
	}
	return n, nil
}
