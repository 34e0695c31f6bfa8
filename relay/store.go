package relay

import (
	"io"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// Store is where a Server keeps deposited files. The server authenticates callers and
// checks names and sizes; the store decides who may deposit for whom and keeps files
// durably. Names reaching a store have passed queue.ValidName. Implementations must be safe
// for concurrent use.
type Store interface {
	// Key returns the public key of fp, and true, if fp may open a session at all. It
	// returns false for everyone else. The server asks again on every request, so a key
	// that is dropped loses its open sessions at once.
	Key(fp pgpmsg.Fingerprint) (*pgpmsg.Key, bool)

	// Recipient is asked before any byte of a deposit is read. It returns an error wrapping
	// ErrForbidden if from may not deposit files for to. Otherwise it returns the
	// encryption key ids that a file for to must be sealed to (the server refuses files
	// whose OpenPGP recipients include none of them), or nil if the store does not know
	// to's key, and then the server does not look.
	Recipient(from, to pgpmsg.Fingerprint) (keyIDs []uint64, err error)

	// Deposit stores the size bytes of r as the file name for to. It returns nil only once
	// the file is durable (it survives a crash). A file already stored under name for to
	// is a duplicate delivery: Deposit returns nil and keeps the first copy. Errors: one
	// wrapping ErrForbidden (from may not deposit for to), ErrTooLarge (size is over the
	// store's limit), ErrOverQuota (to's share is full), ErrBusy (the same name is being
	// deposited right now), or the error reading r (r failing, or holding more or fewer than
	// size bytes); then nothing is stored. Errors that depend only on the arguments are
	// returned before r is read; ErrOverQuota may also come once r is read, when deposits
	// from others that ended first filled to's share.
	Deposit(from, to pgpmsg.Fingerprint, name string, size int64, r io.Reader) error

	// List returns the files waiting for to, oldest first. Nothing waiting is an empty list.
	List(to pgpmsg.Fingerprint) ([]queue.Entry, error)

	// Open returns the file name waiting for to and its size. While it is open nobody
	// else delivers or removes it. Errors: ErrNotFound (no such file for to), ErrBusy
	// (another worker holds the file; try again later), or an I/O error.
	Open(to pgpmsg.Fingerprint, name string) (io.ReadCloser, int64, error)

	// Remove deletes the file name waiting for to; the recipient calls it after it has
	// committed the file. A file that is already gone is not an error, so that a retried
	// removal succeeds. Errors: ErrBusy (another worker holds the file; try again later),
	// or an I/O error, and then the file is still there.
	Remove(to pgpmsg.Fingerprint, name string) error
}

// Expirer is a Store that drops files nobody collected in time. Server.Run calls it.
type Expirer interface {
	// Expire removes files older than the store's age limit, as of now, and returns how
	// many it removed. Files busy in another worker are skipped until the next call.
	Expire(now time.Time) (int, error)
}
