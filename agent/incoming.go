package agent

import (
	"io"
	"log/slog"
	"sync"

	"github.com/dibs-backup/dibs/queue"
)

// incomingState is what processing keeps across the files of a run: why files were
// left for a later run.
type incomingState struct {
	mu      sync.Mutex
	leftWhy string
}

// noteLeft records err as why a file was left, unless an earlier one was recorded.
func (s *incomingState) noteLeft(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leftWhy == "" {
		s.leftWhy = err.Error()
	}
}

// takeWhy returns the recorded reason and forgets it.
func (s *incomingState) takeWhy() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	why := s.leftWhy
	s.leftWhy = ""
	return why
}

// messageReader is where processOne reads a claimed file from: the file itself. Tests
// put a reader there that fails as a sick disk does.
var messageReader = func(c *queue.Claim) io.Reader { return c.Reader() }

// readErrs remembers the error reading a message failed with: the OpenPGP layers report
// a read that failed as a damaged message, without the cause.
type readErrs struct {
	r   io.Reader
	err error
}

func (e *readErrs) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// leave gives c up for a later run after a temporary failure (a full disk, an I/O
// error), which says nothing about the message: it stays in incoming/, and the run's
// result says why.
func (n *Node) leave(c *queue.Claim, log *slog.Logger, err error) outcome {
	log.Warn("left for a later run", "err", err)
	n.incoming.noteLeft(err)
	c.Release()
	return outLeft
}
