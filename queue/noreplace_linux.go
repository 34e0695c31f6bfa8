package queue

import (
	"errors"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames old to new unless new exists: then it fails with an error
// that is fs.ErrExist, and nothing moves. renameat2(RENAME_NOREPLACE) does it in one
// step; a filesystem without it gets linkNoReplace.
func renameNoReplace(old, new string) error {
	err := unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOTSUP) {
		return linkNoReplace(old, new)
	}
	return err
}
