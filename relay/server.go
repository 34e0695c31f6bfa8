package relay

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// ServerOptions tune a Server. The zero value is usable.
type ServerOptions struct {
	// MaxFileSize is the largest deposit accepted; 0 means DefaultMaxFileSize.
	MaxFileSize int64
	// Version is the software version that hello reports.
	Version string
	// Key is the serving node's own fingerprint, reported by hello; "" for a relay.
	Key pgpmsg.Fingerprint
	// Hosts are the names ("host" or "host:port") clients may address this server by.
	// Empty means the Host header of the request, which is right unless a proxy in front
	// rewrites it.
	Hosts []string
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
	// ExpireEvery is how often Run sweeps; 0 means one minute.
	ExpireEvery time.Duration
	// RequestTimeout is how long the body of a request other than a deposit may take to
	// arrive; 0 means DefaultRequestTimeout. Without such a deadline a client that trickles
	// a byte every few seconds holds a connection and a goroutine for hours.
	RequestTimeout time.Duration
	// MinTransferRate, in bytes a second, and TransferGrace size the deadline of a file
	// transfer: a deposit's body, or a download, of n bytes must be done within
	// TransferGrace + n/MinTransferRate. 0 means DefaultMinTransferRate and
	// DefaultTransferGrace.
	MinTransferRate int64
	TransferGrace   time.Duration
	// MaxUnauthenticated is how many requests that need no session (hello, challenge,
	// session) are served at once; one more is answered 503 with a Retry-After. 0 means
	// DefaultMaxUnauthenticated.
	MaxUnauthenticated int
	// OnError, if set, is told of the errors the server cannot send to a client: internal
	// errors behind a 500 response, and failures of the periodic expiry. The daemon logs them.
	OnError func(error)
}

// Server serves the relay protocol from a Store. It is an http.Handler; its zero value is
// not usable, call NewServer.
//
// It sets the read deadline of the connection of every request it answers (see
// RequestTimeout), so it must get the http.Server's own ResponseWriter, or a wrapper with
// an Unwrap method (http.ResponseController): behind one that hides the connection, a slow
// client's connection is cut off only by the http.Server's timeouts (a deposit still ends,
// and gives back its share of the quota, at its deadline).
type Server struct {
	store  Store
	opts   ServerOptions
	auth   *authTable
	mux    *http.ServeMux
	public chan struct{} // a slot for each unauthenticated request being served
}

