//go:build !darwin && !freebsd && !netbsd

package queue

import "syscall"

// ChangeTime is the inode change time of st (syscall's Stat_t names it Ctim on Linux).
func ChangeTime(st *syscall.Stat_t) (sec, nsec int64) { return st.Ctim.Unix() }
