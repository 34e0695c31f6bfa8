package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// outboxLock serializes outbox flushes between processes sharing a DIBS_DIR.
const outboxLock = "db/outbox.lock"

// aeadThreshold is the payload size above which messages are sealed with SEIPDv2-GCM.
const aeadThreshold = 256 << 10

// ProtocolVersion is the Dibs-Version this node writes.
const ProtocolVersion = pgpmsg.Version

// OutMessage is a message to a peer, recorded in the database's outbox in the same
// transaction as the change that caused it, and sealed into outgoing/<peer>/ after the
// commit. A crash in between seals it again under the same name and Message-Id, so a
// reply is neither lost nor doubled in effect.
type OutMessage = books.OutMessage

// newOut makes a message to peer with a fresh id.
func (n *Node) newOut(peer, typ string, fields [][2]string, payload []byte) OutMessage {
	return OutMessage{Peer: peer, Type: typ, ID: pgpmsg.NewMessageID(), Date: n.Now().UTC(), Fields: fields, Payload: payload}
}

// Post queues one message for peer: through the outbox, sealed into outgoing/<peer>/.
// It returns the message's id.
func (n *Node) Post(peer, typ string, fields [][2]string, payload []byte) (string, error) {
	if _, _, err := n.Peer(peer); err != nil {
		return "", err
	}
	m := n.newOut(peer, typ, fields, payload)
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error { return tx.AddOutbox(m) })
	})
	if err != nil {
		return "", err
	}
	return m.ID, n.FlushOutbox()
}

// FlushOutbox seals every message waiting in the outbox into its peer's outgoing box, and
// removes it from the outbox once the file is durable. A message to a peer without a key
// stays in the outbox (and is reported) until the peer has one.
func (n *Node) FlushOutbox() error {
	// Lock order, everywhere: the database first, then the outbox lock (db.go). Holding
	// the database through the flush keeps that order whoever calls.
	return n.withDB(func(*books.DB) error { return n.flushOutbox() })
}

func (n *Node) flushOutbox() error {
	n.outboxMu.Lock()
	defer n.outboxMu.Unlock()
	// Across processes too (a daemon and a cron command): two flushes of one message
	// would seal it twice, and a copy delivered before the other was sealed would then
	// travel again.
	lock, err := os.OpenFile(filepath.Join(n.Dir, outboxLock), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	type entry struct {
		seq uint64
		m   OutMessage
	}
	var pending []entry
	err = n.withDB(func(db *books.DB) error {
		return db.View(func(tx *books.Tx) error {
			return tx.EachOutbox(func(seq uint64, m OutMessage) error {
				pending = append(pending, entry{seq, m})
				return nil
			})
		})
	})
	if err != nil || len(pending) == 0 {
		return err
	}
	var (
		mu       sync.Mutex
		done     []uint64
		firstErr error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, 4)
	)
	// Small messages (replies, requests) are sealed in memory and committed per peer in
	// one group commit; large ones stream into the spool one by one.
	small := map[string][]queue.Item{}
	smallKeys := map[string][]uint64{}
	for _, e := range pending {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var err error
			var sealed []byte
			if e.m.PayloadFile == "" && len(e.m.Payload) <= smallMessage {
				sealed, err = n.sealBytes(e.m)
			} else {
				err = n.sealInto(e.m)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				if firstErr == nil {
					firstErr = err
				}
			case sealed != nil:
				small[e.m.Peer] = append(small[e.m.Peer], queue.Item{Name: e.m.FileName(), Data: sealed})
				smallKeys[e.m.Peer] = append(smallKeys[e.m.Peer], e.seq)
			default:
				done = append(done, e.seq)
			}
		}()
	}
	wg.Wait()
	for peer, items := range small {
		if err := n.Spool.PutBatch(queue.Outgoing(peer), items); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("messages for %s: %w", peer, err)
			}
			continue
		}
		done = append(done, smallKeys[peer]...)
	}
	if len(done) > 0 {
		err := n.withDB(func(db *books.DB) error {
			return db.Update(func(tx *books.Tx) error {
				for _, seq := range done {
					if err := tx.DeleteOutbox(seq); err != nil {
						return err
					}
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	return firstErr
}

// smallMessage is the largest payload sealed in memory and committed in a batch.
const smallMessage = 64 << 10

// sealBytes seals a small message in memory.
func (n *Node) sealBytes(m OutMessage) ([]byte, error) {
	_, key, err := n.Peer(m.Peer)
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", m.ID, err)
	}
	if key == nil {
		return nil, fmt.Errorf("message %s for %s waits: the peer has no key (dibs edit_peer --peer %s --key_file F)", m.ID, m.Peer, m.Peer)
	}
	var buf bytes.Buffer
	if err := pgpmsg.Seal(&buf, n.header(m, key), bytes.NewReader(m.Payload), n.ID, key); err != nil {
		return nil, fmt.Errorf("message %s for %s: %w", m.ID, m.Peer, err)
	}
	return buf.Bytes(), nil
}

// sealInto seals m and commits it into outgoing/<peer>/.
func (n *Node) sealInto(m OutMessage) error {
	_, key, err := n.Peer(m.Peer)
	if err != nil {
		return fmt.Errorf("message %s: %w", m.ID, err)
	}
	if key == nil {
		return fmt.Errorf("message %s for %s waits: the peer has no key (dibs edit_peer --peer %s --key_file F)", m.ID, m.Peer, m.Peer)
	}
	h := n.header(m, key)
	var payload io.Reader = bytes.NewReader(m.Payload)
	size := int64(len(m.Payload))
	if m.PayloadFile != "" {
		f, err := os.Open(m.PayloadFile)
		if err == nil && !n.payloadHeld(m) { // dropped, its file not removed yet (dropHeld)
			f.Close()
			err = os.ErrNotExist
		}
		if errors.Is(err, os.ErrNotExist) {
			// The payload (a held piece) was dropped since: the message can never go.
			n.Log.Warn("message dropped: its payload is gone", "id", m.ID, "type", m.Type, "peer", m.Peer, "payload", m.PayloadFile)
			return nil
		}
		if err != nil {
			return fmt.Errorf("message %s: payload: %w", m.ID, err)
		}
		defer f.Close()
		payload = f
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
	}
	// Large payloads go with SEIPDv2-GCM (fast; dibs reads it). Small ones keep SEIPDv1,
	// which a stock GnuPG can read too, and which costs less than the AEAD layer's
	// chunk buffers for a message of a few hundred bytes.
	if size > aeadThreshold {
		key = n.wireKey(key)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(pgpmsg.Seal(pw, h, payload, n.ID, key))
	}()
	_, err = n.Spool.Put(queue.Outgoing(m.Peer), m.FileName(), pr, 0)
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("message %s for %s: %w", m.ID, m.Peer, err)
	}
	return nil
}

func (n *Node) header(m OutMessage, to *pgpmsg.Key) pgpmsg.Header {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, ProtocolVersion)
	h.Set(pgpmsg.FieldType, m.Type)
	h.Set(pgpmsg.FieldFrom, string(n.Fingerprint()))
	h.Set(pgpmsg.FieldTo, string(to.Fingerprint()))
	h.Set(pgpmsg.FieldMessageID, m.ID)
	h.Set(pgpmsg.FieldDate, m.Date.UTC().Format(time.RFC3339Nano))
	if m.InReplyTo != "" {
		h.Set(pgpmsg.FieldInReplyTo, m.InReplyTo)
	}
	for _, f := range m.Fields {
		h.Add(f[0], f[1])
	}
	return h
}