// NewServer returns a server of store's files.
func NewServer(store Store, opts ServerOptions) *Server {
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ExpireEvery <= 0 {
		opts.ExpireEvery = time.Minute
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.MinTransferRate <= 0 {
		opts.MinTransferRate = DefaultMinTransferRate
	}
	if opts.TransferGrace <= 0 {
		opts.TransferGrace = DefaultTransferGrace
	}
	if opts.MaxUnauthenticated <= 0 {
		opts.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	s := &Server{store: store, opts: opts, auth: newAuthTable(), mux: http.NewServeMux(),
		public: make(chan struct{}, opts.MaxUnauthenticated)}
	s.mux.HandleFunc("GET "+pathHello, s.unauthenticated(0, s.hello))
	s.mux.HandleFunc("POST "+pathChallenge, s.unauthenticated(0, s.challenge))
	s.mux.HandleFunc("POST "+pathSession, s.unauthenticated(maxJSONRequest, s.session))
	s.mux.HandleFunc("GET "+pathFiles, s.authed(s.list))
	s.mux.HandleFunc("PUT "+pathFiles+"/{to}/{name}", s.authed(s.deposit))
	s.mux.HandleFunc("GET "+pathFiles+"/{name}", s.authed(s.get))
	s.mux.HandleFunc("DELETE "+pathFiles+"/{name}", s.authed(s.remove))
	s.mux.HandleFunc("PUT "+pathStranger+"/{name}", s.unauthenticated(MaxStrangerFile, s.depositStranger))
	s.mux.HandleFunc("GET "+pathAnswer+"/{name}", s.unauthenticated(0, s.answer))
	return s
}

// ServeHTTP answers one protocol request. Its body must arrive within RequestTimeout, or
// for a deposit the transfer allowance of its size; the deadline holds for whatever of the
// body the handler leaves unread too, which the http.Server reads after it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setDeadline(w, s.opts.RequestTimeout, false)
	s.mux.ServeHTTP(w, r)
}

// setDeadline sets the read deadline, and with write also the write deadline, of the
// connection w answers on to d from now. A ResponseWriter without a connection
// (httptest.ResponseRecorder), or a wrapper that hides it, cannot have one: setDeadline
// reports whether the read deadline was set.
func setDeadline(w http.ResponseWriter, d time.Duration, write bool) bool {
	rc := http.NewResponseController(w)
	t := time.Now().Add(d)
	ok := rc.SetReadDeadline(t) == nil
	if write {
		rc.SetWriteDeadline(t)
	}
	return ok
}

// transferTime is how long a file of size bytes may take to arrive or to be taken.
func (s *Server) transferTime(size int64) time.Duration {
	return s.opts.TransferGrace + time.Duration(size/s.opts.MinTransferRate+1)*time.Second
}

// unauthenticated wraps h, which anyone may call, so that at most MaxUnauthenticated of
// them run at once. A request's body, of at most limit bytes, is read before it takes a
// slot: the slots bound the work that strangers make, not how long they keep us waiting.
// When waiting took the slots, 64 session bodies trickled a byte every 2 s kept every
// peer from opening a session, for as long as the attacker went on (issue 17). A slow
// body now holds its connection, for RequestTimeout at most, and no slot.
func (s *Server) unauthenticated(limit int64, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if limit > 0 && r.ContentLength > limit { // else its slow body would hold a slot
			s.fail(w, fmt.Errorf("relay: %s: %d bytes, at most %d are taken: %w", r.URL.Path, r.ContentLength, limit, ErrTooLarge))
			return
		}
		if limit > 0 && r.ContentLength != 0 {
			r.Body = readAhead(r.Body, limit)
		}
		select {
		case s.public <- struct{}{}:
			defer func() { <-s.public }()
		default:
			// A slot is free again as soon as a request's work is done.
			w.Header().Set("Retry-After", "1")
			s.fail(w, fmt.Errorf("relay: %d unauthenticated requests in progress, try again later: %w",
				cap(s.public), errOverloaded))
			return
		}
		h(w, r)
	}
}

// readAhead reads up to limit+1 bytes of body now, and returns a body that gives them,
// then the error reading stopped at (io.EOF, or a deadline), as body would have.
func readAhead(body io.ReadCloser, limit int64) io.ReadCloser {
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err == nil && int64(len(b)) <= limit {
		err = io.EOF
	} else if err == nil {
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), body), body}
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), errorReader{err}), body}
}

type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }

// Run sweeps expired challenges and sessions, and expires old files if the store is an
// Expirer, every ExpireEvery until ctx is done. It returns nil then. Expiry errors go to
// OnError; the next sweep tries again.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.ExpireEvery)
	defer t.Stop()
	for {
		s.Sweep()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep does one round of Run's work now.
func (s *Server) Sweep() {
	now := s.opts.Now()
	s.auth.sweep(now)
	if e, ok := s.store.(Expirer); ok {
		if _, err := e.Expire(now); err != nil {
			s.report(err)
		}
	}
}

func (s *Server) report(err error) {
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}

func (s *Server) hello(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, HelloInfo{Software: "dibs", Version: s.opts.Version,
		Protocol: Protocol, Key: string(s.opts.Key)})
}

