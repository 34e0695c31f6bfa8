package queue

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Claim is the exclusive right to act on one spool file, held through an OS file lock on
// the file itself. The lock follows the file through renames and dies with the process, so
// a crashed worker never leaves a file stuck. A Claim ends with exactly one of Ack,
// Quarantine, MoveTo or Release.
type Claim struct {
	s    *Spool
	box  Box
	name string
	f    *os.File
	size int64
	done bool
}

// Claim locks box/name for the caller. It fails with ErrBusy if another worker (in this
// process or another) holds it, and with ErrGone if the file is no longer there.
func (s *Spool) Claim(box Box, name string) (*Claim, error) {
	if err := s.checkBox(box); err != nil {
		return nil, err
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: file %q", ErrBadName, name)
	}
	path := filepath.Join(s.Dir(box), name)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrGone
	}
	if err != nil {
		return nil, fmt.Errorf("queue: claim %s/%s: %w", box, name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, fmt.Errorf("queue: claim %s/%s: %w", box, name, err)
	}
	// The previous holder may have acked (removed) or moved the file between our open and
	// our lock: then the inode we hold is no longer the one at path.
	held, err1 := f.Stat()
	now, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(held, now) {
		f.Close()
		return nil, ErrGone
	}
	return &Claim{s: s, box: box, name: name, f: f, size: held.Size()}, nil
}

// Name is the claimed file's name.
func (c *Claim) Name() string { return c.name }

// Box is where the claimed file is.
func (c *Claim) Box() Box { return c.box }

// Size is the file's size in bytes.
func (c *Claim) Size() int64 { return c.size }

// Path is the claimed file's path, for callers that need to open it again.
func (c *Claim) Path() string { return filepath.Join(c.s.Dir(c.box), c.name) }

// Reader returns a fresh reader over the whole file. Readers share one file offset: use
// one at a time.
func (c *Claim) Reader() io.ReadSeeker {
	c.f.Seek(0, io.SeekStart)
	return c.f
}

// File returns the open file, for io.ReaderAt access.
func (c *Claim) File() *os.File { return c.f }

// Ack removes the file: it has been handled. The removal is not fsynced: if a crash
// undoes it, the file is handled again, and handlers are idempotent.
func (c *Claim) Ack() error {
	if c.done {
		return nil
	}
	err := os.Remove(c.Path())
	c.release()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue: ack %s/%s: %w", c.box, c.name, err)
	}
	return nil
}

// Quarantine moves the file into quarantine/ with reason written beside it, so that it
// no longer blocks anything and a person can look at it.
func (c *Claim) Quarantine(reason string) error { return c.QuarantineWith(reason, QuarantineOpts{}) }

// MoveTo renames the file into another box of the same spool (a state change).
func (c *Claim) MoveTo(box Box) error {
	if c.done {
		return nil
	}
	defer c.release()
	if err := c.s.checkBox(box); err != nil {
		return err
	}
	dir := c.s.Dir(box)
	if err := mkdirDurable(dir); err != nil {
		return fmt.Errorf("queue: move %s/%s: %w", c.box, c.name, err)
	}
	if err := os.Rename(c.Path(), filepath.Join(dir, c.name)); err != nil {
		return fmt.Errorf("queue: move %s/%s: %w", c.box, c.name, err)
	}
	return syncDir(dir)
}

// Release gives the claim up and leaves the file where it is, for a later try.
func (c *Claim) Release() error {
	c.release()
	return nil
}

func (c *Claim) release() {
	if c.done {
		return
	}
	c.done = true
	c.f.Close() // closing the last descriptor drops the flock
}
