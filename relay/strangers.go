package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/dibs-backup/dibs/queue"
)

// Strangers: a daemon takes one kind of file from keys it does not know, a contract
// proposal (a node answering a contract we posted, which carries its own key), and leaves
// the answer where the stranger can fetch it. Neither needs a session, since the server
// cannot check a key it does not have; both are small and bounded instead, and the
// sealed files say nothing to anyone but their recipient. The answer's name is the
// proposal's Message-Id, 128 random bits: whoever knows it may fetch a file sealed to the
// proposer, and nobody else can find it.
//
//	PUT /dibs/v1/stranger/NAME     a stranger's file, at most MaxStrangerFile bytes
//	GET /dibs/v1/answer/NAME       the answer left under NAME, or 404
const (
	pathStranger = pathPrefix + "/stranger"
	pathAnswer   = pathPrefix + "/answer"
	// MaxStrangerFile is the largest file taken from, or left for, a stranger.
	MaxStrangerFile = 64 << 10
)

// StrangerStore is a Store that also takes files from strangers and keeps answers for
// them. A Server serves the stranger paths only for a store that implements it.
type StrangerStore interface {
	// DepositStranger stores the size bytes of r, a stranger's file, as name; nil only
	// once it is durable. It refuses with ErrOverQuota when too many strangers' files
	// wait or arrived lately, ErrTooLarge, or ErrForbidden (not encrypted to us).
	DepositStranger(name string, size int64, r io.Reader) error
	// OpenAnswer returns the answer left for a stranger under name: ErrNotFound if none.
	OpenAnswer(name string) (io.ReadCloser, int64, error)
}

func (s *Server) depositStranger(w http.ResponseWriter, r *http.Request) {
	st, ok := s.store.(StrangerStore)
	if !ok {
		s.fail(w, fmt.Errorf("relay: this server takes no files from strangers: %w", ErrForbidden))
		return
	}
	name := r.PathValue("name")
	if !queue.ValidName(name) {
		s.fail(w, fmt.Errorf("relay: stranger: bad file name %q: %w", name, errBadRequest))
		return
	}
	size := r.ContentLength
	if size < 0 {
		s.fail(w, fmt.Errorf("relay: stranger %s: %w", name, errNoLength))
		return
	}
	if size > MaxStrangerFile {
		s.fail(w, fmt.Errorf("relay: stranger %s: %d bytes, a stranger may send at most %d: %w", name, size, MaxStrangerFile, ErrTooLarge))
		return
	}
	if err := st.DepositStranger(name, size, &exactReader{r: r.Body, left: size}); err != nil {
		if fe := (*filterError)(nil); errors.As(err, &fe) {
			err = fe
		}
		s.fail(w, fmt.Errorf("relay: stranger %s: %w", name, err))
		return
	}
	writeJSON(w, http.StatusCreated, FileInfo{Name: name, Size: size})
}

func (s *Server) answer(w http.ResponseWriter, r *http.Request) {
	st, ok := s.store.(StrangerStore)
	name := r.PathValue("name")
	if !ok || !queue.ValidName(name) {
		s.fail(w, fmt.Errorf("relay: answer %q: %w", name, ErrNotFound))
		return
	}
	rc, size, err := st.OpenAnswer(name)
	if err != nil {
		s.fail(w, fmt.Errorf("relay: answer %s: %w", name, err))
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	io.Copy(w, io.LimitReader(rc, size))
}

// SendStranger delivers data, a file sealed to the node at addr, as a stranger: for
// a contract proposal, before the node knows our key.
func (c *Client) SendStranger(ctx context.Context, addr, name string, data []byte) error {
	base, err := baseURL(addr)
	if err != nil {
		return queue.Permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, endpoint(base, pathStranger+"/"+name), bytes.NewReader(data))
	if err != nil {
		return queue.Permanent(err)
	}
	req.ContentLength = int64(len(data))
	resp, err := c.http().Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return statusError(resp)
	}
	drain(resp)
	return nil
}

// FetchAnswer returns the answer the node at addr left under name; ErrNotFound (wrapped)
// while there is none.
func (c *Client) FetchAnswer(ctx context.Context, addr, name string) ([]byte, error) {
	base, err := baseURL(addr)
	if err != nil {
		return nil, queue.Permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint(base, pathAnswer+"/"+name), nil)
	if err != nil {
		return nil, queue.Permanent(err)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxStrangerFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxStrangerFile {
		return nil, queue.Permanent(fmt.Errorf("relay: answer %s: over %d bytes: %w", name, MaxStrangerFile, ErrTooLarge))
	}
	return b, nil
}

// DepositStranger hands a stranger's file to the Strangers hook, once it passed the
// recipients filter; without a hook it refuses.
func (s *SpoolStore) DepositStranger(name string, size int64, r io.Reader) error {
	if s.Strangers == nil {
		return fmt.Errorf("this node takes no files from strangers: %w", ErrForbidden)
	}
	if s.SelfKeyIDs != nil {
		r = &recipientFilter{r: r, size: size, want: s.SelfKeyIDs}
	}
	return s.Strangers(name, size, r)
}

// OpenAnswer asks the Answers hook.
func (s *SpoolStore) OpenAnswer(name string) (io.ReadCloser, int64, error) {
	if s.Answers == nil {
		return nil, 0, ErrNotFound
	}
	return s.Answers(name)
}

var _ StrangerStore = (*SpoolStore)(nil)
