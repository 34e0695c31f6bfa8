package testenv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"

	"github.com/dibs-backup/dibs/queue"
)

// Fault is what happens to one file in transit.
type Fault int

const (
	Pass      Fault = iota // delivered as is
	Drop                   // the transfer fails with a temporary error; the file stays queued
	Lose                   // the sender is told it arrived, but it never does
	Duplicate              // delivered twice
	Corrupt                // one byte in the middle is flipped
	Truncate               // the second half is cut off
	Hold                   // kept back until Faults.Release: a delay, or (released in reverse) a reordering
)

// ErrDropped is the error a dropped transfer fails with.
var ErrDropped = errors.New("testenv: dropped in transit")

// Faults decorates a queue.Sender. Rule decides the fault for each file; nil passes all.
type Faults struct {
	mu   sync.Mutex
	rule func(to string, msg queue.Message) Fault
	held []heldSend
	// Count of files that went through each fault.
	Counts map[Fault]int
}

type heldSend struct {
	s   queue.Sender
	dst queue.Endpoint
	msg queue.Message
	raw []byte
}

// SetRule sets the rule that picks a fault per file (to is the peer's name).
func (f *Faults) SetRule(rule func(to string, msg queue.Message) Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rule = rule
}

// Always makes every file suffer fault.
func (f *Faults) Always(fault Fault) { f.SetRule(func(string, queue.Message) Fault { return fault }) }

// Clear passes every file again.
func (f *Faults) Clear() { f.SetRule(nil) }

// Release delivers the held files, in reverse order if reverse (a reordering).
func (f *Faults) Release(ctx context.Context, reverse bool) error {
	f.mu.Lock()
	held := f.held
	f.held = nil
	f.mu.Unlock()
	if reverse {
		for i, j := 0, len(held)-1; i < j; i, j = i+1, j-1 {
			held[i], held[j] = held[j], held[i]
		}
	}
	var errs []error
	for _, h := range held {
		errs = append(errs, h.s.Send(ctx, h.dst, withBody(h.msg, h.raw)))
	}
	return errors.Join(errs...)
}

// Held is how many files wait for Release.
func (f *Faults) Held() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held)
}

// Wrap returns s with the faults applied.
func (f *Faults) Wrap(s queue.Sender) queue.Sender { return &faultySender{f: f, s: s} }

type faultySender struct {
	f *Faults
	s queue.Sender
}

func (fs *faultySender) Send(ctx context.Context, dst queue.Endpoint, msg queue.Message) error {
	f := fs.f
	f.mu.Lock()
	fault := Pass
	if f.rule != nil {
		fault = f.rule(dst.Peer, msg)
	}
	if f.Counts == nil {
		f.Counts = map[Fault]int{}
	}
	f.Counts[fault]++
	f.mu.Unlock()
	if fault == Pass {
		return fs.s.Send(ctx, dst, msg)
	}
	if fault == Drop {
		return ErrDropped
	}
	raw, err := readAll(msg)
	if err != nil {
		return err
	}
	switch fault {
	case Lose:
		return nil
	case Duplicate:
		if err := fs.s.Send(ctx, dst, withBody(msg, raw)); err != nil {
			return err
		}
		return fs.s.Send(ctx, dst, withBody(msg, raw))
	case Corrupt:
		bad := bytes.Clone(raw)
		if len(bad) > 0 {
			bad[len(bad)/2] ^= 0x40
		}
		return fs.s.Send(ctx, dst, withBody(msg, bad))
	case Truncate:
		return fs.s.Send(ctx, dst, withBody(msg, raw[:len(raw)/2]))
	case Hold:
		f.mu.Lock()
		f.held = append(f.held, heldSend{s: fs.s, dst: dst, msg: msg, raw: raw})
		f.mu.Unlock()
		return nil
	}
	return fs.s.Send(ctx, dst, msg)
}

func readAll(msg queue.Message) ([]byte, error) {
	rc, err := msg.Body()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func withBody(msg queue.Message, raw []byte) queue.Message {
	msg.Size = int64(len(raw))
	msg.Body = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }
	return msg
}
