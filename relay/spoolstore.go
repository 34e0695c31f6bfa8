package relay

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// SpoolStore is the Store of a dibs daemon: its peers deposit files for it into its
// incoming/ box, and pull the files waiting for them in outgoing/<peer>/. Only keys of
// known peers may open a session.
type SpoolStore struct {
	// Spool is the node's spool.
	Spool *queue.Spool
	// Self is the node's own fingerprint: the only recipient it takes deposits for.
	Self pgpmsg.Fingerprint
	// SelfKeyIDs are the node's encryption key ids; deposits not encrypted to one of them
	// are refused. Nil turns that check off.
	SelfKeyIDs []uint64
	// Peer returns the name (the outgoing directory) and key of the peer whose key is fp,
	// and false for anyone who is not a peer. It is asked on every request, so it should
	// read the live peer list.
	Peer func(fp pgpmsg.Fingerprint) (name string, key *pgpmsg.Key, ok bool)
	// MaxFileSize is the largest file taken into incoming/; 0 leaves it to the server.
	MaxFileSize int64
	// MaxIncoming bounds the bytes waiting in incoming/: past it, deposits are refused
	// with ErrOverQuota (the sender retries later) until process_message catches up, so
	// that no peer can fill our disk. 0 means DefaultMaxIncoming; negative, no bound.
	// Deposits in flight together can pass it by their sizes.
	MaxIncoming int64
	// Strangers, if set, takes the files of keys that are not peers (DepositStranger):
	// the node bounds them. Answers returns what the node left for a stranger.
	Strangers func(name string, size int64, r io.Reader) error
	Answers   func(name string) (io.ReadCloser, int64, error)
}

// DefaultMaxIncoming is SpoolStore's bound on the bytes waiting in incoming/.
const DefaultMaxIncoming = 10_000_000_000

var _ Store = (*SpoolStore)(nil)

// Key returns the key of a peer.
func (s *SpoolStore) Key(fp pgpmsg.Fingerprint) (*pgpmsg.Key, bool) {
	_, key, ok := s.peer(fp)
	return key, ok
}

func (s *SpoolStore) peer(fp pgpmsg.Fingerprint) (string, *pgpmsg.Key, bool) {
	if s.Peer == nil {
		return "", nil, false
	}
	name, key, ok := s.Peer(fp)
	if !ok || key == nil || key.Fingerprint() != fp || !queue.ValidPeer(name) {
		return "", nil, false
	}
	return name, key, true
}

// Recipient allows peers to deposit files for Self only.
func (s *SpoolStore) Recipient(from, to pgpmsg.Fingerprint) ([]uint64, error) {
	if _, _, ok := s.peer(from); !ok {
		return nil, fmt.Errorf("%s is not a peer: %w", from, ErrForbidden)
	}
	if to != s.Self {
		return nil, fmt.Errorf("this node is %s and does not forward files for %s: %w", s.Self, to, ErrForbidden)
	}
	return s.SelfKeyIDs, nil
}

// Deposit commits a peer's file into incoming/. A file of that name already waiting in
// incoming/ is a duplicate delivery and is kept as it is.
func (s *SpoolStore) Deposit(from, to pgpmsg.Fingerprint, name string, size int64, r io.Reader) error {
	if _, err := s.Recipient(from, to); err != nil {
		return err
	}
	if s.MaxFileSize > 0 && size > s.MaxFileSize {
		return fmt.Errorf("%d bytes, at most %d taken: %w", size, s.MaxFileSize, ErrTooLarge)
	}
	if !queue.ValidName(name) {
		return fmt.Errorf("%w: file %q", queue.ErrBadName, name)
	}
	// Keeping the first copy, rather than replacing it, also means a peer that learned the
	// name of another peer's file cannot overwrite it.
	if _, err := os.Lstat(filepath.Join(s.Spool.Dir(queue.Incoming), name)); err == nil {
		return nil
	}
	if err := s.checkRoom(size); err != nil {
		return err
	}
	_, err := s.Spool.Put(queue.Incoming, name, &exactReader{r: r, left: size}, size)
	if errors.Is(err, queue.ErrExists) {
		return nil // arrived since the check above: the first copy is kept here too
	}
	return err
}

func (s *SpoolStore) checkRoom(size int64) error {
	limit := s.MaxIncoming
	if limit == 0 {
		limit = DefaultMaxIncoming
	}
	if limit < 0 {
		return nil
	}
	es, err := s.Spool.List(queue.Incoming)
	if err != nil {
		return err
	}
	var held int64
	for _, e := range es {
		held += e.Size
	}
	if held+size > limit {
		return fmt.Errorf("incoming/ holds %d bytes, %d more would pass its bound of %d: %w", held, size, limit, ErrOverQuota)
	}
	return nil
}

// List returns the files in outgoing/<peer>/ of the peer whose key is to.
func (s *SpoolStore) List(to pgpmsg.Fingerprint) ([]queue.Entry, error) {
	peer, _, ok := s.peer(to)
	if !ok {
		return nil, fmt.Errorf("%s is not a peer: %w", to, ErrForbidden)
	}
	return s.Spool.List(queue.Outgoing(peer))
}

// Open claims outgoing/<peer>/name: while it is open, a local sender trying to deliver the
// same file gets queue.ErrBusy, and an Open while a local sender holds it gets ErrBusy.
func (s *SpoolStore) Open(to pgpmsg.Fingerprint, name string) (io.ReadCloser, int64, error) {
	c, err := s.claim(to, name)
	if err != nil {
		return nil, 0, err
	}
	return claimReader{c.Reader(), c}, c.Size(), nil
}

// Remove acks outgoing/<peer>/name: the peer has it.
func (s *SpoolStore) Remove(to pgpmsg.Fingerprint, name string) error {
	c, err := s.claim(to, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.Ack()
}

func (s *SpoolStore) claim(to pgpmsg.Fingerprint, name string) (*queue.Claim, error) {
	peer, _, ok := s.peer(to)
	if !ok {
		return nil, fmt.Errorf("%s is not a peer: %w", to, ErrForbidden)
	}
	return claim(s.Spool, queue.Outgoing(peer), name)
}

// claim claims box/name and translates queue's errors into this package's.
func claim(sp *queue.Spool, box queue.Box, name string) (*queue.Claim, error) {
	c, err := sp.Claim(box, name)
	switch {
	case errors.Is(err, queue.ErrGone), errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	case errors.Is(err, queue.ErrBusy):
		return nil, fmt.Errorf("%s: %w", name, ErrBusy)
	case err != nil:
		return nil, err
	}
	return c, nil
}

// claimReader reads a claimed file and releases the claim when closed.
type claimReader struct {
	io.Reader
	c *queue.Claim
}

func (r claimReader) Close() error { return r.c.Release() }
