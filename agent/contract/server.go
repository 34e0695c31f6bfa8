package contract

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// ServerOptions tune a Server. The zero value is usable.
type ServerOptions struct {
	// MaxPerKey is how many contracts one key may have posted at once; 0 means 5.
	MaxPerKey int
	// MaxContracts is how many contracts the server holds at once; 0 means 1000.
	MaxContracts int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnError is told of internal errors (behind a 500) and of files that do not load.
	OnError func(error)
}

// Server is the contract server: it keeps posted contracts, one file each in its
// directory, and serves them as an HTML page (/) and as JSON (/contracts.json, and one
// by one at /contracts/NAME). Posts (POST /post) and withdrawals (POST /unpost) must be
// signed by the contract's own key. The paths work under any prefix ("/peer_finder/post").
type Server struct {
	dir  string
	opts ServerOptions

	mu        sync.Mutex
	contracts map[string]*Contract
	withdrawn map[string]time.Time // name -> Posted of the last withdrawn post, so that it cannot be posted again
}

// OpenServer loads the contracts kept in dir (creating it if need be) and drops those
// that expired.
func OpenServer(dir string, opts ServerOptions) (*Server, error) {
	if opts.MaxPerKey <= 0 {
		opts.MaxPerKey = 5
	}
	if opts.MaxContracts <= 0 {
		opts.MaxContracts = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("contract server: %w", err)
	}
	s := &Server{dir: dir, opts: opts, contracts: map[string]*Contract{}, withdrawn: map[string]time.Time{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("contract server: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		c, err := s.load(e.Name())
		if err != nil || c.Name != name {
			s.report(fmt.Errorf("contract server: %s does not load, left aside: %v", e.Name(), err))
			continue
		}
		s.contracts[name] = c
	}
	s.Expire()
	return s, nil
}

func (s *Server) load(file string) (*Contract, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, file))
	if err != nil {
		return nil, err
	}
	var c Contract
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (s *Server) report(err error) {
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}

// Expire removes the contracts whose lifetime is over, from memory and disk, and returns
// how many. Listings skip expired contracts whether or not Expire ran.
func (s *Server) Expire() int {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := 0
	for name, c := range s.contracts {
		if !now.Before(c.ExpiresAt()) {
			if err := s.removeLocked(name); err != nil {
				s.report(err)
				continue
			}
			k++
		}
	}
	for name, posted := range s.withdrawn {
		if now.Sub(posted) > 2*MaxClockSkew+time.Hour {
			delete(s.withdrawn, name) // a post that old is refused for its date alone
		}
	}
	return k
}

func (s *Server) removeLocked(name string) error {
	err := os.Remove(filepath.Join(s.dir, name+".json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("contract server: remove %s: %w", name, err)
	}
	if d, err := os.Open(s.dir); err == nil {
		d.Sync() // the removal survives a crash: an expired or withdrawn contract stays gone
		d.Close()
	}
	delete(s.contracts, name)
	return nil
}

// Live returns the contracts not expired, by name.
func (s *Server) Live() []*Contract {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Contract, 0, len(s.contracts))
	for _, c := range s.contracts {
		if now.Before(c.ExpiresAt()) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Post checks c and keeps it. A contract of the same name by the same key is replaced
// by a newer post; by another key it is refused.
func (s *Server) Post(c *Contract) error {
	if err := c.Validate(); err != nil {
		return badRequest(err)
	}
	now := s.opts.Now()
	if d := now.Sub(c.Posted); d > MaxClockSkew || d < -MaxClockSkew {
		return badRequest(fmt.Errorf("contract: posted %s is more than %s from this server's clock (%s)", c.Posted.UTC().Format(time.RFC3339), MaxClockSkew, now.UTC().Format(time.RFC3339)))
	}
	if _, err := c.Verify(); err != nil {
		return forbidden(err)
	}
	c.Expires = c.ExpiresAt().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.withdrawn[c.Name]; ok && !c.Posted.After(w) {
		return forbidden(fmt.Errorf("contract %s: this post was withdrawn", c.Name))
	}
	old := s.contracts[c.Name]
	if old != nil && now.Before(old.ExpiresAt()) {
		if old.Fingerprint != c.Fingerprint {
			return conflict(fmt.Errorf("contract %s is taken by another key; choose another --contract_name", c.Name))
		}
		if !c.Posted.After(old.Posted) {
			return conflict(fmt.Errorf("contract %s: a newer post of it is here already", c.Name))
		}
	}
	if old == nil || old.Fingerprint != c.Fingerprint {
		mine := 0
		for _, o := range s.contracts {
			if o.Fingerprint == c.Fingerprint && now.Before(o.ExpiresAt()) {
				mine++
			}
		}
		if mine >= s.opts.MaxPerKey {
			return tooMany(fmt.Errorf("contract server: key %s has %d contracts posted, at most %d; unpost one first", c.Fingerprint, mine, s.opts.MaxPerKey))
		}
		if len(s.contracts) >= s.opts.MaxContracts {
			return tooMany(fmt.Errorf("contract server: full (%d contracts); try again later", len(s.contracts)))
		}
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := queue.WriteFileAtomic(filepath.Join(s.dir, c.Name+".json"), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("contract server: keep %s: %w", c.Name, err)
	}
	s.contracts[c.Name] = c
	return nil
}

// Unpost withdraws a contract, if u is signed by the key that posted it.
func (s *Server) Unpost(u *Unpost) error {
	if err := CheckName(u.Name); err != nil {
		return badRequest(err)
	}
	now := s.opts.Now()
	if d := now.Sub(u.Date); d > MaxClockSkew || d < -MaxClockSkew {
		return badRequest(fmt.Errorf("unpost: date %s is more than %s from this server's clock", u.Date.UTC().Format(time.RFC3339), MaxClockSkew))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.contracts[u.Name]
	if c == nil || !now.Before(c.ExpiresAt()) {
		return notFound(fmt.Errorf("no contract %s here", u.Name))
	}
	if u.Fingerprint != c.Fingerprint || !u.Posted.Equal(c.Posted) {
		return forbidden(fmt.Errorf("unpost %s: only the key that posted it can withdraw it", u.Name))
	}
	key, err := pgpmsg.ReadKey(strings.NewReader(c.Key))
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(u.Signature)
	if err != nil {
		return forbidden(fmt.Errorf("unpost %s: signature is not base64", u.Name))
	}
	if _, err := pgpmsg.VerifyDetached(pgpmsg.NewKeyring(key), u.Statement(), sig); err != nil {
		return forbidden(fmt.Errorf("unpost %s: only the key that posted it can withdraw it: %w", u.Name, err))
	}
	if err := s.removeLocked(u.Name); err != nil {
		return err
	}
	s.withdrawn[u.Name] = c.Posted
	return nil
}

// Get returns the named live contract.
func (s *Server) Get(name string) (*Contract, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.contracts[name]
	if c == nil || !s.opts.Now().Before(c.ExpiresAt()) {
		return nil, false
	}
	return c, true
}

// statusError is an error with the HTTP status it is answered with.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func badRequest(err error) error { return &statusError{http.StatusBadRequest, err} }
func forbidden(err error) error  { return &statusError{http.StatusForbidden, err} }
func conflict(err error) error   { return &statusError{http.StatusConflict, err} }
func notFound(err error) error   { return &statusError{http.StatusNotFound, err} }
func tooMany(err error) error    { return &statusError{http.StatusInsufficientStorage, err} }

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/unpost"):
		var u Unpost
		if err := readJSON(w, r, &u); err != nil {
			s.fail(w, err)
			return
		}
		if err := s.Unpost(&u); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"unposted": u.Name})
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/post"):
		var c Contract
		if err := readJSON(w, r, &c); err != nil {
			s.fail(w, err)
			return
		}
		if err := s.Post(&c); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"posted": c.Name, "expires": c.Expires.Format(time.RFC3339)})
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		s.fail(w, &statusError{http.StatusMethodNotAllowed, fmt.Errorf("%s %s: not here", r.Method, p)})
	case strings.HasSuffix(p, "/contracts.json"):
		writeJSON(w, http.StatusOK, listing{Contracts: s.Live()})
	case strings.Contains(p, "/contracts/"):
		name := p[strings.LastIndex(p, "/contracts/")+len("/contracts/"):]
		name = strings.TrimSuffix(name, ".json")
		c, ok := s.Get(name)
		if !ok {
			s.fail(w, notFound(fmt.Errorf("no contract %q here (expired, withdrawn or never posted)", name)))
			return
		}
		writeJSON(w, http.StatusOK, c)
	default:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := pageTmpl.Execute(w, page{Contracts: s.Live(), Now: s.opts.Now().UTC()}); err != nil {
			s.report(err)
		}
	}
}

