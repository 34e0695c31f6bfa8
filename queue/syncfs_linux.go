package queue

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix" // syncfs(2); the standard library's syscall package lacks it
)

// syncfs makes everything written to dir's filesystem durable with one syncfs(2). It
// reports done false, and no error, where the kernel lacks the call: the caller then
// fsyncs each file.
func syncfs(dir string) (done bool, err error) {
	d, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer d.Close()
	err = unix.Syncfs(int(d.Fd()))
	if errors.Is(err, syscall.ENOSYS) {
		return false, nil
	}
	return err == nil, err
}
