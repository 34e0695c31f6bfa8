package relay

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// Client speaks the relay protocol as ID: it deposits files at a peer's daemon or a relay
// (a queue.Sender) and collects the files waiting for ID there (a queue.Poller). Endpoint
// addresses are base URLs ("http://host:port", "https://relay.example/path"); a bare
// "host:port" means http. A Client is safe for concurrent use and keeps one session per
// base URL; it must not be copied after first use.
type Client struct {
	// ID is who we are: it signs the session challenges.
	ID *pgpmsg.Identity
	// HTTP is the HTTP client; nil means a shared default with connection, TLS and
	// response-header timeouts, and proxies from the environment (HTTPS_PROXY, HTTP_PROXY,
	// NO_PROXY). It has no overall timeout, since files can be large: pass a context with a
	// deadline. Transfers that stall for IdleTimeout are abandoned whatever the client.
	HTTP *http.Client
	// MaxFileSize is the largest file Poll downloads; 0 means DefaultMaxFileSize. Larger
	// files are left at the far end.
	MaxFileSize int64
	// IdleTimeout abandons an upload or download that moves no byte for this long; 0
	// means two minutes.
	IdleTimeout time.Duration

	mu     sync.Mutex
	tokens map[string]cachedToken // by base URL
}

var (
	_ queue.Sender = (*Client)(nil)
	_ queue.Poller = (*Client)(nil)
)

type cachedToken struct {
	token string
	until time.Time
	seq   *atomic.Uint64 // the last request sequence number used in the session
}

// tokenMargin is how long before its announced expiry a token is renewed, so that it does
// not expire in flight (clock skew is caught by the 401 and retry).
const tokenMargin = 30 * time.Second

var defaultHTTP = sync.OnceValue(func() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute, // the server fsyncs a deposit before answering
		ExpectContinueTimeout: 2 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}}
})

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP()
}

// StatusError is a refusal by the server: its HTTP status and what it said. It wraps the
// matching sentinel (ErrForbidden for 403, ErrTooLarge for 413, ...), if any.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server answered %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("server answered %d: %s", e.Code, e.Message)
}

func (e *StatusError) Unwrap() error {
	switch e.Code {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrBusy
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	case http.StatusInsufficientStorage:
		return ErrOverQuota
	}
	return nil
}

// final reports whether retrying cannot help: a 4xx other than 401 (a new session helps),
// 408 and 429 (later helps), and 409 (the file was busy: later helps).
func (e *StatusError) final() bool {
	switch e.Code {
	case http.StatusUnauthorized, http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusConflict:
		return false
	}
	return e.Code >= 400 && e.Code < 500
}

// statusError reads the server's error answer (bounded) and closes the body.
func statusError(resp *http.Response) error {
	defer resp.Body.Close()
	var er errorResponse
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxJSONResponse))
	if json.Unmarshal(b, &er) != nil || er.Error == "" {
		er.Error = strings.TrimSpace(string(b[:min(len(b), 200)]))
	}
	se := &StatusError{Code: resp.StatusCode, Message: er.Error}
	if se.final() {
		return queue.Permanent(se)
	}
	return se
}

// drain reads a little of an answer we do not need, so that the connection can be reused.
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxJSONResponse))
	resp.Body.Close()
}

// baseURL parses an endpoint address.
func baseURL(addr string) (*url.URL, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", addr)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q: no host", addr)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return u, nil
}

func endpoint(base *url.URL, path string) string { return base.String() + path }

// Hello asks the server at baseURL who it is. It needs no session. Its errors do not
// say what kind of server was asked (a daemon or a relay): the caller knows.
func (c *Client) Hello(ctx context.Context, baseURL string) (HelloInfo, error) {
	var info HelloInfo
	if err := c.hello(ctx, baseURL, &info); err != nil {
		return HelloInfo{}, fmt.Errorf("hello %s: %w", baseURL, err)
	}
	return info, nil
}

