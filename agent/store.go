package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/erasure"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// Limits of the store engine.
const (
	// maxSegment bounds one segment (k shards) in memory: two are in flight at a time.
	maxSegment = 16 << 20
	// segBuffers is how many segments are in memory at once: one read while others seal.
	segBuffers = 2
	// maxK bounds the data shards per segment, however many peers there are.
	maxK = 16
	// pieceOverhead is room left in a message for its headers, manifest framing and
	// OpenPGP packets.
	pieceOverhead = 64 << 10
)

// StoreResult counts what one store run did.
type StoreResult struct {
	Entries   int   // files, directories and links looked at
	Unchanged int   // skipped by the stat cache or because their content was the same
	Stored    int   // new versions
	Bytes     int64 // content bytes coded and sealed
	Objects   int
	Pieces    int
	Deleted   int      // stored entries found gone locally (still recoverable)
	Warnings  []string // entries that were skipped, and why
}

// StoredName returns the canonical form of a stored name: absolute, clean, with
// forward slashes. "docs/a", "/docs/a/" and "/docs//a" are the same stored name, in
// store, recover, unstore and probe alike.
func StoredName(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty stored name")
	}
	if strings.ContainsRune(s, 0) {
		return "", errors.New("a stored name cannot contain a NUL byte")
	}
	return path.Clean("/" + filepath.ToSlash(s)), nil
}

// codeFor chooses k and m for a number of peers. Each of the n = k+m pieces of a
// segment goes to a different peer; m is redundantPieces (fewer if there are not enough
// peers, but one whenever there are two peers); from five peers on, one peer is left out
// of each segment so that repair has somewhere to put a lost piece; k takes the rest, up
// to maxK. 2 peers: 1+1 (mirror); 3: 1+2; 4: 2+2; 5: 2+2; 10: 7+2 (with the default
// redundantPieces = 2).
func codeFor(peers, redundant int) (k, m int, err error) {
	if peers < 1 {
		return 0, 0, errors.New("no peer to store on: add one with dibs add_peer")
	}
	n := peers
	if peers >= 5 {
		n = peers - 1
	}
	m = min(redundant, n-1)
	k = min(n-m, maxK)
	return k, m, nil
}

// noPeerLeft says why no peer can take pieces: each reason with its peers and the fix.
func noPeerLeft(noKey, forgot, full []string) error {
	var why []string
	if len(noKey) > 0 {
		why = append(why, fmt.Sprintf("no key for %s (give it with dibs edit_peer --peer %s --key_file F)", strings.Join(noKey, ", "), noKey[0]))
	}
	if len(forgot) > 0 {
		why = append(why, fmt.Sprintf("%s dropped what it held for us (FORGET_YOU) and has not been heard from since", strings.Join(forgot, ", ")))
	}
	if len(full) > 0 {
		why = append(why, fmt.Sprintf("no room left at %s (raise remote_quota with dibs edit_peer, or add peers)", strings.Join(full, ", ")))
	}
	return errors.New("no peer can take pieces: " + strings.Join(why, "; "))
}

// candidate is a peer that can take pieces in this run.
type candidate struct {
	name string
	key  *pgpmsg.Key
	room int64 // remote_quota left, counting pieces not yet acknowledged
	used int   // pieces placed in this run, to spread them
	loss int   // lossClass of the peer's loss probability: placement prefers reliable peers
	// repair marks the pieces of a repair: their files draw on the budgets' repair share
	// (budget.go).
	repair bool
}

// storeRun is one store command: its peers, code, buffers and workers.
type storeRun struct {
	n         *Node
	ctx       context.Context
	now       time.Time
	code      *erasure.Code
	shardSize int // target bytes per shard
	segSize   int // k * shardSize
	packLimit int64
	peers     []*candidate
	placeMu   sync.Mutex
	// stage holds the run's pieces until their object is recorded: only then do they
	// go into outgoing/<peer>/, so no piece travels that the books do not know.
	stage *queue.Stage

	bufs chan []byte    // two segment buffers, reused
	jobs chan pieceJob  // sealing work
	wg   sync.WaitGroup // the workers

	stat   map[string]books.StatEntry
	latest map[string]FileVersion
	pack   packBuf
	res    StoreResult

	// dropped is the newest version of a name dropped from a pack that is still at the
	// peers: a new version takes a higher number, which no tombstone names.
	dropped map[string]int

	commits   chan pendingCommit // objects waiting for their commit, in order
	committed chan struct{}      // closed when the committer is done
	errMu     sync.Mutex
	asyncErr  error // the first failure of a seal or a commit
	stored    int   // versions committed (committer only)

	noRedundancy string // the warning for a code without spare pieces (m = 0), or ""

	prog Progress
	read int64 // bytes of the current large file told to prog so far
}

