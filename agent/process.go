package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

// ProcessResult counts what one processing run did.
type ProcessResult struct {
	Processed   int // verified, acted on, removed
	Quarantined int // moved to quarantine/ with a reason
	Left        int // left in incoming/ for a later run (busy elsewhere, or a temporary failure)
	// ByType splits Processed and Quarantined by the message's Type; a file quarantined
	// before its Type could be read, or with a Type the protocol does not have, counts
	// under "unknown".
	ByType map[string]TypeCount
	// Why is the first temporary failure (a full disk, an I/O error) that left a file
	// for a later run, if one did.
	Why string
}

// TypeCount is what a processing run did with the messages of one type.
type TypeCount struct{ Processed, Quarantined int }

// typeUnknown is the type counted for a file whose Type is unread or not the protocol's:
// what a sender writes there does not become a metric label.
const typeUnknown = "unknown"

// count adds one file's outcome.
func (r *ProcessResult) count(o outcome, typ string) {
	switch o {
	case outProcessed:
		r.Processed++
	case outQuarantined:
		r.Quarantined++
	default:
		r.Left++
		return
	}
	if r.ByType == nil {
		r.ByType = map[string]TypeCount{}
	}
	c := r.ByType[typ]
	if o == outProcessed {
		c.Processed++
	} else {
		c.Quarantined++
	}
	r.ByType[typ] = c
}

// retryLater marks a handler error as temporary: the file stays in incoming/.
type retryLater struct{ err error }

func (e retryLater) Error() string { return e.err.Error() }
func (e retryLater) Unwrap() error { return e.err }

func isTemporary(err error) bool {
	var r retryLater
	return errors.As(err, &r) || errors.Is(err, ErrDBBusy) || errors.Is(err, context.Canceled) ||
		errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EIO) ||
		errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// rejection is a message that must not be acted on; its text is the quarantine reason.
type rejection struct{ reason string }

func (e *rejection) Error() string { return e.reason }

func reject(format string, args ...any) error { return &rejection{fmt.Sprintf(format, args...)} }

// ProcessIncoming opens, verifies and acts on every file in incoming/, oldest first.
// A file that fails any check goes to quarantine/ with its reason and processing goes on;
// a message whose Message-Id was processed before changes nothing. Files claimed by
// another process (a daemon and a cron job running together) are left to it.
func (n *Node) ProcessIncoming(ctx context.Context) (ProcessResult, error) {
	entries, err := n.Spool.List(queue.Incoming)
	if err != nil {
		return ProcessResult{}, err
	}
	var res ProcessResult
	if len(entries) == 0 {
		// Nothing new, but a killed run may have committed replies it never sealed, or
		// left what it handed to a drill's kit node unprocessed.
		if err := n.stepKitDrill(ctx, false); err != nil {
			n.Log.Warn("drill --from_kit: the kit's node", "err", err)
		}
		return res, n.FlushOutbox()
	}
	n.incoming.takeWhy()
	prog := n.progress()
	var size int64
	for _, e := range entries {
		size += e.Size
	}
	prog.Start(size, len(entries))
	defer prog.Done()
	err = n.withDB(func(db *books.DB) error {
		res = n.processEntries(ctx, db, entries)
		return n.FlushOutbox() // the database held: it is the outer lock (db.go)
	})
	res.Why = n.incoming.takeWhy()
	if err != nil {
		return res, err
	}
	if err := n.stepKitDrill(ctx, false); err != nil {
		n.Log.Warn("drill --from_kit: the kit's node", "err", err)
	}
	return res, ctx.Err()
}