func (c *Client) hello(ctx context.Context, addr string, info *HelloInfo) error {
	base, err := baseURL(addr)
	if err != nil {
		return queue.Permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint(base, pathHello), nil)
	if err != nil {
		return queue.Permanent(err)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	defer drain(resp)
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONResponse)).Decode(info); err != nil {
		return fmt.Errorf("not a dibs server: %w", err)
	}
	if info.Software != "dibs" {
		return fmt.Errorf("not a dibs server (software %q)", info.Software)
	}
	return nil
}

// postJSON posts in (nil for an empty body) and decodes a 200 answer into out.
func (c *Client) postJSON(ctx context.Context, url string, in, out any) error {
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return queue.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http().Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	defer drain(resp)
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONResponse)).Decode(out); err != nil {
		return fmt.Errorf("bad answer: %w", err)
	}
	return nil
}

// authenticate opens a session at base: it signs a fresh challenge with our key.
func (c *Client) authenticate(ctx context.Context, base *url.URL) (cachedToken, error) {
	if c.ID == nil {
		return cachedToken{}, queue.Permanent(errors.New("client has no identity"))
	}
	var ch challengeResponse
	if err := c.postJSON(ctx, endpoint(base, pathChallenge), nil, &ch); err != nil {
		return cachedToken{}, fmt.Errorf("challenge: %w", err)
	}
	fp := c.ID.Fingerprint()
	host := strings.ToLower(base.Host)
	sig, err := c.ID.SignDetached(SessionStatement(ch.Nonce, fp, host))
	if err != nil {
		return cachedToken{}, err
	}
	var sr sessionResponse
	err = c.postJSON(ctx, endpoint(base, pathSession), sessionRequest{
		Key: string(fp), Nonce: ch.Nonce, Signature: base64.StdEncoding.EncodeToString(sig), Server: host,
	}, &sr)
	if err != nil {
		return cachedToken{}, fmt.Errorf("session: %w", err)
	}
	until := time.Now().Add(TokenLifetime)
	if exp, err := time.Parse(time.RFC3339, sr.Expires); err == nil && exp.Before(until) {
		until = exp
	}
	return cachedToken{token: sr.Token, until: until.Add(-tokenMargin), seq: new(atomic.Uint64)}, nil
}

// token returns a session for base, opening one if there is none.
func (c *Client) token(ctx context.Context, base *url.URL) (cachedToken, error) {
	key := base.String()
	c.mu.Lock()
	t, ok := c.tokens[key]
	c.mu.Unlock()
	if ok && time.Now().Before(t.until) {
		return t, nil
	}
	t, err := c.authenticate(ctx, base)
	if err != nil {
		return cachedToken{}, err
	}
	c.mu.Lock()
	if c.tokens == nil {
		c.tokens = make(map[string]cachedToken)
	}
	c.tokens[key] = t
	c.mu.Unlock()
	return t, nil
}

// sign authorizes req in session t: the token, and our signature over the request
// (RequestStatement), which binds the token to our key.
func (c *Client) sign(req *http.Request, t cachedToken) error {
	seq := t.seq.Add(1)
	sig, err := c.ID.SignDetached(RequestStatement(t.token, seq, req.Method, protocolPath(req.URL), req.ContentLength))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	req.Header.Set(HeaderSeq, strconv.FormatUint(seq, 10))
	req.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	return nil
}

// forget drops token for base if it is still the cached one.
func (c *Client) forget(base *url.URL, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.tokens[base.String()]; ok && t.token == token {
		delete(c.tokens, base.String())
	}
}

// do sends an authenticated request built by newReq, once more with a fresh session if
// the server says the token is no longer good. A response it returns is a success (2xx)
// whose body the caller closes.
func (c *Client) do(ctx context.Context, base *url.URL, newReq func(ctx context.Context) (*http.Request, error)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		t, err := c.token(ctx, base)
		if err != nil {
			return nil, err
		}
		req, err := newReq(ctx)
		if err != nil {
			return nil, err
		}
		if err := c.sign(req, t); err != nil {
			return nil, err
		}
		resp, err := c.http().Do(req)
		if err != nil {
			// The server may have refused the token and reset the connection before its
			// 401 was read (an upload still going when a restarted server closed it):
			// kept, the token would fail every next request until it expires.
			c.forget(base, t.token)
			return nil, err
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			drain(resp)
			c.forget(base, t.token)
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return nil, statusError(resp)
		}
		return resp, nil
	}
}

