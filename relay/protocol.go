package relay

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
)

// Protocol is the version of the protocol this package speaks; it is part of every path.
const Protocol = 1

const (
	pathPrefix    = "/dibs/v1"
	pathHello     = pathPrefix + "/hello"
	pathChallenge = pathPrefix + "/challenge"
	pathSession   = pathPrefix + "/session"
	pathFiles     = pathPrefix + "/files"
)

const (
	// DefaultMaxFileSize is the largest file a server takes, and a client downloads, unless
	// told otherwise: 128 MB, the default of a node's maxMsgSize too, so that a relay keeps
	// no file its recipients would refuse.
	DefaultMaxFileSize = 128_000_000
	// DefaultRequestTimeout is how long a client has to send the body of a request other
	// than a deposit: challenges and session requests are a few hundred bytes.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultMinTransferRate is the slowest, in bytes a second, that a deposit may arrive
	// or a download be taken: a file of n bytes gets DefaultTransferGrace + n/64 KiB, about
	// 33 minutes for DefaultMaxFileSize.
	DefaultMinTransferRate = 64 << 10
	// DefaultTransferGrace is the fixed part of a file transfer's allowance.
	DefaultTransferGrace = 30 * time.Second
	// DefaultMaxUnauthenticated is how many hello, challenge and session requests a server
	// answers at once; more are answered 503 with a Retry-After.
	DefaultMaxUnauthenticated = 64
	// NonceLifetime is how long a challenge can be answered.
	NonceLifetime = 2 * time.Minute
	// TokenLifetime is how long a session token is valid.
	TokenLifetime = 10 * time.Minute

	maxJSONRequest   = 16 << 10 // session requests: a fingerprint, a nonce and a signature
	maxJSONResponse  = 64 << 10 // hello, challenge, session, errors
	maxListResponse  = 16 << 20 // a file list
	maxListEntries   = 10000    // files per list response; the client lists again
	nonceBytes       = 32
	tokenBytes       = 32
	maxNonces        = 4096 // outstanding challenges, all callers together
	maxTokensPerKey  = 16   // live sessions per key
	sessionStatement = "dibs-session-v1"
	requestStatement = "dibs-request-v1"
)

// HelloInfo is what GET /dibs/v1/hello answers.
type HelloInfo struct {
	Software string `json:"software"`
	Version  string `json:"version"`
	Protocol int    `json:"protocol"`
	// Key is the fingerprint of the serving node's key, or "" for a relay that has none.
	Key string `json:"key"`
}

type challengeResponse struct {
	Nonce string `json:"nonce"`
}

type sessionRequest struct {
	Key       string `json:"key"`
	Nonce     string `json:"nonce"`
	Signature string `json:"signature"` // base64 of a detached signature over SessionStatement
	Server    string `json:"server"`    // the host the client addressed, as signed
}

type sessionResponse struct {
	Token   string `json:"token"`
	Expires string `json:"expires"` // RFC 3339
}

// FileInfo is one entry of GET /dibs/v1/files.
type FileInfo struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// Headers of a signed request (RequestStatement).
const (
	HeaderSeq       = "Dibs-Request-Seq"
	HeaderSignature = "Dibs-Request-Signature"
)

// RequestStatement is the exact text a client signs for every request it makes in a
// session, sent base64 in the Dibs-Request-Signature header with seq in Dibs-Request-Seq:
// the session (the hex SHA-256 of its token), the request's sequence number in it (1, 2,
// ...; each is taken once), the method, the path and query from /dibs/v1/ on (a proxy in
// front may add or strip a prefix), and the Content-Length (0 without a body). So a token
// seen on the path is no use without the key: it names a session, the signature proves
// the request is its owner's.
func RequestStatement(token string, seq uint64, method, path string, length int64) []byte {
	h := sha256.Sum256([]byte(token))
	return []byte(requestStatement + "\nsession: " + hex.EncodeToString(h[:]) + "\nseq: " + strconv.FormatUint(seq, 10) +
		"\nmethod: " + method + "\npath: " + path + "\nlength: " + strconv.FormatInt(max(length, 0), 10) + "\n")
}

// protocolPath is the part of u that a request signature covers: the escaped path from
// /dibs/v1/ on, and the query.
func protocolPath(u *url.URL) string {
	p := u.EscapedPath()
	if i := strings.LastIndex(p, pathPrefix+"/"); i >= 0 {
		p = p[i:]
	}
	if u.RawQuery != "" {
		p += "?" + u.RawQuery
	}
	return p
}

// SessionStatement is the exact text a client signs to open a session: the base64 nonce
// from the challenge, its own fingerprint, and the server's host ("host" or "host:port", as
// in the URL the client uses, lower case).
func SessionStatement(nonce string, key pgpmsg.Fingerprint, host string) []byte {
	return []byte(sessionStatement + "\nnonce: " + nonce + "\nkey: " + string(key) +
		"\nserver: " + strings.ToLower(host) + "\n")
}
