package relay

import (
	"io"
	"os"
	"time"
)

// deadlineReader ends a body at a deadline by itself, for a request whose connection's
// read deadline cannot be set (the Server got a ResponseWriter that hides it): without
// it, a deposit whose body stalls would keep its reservation of the recipient's quota
// until the http.Server's own timeouts, if any, closed the connection. Past the deadline
// Read returns os.ErrDeadlineExceeded, and the read under way goes on in its goroutine
// into deadlineReader's own buffer until the connection ends; nothing it reads is used.
type deadlineReader struct {
	r        io.Reader
	deadline time.Time
	buf      []byte
	got      chan readResult // of the read under way, if reading
	reading  bool
	left     []byte // read but not yet returned
	err      error  // sticky: the deadline passed, or r failed
}

type readResult struct {
	n   int
	err error
}

func newDeadlineReader(r io.Reader, deadline time.Time) *deadlineReader {
	return &deadlineReader{r: r, deadline: deadline, buf: make([]byte, 32<<10), got: make(chan readResult, 1)}
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if len(d.left) > 0 {
		n := copy(p, d.left)
		d.left = d.left[n:]
		return n, nil
	}
	if d.err != nil {
		return 0, d.err
	}
	if !d.reading {
		d.reading = true
		go func() {
			n, err := d.r.Read(d.buf)
			d.got <- readResult{n, err}
		}()
	}
	timer := time.NewTimer(time.Until(d.deadline))
	defer timer.Stop()
	select {
	case res := <-d.got:
		d.reading = false
		d.left, d.err = d.buf[:res.n], res.err
		n := copy(p, d.left)
		d.left = d.left[n:]
		if len(d.left) > 0 {
			return n, nil
		}
		return n, d.err
	case <-timer.C:
		d.err = os.ErrDeadlineExceeded // d.buf belongs to the read under way from now on
		return 0, d.err
	}
}
