//go:build !linux

package queue

import (
	"errors"
	"os"
)

// setDirect says O_DIRECT is not used here: the spool's files are written through the
// page cache and made durable by the commit's fsync alone. (FreeBSD has an O_DIRECT
// with other alignment rules, and macOS only F_NOCACHE; neither is measured.)
func setDirect(*os.File, bool) error { return errors.ErrUnsupported }