func (c *Client) idleTimeout() time.Duration {
	if c.IdleTimeout > 0 {
		return c.IdleTimeout
	}
	return 2 * time.Minute
}

// Send deposits msg for dst.Key at the server dst.Addr. It returns nil once the server
// answered that the file is stored durably. Refusals that a retry cannot cure (unknown
// key, a file not for that recipient, too large, a bad name) are queue.Permanent;
// everything else (unreachable, over quota, busy, server errors) is temporary.
func (c *Client) Send(ctx context.Context, dst queue.Endpoint, msg queue.Message) error {
	if err := c.send(ctx, dst, msg); err != nil {
		return fmt.Errorf("relay: send %s to %s: %w", msg.Name, dst.Addr, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, dst queue.Endpoint, msg queue.Message) error {
	to, err := pgpmsg.ParseFingerprint(dst.Key)
	if err != nil {
		return queue.Permanent(err)
	}
	base, err := baseURL(dst.Addr)
	if err != nil {
		return queue.Permanent(err)
	}
	if !queue.ValidName(msg.Name) {
		return queue.Permanent(fmt.Errorf("%w: file %q", queue.ErrBadName, msg.Name))
	}
	ctx, stop := withIdleTimeout(ctx, c.idleTimeout())
	defer stop.done()
	var body io.ReadCloser
	defer func() {
		if body != nil {
			body.Close()
		}
	}()
	resp, err := c.do(ctx, base, func(ctx context.Context) (*http.Request, error) {
		if body != nil {
			body.Close()
		}
		if body, err = msg.Body(); err != nil {
			return nil, err
		}
		u := endpoint(base, pathFiles+"/"+string(to)+"/"+url.PathEscape(msg.Name))
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, stop.reader(body, true))
		if err != nil {
			return nil, queue.Permanent(err)
		}
		req.ContentLength = msg.Size
		if msg.Size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		// Let the server refuse (too large, over quota, forbidden) before the body goes.
		req.Header.Set("Expect", "100-continue")
		return req, nil
	})
	if err != nil {
		return stalled(ctx, err)
	}
	drain(resp)
	return nil
}

// Poll collects every file waiting for us at src.Addr: it hands each to sink and deletes
// the far copy only after sink returned nil. A file that is busy at the far end (being
// delivered by someone else), larger than MaxFileSize, or whose sink call failed stays
// there. It stops at the first failure of sink, of the server or of the network, and
// returns the number of files committed with that error; busy and oversize files do not
// stop it, but their error is returned at the end.
func (c *Client) Poll(ctx context.Context, src queue.Endpoint, sink queue.Sink) (int, error) {
	n, err := c.poll(ctx, src, sink)
	if err != nil {
		return n, fmt.Errorf("relay: poll %s: %w", src.Addr, err)
	}
	return n, nil
}

func (c *Client) poll(ctx context.Context, src queue.Endpoint, sink queue.Sink) (int, error) {
	if c.ID == nil {
		return 0, queue.Permanent(errors.New("client has no identity"))
	}
	if src.Key != "" {
		if fp, err := pgpmsg.ParseFingerprint(src.Key); err != nil || fp != c.ID.Fingerprint() {
			return 0, queue.Permanent(fmt.Errorf("endpoint key %q is not ours (%s)", src.Key, c.ID.Fingerprint()))
		}
	}
	base, err := baseURL(src.Addr)
	if err != nil {
		return 0, queue.Permanent(err)
	}
	maxSize := c.MaxFileSize
	if maxSize <= 0 {
		maxSize = DefaultMaxFileSize
	}
	committed := make(map[string]bool)
	var skipped error // the first file left behind; does not stop the poll
	n := 0
	for {
		files, err := c.list(ctx, base)
		if err != nil {
			return n, err
		}
		round := 0
		for _, f := range files {
			if committed[f.Name] {
				continue // listed again although deleted: the server is slow to forget
			}
			if !queue.ValidName(f.Name) || f.Size < 0 {
				if skipped == nil {
					skipped = fmt.Errorf("server lists a bad file name %q", f.Name)
				}
				continue
			}
			if f.Size > maxSize {
				if skipped == nil {
					skipped = fmt.Errorf("%s: %d bytes, more than the %d we take: %w", f.Name, f.Size, maxSize, ErrTooLarge)
				}
				continue
			}
			err := c.fetch(ctx, base, f, sink)
			if errors.Is(err, ErrBusy) || errors.Is(err, ErrNotFound) {
				if skipped == nil && errors.Is(err, ErrBusy) {
					skipped = err
				}
				continue
			}
			if err != nil {
				return n, err
			}
			committed[f.Name] = true
			n++
			round++
			// The file is ours now; a failed delete means a duplicate on the next poll,
			// which the recipient drops.
			if err := c.remove(ctx, base, f.Name); err != nil {
				return n, err
			}
		}
		if round == 0 {
			return n, skipped
		}
	}
}

func (c *Client) list(ctx context.Context, base *url.URL) ([]FileInfo, error) {
	resp, err := c.do(ctx, base, func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, endpoint(base, pathFiles), nil)
	})
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	defer drain(resp)
	var files []FileInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxListResponse)).Decode(&files); err != nil {
		return nil, fmt.Errorf("list: bad answer: %w", err)
	}
	return files, nil
}

