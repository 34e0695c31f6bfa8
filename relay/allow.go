package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// AllowList is the policy of a relay_server's store, whatever keeps its bytes: only keys
// in the allow file may open a session, and files go only from an allowed key to an
// allowed key. DirStore and the JetStream store (package relay/jetstream) share it.
type AllowList struct {
	file string

	mu      sync.Mutex
	stamp   queue.Stamp // of the allow file as last read; zero if missing
	allowed *pgpmsg.Keyring
	err     error // of the last read that failed, for Reload
}

// NewAllowList reads the allow file: the armored public keys (concatenated `dibs
// export_key` outputs) of everyone who may deposit and collect. It is re-read when it
// changes. A missing file allows nobody; a file that no longer parses leaves the previous
// keys in force. NewAllowList fails if the file exists but cannot be read as public keys.
func NewAllowList(file string) (*AllowList, error) {
	if file == "" {
		return nil, errors.New("relay: no allow file")
	}
	a := &AllowList{file: file, allowed: pgpmsg.NewKeyring()}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Reload reads the allow file now if it changed since it was last read, and returns the
// error of the last read if it failed (the keys from before stay in force then).
func (a *AllowList) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reloadLocked()
	return a.err
}

func (a *AllowList) reloadLocked() {
	st, err := queue.StampOf(a.file)
	if errors.Is(err, fs.ErrNotExist) {
		a.stamp, a.allowed, a.err = queue.Stamp{}, pgpmsg.NewKeyring(), nil
		return
	}
	if err != nil {
		a.err = fmt.Errorf("relay: allow file: %w", err)
		return
	}
	if st == a.stamp {
		return
	}
	a.stamp = st // a file that fails to parse is read again only once it changes again
	b, err := os.ReadFile(a.file)
	if err != nil {
		a.err = fmt.Errorf("relay: allow file: %w", err)
		return
	}
	kr := pgpmsg.NewKeyring()
	if len(bytes.TrimSpace(b)) > 0 {
		keys, err := pgpmsg.ReadKeys(bytes.NewReader(b))
		if err != nil {
			a.err = fmt.Errorf("relay: allow file %s: %w", a.file, err)
			return
		}
		for _, k := range keys {
			kr.Add(k)
		}
	}
	a.allowed, a.err = kr, nil
}

// Key returns fp's key if the allow file names it.
func (a *AllowList) Key(fp pgpmsg.Fingerprint) (*pgpmsg.Key, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reloadLocked()
	return a.allowed.Lookup(fp)
}

// Recipient allows deposits from an allowed key for an allowed key, and returns the
// recipient's encryption key ids.
func (a *AllowList) Recipient(from, to pgpmsg.Fingerprint) ([]uint64, error) {
	if _, ok := a.Key(from); !ok {
		return nil, fmt.Errorf("%s may not deposit here: %w", from, ErrForbidden)
	}
	k, ok := a.Key(to)
	if !ok {
		return nil, fmt.Errorf("this relay takes no files for %s: %w", to, ErrForbidden)
	}
	return k.EncryptionKeyIDs(), nil
}

// Collector returns an error wrapping ErrForbidden unless to may collect here.
func (a *AllowList) Collector(to pgpmsg.Fingerprint) error {
	if _, ok := a.Key(to); !ok {
		return fmt.Errorf("%s may not collect here: %w", to, ErrForbidden)
	}
	return nil
}
