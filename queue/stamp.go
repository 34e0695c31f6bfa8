package queue

import (
	"os"
	"syscall"
)

// Stamp tells versions of a file apart without reading it: a rewrite changes its mtime,
// ctime or size, a replacement by rename its inode. Stamps compare with ==; the zero
// Stamp is that of a file that does not exist.
type Stamp struct {
	mod, ctime int64
	size       int64
	ino        uint64
	ok         bool
}

// StampOf stats path. On an error (fs.ErrNotExist for a missing file) it returns the zero
// Stamp with the error.
func StampOf(path string) (Stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}, err
	}
	s := Stamp{mod: fi.ModTime().UnixNano(), size: fi.Size(), ok: true}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		sec, nsec := ChangeTime(st)
		s.ctime, s.ino = sec*1e9+nsec, uint64(st.Ino)
	}
	return s, nil
}