func (s *Server) challenge(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, challengeResponse{Nonce: s.auth.newNonce(s.opts.Now())})
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	var req sessionRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONRequest))
	if err := dec.Decode(&req); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("relay: session: request not received within %s: %w", s.opts.RequestTimeout, errSlow)
		} else {
			err = fmt.Errorf("relay: session: bad request: %w", errBadRequest)
		}
		s.fail(w, err)
		return
	}
	now := s.opts.Now()
	// Spend the nonce first, whatever else is wrong, so that one challenge buys one try.
	if !s.auth.useNonce(req.Nonce, now) {
		s.fail(w, fmt.Errorf("relay: session: unknown, used or expired nonce: %w", ErrForbidden))
		return
	}
	fp, err := pgpmsg.ParseFingerprint(req.Key)
	if err != nil {
		s.fail(w, fmt.Errorf("relay: session: %v: %w", err, ErrForbidden))
		return
	}
	if !s.knownHost(req.Server, r.Host) {
		s.fail(w, fmt.Errorf("relay: session: signed for server %q, not this one: %w", req.Server, ErrForbidden))
		return
	}
	key, ok := s.store.Key(fp)
	if !ok {
		s.fail(w, fmt.Errorf("relay: session: key %s is not accepted here: %w", fp, ErrForbidden))
		return
	}
	sig, err := base64.StdEncoding.DecodeString(req.Signature)
	if err != nil {
		s.fail(w, fmt.Errorf("relay: session: signature is not base64: %w", ErrForbidden))
		return
	}
	signer, err := pgpmsg.VerifyDetached(pgpmsg.NewKeyring(key), SessionStatement(req.Nonce, fp, req.Server), sig)
	if err != nil || signer.Fingerprint() != fp {
		s.fail(w, fmt.Errorf("relay: session: signature does not verify with key %s: %w", fp, ErrForbidden))
		return
	}
	token, exp := s.auth.newToken(fp, now)
	writeJSON(w, http.StatusOK, sessionResponse{Token: token, Expires: exp.UTC().Format(time.RFC3339)})
}

// knownHost reports whether host, the server name a client signed, names this server.
func (s *Server) knownHost(host, reqHost string) bool {
	if host == "" {
		return false
	}
	if len(s.opts.Hosts) == 0 {
		return strings.EqualFold(host, reqHost)
	}
	for _, h := range s.opts.Hosts {
		if strings.EqualFold(host, h) {
			return true
		}
	}
	return false
}

// authed wraps h so that it runs only for a caller with a live session of a key the store
// still accepts.
func (s *Server) authed(h func(w http.ResponseWriter, r *http.Request, who pgpmsg.Fingerprint)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			s.fail(w, fmt.Errorf("relay: no session token: %w", ErrUnauthorized))
			return
		}
		token = strings.TrimSpace(token)
		now := s.opts.Now()
		who, ok := s.auth.lookup(token, now)
		if !ok {
			s.fail(w, fmt.Errorf("relay: unknown or expired session token: %w", ErrUnauthorized))
			return
		}
		key, ok := s.store.Key(who)
		if !ok {
			s.fail(w, fmt.Errorf("relay: key %s is no longer accepted here: %w", who, ErrForbidden))
			return
		}
		if err := s.checkSigned(r, token, key, now); err != nil {
			s.fail(w, err)
			return
		}
		h(w, r, who)
	}
}

// checkSigned verifies the signature of a request in token's session by key, the
// session's owner, and spends its sequence number: a token alone, sniffed on a plain
// HTTP path, opens nothing, and a signed request cannot be replayed.
func (s *Server) checkSigned(r *http.Request, token string, key *pgpmsg.Key, now time.Time) error {
	seq, err := strconv.ParseUint(r.Header.Get(HeaderSeq), 10, 64)
	if err != nil || seq == 0 {
		return fmt.Errorf("relay: request not signed (no %s): %w", HeaderSeq, ErrUnauthorized)
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(HeaderSignature))
	if err != nil || len(sig) == 0 {
		return fmt.Errorf("relay: request not signed (no %s): %w", HeaderSignature, ErrUnauthorized)
	}
	stmt := RequestStatement(token, seq, r.Method, protocolPath(r.URL), r.ContentLength)
	if signer, err := pgpmsg.VerifyDetached(pgpmsg.NewKeyring(key), stmt, sig); err != nil || signer.Fingerprint() != key.Fingerprint() {
		return fmt.Errorf("relay: request signature does not verify with the session's key %s: %w", key.Fingerprint(), ErrUnauthorized)
	}
	if !s.auth.useSeq(token, seq, now) {
		return fmt.Errorf("relay: request %d of the session was used already, or is too old: %w", seq, ErrUnauthorized)
	}
	return nil
}

