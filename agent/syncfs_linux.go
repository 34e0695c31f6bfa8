package agent

import (
	"os"

	"golang.org/x/sys/unix" // syncfs(2); the standard library's syscall package lacks it
)

// haveSyncfs says whether syncAll can make a whole recovery durable at once, so that
// writeRecovered need not fsync each file and its directory.
const haveSyncfs = true

// syncAll makes everything written under root's filesystem durable with one syncfs(2).
func syncAll(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