type pieceJob struct {
	peer  *candidate
	info  PieceInfo
	man   []byte
	shard erasure.Shard // hashed by the worker
	out   *Piece
	read  func()      // called once the shard is read: its buffer may be reused
	done  func(error) // called once the piece is durable in the run's stage, or failed
}

// packBuf collects small files and metadata-only entries into one object.
type packBuf struct {
	data    []byte
	entries []ManifestEntry
	sources []string
	stats   []books.StatEntry
}

// Store stores a file or a directory tree, incrementally, under its absolute path or as
// the stored name as. The top-level item is followed if it is a symlink; symlinks inside
// a tree are stored as links.
func (n *Node) Store(ctx context.Context, item, as string) (StoreResult, error) {
	abs, err := filepath.Abs(item)
	if err != nil {
		return StoreResult{}, err
	}
	if as == "" {
		as = abs
	}
	sname, err := StoredName(as)
	if err != nil {
		return StoreResult{}, err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return StoreResult{}, fmt.Errorf("%s: %w", item, unwrapPath(err))
	}
	r, err := n.newStoreRun(ctx)
	if err != nil {
		return StoreResult{}, err
	}
	defer r.close()
	if err := r.load(sname); err != nil {
		return r.res, err
	}
	if n.Progress != nil {
		r.prog = n.Progress
		r.prog.Start(r.toRead(real, sname))
		defer r.prog.Done()
	}
	seen := map[string]bool{}
	err = filepath.WalkDir(real, func(p string, d fs.DirEntry, werr error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.failed(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(real, p)
		name := sname
		if rel != "." {
			name = path.Join(sname, filepath.ToSlash(rel))
		}
		if werr != nil {
			r.warn("%s: %v", p, unwrapPath(werr))
			seen[name] = true // unreadable now is not deleted
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		seen[name] = true
		var fi fs.FileInfo
		if rel == "." {
			fi, err = os.Stat(p)
		} else {
			fi, err = d.Info()
		}
		if err != nil {
			r.warn("%s: %v", p, unwrapPath(err))
			return nil
		}
		reads := fi.Mode().IsRegular() && !r.unchanged(name, statOf(fi, name))
		err = r.entry(p, name, fi)
		if reads {
			r.prog.Add(max(fi.Size()-r.read, 0), 1) // what encodeObject did not tell
		} else {
			r.prog.Add(0, 1)
		}
		r.read = 0
		return err
	})
	if err != nil {
		return r.res, err
	}
	if err := r.flushPack(); err != nil {
		return r.res, err
	}
	if err := r.finish(); err != nil {
		return r.res, err
	}
	if err := r.markDeleted(sname, seen); err != nil {
		return r.res, err
	}
	if r.res.Pieces > 0 && r.noRedundancy != "" {
		r.res.Warnings = append(r.res.Warnings, r.noRedundancy)
	}
	if r.res.Stored > 0 { // versions beyond maxVersions may have left packs
		if err := n.tidyPacks(ctx); err != nil {
			r.warn("%v", err)
		}
	}
	// When the last store succeeded, for the status page of a daemon beside cron's store.
	// (The store is done either way: a failure here is only a warning.)
	err = n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error { return tx.PutLastRun(taskStore, n.Now()) })
	})
	if err != nil {
		r.res.Warnings = append(r.res.Warnings, "recording when this store ran: "+err.Error())
	}
	return r.res, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (r *storeRun) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.res.Warnings = append(r.res.Warnings, msg)
	r.n.Log.Warn("store", "skipped", msg)
}

