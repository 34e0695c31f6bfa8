package queue

import "errors"

var (
	// ErrBusy means another worker holds the claim on a file.
	ErrBusy = errors.New("queue: file is claimed by another worker")
	// ErrGone means the file was removed or moved before it could be claimed.
	ErrGone = errors.New("queue: file is gone")
	// ErrTooLarge means a file is larger than the limit its writer set.
	ErrTooLarge = errors.New("queue: file too large")
	// ErrBadName means a file or peer name could escape its directory or is otherwise unusable.
	ErrBadName = errors.New("queue: bad name")
	// ErrExists means a different file of that name is already waiting; it was kept.
	ErrExists = errors.New("queue: a different file of that name is waiting")
)

// permanentError marks an error that retrying cannot cure.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as final: retrying the same operation would fail the same way
// (an SMTP 5xx, refused authentication, a message over the far side's size limit).
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked Permanent.
// Everything else is temporary: worth retrying later.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
