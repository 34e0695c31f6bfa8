package queue

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Quarantine is bounded by its callers: a file can be kept whole, cut to its start, or
// not kept at all (its reason file alone says what it was), and TrimQuarantine drops the
// oldest files beyond a total. The reason file holds the reason on its first line, then
// lines "from: PEER" (who sent it, when known) and "kept: ..." or "dropped: ..." (what of
// it was kept), which QuarantineFiles reads back.

// QuarantineOpts says what Claim.QuarantineWith keeps of a file and records about it.
type QuarantineOpts struct {
	// From is the peer the file came from, if known; QuarantineFiles reports it, so
	// that what one peer has in quarantine can be counted.
	From string
	// Keep is how many bytes of the file's start are kept: 0 keeps it whole, a
	// negative Keep none of it.
	Keep int64
}

// QuarantinedFile is one file held in quarantine/.
type QuarantinedFile struct {
	Name string
	Size int64     // the bytes kept
	From string    // the peer it came from, if known
	When time.Time // when it was quarantined
}

const (
	fromLine    = "from: "
	keptLine    = "kept: "
	droppedLine = "dropped: "
)

// QuarantineWith moves the file into quarantine/ as Quarantine does, keeping of it what o
// says, and records o.From and what was cut in the reason file.
func (c *Claim) QuarantineWith(reason string, o QuarantineOpts) error {
	if c.done {
		return nil
	}
	defer c.release()
	qdir := c.s.Dir(Quarantine)
	reason = strings.TrimSpace(strings.NewReplacer("\r", " ", "\n", " ").Replace(reason))
	if reason == "" {
		reason = "unknown reason"
	}
	text := string(c.box) + ": " + reason + "\n"
	if o.From != "" && ValidPeer(o.From) {
		text += fromLine + o.From + "\n"
	}
	switch {
	case o.Keep < 0:
		text += droppedLine + strconv.FormatInt(c.size, 10) + " bytes, not kept\n"
	case o.Keep > 0 && c.size > o.Keep:
		text += fmt.Sprintf("%sthe first %d of %d bytes\n", keptLine, o.Keep, c.size)
	}
	if _, err := commit(filepath.Join(c.s.root, tmpDir), qdir, c.name+ReasonSuffix, strings.NewReader(text), 0); err != nil {
		return fmt.Errorf("queue: quarantine %s/%s: %w", c.box, c.name, err)
	}
	if o.Keep < 0 {
		if err := os.Remove(c.Path()); err != nil {
			return fmt.Errorf("queue: quarantine %s/%s: %w", c.box, c.name, err)
		}
		return syncDir(qdir)
	}
	dst := filepath.Join(qdir, c.name)
	if err := os.Rename(c.Path(), dst); err != nil {
		return fmt.Errorf("queue: quarantine %s/%s: %w", c.box, c.name, err)
	}
	if o.Keep > 0 && c.size > o.Keep {
		// Not synced: after a crash the whole file may be back, and TrimQuarantine
		// still bounds it.
		if err := os.Truncate(dst, o.Keep); err != nil {
			return fmt.Errorf("queue: quarantine %s/%s: %w", c.box, c.name, err)
		}
	}
	return syncDir(qdir)
}

// QuarantineFiles lists the files held in quarantine/ (not the reasons of files no
// longer kept), oldest quarantined first.
func (s *Spool) QuarantineFiles() ([]QuarantinedFile, error) {
	es, err := s.List(Quarantine)
	if err != nil {
		return nil, err
	}
	dir := s.Dir(Quarantine)
	out := make([]QuarantinedFile, 0, len(es))
	for _, e := range es {
		q := QuarantinedFile{Name: e.Name, Size: e.Size, When: e.ModTime}
		reason := filepath.Join(dir, e.Name+ReasonSuffix)
		if info, err := os.Stat(reason); err == nil {
			q.When = info.ModTime()
		}
		if b, err := os.ReadFile(reason); err == nil {
			for _, line := range strings.Split(string(b), "\n")[1:] {
				if p, ok := strings.CutPrefix(line, fromLine); ok {
					q.From = p
				}
			}
		}
		out = append(out, q)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].When.Before(out[j].When) })
	return out, nil
}

// TrimQuarantine drops quarantined files, oldest quarantined first, until those left hold
// at most maxBytes. Each one's reason file stays (ExpireQuarantine removes it in time),
// with a line saying the file was dropped. It returns the files left.
func (s *Spool) TrimQuarantine(maxBytes int64) ([]QuarantinedFile, error) {
	qs, err := s.QuarantineFiles()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, q := range qs {
		total += q.Size
	}
	dir := s.Dir(Quarantine)
	var errs []error
	for len(qs) > 0 && total > maxBytes {
		q := qs[0]
		if err := s.dropQuarantined(dir, q, maxBytes); err != nil {
			errs = append(errs, err)
		}
		total -= q.Size
		qs = qs[1:]
	}
	return qs, errors.Join(errs...)
}

// dropQuarantined removes a quarantined file and notes it in its reason file, which
// keeps its time: ExpireQuarantine counts from it.
func (s *Spool) dropQuarantined(dir string, q QuarantinedFile, bound int64) error {
	reason := filepath.Join(dir, q.Name+ReasonSuffix)
	info, err := os.Stat(reason)
	if err == nil {
		b, rerr := os.ReadFile(reason)
		if rerr == nil {
			b = append(b, fmt.Sprintf("%s%d bytes, quarantine was over its bound of %d\n", droppedLine, q.Size, bound)...)
			if _, werr := commit(filepath.Join(s.root, tmpDir), dir, q.Name+ReasonSuffix, bytes.NewReader(b), 0); werr == nil {
				os.Chtimes(reason, info.ModTime(), info.ModTime())
			}
		}
	}
	if err := os.Remove(filepath.Join(dir, q.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("queue: trim quarantine: %w", err)
	}
	return nil
}
