package relay

import (
	"context"
	"errors"
	"testing"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/queue/queuetest"
)

// The conformance suite sends arbitrary bytes, not sealed messages, so these harnesses turn
// the recipients filter off (a store that does not know the recipient's key); the filter
// has its own tests.

const conformanceMaxSize = 16 << 20

// TestConformance_DirectPush: bob pushes to alice's daemon; alice drains her incoming box.
func TestConformance_DirectPush(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queuetest.Pair {
		d := newDaemon(t, "alice", "bob")
		d.store.SelfKeyIDs = nil
		bob := newClient(t, "bob")
		return queuetest.Pair{
			Send: func(ctx context.Context, msg queue.Message) error {
				return bob.Send(ctx, d.endpoint(t), msg)
			},
			Receive: func(ctx context.Context, sink queue.Sink) (int, error) {
				return drainIncoming(ctx, d.spool, sink)
			},
			MaxSize: conformanceMaxSize,
		}
	})
}

// drainIncoming hands every file in sp's incoming box to sink, removing it once sink
// returned nil: what process_message does with a push transport's deliveries.
func drainIncoming(ctx context.Context, sp *queue.Spool, sink queue.Sink) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	es, err := sp.List(queue.Incoming)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range es {
		c, err := sp.Claim(queue.Incoming, e.Name)
		if errors.Is(err, queue.ErrBusy) || errors.Is(err, queue.ErrGone) {
			continue
		}
		if err != nil {
			return n, err
		}
		if err := sink(e.Name, c.Reader()); err != nil {
			c.Release()
			return n, err
		}
		if err := c.Ack(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// noFilter is a DirStore that does not tell the server the recipients' key ids.
type noFilter struct{ *DirStore }

func (s noFilter) Recipient(from, to pgpmsg.Fingerprint) ([]uint64, error) {
	_, err := s.DirStore.Recipient(from, to)
	return nil, err
}

// TestConformance_Relay: bob deposits at a relay_server for alice; alice polls it.
func TestConformance_Relay(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queuetest.Pair {
		r := newRelay(t, DirOptions{MaxFileSize: conformanceMaxSize}, "alice", "bob")
		r.srv.store = noFilter{r.store}
		bob, alice := newClient(t, "bob"), newClient(t, "alice")
		return queuetest.Pair{
			Send: func(ctx context.Context, msg queue.Message) error {
				return bob.Send(ctx, relayEndpoint(t, r, "alice"), msg)
			},
			Receive: func(ctx context.Context, sink queue.Sink) (int, error) {
				return alice.Poll(ctx, relayEndpoint(t, r, "alice"), sink)
			},
			MaxSize: conformanceMaxSize,
		}
	})
}

// TestConformance_PassivePull: alice keeps files for bob in her outgoing/bob (what her
// send_message does for a passive peer); bob pulls them from her daemon.
func TestConformance_PassivePull(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queuetest.Pair {
		d := newDaemon(t, "alice", "bob")
		bob := newClient(t, "bob")
		return queuetest.Pair{
			// Queueing is a local write that a cancelled context stops before it starts;
			// the transport under test is the pull.
			Send: func(ctx context.Context, msg queue.Message) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				body, err := msg.Body()
				if err != nil {
					return err
				}
				defer body.Close()
				_, err = d.spool.Put(queue.Outgoing("bob"), msg.Name, body, 0)
				return err
			},
			Receive: func(ctx context.Context, sink queue.Sink) (int, error) {
				return bob.Poll(ctx, queue.Endpoint{Peer: "alice", Key: string(fp(t, "bob")), Addr: d.url}, sink)
			},
			MaxSize: conformanceMaxSize,
		}
	})
}