// newStoreRun picks the peers and the code, and starts the sealing workers.
func (n *Node) newStoreRun(ctx context.Context) (*storeRun, error) {
	peers, err := n.Peers()
	if err != nil {
		return nil, err
	}
	states, err := n.PeerStates()
	if err != nil {
		return nil, err
	}
	// Pieces a killed run left behind are settled before this run places its own; what
	// cannot be settled now stays staged for the next sweep.
	if _, err := n.sweepStaged(); err != nil {
		n.Log.Warn("store: pieces of an interrupted store not settled", "err", err)
	}
	r := &storeRun{n: n, ctx: ctx, now: n.Now().UTC(), prog: noProgress{}}
	model := n.newLossModel(peers, states)
	maxPayload := OptMaxMsgSize.Get(n.Opts) - pieceOverhead
	var noKey, forgot, full []string // the peers left out, by why: said when none is left
	for _, p := range peers {
		_, key, err := n.Peer(p.Name)
		if err != nil || key == nil {
			noKey = append(noKey, p.Name)
			continue
		}
		ps := states[p.Name]
		if !ps.Forgotten.IsZero() && ps.LastHeard.Before(ps.Forgotten) {
			forgot = append(forgot, p.Name)
			continue
		}
		room := p.RemoteQuota - ps.RemoteUsed - ps.RemotePending
		if room <= 0 {
			full = append(full, p.Name)
			continue
		}
		if p.Talks(Mail) && n.Transports.MailPayload != nil {
			maxPayload = min(maxPayload, n.Transports.MailPayload(OptMailMaxSize.Get(n.Opts))-pieceOverhead)
		}
		r.peers = append(r.peers, &candidate{name: p.Name, key: n.wireKey(key), room: room, loss: lossClass(model.of(p.Name))})
	}
	if len(r.peers) == 0 {
		if len(peers) == 0 {
			return nil, errors.New("no peer to store on: add one with dibs add_peer")
		}
		return nil, noPeerLeft(noKey, forgot, full)
	}
	k, m, err := codeFor(len(r.peers), int(optRedundantPieces.Get(n.Opts)))
	if err != nil {
		return nil, err
	}
	if r.code, err = erasure.New(k, m); err != nil {
		return nil, err
	}
	if m == 0 { // one peer: redundantPieces is at least 1
		p := r.peers[0].name
		r.noRedundancy = fmt.Sprintf("no redundancy: %s is the only peer that can take pieces, so losing %s loses what was stored (add peers)", p, p)
	}
	r.shardSize = int(min(optKbPerFile.Get(n.Opts)*1000, maxPayload, int64(maxSegment/k)))
	if r.shardSize < 4096 {
		return nil, fmt.Errorf("pieces would be %d bytes: raise kbPerFile, maxMsgSize or mailMaxSize", r.shardSize)
	}
	r.segSize = k * r.shardSize
	r.packLimit = int64(min(r.segSize/4, 1<<20))
	if r.stage, err = n.Spool.NewStage(); err != nil {
		return nil, err
	}
	r.bufs = make(chan []byte, segBuffers)
	for range segBuffers {
		r.bufs <- make([]byte, r.code.BufferSize(r.segSize))
	}
	r.commits = make(chan pendingCommit, 64)
	r.committed = make(chan struct{})
	go r.committer()
	r.jobs = make(chan pieceJob)
	for range 4 * runtime.GOMAXPROCS(0) { // a sealing job also waits on the disk
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for j := range r.jobs {
				j.shard.SetHash()
				j.info.ShardHash = j.shard.Hash
				p, err := n.sealStore(r.stage, j.peer, j.info, j.man, j.shard.Data, j.read)
				if err == nil {
					*j.out = p
				}
				j.done(err)
			}
		}()
	}
	return r, nil
}

// finish waits for every submitted object to be committed (or discarded) and returns
// the first failure.
func (r *storeRun) finish() error {
	if r.commits != nil {
		close(r.commits)
		<-r.committed
		r.commits = nil
	}
	r.res.Stored = r.stored
	return r.failed()
}

func (r *storeRun) close() {
	r.finish()
	close(r.jobs)
	r.wg.Wait()
	r.stage.Close() // what is still staged (a failed release) is for the next sweep
}

// load reads the stat cache and the latest version of every stored name under root.
func (r *storeRun) load(root string) error {
	r.stat = map[string]books.StatEntry{}
	r.latest = map[string]FileVersion{}
	return r.n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			err := tx.EachStatUnder(root, func(name string, se books.StatEntry) error {
				r.stat[name] = se
				return nil
			})
			if err != nil {
				return err
			}
			err = tx.EachVersionUnder(root, func(fv FileVersion) error {
				r.latest[fv.Name] = fv // keys are in version order: the last one wins
				return nil
			})
			if err != nil {
				return err
			}
			r.dropped = map[string]int{}
			return tx.EachUnstored("", func(_, name string, version int, _ books.Unstored) error {
				if name == root || root == "/" || strings.HasPrefix(name, root+"/") {
					r.dropped[name] = max(r.dropped[name], version)
				}
				return nil
			})
		})
	})
}

func statOf(fi fs.FileInfo, name string) books.StatEntry {
	se := books.StatEntry{Size: fi.Size(), MTime: fi.ModTime().UTC(), Mode: uint32(fi.Mode()), Name: name}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		se.Ino = st.Ino
		se.CTime = time.Unix(queue.ChangeTime(st)).UTC()
	}
	return se
}

func sameStat(a, b books.StatEntry) bool {
	return a.Size == b.Size && a.MTime.Equal(b.MTime) && a.Ino == b.Ino && a.CTime.Equal(b.CTime) && a.Mode == b.Mode
}

// unchanged reports whether the stat cache says that name, stat se now, is stored as it is.
func (r *storeRun) unchanged(name string, se books.StatEntry) bool {
	if old, ok := r.stat[name]; ok && sameStat(old, se) {
		lv, ok := r.latest[name]
		return ok && lv.Deleted.IsZero()
	}
	return false
}