func (s *Server) deposit(w http.ResponseWriter, r *http.Request, from pgpmsg.Fingerprint) {
	name := r.PathValue("name")
	to, err := pgpmsg.ParseFingerprint(r.PathValue("to"))
	if err != nil {
		s.fail(w, fmt.Errorf("relay: deposit: recipient: %v: %w", err, errBadRequest))
		return
	}
	if !queue.ValidName(name) {
		s.fail(w, fmt.Errorf("relay: deposit: bad file name %q: %w", name, errBadRequest))
		return
	}
	// Everything that can be refused is refused before the body is read.
	size := r.ContentLength
	if size < 0 {
		s.fail(w, fmt.Errorf("relay: deposit %s: %w", name, errNoLength))
		return
	}
	if size > s.opts.MaxFileSize {
		s.fail(w, fmt.Errorf("relay: deposit %s: %d bytes, this server takes at most %d: %w",
			name, size, s.opts.MaxFileSize, ErrTooLarge))
		return
	}
	ids, err := s.store.Recipient(from, to)
	if err != nil {
		s.fail(w, fmt.Errorf("relay: deposit %s: %w", name, err))
		return
	}
	allowed := s.transferTime(size)
	var body io.Reader = r.Body
	if !setDeadline(w, allowed, false) {
		// The store's reservation of quota for this deposit ends when Deposit returns:
		// the deposit must end at its deadline even if the connection cannot.
		body = newDeadlineReader(body, time.Now().Add(allowed))
	}
	body = &exactReader{r: body, left: size}
	if ids != nil {
		body = &recipientFilter{r: body, size: size, want: ids}
	}
	if err := s.store.Deposit(from, to, name, size, body); err != nil {
		if fe := (*filterError)(nil); errors.As(err, &fe) {
			err = fe // not "queue: put ...: reading request body: ..."
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%d bytes not received within %s (%d bytes/s at least): %w",
				size, allowed, s.opts.MinTransferRate, errSlow)
		}
		s.fail(w, fmt.Errorf("relay: deposit %s: %w", name, err))
		return
	}
	writeJSON(w, http.StatusCreated, FileInfo{Name: name, Size: size})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, who pgpmsg.Fingerprint) {
	es, err := s.store.List(who)
	if err != nil {
		s.fail(w, fmt.Errorf("relay: list: %w", err))
		return
	}
	out := make([]FileInfo, 0, min(len(es), maxListEntries))
	for _, e := range es {
		if len(out) == maxListEntries {
			break // the client lists again once it has collected these
		}
		out = append(out, FileInfo{Name: e.Name, Size: e.Size})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, who pgpmsg.Fingerprint) {
	name := r.PathValue("name")
	if !queue.ValidName(name) {
		s.fail(w, fmt.Errorf("relay: get: bad file name %q: %w", name, errBadRequest))
		return
	}
	rc, size, err := s.store.Open(who, name)
	if err != nil {
		s.fail(w, fmt.Errorf("relay: get %s: %w", name, err))
		return
	}
	defer rc.Close()
	// A reader slower than MinTransferRate is cut off, as a slow depositor is.
	setDeadline(w, s.transferTime(size), true)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	// A copy that fails midway cannot change the status any more; the client sees a short
	// body and keeps nothing.
	io.Copy(w, io.LimitReader(rc, size))
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request, who pgpmsg.Fingerprint) {
	name := r.PathValue("name")
	if !queue.ValidName(name) {
		s.fail(w, fmt.Errorf("relay: remove: bad file name %q: %w", name, errBadRequest))
		return
	}
	if err := s.store.Remove(who, name); err != nil {
		s.fail(w, fmt.Errorf("relay: remove %s: %w", name, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

var (
	errBadRequest = errors.New("bad request")
	errNoLength   = errors.New("Content-Length required")
	errSlow       = errors.New("request timeout")
	errOverloaded = errors.New("server busy")
)

// fail answers with err's status and, unless it is an internal error, its text.
func (s *Server) fail(w http.ResponseWriter, err error) {
	code := statusOf(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		s.report(err)
		msg = "relay: internal error"
	}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dibs"`)
	}
	writeJSON(w, code, errorResponse{Error: msg})
}

func statusOf(err error) int {
	var bodyErr *bodyError
	switch {
	case errors.Is(err, errBadRequest), errors.Is(err, queue.ErrBadName):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBusy):
		return http.StatusConflict
	case errors.Is(err, errNoLength):
		return http.StatusLengthRequired
	case errors.Is(err, queue.ErrTooLarge): // ErrTooLarge wraps it too
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrOverQuota):
		return http.StatusInsufficientStorage
	case errors.Is(err, errSlow), errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout
	case errors.Is(err, errOverloaded):
		return http.StatusServiceUnavailable
	case errors.As(err, &bodyErr): // last: a refusal met while reading wraps a sentinel above
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"relay: internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
