package pgpmsg

import (
	"sync"

	pgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Keyring is the set of keys whose signatures we accept, indexed by
// fingerprint. It is safe for concurrent use.
type Keyring struct {
	mu   sync.RWMutex
	keys []*Key // in order of first addition
	byFP map[Fingerprint]int
}

// NewKeyring returns a keyring holding keys.
func NewKeyring(keys ...*Key) *Keyring {
	kr := &Keyring{byFP: make(map[Fingerprint]int)}
	for _, k := range keys {
		kr.Add(k)
	}
	return kr
}

// Add adds k, replacing a key with the same fingerprint. A nil k is ignored.
func (kr *Keyring) Add(k *Key) {
	if k == nil {
		return
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if kr.byFP == nil {
		kr.byFP = make(map[Fingerprint]int)
	}
	if i, ok := kr.byFP[k.fp]; ok {
		kr.keys[i] = k
		return
	}
	kr.byFP[k.fp] = len(kr.keys)
	kr.keys = append(kr.keys, k)
}

// Lookup returns the key with fingerprint fp.
func (kr *Keyring) Lookup(fp Fingerprint) (*Key, bool) {
	if kr == nil {
		return nil, false
	}
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	i, ok := kr.byFP[fp]
	if !ok {
		return nil, false
	}
	return kr.keys[i], true
}

// Keys returns the keys in the order they were first added.
func (kr *Keyring) Keys() []*Key {
	if kr == nil {
		return nil
	}
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return append([]*Key(nil), kr.keys...)
}

// Len returns the number of keys.
func (kr *Keyring) Len() int {
	if kr == nil {
		return 0
	}
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return len(kr.keys)
}

// entities returns a snapshot of the keyring for go-crypto, with extra
// entities (our identity) first.
func (kr *Keyring) entities(extra ...*pgp.Entity) pgp.EntityList {
	keys := kr.Keys()
	el := make(pgp.EntityList, 0, len(extra)+len(keys))
	el = append(el, extra...)
	for _, k := range keys {
		el = append(el, k.e)
	}
	return el
}
