package agent

import (
	"io"
	"log/slog"
	"sync"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/queue"
)

// incomingState is what processing keeps across files: why files were left for a later
// run, and what quarantine/ holds.
type incomingState struct {
	mu      sync.Mutex
	leftWhy string
	// The bytes quarantine/ holds, in all and by the peer they came from: counted on
	// first use, kept up by quarantine, counted again after a trim or a cleanup. Files
	// another process quarantines meanwhile are counted at the next trim.
	qKnown  bool
	qTotal  int64
	qByPeer map[string]int64
}

// quarantineKeep is how much of a quarantined file is kept. Its start (the OpenPGP
// packets' headers: whom it is for, how it is signed) shows a person what it was; the
// rest of a file that can be sent by anyone who has our key is not worth our disk.
const quarantineKeep = 64 << 10

// countQuarantine sets the counts from the files quarantine/ holds. Call with s.mu held.
func (s *incomingState) countQuarantine(qs []queue.QuarantinedFile) {
	s.qKnown, s.qTotal, s.qByPeer = true, 0, map[string]int64{}
	for _, q := range qs {
		s.qTotal += q.Size
		if q.From != "" {
			s.qByPeer[q.From] += q.Size
		}
	}
}

// knowQuarantine counts quarantine/ if that was not done yet. Call with s.mu held.
func (n *Node) knowQuarantine() {
	s := &n.incoming
	if s.qKnown {
		return
	}
	qs, err := n.Spool.QuarantineFiles()
	if err != nil {
		n.Log.Warn("quarantine", "err", err)
	}
	s.countQuarantine(qs)
}

// quarantinedFrom is the bytes quarantine/ holds from the named peer: they count against
// the quota we granted it, as what it stores does.
func (n *Node) quarantinedFrom(peer string) int64 {
	n.incoming.mu.Lock()
	defer n.incoming.mu.Unlock()
	n.knowQuarantine()
	return n.incoming.qByPeer[peer]
}

// forgetQuarantine has quarantine/ counted again at its next use (after cleanup).
func (n *Node) forgetQuarantine() {
	n.incoming.mu.Lock()
	n.incoming.qKnown = false
	n.incoming.mu.Unlock()
}

// seen reports whether the message with Message-Id id was processed before.
func (n *Node) seen(db *books.DB, id []byte) bool {
	seen := false
	db.View(func(tx *books.Tx) error {
		seen = tx.Seen(id)
		return nil
	})
	return seen
}

// quarantine moves c into quarantine/ with reason, within bounds: only the start of a
// large file is kept; a peer's file (from, if not nil) is kept only while what the peer
// stores and has in quarantine stays within its local_quota, else its reason alone; and
// once quarantine/ holds more than quarantineMaxBytes, the files quarantined first are
// dropped until it holds three quarters of that (a margin, so that a flood of files does
// not list quarantine/ once each).
func (n *Node) quarantine(db *books.DB, c *queue.Claim, from *Peer, reason string) error {
	o := queue.QuarantineOpts{Keep: quarantineKeep}
	kept := min(c.Size(), quarantineKeep)
	var used int64
	if from != nil {
		o.From = from.Name
		db.View(func(tx *books.Tx) error { // before the lock: a handler holding a batch takes it
			ps, err := tx.Peer(from.Name)
			used = ps.LocalUsed
			return err
		})
	}
	s := &n.incoming
	s.mu.Lock()
	defer s.mu.Unlock()
	n.knowQuarantine()
	if from != nil && used+s.qByPeer[from.Name]+kept > from.LocalQuota {
		o.Keep, kept = -1, 0
	}
	if err := c.QuarantineWith(reason, o); err != nil {
		return err
	}
	s.qTotal += kept
	if from != nil {
		s.qByPeer[from.Name] += kept
	}
	if max := optQuarantineMaxBytes.Get(n.Opts); s.qTotal > max {
		qs, err := n.Spool.TrimQuarantine(max - max/4)
		if err != nil {
			n.Log.Warn("quarantine", "err", err)
		}
		s.countQuarantine(qs)
	}
	return nil
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