// fetch downloads one file into sink, checking that exactly the announced bytes arrive.
func (c *Client) fetch(ctx context.Context, base *url.URL, f FileInfo, sink queue.Sink) error {
	ctx, stop := withIdleTimeout(ctx, c.idleTimeout())
	defer stop.done()
	resp, err := c.do(ctx, base, func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, endpoint(base, pathFiles+"/"+url.PathEscape(f.Name)), nil)
	})
	if err != nil {
		return fmt.Errorf("get %s: %w", f.Name, stalled(ctx, err))
	}
	defer resp.Body.Close()
	if resp.ContentLength != f.Size {
		return fmt.Errorf("get %s: listed with %d bytes, sent with %d", f.Name, f.Size, resp.ContentLength)
	}
	body := &exactReader{r: stop.reader(resp.Body, false), left: f.Size}
	if err := sink(f.Name, body); err != nil {
		return fmt.Errorf("commit %s: %w", f.Name, stalled(ctx, err))
	}
	if body.left != 0 {
		return fmt.Errorf("commit %s: sink returned before reading the whole file", f.Name)
	}
	return nil
}

func (c *Client) remove(ctx context.Context, base *url.URL, name string) error {
	resp, err := c.do(ctx, base, func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodDelete, endpoint(base, pathFiles+"/"+url.PathEscape(name)), nil)
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	drain(resp)
	return nil
}

// errStalled ends a transfer that moved no byte for the idle timeout.
var errStalled = errors.New("transfer stalled")

// idleTimer cancels a context when the readers it wraps make no progress for a while.
type idleTimer struct {
	t      *time.Timer
	idle   time.Duration
	cancel context.CancelCauseFunc
}

func withIdleTimeout(ctx context.Context, idle time.Duration) (context.Context, *idleTimer) {
	ctx, cancel := context.WithCancelCause(ctx)
	it := &idleTimer{idle: idle, cancel: cancel}
	it.t = time.AfterFunc(idle, func() { cancel(errStalled) })
	return ctx, it
}

// stalled explains err if the idle timer ended ctx.
func stalled(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errStalled) && !errors.Is(err, errStalled) {
		return fmt.Errorf("%w: %w", errStalled, err)
	}
	return err
}

func (it *idleTimer) done() {
	it.t.Stop()
	it.cancel(nil)
}

// reader wraps r so that every read restarts the timer. With stopAtEOF the timer stops when
// r is exhausted: an upload is then waiting for the server's answer, which the transport's
// response-header timeout covers.
func (it *idleTimer) reader(r io.ReadCloser, stopAtEOF bool) io.ReadCloser {
	return &idleReader{ReadCloser: r, it: it, stopAtEOF: stopAtEOF}
}

type idleReader struct {
	io.ReadCloser
	it        *idleTimer
	stopAtEOF bool
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err == io.EOF && r.stopAtEOF {
		r.it.t.Stop()
	} else {
		r.it.t.Reset(r.it.idle)
	}
	return n, err
}
