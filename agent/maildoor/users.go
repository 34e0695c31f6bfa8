package maildoor

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// User is one entry of the users file: a key of the relay's allow file that also has a
// mail address at the relay and a password for its mail doors.
type User struct {
	// Name is a login name besides the mail address; may be "".
	Name string
	// Key is the user's key; files for it are mails to Mail.
	Key pgpmsg.Fingerprint
	// Mail is the user's address at the relay, lower case.
	Mail string
	hash string
}

// usersFile is the TOML form of the users file.
type usersFile struct {
	User []struct {
		Name     string `toml:"name"`
		Key      string `toml:"key"`
		Mail     string `toml:"mail"`
		Password string `toml:"password"`
	} `toml:"user"`
}

// Users is the users file, re-read when it changes. A file that no longer parses leaves
// the users from before in force; a missing file has no users.
type Users struct {
	path string

	mu      sync.Mutex
	stamp   queue.Stamp      // of the file as last read; zero if missing
	byLogin map[string]*User // by name and by mail address, lower case
	byMail  map[string]*User
	domains map[string]bool
	list    []*User
	err     error // of the last read that failed
}

// OpenUsers reads the users file path. It fails if the file exists but does not parse.
func OpenUsers(path string) (*Users, error) {
	u := &Users{path: path}
	u.set(nil)
	if err := u.Reload(); err != nil {
		return nil, err
	}
	return u, nil
}

// Reload reads the file again if it changed since it was last read, and returns the error
// of the last read if it failed (the users from before stay in force then).
func (u *Users) Reload() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reloadLocked()
	return u.err
}

func (u *Users) reloadLocked() {
	st, err := queue.StampOf(u.path)
	if errors.Is(err, fs.ErrNotExist) {
		u.stamp, u.err = queue.Stamp{}, nil
		u.set(nil)
		return
	}
	if err != nil {
		u.err = fmt.Errorf("maildoor: users file: %w", err)
		return
	}
	if st == u.stamp {
		return
	}
	u.stamp = st // a file that fails to parse is read again only once it changes again
	users, err := parseUsers(u.path)
	if err != nil {
		u.err = err
		return
	}
	u.set(users)
	u.err = nil
}

func parseUsers(path string) ([]*User, error) {
	var f usersFile
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		return nil, fmt.Errorf("maildoor: users file %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		return nil, fmt.Errorf("maildoor: users file %s: unknown field %s", path, un[0])
	}
	seen := map[string]bool{}
	var out []*User
	for i, e := range f.User {
		at := fmt.Sprintf("maildoor: users file %s: user %d", path, i+1)
		fp, err := pgpmsg.ParseFingerprint(e.Key)
		if err != nil {
			return nil, fmt.Errorf("%s: key: %w", at, err)
		}
		addr := strings.ToLower(strings.TrimSpace(e.Mail))
		local, domain, ok := strings.Cut(addr, "@")
		if !ok || local == "" || domain == "" || strings.ContainsAny(addr, " <>,\"") {
			return nil, fmt.Errorf("%s: mail %q is not an address", at, e.Mail)
		}
		if err := checkHash(e.Password); err != nil {
			return nil, fmt.Errorf("%s (%s): password: %w", at, addr, err)
		}
		name := strings.ToLower(strings.TrimSpace(e.Name))
		for _, l := range []string{addr, name, string(fp)} {
			if l != "" && seen[l] {
				return nil, fmt.Errorf("%s: %s is given twice", at, l)
			}
			seen[l] = true
		}
		out = append(out, &User{Name: name, Key: fp, Mail: addr, hash: e.Password})
	}
	return out, nil
}

func (u *Users) set(users []*User) {
	u.byLogin, u.byMail, u.domains, u.list = map[string]*User{}, map[string]*User{}, map[string]bool{}, users
	for _, x := range users {
		u.byMail[x.Mail] = x
		u.byLogin[x.Mail] = x
		if x.Name != "" {
			u.byLogin[x.Name] = x
		}
		_, d, _ := strings.Cut(x.Mail, "@")
		u.domains[d] = true
	}
}