// toRead counts, for store's progress, the entries under real that the walk will look
// at and the bytes of the regular files among them that it will read (their stat
// changed): a second walk of the metadata, done only when someone hears the progress.
func (r *storeRun) toRead(real, sname string) (bytes int64, files int) {
	filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if err := r.ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(real, p)
		name := sname
		var fi fs.FileInfo
		if rel == "." {
			fi, err = os.Stat(p)
		} else {
			name = path.Join(sname, filepath.ToSlash(rel))
			fi, err = d.Info()
		}
		if err != nil {
			return nil
		}
		files++
		if fi.Mode().IsRegular() && !r.unchanged(name, statOf(fi, name)) {
			bytes += fi.Size()
		}
		return nil
	})
	return bytes, files
}

// entry stores one walked entry if it changed.
func (r *storeRun) entry(p, name string, fi fs.FileInfo) error {
	r.res.Entries++
	se := statOf(fi, name)
	if r.unchanged(name, se) {
		r.res.Unchanged++
		return nil
	}
	me := ManifestEntry{Name: name, Size: 0, Mode: uint32(fi.Mode().Perm() | fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)), MTime: fi.ModTime().UTC(), Stored: r.now}
	me.Version = max(r.latest[name].Version, r.dropped[name]) + 1
	switch {
	case fi.IsDir():
		me.Kind = KindDir
	case fi.Mode()&fs.ModeSymlink != 0:
		me.Kind = KindSymlink
		link, err := os.Readlink(p)
		if err != nil {
			r.warn("%s: %v", p, unwrapPath(err))
			return nil
		}
		me.Link = link
		if lv, ok := r.latest[name]; ok && lv.Deleted.IsZero() && lv.Kind == KindSymlink && lv.Link == link {
			return r.keepStat(name, se, lv)
		}
	case fi.Mode().IsRegular():
		me.Kind = KindFile
		me.Size = fi.Size()
	default:
		r.warn("%s: not a regular file, directory or symlink (%s): not stored", p, fi.Mode().Type())
		return nil
	}
	if me.Kind == KindDir {
		if lv, ok := r.latest[name]; ok && lv.Deleted.IsZero() && lv.Kind == KindDir && lv.Mode == me.Mode {
			return r.keepStat(name, se, lv) // a directory's content is its entries
		}
	}
	if me.Kind != KindFile || me.Size < r.packLimit {
		return r.packEntry(p, me, se)
	}
	return r.storeLarge(p, me, se)
}

// keepStat records that an entry is unchanged in substance although its stat changed.
func (r *storeRun) keepStat(name string, se books.StatEntry, lv FileVersion) error {
	r.res.Unchanged++
	se.Version, se.Hash = lv.Version, lv.Hash
	r.stat[name] = se
	return r.n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error { return tx.PutStat(name, se) })
	})
}

// sameContent reports whether the latest version of name is a live file with this hash.
func (r *storeRun) sameContent(name, hash string, mode uint32) (FileVersion, bool) {
	lv, ok := r.latest[name]
	return lv, ok && lv.Deleted.IsZero() && lv.Kind == KindFile && lv.Hash == hash && lv.Mode == mode
}

// packEntry adds a small file, a directory or a link to the pack. A file is read
// straight into the pack's free space.
func (r *storeRun) packEntry(p string, me ManifestEntry, se books.StatEntry) error {
	if r.pack.data == nil {
		r.pack.data = make([]byte, 0, r.segSize) // reused for every pack of the run
	}
	if int64(len(r.pack.data))+me.Size > int64(r.segSize) {
		if err := r.flushPack(); err != nil {
			return err
		}
	}
	var data []byte
	if me.Kind == KindFile && me.Size > 0 {
		free := r.pack.data[len(r.pack.data):cap(r.pack.data)]
		var err error
		data, err = readSmall(p, free[:min(int64(len(free)), r.packLimit)])
		if err != nil {
			r.warn("%s: %v", p, unwrapPath(err))
			return nil
		}
		me.Size = int64(len(data))
	}
	if me.Kind == KindFile {
		sum := sha256.Sum256(data)
		me.Hash = hex.EncodeToString(sum[:])
		if lv, same := r.sameContent(me.Name, me.Hash, me.Mode); same {
			return r.keepStat(me.Name, se, lv)
		}
	}
	me.Offset = int64(len(r.pack.data))
	r.pack.data = r.pack.data[:len(r.pack.data)+len(data)]
	r.pack.entries = append(r.pack.entries, me)
	r.pack.sources = append(r.pack.sources, p)
	se.Version, se.Hash = me.Version, me.Hash
	r.pack.stats = append(r.pack.stats, se)
	return nil
}

// readSmall reads a whole small file into buf; a file that grew past buf while read is
// cut there and stored again next time (its stat no longer matches).
func readSmall(p string, buf []byte) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := io.ReadFull(f, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return buf[:n], err
}

