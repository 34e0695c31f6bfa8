package agent

import (
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
type handler func(r *Request) error

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
