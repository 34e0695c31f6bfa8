//go:build !darwin && !freebsd && !netbsd

package agent

import "syscall"

// ctime is the inode change time of st (syscall's Stat_t names it Ctim on Linux).
func ctime(st *syscall.Stat_t) (sec, nsec int64) { return st.Ctim.Unix() }