func (n *Node) processEntries(ctx context.Context, db *books.DB, entries []queue.Entry) ProcessResult {
	var (
		mu  sync.Mutex
		res ProcessResult
		wg  sync.WaitGroup
	)
	work := make(chan queue.Entry)
	flush := make(chan struct{}, 1)
	flushDone := make(chan struct{})
	go func() { // one flusher seals the replies of committed messages while workers go on
		defer close(flushDone)
		for range flush {
			if err := n.FlushOutbox(); err != nil {
				n.Log.Warn("outbox", "err", err)
			}
		}
	}()
	acks := make(chan *queue.Claim, 64)
	ackDone := make(chan struct{})
	go func() { // processed files are removed beside the work (an unlink waits on the journal)
		defer close(ackDone)
		var awg sync.WaitGroup
		for range 4 {
			awg.Add(1)
			go func() {
				defer awg.Done()
				for c := range acks {
					if err := c.Ack(); err != nil {
						n.Log.Error("ack", "msg", c.Name(), "err", err) // processed: a rerun sees its Message-Id
					}
				}
			}()
		}
		awg.Wait()
	}()
	workers := 16 * runtime.GOMAXPROCS(0) // most wait on the batched commit: more of them make larger batches
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				outcome, typ := n.processOne(db, e.Name, acks)
				n.progress().Add(e.Size, 1)
				mu.Lock()
				res.count(outcome, typ)
				mu.Unlock()
				if outcome == outProcessed {
					select {
					case flush <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	for _, e := range entries {
		if ctx.Err() != nil {
			break
		}
		work <- e
	}
	close(work)
	wg.Wait()
	close(acks)
	<-ackDone
	close(flush)
	<-flushDone
	n.pruneSeen(db)
	return res
}

type outcome int

const (
	outLeft outcome = iota
	outProcessed
	outQuarantined
)

// ProcessFile processes one message file. A file outside incoming/ is first copied in
// (durably), so that it is handled exactly like a delivered one.
func (n *Node) ProcessFile(path string) (ProcessResult, error) {
	name := filepath.Base(path)
	abs, _ := filepath.Abs(path)
	if filepath.Dir(abs) != n.Spool.Dir(queue.Incoming) {
		f, err := os.Open(path)
		if err != nil {
			return ProcessResult{}, err
		}
		defer f.Close()
		if !queue.ValidName(name) {
			name = queue.NewName(n.Now(), ".pgp")
		}
		as, _, err := n.Spool.Receive(name, f, OptMaxMsgSize.Get(n.Opts))
		if err != nil {
			return ProcessResult{}, err
		}
		name = as // a different file was waiting under name: both are kept
	}
	var res ProcessResult
	n.incoming.takeWhy()
	err := n.withDB(func(db *books.DB) error {
		res.count(n.processOne(db, name, nil))
		return n.FlushOutbox()
	})
	res.Why = n.incoming.takeWhy()
	return res, err
}

// processOne claims, verifies and acts on one incoming file; typ is the message's Type
// once it is read and known to the protocol, else typeUnknown.
func (n *Node) processOne(db *books.DB, name string, acks chan<- *queue.Claim) (_ outcome, typ string) {
	typ = typeUnknown
	c, err := n.Spool.Claim(queue.Incoming, name)
	if err != nil {
		return outLeft, typ // busy with another worker, or already gone
	}
	log := n.Log.With("msg", name)
	var from *Peer // the signer, once it is known to be a peer
	quarantine := func(reason string) (outcome, string) {
		if strings.HasPrefix(name, strangerPrefix) {
			log.Warn("stranger's file dropped", "reason", reason) // not kept: strangers write little
			c.Ack()
			return outQuarantined, typ
		}
		log.Warn("quarantined", "reason", reason)
		if err := n.quarantine(db, c, from, reason); err != nil {
			log.Error("quarantine failed", "err", err)
			return outLeft, typ
		}
		return outQuarantined, typ
	}
	maxSize := OptMaxMsgSize.Get(n.Opts)
	if c.Size() > maxSize {
		return quarantine(fmt.Sprintf("oversized: %d bytes, more than maxMsgSize %d", c.Size(), maxSize))
	}
	kr, err := n.Keyring()
	if err != nil {
		c.Release()
		log.Error("peer list", "err", err)
		return outLeft, typ
	}
	src := &readErrs{r: messageReader(c)}
	msg, err := pgpmsg.Open(src, n.ID, kr, pgpmsg.OpenOptions{MaxSize: maxSize, TempDir: n.TmpDir(), SizeHint: c.Size()})
	var stranger *pgpmsg.Key // the signer, if not a peer: a contract message (proposals.go)
	if errors.Is(err, pgpmsg.ErrUnknownSigner) && c.Size() <= relay.MaxStrangerFile {
		msg, stranger, err = n.openStranger(c)
	}
	if err != nil {
		// A full or failing disk says nothing of the message: it may be good.
		if isTemporary(src.err) {
			return n.leave(c, log, fmt.Errorf("reading it: %w", src.err)), typ
		}
		if isTemporary(err) {
			return n.leave(c, log, err), typ
		}
		return quarantine(err.Error())
	}
	defer msg.Close()
	given := msg.Header.Get(pgpmsg.FieldType)
	h, known := handlerFor(given)
	if known {
		typ = given
	}
	peer, _, ok := n.PeerByFingerprint(msg.Signer.Fingerprint())
	if !ok && stranger != nil {
		peer, ok = &Peer{Name: "stranger " + string(stranger.Fingerprint())}, true
	}
	if !ok {
		return quarantine("signer " + string(msg.Signer.Fingerprint()) + " is no longer a peer")
	}
	from = peer
	log = log.With("peer", peer.Name, "type", msg.Header.Get(pgpmsg.FieldType))
	now := n.Now()
	date, err := msg.Header.Date()
	if err != nil {
		return quarantine(err.Error())
	}
	if age := now.Sub(date); age > optMaxMsgAge.Get(n.Opts) {
		return quarantine(fmt.Sprintf("stale: Date %s is older than maxMsgAge (%s)", date.Format(time.RFC3339), optMaxMsgAge.Get(n.Opts)))
	}
	if skew := date.Sub(now); skew > optClockSkew.Get(n.Opts) {
		return quarantine(fmt.Sprintf("Date %s is %s in the future (clockSkew allows %s)", date.Format(time.RFC3339), skew.Round(time.Second), optClockSkew.Get(n.Opts)))
	}
	if !known {
		return quarantine("unknown message type " + given)
	}
	id := msg.Header.Get(pgpmsg.FieldMessageID)
	idKey, err := hex.DecodeString(id)
	if err != nil {
		return quarantine("bad Message-Id")
	}
	if rt, _ := routeOf(given); rt.answers {
		handed, err := n.handToKit(db, c, msg.Header.Get(pgpmsg.FieldInReplyTo))
		if err != nil {
			return n.leave(c, log, fmt.Errorf("drill --from_kit: handing the answer to the kit's node: %w", err)), typ
		}
		if handed {
			if err := c.Ack(); err != nil {
				log.Error("ack", "err", err)
			}
			log.Info("handed to the kit's node (drill --from_kit)")
			return outProcessed, typ
		}
	}
	var pre any
	if prepare := preparers[given]; prepare != nil && !n.seen(db, idKey) {
		pre = prepare(n, db, msg)
	}
	err = n.batch(db, func(tx *books.Tx) error {
		if tx.Seen(idKey) {
			return reject("replay: Message-Id %s was processed before", id)
		}
		req := &Request{Node: n, Tx: tx, Peer: peer, Msg: msg, Header: msg.Header, Now: now, Stranger: stranger, Pre: pre}
		if err := h(req); err != nil {
			return err
		}
		if stranger != nil {
			return tx.MarkSeen(idKey, date) // no peer state: a stranger is in no list
		}
		ps, err := tx.Peer(peer.Name)
		if err != nil {
			return err
		}
		if date.After(ps.LastHeard) {
			ps.LastHeard = date
		}
		if ps.FirstHeard.IsZero() || date.Before(ps.FirstHeard) {
			ps.FirstHeard = date
		}
		if err := tx.PutPeer(peer.Name, ps); err != nil {
			return err
		}
		return tx.MarkSeen(idKey, date)
	})
	if err != nil {
		if isTemporary(err) {
			log.Warn("left for a later run", "err", err)
			c.Release()
			return outLeft, typ
		}
		if n.seen(db, idKey) {
			from = nil // a replay: anyone can send a peer's old message again, so it is not the peer's to pay for
		} else if typ == TypeRecoverResponse {
			n.drillPieceRefused(db, peer.Name, msg.Header.Get(fieldPiece), err.Error())
		}
		return quarantine(err.Error())
	}
	if acks != nil {
		acks <- c // removing a file costs the filesystem a while: done beside the work
	} else if err := c.Ack(); err != nil {
		log.Error("ack", "err", err) // processed; a second run sees the Message-Id and drops it
	}
	log.Info("processed")
	return outProcessed, typ
}

// pruneSeen forgets Message-Ids whose Date is so old that the Date check alone now
// refuses them: the replay table stays bounded.
func (n *Node) pruneSeen(db *books.DB) {
	horizon := n.Now().Add(-optMaxMsgAge.Get(n.Opts) - optClockSkew.Get(n.Opts) - time.Hour).Unix()
	db.ExpireSeen(time.Unix(horizon, 0))
}
