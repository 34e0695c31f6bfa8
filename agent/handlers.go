package agent

import (
	"errors"
	"time"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
)

// Request is one verified incoming message, handed to its type's handler inside the
// database transaction that also records its Message-Id.
type Request struct {
	Node   *Node
	Tx     *books.Tx
	Peer   *Peer
	Msg    *pgpmsg.Opened
	Header pgpmsg.Header
	Now    time.Time
	// Stranger is the signer's key when it is not a peer's (a contract proposal or its
	// answer; Peer then stands for the stranger and is in no list).
	Stranger *pgpmsg.Key
	// Pre is what the message type's preparer made of it before the batch (preparers),
	// or nil.
	Pre any
}

// preparers do a message type's heavy work that needs no transaction (opening a
// recovered piece) before the database batch, where it would hold up every other
// message of the batch.
var preparers = map[string]func(*Node, *books.DB, *pgpmsg.Opened) any{
	TypeRecoverResponse: (*Node).prepareRecoverResponse,
}

// Reply queues a message of type typ back to the sender, answering this one.
func (r *Request) Reply(typ string, fields [][2]string, payload []byte) error {
	m := r.Node.newOut(r.Peer.Name, typ, fields, payload)
	m.InReplyTo = r.Header.Get(pgpmsg.FieldMessageID)
	return r.Tx.AddOutbox(m)
}

// A handler acts on one message. It may change the database through r.Tx and queue
// messages with r.Reply; all of it commits together with the Message-Id, or not at all.
// An error rejects the message (quarantine) unless wrapped in retryLater.
//
// A handler may run more than once for one message: when another message of its batch
// fails, the batch is rolled back and run again without it (books.DB.Batch). So what it
// does to files must bear repeating (writing a piece or a shard under its own name), and
// what a rollback must not see, such as deleting a file the books still describe, waits
// for the commit (r.Tx.OnCommit).
type handler func(r *Request) error

// errRehearsal rolls back a rehearsed transaction.
var errRehearsal = errors.New("rehearsal")

// batch runs fn in db.Batch. With n.rehearse (tests) fn first runs in a transaction that
// is rolled back after it, as when a later message of its batch fails: what a handler
// does outside the books then shows whether it survives being run again.
func (n *Node) batch(db *books.DB, fn func(*books.Tx) error) error {
	if n.rehearse {
		db.Update(func(tx *books.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			return errRehearsal
		})
	}
	return db.Batch(fn)
}

// handleHello answers a HELLO with a HELLO that carries In-Reply-To. Either way the
// sender's last_heard moves (the processor does that for every verified message).
func handleHello(r *Request) error {
	if r.Header.Get(pgpmsg.FieldInReplyTo) != "" {
		return nil
	}
	return r.Reply(TypeHello, [][2]string{{fieldSoftware, "dibs " + SoftwareVersion}}, nil)
}

// SoftwareVersion is this build's version.
const SoftwareVersion = "0.1.0"
