package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/queue/queuetest"
	"github.com/dibs-backup/dibs/testenv"
)

// sealedEnvelope is a small message from alice sealed to bob. import_messages takes only
// files sealed to the importer, reading no further than the session-key packets, so the
// suite's arbitrary bytes travel behind this envelope, and the receiving side checks the
// envelope arrived intact and strips it.
func sealedEnvelope(t *testing.T) []byte {
	var h pgpmsg.Header
	h.Set(pgpmsg.FieldVersion, pgpmsg.Version)
	h.Set(pgpmsg.FieldType, "HELLO")
	h.Set(pgpmsg.FieldMessageID, pgpmsg.NewMessageID())
	h.Set(pgpmsg.FieldDate, time.Now().UTC().Format(time.RFC3339))
	var b bytes.Buffer
	if err := pgpmsg.Seal(&b, h, nil, pgpmsgtest.Identity(t, "alice"), pgpmsgtest.Key(t, "bob")); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestConformance_CarriedDirectory runs the transport suite over sneakernet: alice's
// export_messages into a directory, bob's import_messages from it (then bob's incoming
// box drained as process_message would). Neither node has a network.
func TestConformance_CarriedDirectory(t *testing.T) {
	envelope := sealedEnvelope(t)
	queuetest.Run(t, func(t *testing.T) queuetest.Pair {
		env := testenv.New(t, nodes(testenv.NodeSpec{Name: "alice", NAT: true}, testenv.NodeSpec{Name: "bob", NAT: true}))
		env.Cut("alice")
		env.Cut("bob")
		alice, bob := env.Node("alice"), env.Node("bob")
		stick := t.TempDir()
		return queuetest.Pair{
			// The commands take no context: a cancelled one means the command never ran.
			Send: func(ctx context.Context, msg queue.Message) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				body, err := msg.Body()
				if err != nil {
					return err
				}
				defer body.Close()
				if _, err := alice.Spool.Put(queue.Outgoing("bob"), msg.Name, io.MultiReader(bytes.NewReader(envelope), body), 0); err != nil {
					return err
				}
				r, err := alice.ExportMessages(stick, "bob", false)
				if err == nil && r.Exported != 1 {
					err = fmt.Errorf("export_messages exported %d files, want 1", r.Exported)
				}
				return err
			},
			Receive: func(ctx context.Context, sink queue.Sink) (int, error) {
				if err := ctx.Err(); err != nil {
					return 0, err
				}
				r, err := bob.ImportMessages(stick)
				if err != nil {
					return 0, err
				}
				if r.Left != 0 {
					return 0, fmt.Errorf("import_messages left %d files behind", r.Left)
				}
				return drainEnveloped(bob.Spool, envelope, sink)
			},
		}
	})
}

// drainEnveloped hands every file of sp's incoming box to sink without its envelope,
// removing it once sink returned nil.
func drainEnveloped(sp *queue.Spool, envelope []byte, sink queue.Sink) (int, error) {
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
		head := make([]byte, len(envelope))
		r := c.Reader()
		if _, err := io.ReadFull(r, head); err != nil || !bytes.Equal(head, envelope) {
			c.Release()
			return n, fmt.Errorf("%s arrived with its envelope altered (%v)", e.Name, err)
		}
		if err := sink(e.Name, r); err != nil {
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
