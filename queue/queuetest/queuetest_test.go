package queuetest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/queue/queuetest"
)

// spoolTransport is the reference transport the suite is proven on: Send Puts into the
// far spool's incoming box, Receive claims each file there, hands it to the sink and acks
// it only after the sink returned nil. Its fault fields break it on purpose.
type spoolTransport struct {
	far *queue.Spool

	rewriteCRLF   bool  // Send turns CRLF into LF, as a text-minded channel would
	lowerNames    bool  // Send lowercases the file name
	truncateAt    int64 // Send keeps only this many bytes
	dropEvery     int   // Send silently drops every n-th file
	ignoreCtx     bool  // neither side looks at the context
	eofOnCancel   bool  // a cancel during Send ends the body early, without an error
	ackFirst      bool  // Receive acks before the sink has committed the file
	swallowSink   bool  // Receive ignores sink errors and goes on
	neverAck      bool  // Receive leaves every file at the far side
	miscount      bool  // Receive returns one more than it delivered
	errWhenEmpty  bool  // Receive on an empty box fails
	sent, dropped int
}

func (st *spoolTransport) pair() queuetest.Pair {
	return queuetest.Pair{Send: st.send, Receive: st.receive}
}

// ctxReader fails reads once ctx is done, so that a cancelled Send stops mid-transfer.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	eof bool // the fault: report a clean end instead of the cancellation
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		if c.eof {
			return 0, io.EOF
		}
		return 0, err
	}
	return c.r.Read(p)
}

func (st *spoolTransport) send(ctx context.Context, msg queue.Message) error {
	if err := ctx.Err(); err != nil && !st.ignoreCtx {
		return fmt.Errorf("spool transport: send %s: %w", msg.Name, err)
	}
	st.sent++
	if st.dropEvery > 0 && st.sent%st.dropEvery == 0 {
		st.dropped++
		return nil
	}
	body, err := msg.Body()
	if err != nil {
		return fmt.Errorf("spool transport: send %s: %w", msg.Name, err)
	}
	defer body.Close()
	var r io.Reader = body
	if !st.ignoreCtx {
		r = ctxReader{ctx: ctx, r: r, eof: st.eofOnCancel}
	}
	if st.rewriteCRLF {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		r = bytes.NewReader(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")))
	}
	if st.truncateAt > 0 {
		r = io.LimitReader(r, st.truncateAt)
	}
	name := msg.Name
	if st.lowerNames {
		name = strings.ToLower(name)
	}
	if _, err := st.far.Put(queue.Incoming, name, r, 0); err != nil {
		return fmt.Errorf("spool transport: %w", err)
	}
	return nil
}

func (st *spoolTransport) receive(ctx context.Context, sink queue.Sink) (int, error) {
	es, err := st.far.List(queue.Incoming)
	if err != nil {
		return 0, err
	}
	if len(es) == 0 && st.errWhenEmpty {
		return 0, errors.New("spool transport: nothing to receive")
	}
	n := 0
	for _, e := range es {
		if err := ctx.Err(); err != nil && !st.ignoreCtx {
			return n, fmt.Errorf("spool transport: receive: %w", err)
		}
		c, err := st.far.Claim(queue.Incoming, e.Name)
		if errors.Is(err, queue.ErrBusy) || errors.Is(err, queue.ErrGone) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("spool transport: receive: %w", err)
		}
		if st.ackFirst {
			data, _ := io.ReadAll(c.Reader())
			c.Ack()
			if err := sink(e.Name, bytes.NewReader(data)); err != nil {
				return n, err
			}
			n++
			continue
		}
		if err := sink(e.Name, c.Reader()); err != nil {
			c.Release()
			if st.swallowSink {
				continue
			}
			return n, fmt.Errorf("spool transport: receive %s: %w", e.Name, err)
		}
		if st.neverAck {
			c.Release()
		} else if err := c.Ack(); err != nil {
			return n, err
		}
		n++
	}
	if st.miscount && n > 0 {
		n++
	}
	return n, nil
}

func newTransport(t *testing.T) *spoolTransport {
	far, err := queue.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &spoolTransport{far: far}
}

func TestSuite_PassesOnSpoolTransport(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queuetest.Pair { return newTransport(t).pair() })
}

func TestSuite_PassesWithSmallMaxSize(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queuetest.Pair {
		p := newTransport(t).pair()
		p.MaxSize = 100 << 10
		return p
	})
}

// Each broken transport must fail the check that targets its fault.
func TestSuite_FailsOnBrokenTransports(t *testing.T) {
	checks := make(map[string]func(context.Context, queuetest.Pair) error)
	for _, c := range queuetest.Checks() {
		checks[c.Name] = c.Func
	}
	for _, tc := range []struct {
		fault string
		check string
		brk   func(*spoolTransport)
	}{
		{"rewrites CRLF", "BinaryContent_NotAltered", func(st *spoolTransport) { st.rewriteCRLF = true }},
		{"lowercases names", "OneFile_ArrivesByteExactWithItsName", func(st *spoolTransport) { st.lowerNames = true }},
		{"miscounts", "OneFile_ArrivesByteExactWithItsName", func(st *spoolTransport) { st.miscount = true }},
		{"drops every 7th file", "FiftyFiles_EachArrivesOnce", func(st *spoolTransport) { st.dropEvery = 7 }},
		{"never acks", "FiftyFiles_EachArrivesOnce", func(st *spoolTransport) { st.neverAck = true }},
		{"truncates at 4 MiB", "LargeFile_ArrivesIntact", func(st *spoolTransport) { st.truncateAt = 4 << 20 }},
		{"acks before the sink", "SinkFails_FileComesAgain", func(st *spoolTransport) { st.ackFirst = true }},
		{"swallows sink errors", "SinkFails_FileComesAgain", func(st *spoolTransport) { st.swallowSink = true }},
		{"truncates on cancel", "CancelledContext_ErrorsAndLosesNothing", func(st *spoolTransport) { st.eofOnCancel = true }},
		{"ignores the context", "CancelledContext_ErrorsAndLosesNothing", func(st *spoolTransport) { st.ignoreCtx = true }},
		{"fails when empty", "EmptyQueue_ReceivesNothing", func(st *spoolTransport) { st.errWhenEmpty = true }},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			check, ok := checks[tc.check]
			if !ok {
				t.Fatalf("no check named %q", tc.check)
			}
			st := newTransport(t)
			tc.brk(st)
			err := check(t.Context(), st.pair())
			if err == nil {
				t.Fatalf("%s passed on a transport that %s", tc.check, tc.fault)
			}
			t.Logf("%s: %v", tc.check, err)
		})
	}
}

func TestMessage_BodyReopens(t *testing.T) {
	m := queuetest.Message("m.pgp", []byte("abc"))
	if m.Name != "m.pgp" || m.Size != 3 {
		t.Fatalf("Message = %+v", m)
	}
	for range 2 {
		rc, err := m.Body()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "abc" {
			t.Fatalf("Body read %q", b)
		}
	}
}
