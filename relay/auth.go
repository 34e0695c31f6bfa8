package relay

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
)

// authTable holds the outstanding challenges and the open sessions of one server. Both
// are bounded: challenges by maxNonces (the oldest goes first when a flood fills the table),
// sessions by maxTokensPerKey for each key that may authenticate.
type authTable struct {
	mu       sync.Mutex
	nonces   map[string]*list.Element // nonce → element of order
	order    *list.List               // of *nonceEntry, oldest first
	sessions map[[sha256.Size]byte]*session
	byKey    map[pgpmsg.Fingerprint][][sha256.Size]byte // oldest first
}

type nonceEntry struct {
	nonce   string
	expires time.Time
}

type session struct {
	key     pgpmsg.Fingerprint
	expires time.Time
	// The request sequence numbers seen: the highest, and a bit for each of the
	// seqWindow below it (bit i: top-i was used), as IPsec's anti-replay window.
	top  uint64
	seen [seqWindow / 64]uint64
}

// seqWindow is how far out of order a session's signed requests may arrive: requests
// running at once on several connections. An older one is refused as a replay.
const seqWindow = 1024

// useSeq spends seq: it reports whether seq is new and within the window below the
// highest seen.
func (s *session) useSeq(seq uint64) bool {
	if seq == 0 {
		return false
	}
	if seq > s.top {
		s.seen = shiftUp(s.seen, seq-s.top)
		s.top = seq
		s.seen[0] |= 1
		return true
	}
	d := s.top - seq
	if d >= seqWindow {
		return false
	}
	w, bit := d/64, uint64(1)<<(d%64)
	if s.seen[w]&bit != 0 {
		return false
	}
	s.seen[w] |= bit
	return true
}

func newAuthTable() *authTable {
	return &authTable{
		nonces:   make(map[string]*list.Element),
		order:    list.New(),
		sessions: make(map[[sha256.Size]byte]*session),
		byKey:    make(map[pgpmsg.Fingerprint][][sha256.Size]byte),
	}
}

// newNonce issues a fresh challenge valid until now+NonceLifetime.
func (a *authTable) newNonce(now time.Time) string {
	var b [nonceBytes]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	n := base64.StdEncoding.EncodeToString(b[:])
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweepNoncesLocked(now)
	for a.order.Len() >= maxNonces {
		a.dropNonceLocked(a.order.Front())
	}
	a.nonces[n] = a.order.PushBack(&nonceEntry{nonce: n, expires: now.Add(NonceLifetime)})
	return n
}

// useNonce consumes nonce and reports whether it was issued here, unused and unexpired.
// A nonce is spent by its first use whatever the outcome, so a failed attempt cannot be
// retried with it.
func (a *authTable) useNonce(nonce string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.nonces[nonce]
	if !ok {
		return false
	}
	a.dropNonceLocked(e)
	return now.Before(e.Value.(*nonceEntry).expires)
}

func (a *authTable) dropNonceLocked(e *list.Element) {
	delete(a.nonces, e.Value.(*nonceEntry).nonce)
	a.order.Remove(e)
}

// sweepNoncesLocked drops expired challenges; they all live equally long, so they are the
// oldest ones.
func (a *authTable) sweepNoncesLocked(now time.Time) {
	for e := a.order.Front(); e != nil && !now.Before(e.Value.(*nonceEntry).expires); e = a.order.Front() {
		a.dropNonceLocked(e)
	}
}

// newToken opens a session for key and returns its token and expiry.
func (a *authTable) newToken(key pgpmsg.Fingerprint, now time.Time) (string, time.Time) {
	var b [tokenBytes]byte
	rand.Read(b[:])
	h := sha256.Sum256(b[:])
	exp := now.Add(TokenLifetime)
	a.mu.Lock()
	defer a.mu.Unlock()
	hs := a.liveTokensLocked(key, now)
	if len(hs) >= maxTokensPerKey {
		delete(a.sessions, hs[0])
		hs = hs[1:]
	}
	a.sessions[h] = &session{key: key, expires: exp}
	a.byKey[key] = append(hs, h)
	return base64.RawURLEncoding.EncodeToString(b[:]), exp
}

// liveTokensLocked drops key's expired sessions and returns the rest.
func (a *authTable) liveTokensLocked(key pgpmsg.Fingerprint, now time.Time) [][sha256.Size]byte {
	hs := a.byKey[key][:0:0]
	for _, h := range a.byKey[key] {
		if s, ok := a.sessions[h]; ok && now.Before(s.expires) {
			hs = append(hs, h)
		} else {
			delete(a.sessions, h)
		}
	}
	if len(hs) == 0 {
		delete(a.byKey, key)
	}
	return hs
}

// lookup returns the key whose session token is token. Tokens are looked up by their
// SHA-256, never compared byte by byte, so response timing says nothing about how much of
// a guessed token is right (the same reason to hash as a constant-time compare).
func (a *authTable) lookup(token string, now time.Time) (pgpmsg.Fingerprint, bool) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != tokenBytes {
		return "", false
	}
	h := sha256.Sum256(b)
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[h]
	if !ok || !now.Before(s.expires) {
		return "", false
	}
	return s.key, true
}

// shiftUp moves every bit of w, a number with its least significant word first, k
// places up; bits shifted past the top are dropped.
func shiftUp(w [seqWindow / 64]uint64, k uint64) [seqWindow / 64]uint64 {
	var out [seqWindow / 64]uint64
	if k >= seqWindow {
		return out
	}
	ws, bs := int(k/64), k%64
	for i := len(w) - 1; i >= ws; i-- {
		out[i] = w[i-ws] << bs
		if bs > 0 && i-ws-1 >= 0 {
			out[i] |= w[i-ws-1] >> (64 - bs)
		}
	}
	return out
}

// useSeq spends the request sequence number seq of token's session, and reports whether
// it was unused (see session.useSeq). A session that has ended has none left.
func (a *authTable) useSeq(token string, seq uint64, now time.Time) bool {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != tokenBytes {
		return false
	}
	h := sha256.Sum256(b)
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[h]
	return ok && now.Before(s.expires) && s.useSeq(seq)
}

// sweep drops every expired challenge and session.
func (a *authTable) sweep(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweepNoncesLocked(now)
	for key := range a.byKey {
		if hs := a.liveTokensLocked(key, now); len(hs) > 0 {
			a.byKey[key] = hs
		}
	}
}
