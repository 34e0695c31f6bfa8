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
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	fail := func(err error) error { f.Close(); os.Remove(tmp); return err }
	if err := f.Chmod(perm); err != nil {
		return 0, fail(err)
	}
	n, err := copyLimited(f, r, 0)
	if err != nil {
		return n, fail(err)
	}
	if err := f.Sync(); err != nil {
		return n, fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return n, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return n, err
	}
	return n, syncDir(dir)
}

// copyBufs are the buffers spool writes copy through: large enough for few syscalls,
// reused so that thousands of small files do not each allocate one.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