type listing struct {
	Contracts []*Contract `json:"contracts"`
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > MaxRequest {
		return &statusError{http.StatusRequestEntityTooLarge, fmt.Errorf("request of %d bytes, at most %d taken", r.ContentLength, MaxRequest)}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &statusError{http.StatusRequestEntityTooLarge, fmt.Errorf("request over %d bytes", MaxRequest)}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return &statusError{http.StatusRequestTimeout, fmt.Errorf("request not received in time")}
		}
		return badRequest(fmt.Errorf("malformed request: %v", err))
	}
	if dec.More() {
		return badRequest(fmt.Errorf("malformed request: more than one JSON value"))
	}
	return nil
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var se *statusError
	if errors.As(err, &se) {
		code = se.code
	}
	msg := err.Error()
	if code == http.StatusInternalServerError {
		s.report(err)
		msg = "contract server: internal error"
	}
	writeJSON(w, code, errorResponse{Error: msg})
}

type errorResponse struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"contract server: internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

type page struct {
	Contracts []*Contract
	Now       time.Time
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>dibs peer finder</title></head>
<body>
<h1>dibs peer finder: posted contracts</h1>
<p>{{len .Contracts}} contract(s) as of {{rfc3339 .Now}}. Answer one with
<code>dibs propose_contract --contract_name NAME --local_quota Q --remote_quota Q</code>
(the quotas as the poster would see them); <a href="contracts.json">contracts.json</a> lists them for scripts.</p>
<table border="1">
<tr><th>name</th><th>poster wants</th><th>quota_mult</th><th>talk</th><th>listen</th><th>host</th><th>email</th><th>expires</th><th>key</th></tr>
{{range .Contracts}}<tr><td>{{.Name}}</td><td>{{.MinQuota}}-{{.MaxQuota}} bytes</td><td>{{.QuotaMult}}</td><td>{{.Talk}}</td><td>{{.Listen}}</td><td>{{.Host}}{{if .Port}}:{{.Port}}{{end}}</td><td>{{.Email}}</td><td>{{rfc3339 .Expires}}</td><td><code>{{.Fingerprint}}</code></td></tr>
{{end}}</table>
</body></html>
`))
