package queue

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
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
	return commitWith(dir, ".tmp-*", dir, filepath.Base(path), func(f *os.File) (int64, error) {
		if err := f.Chmod(perm); err != nil {
			return 0, err
		}
		return copyLimited(f, r, 0)
	})
}

// copyBufs are the buffers spool writes copy through: large enough for few syscalls,
// reused so that thousands of small files do not each allocate one.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
