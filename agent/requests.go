package agent

import (
	"strings"

	"github.com/dibs-backup/dibs/agent/books"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
)

// requestTx queues a request to peer and records it until it is answered.
func (n *Node) requestTx(tx *books.Tx, peer, typ string, fields [][2]string, payload []byte) error {
	m := n.newOut(peer, typ, fields, payload)
	if err := tx.AddOutbox(m); err != nil {
		return err
	}
	return tx.PutRequest(m.ID, books.PendingRequest{Peer: peer, Type: typ, Fields: fields, Payload: payload, Sent: m.Date, Tries: 1})
}

// answering wraps the handler of an answer: once it succeeds, the request it answers
// (In-Reply-To) is no longer pending.
func answering(h handler) handler {
	return func(r *Request) error {
		if err := h(r); err != nil {
			return err
		}
		if r.Peer != nil && r.Stranger == nil {
			ps, err := r.Tx.Peer(r.Peer.Name)
			if err != nil {
				return err
			}
			ps.Answers++
			if err := r.Tx.PutPeer(r.Peer.Name, ps); err != nil {
				return err
			}
		}
		if id := r.Header.Get(pgpmsg.FieldInReplyTo); id != "" {
			return r.Tx.DeleteRequest(id)
		}
		return nil
	}
}

// ResendRequests sends again the requests delivered more than resendAfter ago and still
// unanswered. A request whose file still waits in outgoing/ was not delivered yet: it is
// left alone (the transports retry it).
func (n *Node) ResendRequests() (int, error) {
	now := n.Now()
	after := optResendAfter.Get(n.Opts)
	waiting := map[string]bool{} // message ids still in a spool
	peers, _ := n.Spool.Peers()
	for _, p := range peers {
		es, _ := n.Spool.List(queue.Outgoing(p))
		for _, e := range es {
			if i := strings.LastIndexByte(e.Name, '-'); i >= 0 {
				waiting[strings.TrimSuffix(e.Name[i+1:], ".pgp")] = true
			}
		}
	}
	resent := 0
	err := n.withDB(func(db *books.DB) error {
		return db.Update(func(tx *books.Tx) error {
			type item struct {
				id string
				r  books.PendingRequest
			}
			var due []item
			err := tx.EachRequest(func(id string, r books.PendingRequest) error {
				if now.Sub(r.Sent) > after && !waiting[id] {
					due = append(due, item{id, r})
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, it := range due {
				if err := tx.DeleteRequest(it.id); err != nil {
					return err
				}
				if _, _, err := n.Peer(it.r.Peer); err != nil {
					continue // the peer is gone: nothing to ask
				}
				m := n.newOut(it.r.Peer, it.r.Type, it.r.Fields, it.r.Payload)
				if err := tx.AddOutbox(m); err != nil {
					return err
				}
				it.r.Sent, it.r.Tries = m.Date, it.r.Tries+1
				if err := tx.PutRequest(m.ID, it.r); err != nil {
					return err
				}
				resent++
			}
			return nil
		})
	})
	if err != nil {
		return resent, err
	}
	return resent, n.FlushOutbox()
}