// flushPack stores the pack as one object.
func (r *storeRun) flushPack() error {
	if len(r.pack.entries) == 0 {
		return nil
	}
	pk := r.pack
	// encodeObject has copied the data into segment buffers when it returns: the
	// next pack reuses the memory.
	r.pack = packBuf{data: pk.data[:0]}
	po, err := r.encodeObject(bytes.NewReader(pk.data), int64(len(pk.data)), pk.entries, nil)
	if err != nil {
		return err
	}
	return r.submit(po, pk.entries, pk.sources, pk.stats)
}

// storeLarge stores one large file as its own object, streaming it segment by segment.
func (r *storeRun) storeLarge(p string, me ManifestEntry, se books.StatEntry) error {
	if lv, ok := r.latest[me.Name]; ok && lv.Deleted.IsZero() && lv.Kind == KindFile && lv.Size == me.Size && lv.Mode == me.Mode {
		// Only the stat changed? Hash first: a touched file is not a new version.
		h, err := contentHash(p, lv.Hash)
		if err != nil {
			r.warn("%s: %v", p, unwrapPath(err))
			return nil
		}
		if h == lv.Hash {
			return r.keepStat(me.Name, se, lv)
		}
	}
	f, err := os.Open(p)
	if err != nil {
		r.warn("%s: %v", p, unwrapPath(err))
		return nil
	}
	defer f.Close()
	h := newShardHash(r.code.K(), r.segSize)
	po, err := r.encodeObject(f, me.Size, []ManifestEntry{me}, h)
	if errors.Is(err, errChanged) {
		r.warn("%s: changed while it was read: stored next time", p)
		return nil
	}
	if err != nil {
		return err
	}
	// The content hash is known once the pieces are sealed: the committer sets it.
	se.Version = me.Version
	return r.submit(po, []ManifestEntry{me}, []string{p}, []books.StatEntry{se})
}

// The content hash of a large file is not a hash of its bytes, which would cost a pass
// of SHA-256 over everything stored: it hashes the hashes of its data shards, which the
// erasure code computes anyway. Its form names the code it depends on:
// "rs1-<k>-<segment size>:<hex>".
type shardHash struct {
	k, segSize int
	h          hash.Hash
}

func newShardHash(k, segSize int) *shardHash {
	return &shardHash{k: k, segSize: segSize, h: sha256.New()}
}

func (s *shardHash) add(shards []erasure.Shard) {
	for _, sh := range shards[:s.k] {
		s.addHash(sh.Hash[:])
	}
}

// addHash adds the hash of the next data shard.
func (s *shardHash) addHash(sum []byte) { s.h.Write(sum) }

func (s *shardHash) sum() string {
	return fmt.Sprintf("rs1-%d-%d:%s", s.k, s.segSize, hex.EncodeToString(s.h.Sum(nil)))
}

// contentHash computes the content hash of the file at p in the form of like: a shard
// hash with the same code, or a plain SHA-256 of the bytes.
func contentHash(p, like string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return readContentHash(f, like)
}