// dummyHash is checked against when the login is unknown, so that an unknown name takes
// as long to refuse as a wrong password. Made on first use: a bcrypt hash costs ~60 ms,
// which every dibs command paid at start when it was made at init.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("dibs relay"), bcrypt.DefaultCost)
	return h
})

// Login returns the user whose name or mail address is login, if password is theirs.
func (u *Users) Login(login, password string) (*User, bool) {
	u.mu.Lock()
	u.reloadLocked()
	x := u.byLogin[strings.ToLower(strings.TrimSpace(login))]
	u.mu.Unlock()
	if x == nil {
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
		return nil, false
	}
	if !checkPassword(x.hash, password) {
		return nil, false
	}
	return x, true
}

// ByMail returns the user whose address is addr.
func (u *Users) ByMail(addr string) (*User, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reloadLocked()
	x, ok := u.byMail[strings.ToLower(strings.TrimSpace(addr))]
	return x, ok
}

// ByKey returns the user whose key is fp.
func (u *Users) ByKey(fp pgpmsg.Fingerprint) (*User, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reloadLocked()
	for _, x := range u.list {
		if x.Key == fp {
			return x, true
		}
	}
	return nil, false
}

// Local reports whether domain is one of the users' mail domains: mail for another domain
// is mail the relay would have to pass on, which it never does.
func (u *Users) Local(domain string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reloadLocked()
	return u.domains[strings.ToLower(domain)]
}

// All returns the users.
func (u *Users) All() []User {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reloadLocked()
	out := make([]User, 0, len(u.list))
	for _, x := range u.list {
		out = append(out, *x)
	}
	return out
}

// checkHash tells whether h is a password hash this package can check.
func checkHash(h string) error {
	switch {
	case strings.HasPrefix(h, "$2"):
		if _, err := bcrypt.Cost([]byte(h)); err != nil {
			return fmt.Errorf("bad bcrypt hash: %w", err)
		}
		return nil
	case strings.HasPrefix(h, "$argon2id$"):
		if _, err := parseArgon2(h); err != nil {
			return err
		}
		return nil
	case h == "":
		return errors.New("no password hash")
	}
	return errors.New("not a bcrypt ($2b$...) or argon2id ($argon2id$...) hash; never a password in clear")
}

func checkPassword(h, password string) bool {
	if strings.HasPrefix(h, "$argon2id$") {
		a, err := parseArgon2(h)
		if err != nil {
			return false
		}
		got := argon2.IDKey([]byte(password), a.salt, a.time, a.memory, a.threads, uint32(len(a.key)))
		return subtle.ConstantTimeCompare(got, a.key) == 1
	}
	return bcrypt.CompareHashAndPassword([]byte(h), []byte(password)) == nil
}

type argon2Hash struct {
	time, memory uint32
	threads      uint8
	salt, key    []byte
}

// parseArgon2 reads the PHC string form of an argon2id hash:
// $argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>, salt and hash in unpadded base64.
func parseArgon2(h string) (*argon2Hash, error) {
	f := strings.Split(h, "$")
	if len(f) != 6 || f[1] != "argon2id" || f[2] != "v=19" {
		return nil, errors.New("bad argon2id hash: want $argon2id$v=19$m=...,t=...,p=...$salt$hash")
	}
	var a argon2Hash
	var threads uint32
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &a.memory, &a.time, &threads); err != nil || threads == 0 || threads > 255 || a.time == 0 {
		return nil, fmt.Errorf("bad argon2id parameters %q", f[3])
	}
	a.threads = uint8(threads)
	var err error
	if a.salt, err = base64.RawStdEncoding.DecodeString(f[4]); err != nil {
		return nil, fmt.Errorf("bad argon2id salt: %w", err)
	}
	if a.key, err = base64.RawStdEncoding.DecodeString(f[5]); err != nil || len(a.key) < 16 {
		return nil, errors.New("bad argon2id hash value")
	}
	return &a, nil
}
