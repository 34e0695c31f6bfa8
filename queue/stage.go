package queue

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stagedDir holds the stages: staged/<stage>/<box>/<name>.
const stagedDir = "staged"

// A Stage holds files written for a box that nobody may see there yet: a writer that
// must record a file before it travels (the store pipeline records each piece in its
// database first) writes it into a stage, makes it durable with Sync, records it, and
// then releases it into its box. A file is in a stage or in its box, never half in one.
//
// The stage's writer holds a lock on its directory (an flock, which dies with the
// process). What a writer that died left in its stage is for SweepStages: released or
// dropped as the caller's records say. A Stage is safe for concurrent use.
type Stage struct {
	s    *Spool
	dir  string
	lock *os.File

	mu    sync.Mutex
	made  map[Box]bool // box directories created in the stage
	dirty map[Box]bool // of them, those with entries not yet synced
}

// NewStage makes an empty stage, locked for the caller until Close.
func (s *Spool) NewStage() (*Stage, error) {
	root := filepath.Join(s.root, stagedDir)
	if err := mkdirDurable(root); err != nil {
		return nil, fmt.Errorf("queue: new stage: %w", err)
	}
	// Made under a dot name and renamed once locked, so that a sweep never takes a
	// stage whose writer has not locked it yet.
	tmp, err := os.MkdirTemp(root, ".new-*")
	if err != nil {
		return nil, fmt.Errorf("queue: new stage: %w", err)
	}
	lock, err := os.Open(tmp)
	if err == nil {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	dir := filepath.Join(root, NewName(time.Now(), ""))
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err == nil {
		err = syncDir(root)
	}
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		os.Remove(tmp)
		os.Remove(dir)
		return nil, fmt.Errorf("queue: new stage: %w", err)
	}
	return &Stage{s: s, dir: dir, lock: lock, made: map[Box]bool{}, dirty: map[Box]bool{}}, nil
}

func (st *Stage) boxDir(box Box) string {
	return filepath.Join(st.dir, filepath.FromSlash(string(box)))
}

// PutWith writes a file for box/name into the stage, as Spool.PutWith would write it
// into box: write gets the file to write the whole content into; the file is fsynced.
// On error nothing is left behind. The file is not in box until Release.
func (st *Stage) PutWith(box Box, name string, write func(io.Writer) error) (n int64, err error) {
	if err := st.s.checkBox(box); err != nil {
		return 0, err
	}
	if !ValidName(name) {
		return 0, fmt.Errorf("%w: file %q", ErrBadName, name)
	}
	if err := st.makeBox(box); err != nil {
		return 0, fmt.Errorf("queue: stage %s/%s: %w", box, name, err)
	}
	path := filepath.Join(st.boxDir(box), name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("queue: stage %s/%s: %w", box, name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
			err = fmt.Errorf("queue: stage %s/%s: %w", box, name, err)
		}
	}()
	if n, err = directFill(write)(f); err != nil {
		return n, err
	}
	if err = f.Sync(); err != nil {
		return n, err
	}
	if err = f.Close(); err != nil {
		return n, err
	}
	st.mu.Lock()
	st.dirty[box] = true
	st.mu.Unlock()
	return n, nil
}

// makeBox creates box's directory in the stage, each new level made durable.
func (st *Stage) makeBox(box Box) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.made[box] {
		return nil
	}
	dir := st.dir
	for _, part := range strings.Split(string(box), "/") {
		dir = filepath.Join(dir, part)
		if err := mkdirDurable(dir); err != nil {
			return err
		}
	}
	st.made[box] = true
	return nil
}

// Sync makes the names of the files put into the stage so far durable: once it returns
// nil, a crash leaves them in the stage for SweepStages (each file's content is durable
// when PutWith returns). Call it before recording the files.
func (st *Stage) Sync() error {
	st.mu.Lock()
	var boxes []Box
	for b := range st.dirty {
		boxes = append(boxes, b)
	}
	clear(st.dirty)
	st.mu.Unlock()
	for _, b := range boxes {
		if err := syncDir(st.boxDir(b)); err != nil {
			st.mu.Lock()
			st.dirty[b] = true
			st.mu.Unlock()
			return fmt.Errorf("queue: sync stage %s: %w", b, err)
		}
	}
	return nil
}

// Release moves the named staged files into box, where readers see them, and makes that
// durable. A name already in box is replaced, as Put replaces it.
func (st *Stage) Release(box Box, names ...string) error {
	return releaseFrom(st.s, st.boxDir(box), box, names)
}

