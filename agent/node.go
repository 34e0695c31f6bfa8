package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// Files and directories of a node (DESIGN.md "A node's directory").
const (
	optionsFile   = "dibsrc.toml"
	peersFile     = "peers.toml"
	keysDir       = "keys"
	secretKeyFile = "keys/secret.asc"
	publicKeyFile = "keys/public.asc"
	peerKeysDir   = "keys/peers"
	dbFile        = "db/dibs.db"
	lockFile      = "config.lock"
	tmpDirName    = "tmp"
)

// ErrNotInitialized means DIBS_DIR has no key yet.
var ErrNotInitialized = errors.New("no key in this DIBS_DIR: run dibs init --key NAME first (or import_recovery_kit)")

// Node is one dibs node: its directory, key, options, peers, spool and database.
// A Node is safe for concurrent use by the daemon's goroutines.
type Node struct {
	Dir   string
	Opts  *Options
	ID    *pgpmsg.Identity
	Spool *queue.Spool
	// Transports move spool files; the caller (cmd, testenv) builds them.
	Transports Transports
	// Now is the clock; tests move it.
	Now func() time.Time
	// Log receives the node's events. Commands leave it discarding; the daemon logs.
	Log *slog.Logger
	// Progress hears how far a long command has got (progress.go); nil hears nothing.
	// cmd sets it for one command, the daemon never does.
	Progress Progress
	// Warnings are what opening the node found to tell its user, such as an obsolete
	// option in dibsrc.toml; the command that opened it prints them, once.
	Warnings []string

	mu       sync.Mutex
	peerStat peerFileStat
	peers    []*Peer
	keys     map[string]*pgpmsg.Key // by peer name
	byFP     map[pgpmsg.Fingerprint]*Peer
	keyring  *pgpmsg.Keyring
	reload   peerReload // how a daemon takes edits of peers.toml (reload.go)

	dbMu   sync.Mutex
	db     *books.DB
	dbRefs int
	// KeepDB keeps the database open between uses (commands); the daemon clears it so
	// that cron commands can take their turn.
	KeepDB bool

	outboxMu sync.Mutex
	wire     sync.Map // fingerprint -> key copy that seals with AEAD (held.go)
	pacers   sync.Map // peer name -> *pacer: its bandwidthLimit (budget.go)

	rehearse bool          // tests: every message's transaction runs once rolled back first (handlers.go)
	incoming incomingState // incoming.go
	runs     runLog        // what the daemon did, for its status (status.go)
	lan      lanPeers      // the peers heard on the LAN (lan.go)
	reports  jobReports    // the daemon's job failures last reported (report.go)
}

// peerFileStat tells versions of the peer list apart: peers.toml and the key file of
// every peer in it (a key file replaced alone must be noticed too).
type peerFileStat []queue.Stamp

func (a peerFileStat) same(b peerFileStat) bool { return slices.Equal(a, b) }

// stampOf is path's queue.Stamp, the zero Stamp if it cannot be statted.
func stampOf(path string) queue.Stamp {
	s, _ := queue.StampOf(path)
	return s
}

// InitConfig says how to create a node.
type InitConfig struct {
	KeyName string
	Admin   string
	// SecretKey, if not nil, is an existing armored secret key to use instead of a new one.
	SecretKey io.Reader
	// Identity, if not nil, is the key to use (tests use fixed keys).
	Identity *pgpmsg.Identity
}

// Init creates a node directory with a default dibsrc.toml and a key. It refuses if a key exists.
func Init(dir string, cfg InitConfig) (*Node, error) {
	if _, err := os.Stat(filepath.Join(dir, secretKeyFile)); err == nil {
		return nil, fmt.Errorf("%s already has a key (%s); use another DIBS_DIR", dir, secretKeyFile)
	}
	if err := makeDirs(dir); err != nil {
		return nil, err
	}
	var id *pgpmsg.Identity
	var err error
	switch {
	case cfg.Identity != nil:
		id = cfg.Identity
	case cfg.SecretKey != nil:
		id, err = pgpmsg.ReadIdentity(cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("reading --secret_key_file: %w", err)
		}
	default:
		if cfg.KeyName == "" {
			return nil, fmt.Errorf("--key NAME is needed (e.g. --key alice.dibs@example.org)")
		}
		id, err = pgpmsg.Generate(cfg.KeyName, time.Now())
		if err != nil {
			return nil, err
		}
	}
	opts, err := loadOptions(dir)
	if err != nil {
		return nil, err
	}
	name := cfg.KeyName
	if name == "" {
		name = id.Name()
	}
	opts.set[optDibsPublicKey.Name()] = name
	opts.set[optDibsPrivateKey.Name()] = name
	if cfg.Admin != "" {
		if err := opts.Set(OptDibsAdmin.Name(), cfg.Admin); err != nil {
			return nil, err
		}
	}
	if err := queue.WriteFileAtomic(filepath.Join(dir, optionsFile), opts.encode(), 0o600); err != nil {
		return nil, err
	}
	if err := writeIdentity(dir, id); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, peersFile)); errors.Is(err, fs.ErrNotExist) {
		b, _ := encodePeers(nil)
		if err := queue.WriteFileAtomic(filepath.Join(dir, peersFile), b, 0o600); err != nil {
			return nil, err
		}
	}
	return Open(dir)
}