// readContentHash is contentHash of what f holds.
func readContentHash(f io.Reader, like string) (string, error) {
	var k, segSize int
	if _, err := fmt.Sscanf(like, "rs1-%d-%d:", &k, &segSize); err != nil || k < 1 || segSize < k || segSize > maxSegment {
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return "", err
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	code, err := erasure.New(k, 0)
	if err != nil {
		return "", err
	}
	sh := newShardHash(k, segSize)
	buf := make([]byte, code.BufferSize(segSize))
	for first := true; ; first = false {
		n, err := io.ReadFull(f, buf[:segSize])
		if n == 0 && !first {
			break
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return "", err
		}
		shards, serr := code.SplitBuffer(buf, n)
		if serr != nil {
			return "", serr
		}
		sh.add(shards)
		if err != nil {
			break
		}
	}
	return sh.sum(), nil
}

var errChanged = errors.New("changed while read")

// pendingObj is an object whose pieces are being sealed: done closes when all are, and
// err then says whether one failed.
type pendingObj struct {
	obj  *Object
	done chan struct{}
	err  error
	// hash is a large file's content hash, known with done: its data shards are
	// hashed by the sealing workers.
	hash string
}

// encodeObject codes size bytes of src into pieces and hands them to the sealing
// workers. It returns once src is read: the pieces of this object are sealed while the
// next object is read (two segment buffers bound the memory in flight). The workers
// also hash the shards, so that this loop only reads and codes; with h, po.hash is the
// content hash once po.done is closed (if no piece failed).
func (r *storeRun) encodeObject(src io.Reader, size int64, manifest []ManifestEntry, h *shardHash) (*pendingObj, error) {
	man, err := json.Marshal(manifest)
	if err != nil {
		return nil, err
	}
	if len(man) > maxManifest {
		return nil, fmt.Errorf("manifest of %d entries is too large", len(manifest))
	}
	k, nn := r.code.K(), r.code.N()
	segs := int(max(1, (size+int64(r.segSize)-1)/int64(r.segSize)))
	obj := &Object{ID: pgpmsg.NewMessageID(), Size: size, K: k, N: nn, SegmentSize: int64(r.segSize), Created: r.now, Manifest: manifest, Segments: make([]Segment, segs)}
	po := &pendingObj{obj: obj, done: make(chan struct{})}
	var (
		mu      sync.Mutex
		all     sync.WaitGroup
		readErr error
		pieces  int
	)
	fail := func(err error) {
		mu.Lock()
		if po.err == nil {
			po.err = err
		}
		mu.Unlock()
	}
	for s := 0; s < segs; s++ {
		if err := r.ctx.Err(); err != nil {
			readErr = err
			break
		}
		if r.failed() != nil {
			readErr = r.failed()
			break
		}
		buf := <-r.bufs
		want := int(min(int64(r.segSize), size-int64(s)*int64(r.segSize)))
		if _, err := io.ReadFull(src, buf[:want]); err != nil {
			r.bufs <- buf
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errChanged
			}
			readErr = err
			break
		}
		shards, err := r.code.SplitBufferUnhashed(buf, want)
		if err != nil {
			r.bufs <- buf
			readErr = err
			break
		}
		if h != nil { // a large file: its bytes are told as read, a small one's once packed
			r.prog.Add(int64(want), 0)
			r.read += int64(want)
		}
		seg := &obj.Segments[s]
		seg.Size = int64(want)
		seg.Pieces = make([]Piece, nn)
		peers := r.place(nn, int64(len(shards[0].Data)))
		placed := 0
		for _, p := range peers {
			if p != nil {
				placed++
			}
		}
		if placed < k {
			r.bufs <- buf
			readErr = fmt.Errorf("room for a %d-byte piece at only %s; need at least %d (raise remote_quota or add peers)", r.shardSize, Count(placed, "peer"), k)
			break
		}
		// The buffer goes back once every piece has read its shard, while their spool
		// files may still be syncing: the next segment is read meanwhile.
		var segRead sync.WaitGroup
		for i, sh := range shards {
			if peers[i] == nil {
				sh.SetHash()
				seg.Pieces[i] = Piece{Index: i, ShardHash: hex.EncodeToString(sh.Hash[:]), State: PieceLost, Why: "no peer with room when stored"}
				continue
			}
			seg.Pieces[i] = Piece{Index: i}
			info := PieceInfo{Piece: pgpmsg.NewMessageID(), Object: obj.ID, Segment: s, Segments: segs, Index: i, K: k, N: nn,
				ObjectSize: size, SegmentSize: int64(r.segSize), SegmentLen: int64(want)}
			segRead.Add(1)
			all.Add(1)
			pieces++
			r.jobs <- pieceJob{peer: peers[i], info: info, man: man, shard: sh, out: &seg.Pieces[i], read: segRead.Done, done: func(err error) {
				if err != nil {
					fail(err)
				}
				all.Done()
			}}
		}
		go func() { segRead.Wait(); r.bufs <- buf }()
	}
	if readErr == nil && h != nil {
		// A file that grew while read: its stat will differ next time; what we have is whole.
		var one [1]byte
		if m, _ := src.Read(one[:]); m > 0 {
			readErr = errChanged
		}
	}
	if readErr != nil {
		all.Wait()
		r.discard(obj)
		return nil, readErr
	}
	r.res.Objects++
	r.res.Bytes += size
	r.res.Pieces += pieces
	go func() {
		all.Wait()
		if h != nil { // the data shards' hashes, now in the pieces' records
			for _, seg := range obj.Segments {
				for _, p := range seg.Pieces[:k] {
					sum, _ := hex.DecodeString(p.ShardHash)
					h.addHash(sum)
				}
			}
			po.hash = h.sum()
		}
		close(po.done)
	}()
	return po, nil
}

// submit queues an object for its commit, in order, once its pieces are sealed. The
// walk goes on meanwhile: the run's view of what is stored moves now.
func (r *storeRun) submit(po *pendingObj, entries []ManifestEntry, sources []string, stats []books.StatEntry) error {
	for i, me := range entries {
		r.latest[me.Name] = FileVersion{ManifestEntry: me, Object: po.obj.ID}
		r.stat[me.Name] = stats[i]
	}
	select {
	case r.commits <- pendingCommit{po, entries, sources, stats}:
		return nil
	case <-r.ctx.Done():
		<-po.done
		r.discard(po.obj)
		return r.ctx.Err()
	}
}

type pendingCommit struct {
	po      *pendingObj
	entries []ManifestEntry
	sources []string
	stats   []books.StatEntry
}

