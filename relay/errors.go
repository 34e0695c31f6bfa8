package relay

import (
	"errors"
	"fmt"

	"github.com/dibs-backup/dibs/queue"
)

var (
	// ErrForbidden means the key may not do what it asked: it is unknown, the signature is
	// bad, or the store does not take files from that sender or for that recipient.
	ErrForbidden = errors.New("relay: forbidden")
	// ErrOverQuota means the recipient's share of the store is full until it collects its files.
	ErrOverQuota = errors.New("relay: recipient over quota")
	// ErrTooLarge means a file is larger than the store or server takes.
	// It wraps queue.ErrTooLarge: no transport of that kind will carry the file.
	ErrTooLarge = fmt.Errorf("relay: file too large (%w)", queue.ErrTooLarge)
	// ErrNotFound means no such file waits for the caller.
	ErrNotFound = errors.New("relay: no such file")
	// ErrBusy means another worker is handling the file right now; try again later.
	ErrBusy = errors.New("relay: file busy")
	// ErrUnauthorized means the session token is missing, unknown or expired.
	ErrUnauthorized = errors.New("relay: not authenticated")
)