func releaseFrom(s *Spool, from string, box Box, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if err := s.checkBox(box); err != nil {
		return err
	}
	dir := s.Dir(box)
	if box.Peer() != "" {
		if err := mkdirDurable(dir); err != nil {
			return fmt.Errorf("queue: release into %s: %w", box, err)
		}
	}
	var errs []error
	for _, name := range names {
		if !ValidName(name) {
			errs = append(errs, fmt.Errorf("%w: file %q", ErrBadName, name))
			continue
		}
		if err := os.Rename(filepath.Join(from, name), filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("queue: release %s/%s: %w", box, name, err))
		}
	}
	if err := syncDir(dir); err != nil {
		errs = append(errs, fmt.Errorf("queue: release into %s: %w", box, err))
	}
	return errors.Join(errs...)
}

// Drop removes a staged file that will not be released.
func (st *Stage) Drop(box Box, name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: file %q", ErrBadName, name)
	}
	err := os.Remove(filepath.Join(st.boxDir(box), name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue: drop staged %s/%s: %w", box, name, err)
	}
	return nil
}

// Close ends the stage: an empty stage is removed; files still in it (neither released
// nor dropped) stay, unlocked, for SweepStages.
func (st *Stage) Close() error {
	removeEmpty(st.dir)
	return st.lock.Close()
}

// removeEmpty removes dir and the directories below it, deepest first, where they are
// empty.
func removeEmpty(dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // fails unless empty
	}
}

// SweepStages settles the stages whose writers died (crashed or killed): each file is
// released into its box if keep says so, else removed; then the stage goes. A file
// keep cannot decide on (an error) stays, and so does its stage, for a later sweep.
// Stages still locked by their writers are left alone. It returns how many files it
// released and how many it removed.
func (s *Spool) SweepStages(keep func(box Box, name string) (bool, error)) (released, dropped int, err error) {
	root := filepath.Join(s.root, stagedDir)
	des, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("queue: sweep stages: %w", err)
	}
	var errs []error
	for _, de := range des {
		dir := filepath.Join(root, de.Name())
		if strings.HasPrefix(de.Name(), ".new-") {
			// A stage being made, or the empty leftover of one whose maker died then.
			if info, err := de.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
				os.Remove(dir)
			}
			continue
		}
		if !de.IsDir() {
			continue
		}
		r, d, err := s.sweepStage(dir, keep)
		released += r
		dropped += d
		if err != nil {
			errs = append(errs, err)
		}
	}
	return released, dropped, errors.Join(errs...)
}

// sweepStage settles one stage if its writer is gone.
func (s *Spool) sweepStage(dir string, keep func(Box, string) (bool, error)) (released, dropped int, err error) {
	lock, err := os.Open(dir)
	if err != nil {
		return 0, 0, nil // swept meanwhile by another process
	}
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return 0, 0, nil // its writer is alive
	}
	if _, err := os.Stat(dir); err != nil {
		return 0, 0, nil // swept by the process that held the lock before us
	}
	byBox := map[string][]string{}
	var errs []error
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, werr error) error {
		if werr != nil || !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(dir, filepath.Dir(p))
		box, name := Box(filepath.ToSlash(rel)), d.Name()
		if s.checkBox(box) == nil && ValidName(name) {
			ok, err := keep(box, name)
			if err != nil {
				errs = append(errs, fmt.Errorf("queue: sweep %s/%s: %w", box, name, err))
				return nil
			}
			if ok {
				byBox[string(box)] = append(byBox[string(box)], name)
				return nil
			}
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("queue: sweep %s: %w", p, err))
		} else {
			dropped++
		}
		return nil
	})
	for box, names := range byBox {
		if err := releaseFrom(s, filepath.Join(dir, filepath.FromSlash(box)), Box(box), names); err != nil {
			errs = append(errs, err)
			continue
		}
		released += len(names)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("queue: sweep stage: %w", err))
		}
	}
	return released, dropped, errors.Join(errs...)
}

// directFill is the fill of a commit for a producer that writes: write gets the file
// (through directWriter) and the bytes written are counted.
func directFill(write func(io.Writer) error) func(*os.File) (int64, error) {
	return func(f *os.File) (int64, error) {
		dw := newDirectWriter(f)
		cw := &countWriter{w: dw}
		err := write(cw)
		if cerr := dw.Close(); err == nil {
			err = cerr
		}
		return cw.n, err
	}
}