// committer records each object once its pieces are sealed, in the order they came.
// After a failure it discards what follows.
func (r *storeRun) committer() {
	defer close(r.committed)
	for pc := range r.commits {
		<-pc.po.done
		if pc.po.hash != "" { // a large file: its one entry
			pc.entries[0].Hash, pc.stats[0].Hash = pc.po.hash, pc.po.hash
		}
		err := pc.po.err
		if err == nil && r.failed() == nil {
			err = r.commit(pc.po.obj, pc.entries, pc.sources, pc.stats)
			if err == nil {
				// Recorded: whatever fails now, the pieces are not discarded (the
				// books point at them); a piece left staged goes at the next sweep.
				if err := r.release(pc.po.obj); err != nil {
					r.setFailed(err)
				} else if err := r.n.FlushOutbox(); err != nil {
					r.setFailed(err)
				}
				continue
			}
		}
		if err != nil {
			r.setFailed(err)
		}
		r.discard(pc.po.obj)
	}
}

func (r *storeRun) failed() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.asyncErr
}

func (r *storeRun) setFailed(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.asyncErr == nil {
		r.asyncErr = err
	}
}

// place picks a distinct peer with room for each of n pieces of size bytes: those with
// the fewest pieces of this run first, then the most reliable, then the emptiest; nil
// where no peer is left.
func (r *storeRun) place(n int, size int64) []*candidate {
	r.placeMu.Lock()
	defer r.placeMu.Unlock()
	order := append([]*candidate(nil), r.peers...)
	sort.SliceStable(order, func(i, j int) bool {
		if order[i].used != order[j].used {
			return order[i].used < order[j].used
		}
		if order[i].loss != order[j].loss {
			return order[i].loss < order[j].loss
		}
		return order[i].room > order[j].room
	})
	out := make([]*candidate, n)
	i := 0
	for _, c := range order {
		if i == n {
			break
		}
		if c.room < size+pieceOverhead {
			continue
		}
		c.room -= size + pieceOverhead
		c.used++
		out[i] = c
		i++
	}
	return out
}

// discard removes the sealed pieces of an object that could not be stored whole: they
// are still in the run's stage.
func (r *storeRun) discard(obj *Object) { dropStaged(r.stage, obj) }

// release moves the pieces of a recorded object from the run's stage into their
// peers' outgoing boxes.
func (r *storeRun) release(obj *Object) error { return releaseStaged(r.stage, obj) }

// dropStaged removes from st the pieces of obj sealed into it (those with a MsgFile,
// which the books never hold).
func dropStaged(st *queue.Stage, obj *Object) {
	for _, seg := range obj.Segments {
		for _, p := range seg.Pieces {
			if p.State == PieceSent && p.MsgFile != "" {
				st.Drop(queue.Outgoing(p.Peer), p.MsgFile)
			}
		}
	}
}

