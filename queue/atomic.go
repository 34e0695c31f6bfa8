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
	"time"
)

// WriteAtomic streams r into path with the spool's commit sequence (a temp file beside
// path, fsync, rename, fsync the directory), for directories outside the spool: a carried
// directory, a relay's store. It creates path's directory if needed.
func WriteAtomic(path string, r io.Reader, perm fs.FileMode) (int64, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return 0, err
	}
	if err := mkdirDurable(dir); err != nil {
		return 0, err
	}
	// The temp file is hidden (a dot name) in path's own directory, which others list.
	return commitWith(dir, atomicTemp+"*", dir, filepath.Base(path), func(f *os.File) (int64, error) {
		if err := f.Chmod(perm); err != nil {
			return 0, err
		}
		return copyLimited(f, r, 0)
	})
}

// atomicTemp begins the names of WriteAtomic's temp files.
const atomicTemp = ".tmp-"

// CleanTemps removes the temp files that WriteAtomic writes beside their targets, found
// anywhere under root, when they are older than age: leftovers of writes that were
// killed. (A live write touches its file as it goes.) It returns how many it removed.
func CleanTemps(root string, age time.Duration, now time.Time) (int, error) {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil // a directory removed meanwhile, or unreadable: not ours to judge
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), atomicTemp) {
			return nil
		}
		if info, err := d.Info(); err == nil && now.Sub(info.ModTime()) >= age && os.Remove(p) == nil {
			n++
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("queue: clean temps: %w", err)
	}
	return n, nil
}

// copyBufs are the buffers spool writes copy through: large enough for few syscalls,
// reused so that thousands of small files do not each allocate one.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
