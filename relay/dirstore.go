package relay

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

const (
	// DefaultQuota is how many bytes a DirStore holds for one recipient unless told otherwise.
	DefaultQuota = 1_000_000_000
	// DefaultMaxAge is how long a DirStore keeps an uncollected file: DIBS's maxMsgAge.
	DefaultMaxAge = 10 * 24 * time.Hour
	// tmpMaxAge is how old a leftover of a crashed deposit in tmp/ must be to be removed.
	tmpMaxAge = time.Hour
)

// DirOptions configure a DirStore.
type DirOptions struct {
	// AllowFile holds the armored public keys (concatenated `dibs export_key` outputs) of
	// everyone who may deposit and collect. It is re-read when it changes. A missing file
	// allows nobody; a file that no longer parses leaves the previous keys in force.
	AllowFile string
	// Quota is how many bytes may wait for one recipient; 0 means DefaultQuota.
	Quota int64
	// MaxFileSize is the largest file taken; 0 means DefaultMaxFileSize.
	MaxFileSize int64
	// MaxAge is how long an uncollected file is kept; 0 means DefaultMaxAge.
	MaxAge time.Duration
}

// DirStore is the Store of `dibs relay_server`: a spool in its own directory, where files
// for recipient R wait in outgoing/R/ (R a fingerprint), committed atomically like every
// spool file. Only keys in the allow file may open a session, and files go only from an
// allowed key to an allowed key.
type DirStore struct {
	*AllowList // Key, Recipient, Reload
	spool      *queue.Spool
	opts       DirOptions

	mu         sync.Mutex
	reserved   map[depositor]int64 // bytes of deposits whose body is arriving
	committing map[string]int64    // bytes of deposits received in full, by "<to>/<name>"
	inflight   map[string]bool     // "<to>/<name>" of deposits in progress
}

// depositor is whose deposits for whom a reservation counts against.
type depositor struct{ to, from pgpmsg.Fingerprint }

var (
	_ Store   = (*DirStore)(nil)
	_ Expirer = (*DirStore)(nil)
)

// OpenDirStore opens (creating if needed) the relay store in dir. It fails if the allow
// file exists but cannot be read as public keys.
func OpenDirStore(dir string, opts DirOptions) (*DirStore, error) {
	if opts.AllowFile == "" {
		return nil, fmt.Errorf("relay: open store %s: no allow file", dir)
	}
	allow, err := NewAllowList(opts.AllowFile)
	if err != nil {
		return nil, err
	}
	if opts.Quota <= 0 {
		opts.Quota = DefaultQuota
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	sp, err := queue.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("relay: open store: %w", err)
	}
	return &DirStore{AllowList: allow, spool: sp, opts: opts,
		reserved: make(map[depositor]int64), committing: make(map[string]int64), inflight: make(map[string]bool)}, nil
}

// Deposit commits a file for to in outgoing/<to>/, within to's quota.
//
// While its body arrives, a deposit's size counts against the quota for its depositor
// only: one whose body stalls (until the server's deadline cuts it off) must not keep
// everyone else's files out. The quota holds all the same: once the body is in, the
// files already there and those being committed are counted again, and a deposit that
// others filled the share before is refused with ErrOverQuota.
func (s *DirStore) Deposit(from, to pgpmsg.Fingerprint, name string, size int64, r io.Reader) error {
	if _, err := s.Recipient(from, to); err != nil {
		return err
	}
	if size > s.opts.MaxFileSize {
		return fmt.Errorf("%d bytes, this relay takes at most %d: %w", size, s.opts.MaxFileSize, ErrTooLarge)
	}
	if !queue.ValidName(name) {
		return fmt.Errorf("%w: file %q", queue.ErrBadName, name)
	}
	box := queue.Outgoing(string(to))
	who := depositor{to: to, from: from}
	if err := s.reserve(who, box, name, size); err != nil {
		if errors.Is(err, errDuplicate) {
			return nil
		}
		return err
	}
	admitted := false
	body := &admitReader{r: &exactReader{r: r, left: size}, admit: func() error {
		err := s.admit(who, box, name, size)
		admitted = err == nil
		return err
	}}
	_, err := s.spool.Put(box, name, body, size)
	s.mu.Lock()
	if !admitted { // else admit moved the bytes to committing already
		s.unreserveLocked(who, size)
	}
	delete(s.committing, string(to)+"/"+name)
	delete(s.inflight, string(to)+"/"+name)
	s.mu.Unlock()
	return err
}

var errDuplicate = errors.New("duplicate")