// releaseStaged moves the pieces of obj sealed into st into their peers' outgoing boxes,
// once obj is recorded.
func releaseStaged(st *queue.Stage, obj *Object) error {
	byPeer := map[string][]string{}
	for _, seg := range obj.Segments {
		for _, p := range seg.Pieces {
			if p.State == PieceSent && p.MsgFile != "" {
				byPeer[p.Peer] = append(byPeer[p.Peer], p.MsgFile)
			}
		}
	}
	var errs []error
	for _, peer := range sortedKeys(byPeer) {
		if err := st.Release(queue.Outgoing(peer), byPeer[peer]...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// commit records an object, its file versions and the stat cache in one transaction,
// and drops versions beyond maxVersions. Its pieces are still staged: a crash before the
// committer releases them leaves them for the next sweep, which releases them since the
// books now know them.
func (r *storeRun) commit(obj *Object, entries []ManifestEntry, sources []string, stats []books.StatEntry) error {
	obj.Refs = len(entries)
	pending := map[string]int64{}
	for _, seg := range obj.Segments {
		for _, p := range seg.Pieces {
			if p.State == PieceSent {
				pending[p.Peer] += p.Size
			}
		}
	}
	// The pieces' names in the stage must outlive a crash once the books point at them.
	if err := r.stage.Sync(); err != nil {
		return err
	}
	err := r.n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			for s, seg := range obj.Segments {
				for _, p := range seg.Pieces {
					if p.ID != "" {
						if err := tx.IndexPiece(p.ID, obj.ID, s, p.Index); err != nil {
							return err
						}
					}
				}
			}
			if err := tx.PutObject(obj); err != nil {
				return err
			}
			for peer, b := range pending {
				ps, err := tx.Peer(peer)
				if err != nil {
					return err
				}
				ps.RemotePending += b
				if err := tx.PutPeer(peer, ps); err != nil {
					return err
				}
			}
			for i, me := range entries {
				fv := FileVersion{ManifestEntry: me, Object: obj.ID, Source: sources[i]}
				if err := tx.PutVersion(fv); err != nil {
					return err
				}
				if err := tx.PutStat(me.Name, stats[i]); err != nil {
					return err
				}
				if err := r.n.pruneVersionsTx(tx, me.Name); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	r.stored += len(entries)
	return nil
}

// markDeleted marks the stored entries under root that are gone locally. They stay
// recoverable until keepDeleted says otherwise.
func (r *storeRun) markDeleted(root string, seen map[string]bool) error {
	var gone []string
	for name, lv := range r.latest {
		if !seen[name] && lv.Deleted.IsZero() {
			gone = append(gone, name)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	r.res.Deleted = len(gone)
	return r.n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			for _, name := range gone {
				lv := r.latest[name]
				lv.Deleted = r.now
				if err := tx.PutVersion(lv); err != nil {
					return err
				}
				if err := tx.DeleteStat(name); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// sealStore seals one piece to ourselves, wraps it in a STORE message to the peer, and
// commits that into outgoing/<peer>/ (or, with a stage, into the stage, from which the
// caller releases it once the piece is recorded), in one pass (pgpmsg.SealBoundWrapped):
// the piece is bound (the signature covers its header and manifest, and the header
// carries the shard's hash, which the erasure code keeps anyway), and its chunk layout is
// kept for probes.
//
// read, if not nil, is called once shard is no longer used, before the spool file is
// synced and committed.
func (n *Node) sealStore(stage *queue.Stage, peer *candidate, pi PieceInfo, manifest, shard []byte, read func()) (Piece, error) {
	return n.sealStoreWith(peer, pi, manifest, shard, read, func(name string, write func(io.Writer) error) error {
		var err error
		if stage != nil {
			_, err = stage.PutWith(queue.Outgoing(peer.name), name, write)
		} else {
			_, err = n.Spool.PutWith(queue.Outgoing(peer.name), name, write)
		}
		return err
	})
}

// sealStoreWith is sealStore committing the message with put instead.
func (n *Node) sealStoreWith(peer *candidate, pi PieceInfo, manifest, shard []byte, read func(), put func(name string, write func(io.Writer) error) error) (Piece, error) {
	m := n.newOut(peer.name, TypeStore, [][2]string{{fieldPiece, pi.Piece}}, nil)
	h := n.header(m, peer.key)
	ph := pi.header(n.Fingerprint(), n.Now(), len(manifest))
	done := func() {
		if read != nil {
			read()
			read = nil
		}
	}
	defer done()
	var l pgpmsg.ChunkLayout
	name := storeFileName(m, pi.Piece)
	if peer.repair {
		name = repairFileName(name)
	}
	write := func(w io.Writer) error {
		var err error
		l, err = pgpmsg.SealBoundWrapped(w, pgpmsg.Wrapping{Outer: h, Inner: ph, Head: manifest, Tail: shard,
			TailSum: pi.ShardHash, From: n.ID, Self: n.selfKey(), To: peer.key})
		done()
		return err
	}
	if err := put(name, write); err != nil {
		return Piece{}, fmt.Errorf("piece for %s: %w", peer.name, err)
	}
	pin := l.Pin()
	return Piece{
		ID: pi.Piece, Index: pi.Index, Peer: peer.name, Size: l.Size,
		ShardHash: hex.EncodeToString(pi.ShardHash[:]), Pin: hex.EncodeToString(pin[:]), Chunks: l.Chunks,
		State: PieceSent, SentAt: m.Date, MsgFile: name,
	}, nil
}

// storeFileName is the spool name of STORE message m of piece: the usual name with the
// piece id before the Message-Id (<date>-<piece>-<message id>.pgp), so that a file found
// after a crash names the record it needs (pieceOfFile).
func storeFileName(m OutMessage, piece string) string {
	name := m.FileName()
	i := strings.LastIndexByte(name, '-')
	return name[:i+1] + piece + name[i:]
}

// pieceOfFile is the piece id in the name of a STORE file, or "".
func pieceOfFile(name string) string {
	parts := strings.Split(name, "-")
	if len(parts) != 3 || !validID(parts[1]) {
		return ""
	}
	return parts[1]
}

// sweepStaged settles the stages of store runs that died (queue.SweepStages): a piece
// the books record as sent goes into outgoing/<peer>/ (the run died between its commit
// and the release); any other is removed (it died before recording the piece, or the
// books dropped it since). It returns how many files it settled.
func (n *Node) sweepStaged() (int, error) {
	released, dropped, err := n.Spool.SweepStages(func(box queue.Box, name string) (bool, error) {
		id := pieceOfFile(name)
		if id == "" || box.Peer() == "" {
			return false, nil
		}
		known := false
		err := n.withDB(func(db *books.DB) error {
			return db.View(func(tx *books.Tx) error {
				o, s, i, err := tx.FindPiece(id)
				if err != nil || o == nil {
					return err
				}
				p := o.Segments[s].Pieces[i]
				known = p.Peer == box.Peer() && p.State == PieceSent
				return nil
			})
		})
		return known, err
	})
	if released+dropped > 0 {
		n.Log.Info("settled the pieces of an interrupted store", "released", released, "removed", dropped)
	}
	return released + dropped, err
}