func writeIdentity(dir string, id *pgpmsg.Identity) error {
	var sec, pub bytes.Buffer
	if err := id.WriteSecret(&sec); err != nil {
		return err
	}
	if err := id.Public().WriteArmored(&pub); err != nil {
		return err
	}
	if err := queue.WriteFileAtomic(filepath.Join(dir, secretKeyFile), sec.Bytes(), 0o600); err != nil {
		return err
	}
	return queue.WriteFileAtomic(filepath.Join(dir, publicKeyFile), pub.Bytes(), 0o644)
}

func makeDirs(dir string) error {
	for _, d := range []string{"", keysDir, peerKeysDir, "db", tmpDirName, "recovery", "storage", "autoBackup", "errorDir"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// Open opens an initialized node directory.
func Open(dir string) (*Node, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(abs, secretKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotInitialized
	}
	if err != nil {
		return nil, err
	}
	id, err := pgpmsg.ReadIdentity(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", secretKeyFile, err)
	}
	if err := makeDirs(abs); err != nil {
		return nil, err
	}
	opts, err := loadOptions(abs)
	if err != nil {
		return nil, err
	}
	sp, err := queue.Open(abs)
	if err != nil {
		return nil, err
	}
	n := &Node{
		Dir: abs, Opts: opts, ID: id, Spool: sp, Warnings: opts.warnings,
		Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		KeepDB: true,
	}
	for _, k := range [][2]string{
		{optDibsPublicKey.Name(), optDibsPublicKey.Get(opts)},
		{optDibsPrivateKey.Name(), optDibsPrivateKey.Get(opts)},
	} {
		if !opts.isSet(k[0]) {
			continue // the default is only a guess
		}
		if err := n.checkKeyName(k[0], k[1]); err != nil {
			n.Warnings = append(n.Warnings, err.Error()+"; fix it in "+optionsFile)
		}
	}
	if err := n.checkPeerList(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// checkPeerList refuses a peer list that lacks peers the database knows: a truncated,
// emptied or deleted peers.toml would otherwise look like a node with fewer peers,
// while pieces on the missing ones go unprobed and unrepaired and their messages are
// refused as strangers'.
func (n *Node) checkPeerList() error {
	peers, err := n.Peers()
	if err != nil {
		return err
	}
	states, err := n.PeerStates()
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	for _, p := range peers {
		listed[p.Name] = true
	}
	var missing []string
	for name := range states {
		if !listed[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	return fmt.Errorf("%s lacks peers the database knows (%s): restore %s from a backup, or set up an empty DIBS_DIR with dibs import_recovery_kit", peersFile, strings.Join(missing, ", "), filepath.Join(n.Dir, peersFile))
}

// Close releases the database.
func (n *Node) Close() error {
	n.dbMu.Lock()
	defer n.dbMu.Unlock()
	if n.db != nil {
		err := n.db.Close()
		n.db = nil
		return err
	}
	return nil
}

// TmpDir is where the node writes temporary files (same filesystem as the spool).
func (n *Node) TmpDir() string { return filepath.Join(n.Dir, tmpDirName) }

// Fingerprint is our key's fingerprint.
func (n *Node) Fingerprint() pgpmsg.Fingerprint { return n.ID.Fingerprint() }

// lockConfig takes the node's configuration lock (peers.toml, dibsrc.toml writes) for a
// read-modify-write; it waits for other processes.
func (n *Node) lockConfig() (func(), error) {
	f, err := os.OpenFile(filepath.Join(n.Dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Peers returns the peer list, re-read when peers.toml changed on disk.
func (n *Node) Peers() ([]*Peer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.reloadPeersLocked(); err != nil {
		return nil, err
	}
	return append([]*Peer(nil), n.peers...), nil
}

// reloadPeersLocked reads the peer list and the peers' keys again if peers.toml or a
// key file changed since. The fingerprint in peers.toml is the peer's identity: a key
// file that holds another key is refused, whoever put it there.
func (n *Node) reloadPeersLocked() error {
	if n.keyring != nil && n.peerStat.same(n.peerStamps(n.peers)) {
		return nil
	}
	if n.keyring != nil && n.reload.keep {
		return n.reloadKeepingLocked()
	}
	return n.readPeersLocked()
}

// readPeersLocked reads the peer list and the peers' keys into the cache.
func (n *Node) readPeersLocked() error {
	peers, err := loadPeers(n.Dir)
	if err != nil {
		return err
	}
	cur := n.peerStamps(peers) // before reading: a change while we read is seen next time
	keys := map[string]*pgpmsg.Key{}
	byFP := map[pgpmsg.Fingerprint]*Peer{}
	kr := pgpmsg.NewKeyring()
	for _, p := range peers {
		if p.Fingerprint == string(n.Fingerprint()) {
			return fmt.Errorf("%s: peer %q has our own key's fingerprint %s", peersFile, p.Name, p.Fingerprint)
		}
		f, err := os.Open(n.peerKeyPath(p.Name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		k, err := pgpmsg.ReadKey(f)
		f.Close()
		rel := filepath.Join(peerKeysDir, p.Name+".asc")
		if err != nil {
			return fmt.Errorf("%s: key of peer %s: %w", rel, p.Name, err)
		}
		if p.Fingerprint == "" {
			return fmt.Errorf("%s: %s gives peer %s no fingerprint to check the key against: add it with dibs edit_peer --peer %s --key_file %s", rel, peersFile, p.Name, p.Name, rel)
		}
		if string(k.Fingerprint()) != p.Fingerprint {
			return fmt.Errorf("%s: key %s is not peer %s's: %s gives its fingerprint as %s (put its key back, or give the new one with dibs edit_peer --key_file)", rel, k.Fingerprint(), p.Name, peersFile, p.Fingerprint)
		}
		keys[p.Name] = k
		byFP[k.Fingerprint()] = p
		kr.Add(k)
	}
	n.peers, n.keys, n.byFP, n.keyring, n.peerStat = peers, keys, byFP, kr, cur
	return nil
}

// peerStamps stamps peers.toml and the key files of peers.
func (n *Node) peerStamps(peers []*Peer) peerFileStat {
	out := peerFileStat{stampOf(filepath.Join(n.Dir, peersFile))}
	for _, p := range peers {
		out = append(out, stampOf(n.peerKeyPath(p.Name)))
	}
	return out
}

func (n *Node) peerKeyPath(name string) string {
	return filepath.Join(n.Dir, peerKeysDir, name+".asc")
}

// Peer returns the named peer and its key (nil if none was given).
func (n *Node) Peer(name string) (*Peer, *pgpmsg.Key, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.reloadPeersLocked(); err != nil {
		return nil, nil, err
	}
	for _, p := range n.peers {
		if p.Name == name {
			return p, n.keys[name], nil
		}
	}
	return nil, nil, fmt.Errorf("no peer %q (dibs show_database --only peers lists them)", name)
}

// PeerByFingerprint returns the peer whose key has fingerprint fp.
func (n *Node) PeerByFingerprint(fp pgpmsg.Fingerprint) (*Peer, *pgpmsg.Key, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reloadPeersLocked() != nil {
		return nil, nil, false
	}
	p, ok := n.byFP[fp]
	if !ok {
		return nil, nil, false
	}
	return p, n.keys[p.Name], true
}

// Keyring holds the keys of every peer: the signers we accept.
func (n *Node) Keyring() (*pgpmsg.Keyring, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.reloadPeersLocked(); err != nil {
		return nil, err
	}
	return n.keyring, nil
}

// savePeers writes the peer list and refreshes the cache. Call with the config lock held.
func (n *Node) savePeers(peers []*Peer) error {
	b, err := encodePeers(peers)
	if err != nil {
		return err
	}
	if err := queue.WriteFileAtomic(filepath.Join(n.Dir, peersFile), b, 0o600); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.keyring = nil // force a reload
	return n.reloadPeersLocked()
}

// SetOption validates and writes one option into dibsrc.toml.
func (n *Node) SetOption(name, value string) error {
	unlock, err := n.lockConfig()
	if err != nil {
		return err
	}
	defer unlock()
	opts, err := loadOptions(n.Dir)
	if err != nil {
		return err
	}
	if err := opts.Set(name, value); err != nil {
		return err
	}
	if name == optDibsPublicKey.Name() || name == optDibsPrivateKey.Name() {
		if err := n.checkKeyName(name, value); err != nil {
			return err
		}
	}
	if err := queue.WriteFileAtomic(filepath.Join(n.Dir, optionsFile), opts.encode(), 0o600); err != nil {
		return err
	}
	n.Opts.replace(opts) // in place: a running daemon's jobs read n.Opts
	return nil
}

// checkKeyName checks that the value of dibsPublicKey or dibsPrivateKey names our key:
// one of its user ids, or its fingerprint. DIBS picked the signing and the encryption
// key from gpg's keyring by these names; dibs signs and encrypts with the one key in
// keys/, so a name of another key would say what dibs does not do.
func (n *Node) checkKeyName(option, name string) error {
	if name == n.ID.Name() || strings.EqualFold(strings.ReplaceAll(name, " ", ""), string(n.Fingerprint())) {
		return nil
	}
	for uid, ident := range n.ID.Entity().Identities {
		if name == uid || ident.UserId != nil && name != "" && (name == ident.UserId.Email || name == ident.UserId.Name) {
			return nil
		}
	}
	return fmt.Errorf("option %s: %q is not our key, %s (%s): dibs signs and encrypts with the key in %s only",
		option, name, n.ID.Name(), n.Fingerprint(), secretKeyFile)
}

// WriteFileAtomic commits data as path: temp file, fsync, rename, fsync dir.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return queue.WriteFileAtomic(path, data, perm)
}