// reserve books size bytes of to's quota for a deposit of name from who.from, counting
// what is stored and being committed for to and what that depositor is sending it
// already. The bytes held are counted on disk each time rather than kept in a counter
// that could drift from the truth.
func (s *DirStore) reserve(who depositor, box queue.Box, name string, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := string(who.to) + "/" + name
	if s.inflight[key] {
		return fmt.Errorf("%s is being deposited right now: %w", name, ErrBusy)
	}
	if _, err := os.Lstat(filepath.Join(s.spool.Dir(box), name)); err == nil {
		return errDuplicate
	}
	held, err := s.heldLocked(who.to, box)
	if err != nil {
		return err
	}
	if own := s.reserved[who]; held+own+size > s.opts.Quota {
		return fmt.Errorf("%s holds %d bytes, and %d more from %s would pass its quota of %d: %w",
			who.to, held, own+size, who.from, s.opts.Quota, ErrOverQuota)
	}
	s.inflight[key] = true
	s.reserved[who] += size
	return nil
}

// admit turns the reservation of a deposit whose body is in into bytes being committed,
// if they still fit to's quota.
func (s *DirStore) admit(who depositor, box queue.Box, name string, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, err := s.heldLocked(who.to, box)
	if err != nil {
		return err
	}
	if held+size > s.opts.Quota {
		return fmt.Errorf("%s holds %d bytes, %d more would pass its quota of %d: %w",
			who.to, held, size, s.opts.Quota, ErrOverQuota)
	}
	s.unreserveLocked(who, size)
	s.committing[string(who.to)+"/"+name] = size
	return nil
}

// heldLocked is what to's quota holds: its files, and those being committed that are not
// among them yet (a file just committed is listed before its deposit ends, and counts
// once).
func (s *DirStore) heldLocked(to pgpmsg.Fingerprint, box queue.Box) (int64, error) {
	es, err := s.spool.List(box)
	if err != nil {
		return 0, err
	}
	held := int64(0)
	listed := make(map[string]bool, len(es))
	for _, e := range es {
		held += e.Size
		listed[e.Name] = true
	}
	prefix := string(to) + "/"
	for key, size := range s.committing {
		if name, ok := strings.CutPrefix(key, prefix); ok && !listed[name] {
			held += size
		}
	}
	return held, nil
}

func (s *DirStore) unreserveLocked(who depositor, size int64) {
	if s.reserved[who] -= size; s.reserved[who] == 0 {
		delete(s.reserved, who)
	}
}

// admitReader calls admit when r ends, before its io.EOF reaches the spool's commit: an
// error from admit takes the place of the EOF, and nothing is committed.
type admitReader struct {
	r     io.Reader
	admit func() error
	done  bool
}

func (a *admitReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err == io.EOF && !a.done {
		a.done = true
		if aerr := a.admit(); aerr != nil {
			return n, aerr
		}
	}
	return n, err
}

// List returns the files waiting for to.
func (s *DirStore) List(to pgpmsg.Fingerprint) ([]queue.Entry, error) {
	if err := s.Collector(to); err != nil {
		return nil, err
	}
	return s.spool.List(queue.Outgoing(string(to)))
}

// Open claims a file waiting for to.
func (s *DirStore) Open(to pgpmsg.Fingerprint, name string) (io.ReadCloser, int64, error) {
	if err := s.Collector(to); err != nil {
		return nil, 0, err
	}
	c, err := claim(s.spool, queue.Outgoing(string(to)), name)
	if err != nil {
		return nil, 0, err
	}
	return claimReader{c.Reader(), c}, c.Size(), nil
}

// Remove deletes a file waiting for to.
func (s *DirStore) Remove(to pgpmsg.Fingerprint, name string) error {
	if err := s.Collector(to); err != nil {
		return err
	}
	c, err := claim(s.spool, queue.Outgoing(string(to)), name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.Ack()
}

// Expire removes files older than MaxAge, whoever they are for, and leftovers of crashed
// deposits. It returns the number of files removed and the first error met; it goes on
// past errors.
func (s *DirStore) Expire(now time.Time) (int, error) {
	var first error
	keep := func(err error) {
		if first == nil && err != nil {
			first = fmt.Errorf("relay: expire: %w", err)
		}
	}
	_, err := s.spool.CleanTmp(tmpMaxAge, now)
	keep(err)
	recipients, err := s.spool.Peers()
	keep(err)
	n := 0
	for _, r := range recipients {
		es, err := s.spool.List(queue.Outgoing(r))
		keep(err)
		for _, e := range es {
			if now.Sub(e.ModTime) <= s.opts.MaxAge {
				continue
			}
			c, err := claim(s.spool, e.Box, e.Name)
			if errors.Is(err, ErrBusy) || errors.Is(err, ErrNotFound) {
				continue // being collected right now, or collected already
			}
			if err != nil {
				keep(err)
				continue
			}
			if err := c.Ack(); err != nil {
				keep(err)
				continue
			}
			n++
		}
	}
	return n, first
}

// AdmitBody is a deposit's body for a Store: it reads r, which must hold exactly size
// bytes, and calls admit once they are in, before the io.EOF. A body of the wrong length,
// or an error from admit, takes the place of the EOF, so that the store commits nothing;
// the server answers body errors with 400.
func AdmitBody(r io.Reader, size int64, admit func() error) io.Reader {
	return &admitReader{r: &exactReader{r: r, left: size}, admit: admit}
}
