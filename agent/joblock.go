package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// lockJob takes the lock of a job that must not run twice at once on a DIBS_DIR: the
// daemon's schedule and a command run from cron beside it (auto_check) take it alike.
// It waits for the holder (until ctx is done); the lock is an flock on db/<name>.lock, so a killed holder
// leaves none behind, and two openings in one process exclude each other as two
// processes do.
func (n *Node) lockJob(ctx context.Context, name string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(n.Dir, "db", name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s lock: %w", name, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("%s lock: %w", name, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
