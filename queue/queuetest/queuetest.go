// Package queuetest is the conformance suite that every transport runs: Run drives a
// sender/receiver pair through the scenarios a transport must survive, each of which is
// also exported as a Check that returns an error, so that a test can prove a broken
// transport fails it.
package queuetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/queue"
)

// Harness gives the suite one fresh sender/receiver pair per subtest.
type Harness func(t *testing.T) Pair

// Pair is one transport seen from both ends.
type Pair struct {
	// Send delivers one message toward the receiver (e.g. a queue.Sender with its Endpoint bound).
	Send func(ctx context.Context, msg queue.Message) error
	// Receive pulls/collects everything that has arrived for the receiver, handing each file to sink, and
	// removes it from the far side only after sink returned nil (e.g. a queue.Poller with its Endpoint bound,
	// or for push transports a function that drains what landed in the receiver's incoming box).
	Receive func(ctx context.Context, sink queue.Sink) (int, error)
	// MaxSize is the largest message the transport promises to carry (0 = the suite's default 8 MiB test).
	MaxSize int64
}

// DefaultLargeSize is the size of the large-file check when Pair.MaxSize is 0 or larger.
const DefaultLargeSize = 8 << 20

// timeout bounds each check run by Run.
const timeout = 2 * time.Minute

// Message returns a message holding data under name, whose Body can be opened any number
// of times.
func Message(name string, data []byte) queue.Message {
	return queue.Message{
		Name: name,
		Size: int64(len(data)),
		Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
	}
}

// A Check is one scenario of the suite. It returns nil if the pair behaved.
type Check struct {
	Name string
	Func func(ctx context.Context, p Pair) error
}

// Checks returns the suite's scenarios in the order Run runs them.
func Checks() []Check {
	return []Check{
		{"OneFile_ArrivesByteExactWithItsName", CheckOneFile},
		{"BinaryContent_NotAltered", CheckBinary},
		{"FiftyFiles_EachArrivesOnce", CheckManyFiles},
		{"LargeFile_ArrivesIntact", CheckLargeFile},
		{"SinkFails_FileComesAgain", CheckSinkFailure},
		{"SentTwice_NeverCorrupted", CheckDuplicate},
		{"CancelledContext_ErrorsAndLosesNothing", CheckCancelled},
		{"EmptyQueue_ReceivesNothing", CheckEmpty},
	}
}

// Run runs every check as a subtest, each against a fresh pair from h.
func Run(t *testing.T, h Harness) {
	for _, c := range Checks() {
		t.Run(c.Name, func(t *testing.T) {
			p := h(t)
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			if err := c.Func(ctx, p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// collector is a Sink that keeps every delivery, in order.
type collector struct {
	mu    sync.Mutex
	got   []delivery
	fails int // fail this many more deliveries after reading them
}

type delivery struct {
	name string
	data []byte
}

var errSinkFailed = errors.New("queuetest: sink refused the file (deliberately)")

func (c *collector) sink(name string, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fails > 0 {
		c.fails--
		return errSinkFailed
	}
	c.got = append(c.got, delivery{name, data})
	return nil
}

// byName groups the deliveries by file name.
func (c *collector) byName() map[string][][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string][][]byte)
	for _, d := range c.got {
		m[d.name] = append(m[d.name], d.data)
	}
	return m
}

// receive calls Receive once and checks that its count matches what the sink kept.
func receive(ctx context.Context, p Pair, c *collector) (int, error) {
	c.mu.Lock()
	had := len(c.got)
	c.mu.Unlock()
	n, err := p.Receive(ctx, c.sink)
	c.mu.Lock()
	kept := len(c.got) - had
	c.mu.Unlock()
	if err == nil && n != kept {
		return n, fmt.Errorf("counted %d files, but the sink accepted %d", n, kept)
	}
	return n, err
}

// drain calls Receive until it returns 0, at most rounds times.
func drain(ctx context.Context, p Pair, c *collector) error {
	const rounds = 10
	for range rounds {
		n, err := receive(ctx, p, c)
		if err != nil {
			return fmt.Errorf("Receive: %w", err)
		}
		if n == 0 {
			return nil
		}
	}
	return fmt.Errorf("Receive still delivering files after %d calls", rounds)
}

func send(ctx context.Context, p Pair, name string, data []byte) error {
	if err := p.Send(ctx, Message(name, data)); err != nil {
		return fmt.Errorf("Send(%s, %d bytes): %w", name, len(data), err)
	}
	return nil
}

// expectExactly checks that c got each of want exactly once, byte-exact, and nothing else.
func expectExactly(c *collector, want map[string][]byte) error {
	got := c.byName()
	var errs []error
	for _, name := range sortedKeys(want) {
		copies := got[name]
		switch {
		case len(copies) == 0:
			errs = append(errs, fmt.Errorf("%s never arrived", name))
		case len(copies) > 1:
			errs = append(errs, fmt.Errorf("%s arrived %d times", name, len(copies)))
		case !bytes.Equal(copies[0], want[name]):
			errs = append(errs, fmt.Errorf("%s arrived altered: %s", name, diff(copies[0], want[name])))
		}
	}
	for _, name := range sortedKeys(got) {
		if _, ok := want[name]; !ok {
			errs = append(errs, fmt.Errorf("unexpected file %q arrived (%d copies)", name, len(got[name])))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// diff describes how got differs from want, briefly.
func diff(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("byte %d is %#02x, want %#02x", i, got[i], want[i])
		}
	}
	return "identical"
}

func random(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// CheckOneFile: one file arrives byte-exact with its name, and Receive counts it.
func CheckOneFile(ctx context.Context, p Pair) error {
	name := queue.NewName(time.Now(), ".pgp")
	data := []byte("-----BEGIN PGP MESSAGE-----\nhello\n-----END PGP MESSAGE-----\n")
	if err := send(ctx, p, name, data); err != nil {
		return err
	}
	c := &collector{}
	n, err := receive(ctx, p, c)
	if err != nil {
		return fmt.Errorf("Receive: %w", err)
	}
	if n != 1 {
		return fmt.Errorf("Receive returned %d, want 1", n)
	}
	return expectExactly(c, map[string][]byte{name: data})
}

// BinaryContent is the content of CheckBinary: every byte value, and the line-ending and
// NUL sequences that text-minded channels like to rewrite, at the start, middle and end.
func BinaryContent() []byte {
	var b bytes.Buffer
	b.WriteString("\n\r\x00\xff")
	for i := range 256 {
		b.WriteByte(byte(i))
	}
	b.WriteString("line1\r\nline2\nline3\rline4\n.\r\n.\n\r\n\r\n\x00\x00\xff\xfe\xff")
	b.WriteString(strings.Repeat("x", 998) + "\r\n" + strings.Repeat("y", 2000) + "\n")
	b.WriteString("From the start of a line\n>From\r\nend without newline\r")
	b.Write(random(7, 4096))
	b.WriteString("\r\n\r")
	return b.Bytes()
}

// CheckBinary: binary content with CR, LF, CRLF, NUL and 0xFF bytes is not altered.
func CheckBinary(ctx context.Context, p Pair) error {
	want := map[string][]byte{"binary-crlf.bin": BinaryContent(), "all-ff.bin": bytes.Repeat([]byte{0xff}, 1000),
		"all-nul.bin": make([]byte, 1000), "lone-cr.bin": []byte("\r")}
	for _, name := range sortedKeys(want) {
		if err := send(ctx, p, name, want[name]); err != nil {
			return err
		}
	}
	c := &collector{}
	if err := drain(ctx, p, c); err != nil {
		return err
	}
	return expectExactly(c, want)
}

// CheckManyFiles: 50 files, all different, all arrive exactly once.
func CheckManyFiles(ctx context.Context, p Pair) error {
	want := make(map[string][]byte)
	for i := range 50 {
		name := fmt.Sprintf("many-%02d.pgp", i)
		want[name] = random(uint64(i), 100+i*37)
		if err := send(ctx, p, name, want[name]); err != nil {
			return err
		}
	}
	c := &collector{}
	if err := drain(ctx, p, c); err != nil {
		return err
	}
	return expectExactly(c, want)
}

// CheckLargeFile: a file of min(MaxSize, 8 MiB) arrives intact.
func CheckLargeFile(ctx context.Context, p Pair) error {
	size := int64(DefaultLargeSize)
	if p.MaxSize > 0 && p.MaxSize < size {
		size = p.MaxSize
	}
	name := "large.bin"
	data := random(42, int(size))
	if err := send(ctx, p, name, data); err != nil {
		return err
	}
	c := &collector{}
	if err := drain(ctx, p, c); err != nil {
		return err
	}
	return expectExactly(c, map[string][]byte{name: data})
}

// CheckSinkFailure: a sink that fails on the first delivery loses nothing: Receive reports
// the sink's error, and the next Receive gets the file again.
func CheckSinkFailure(ctx context.Context, p Pair) error {
	name, data := "retry.pgp", random(3, 5000)
	if err := send(ctx, p, name, data); err != nil {
		return err
	}
	c := &collector{fails: 1}
	n, err := p.Receive(ctx, c.sink)
	if c.fails != 0 {
		return fmt.Errorf("Receive returned %d, %v without handing the file to the sink", n, err)
	}
	if !errors.Is(err, errSinkFailed) {
		return fmt.Errorf("Receive with a failing sink returned %d, %v; want the sink's error", n, err)
	}
	if n != 0 {
		return fmt.Errorf("Receive with a failing sink counted %d files", n)
	}
	if err := drain(ctx, p, c); err != nil {
		return fmt.Errorf("after the failed delivery: %w", err)
	}
	return expectExactly(c, map[string][]byte{name: data})
}

// CheckDuplicate: sending one file twice gives the receiver one or two copies of it,
// each identical to what was sent.
func CheckDuplicate(ctx context.Context, p Pair) error {
	name, data := "twice.pgp", random(9, 70000)
	for range 2 {
		if err := send(ctx, p, name, data); err != nil {
			return err
		}
	}
	c := &collector{}
	if err := drain(ctx, p, c); err != nil {
		return err
	}
	got := c.byName()
	var errs []error
	if k := len(got[name]); k < 1 || k > 2 {
		errs = append(errs, fmt.Errorf("%s arrived %d times, want 1 or 2", name, k))
	}
	for i, cp := range got[name] {
		if !bytes.Equal(cp, data) {
			errs = append(errs, fmt.Errorf("copy %d of %s is corrupted: %s", i+1, name, diff(cp, data)))
		}
	}
	for _, other := range sortedKeys(got) {
		if other != name {
			errs = append(errs, fmt.Errorf("unexpected file %q arrived", other))
		}
	}
	return errors.Join(errs...)
}

// cancellingReader cancels a context once half of data has been read, and goes on.
type cancellingReader struct {
	r      *bytes.Reader
	half   int64
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if int64(len(p)) > c.half/4+1 {
		p = p[:c.half/4+1] // small reads, so that the cancel lands inside the transfer
	}
	n, err := c.r.Read(p)
	if c.r.Size()-int64(c.r.Len()) >= c.half {
		c.cancel()
	}
	return n, err
}
func (c *cancellingReader) Close() error { return nil }

// CheckCancelled: a cancelled context makes Send and Receive return an error and loses
// nothing: what was sent with a live context still arrives, what failed can be sent
// again, and a send cancelled in mid-transfer either fails or delivers the whole file.
func CheckCancelled(ctx context.Context, p Pair) error {
	dead, cancel := context.WithCancel(ctx)
	cancel()
	a, b, mid := random(11, 3000), random(12, 4000), random(13, 1<<20)

	if err := p.Send(dead, Message("cancelled-a.pgp", a)); err == nil {
		return errors.New("Send with a cancelled context returned nil")
	}
	if err := send(ctx, p, "live-b.pgp", b); err != nil {
		return err
	}
	c := &collector{}
	if n, err := p.Receive(dead, c.sink); err == nil {
		return fmt.Errorf("Receive with a cancelled context returned %d, nil", n)
	}
	// Cancelled in the middle of reading the body.
	midCtx, midCancel := context.WithCancel(ctx)
	defer midCancel()
	midErr := p.Send(midCtx, queue.Message{Name: "mid-c.pgp", Size: int64(len(mid)), Body: func() (io.ReadCloser, error) {
		return &cancellingReader{r: bytes.NewReader(mid), half: int64(len(mid) / 2), cancel: midCancel}, nil
	}})

	// Everything still works, and the failed send can be repeated.
	if err := send(ctx, p, "cancelled-a.pgp", a); err != nil {
		return fmt.Errorf("after cancellation: %w", err)
	}
	if err := drain(ctx, p, c); err != nil {
		return fmt.Errorf("after cancellation: %w", err)
	}
	got := c.byName()
	var errs []error
	for name, data := range map[string][]byte{"cancelled-a.pgp": a, "live-b.pgp": b, "mid-c.pgp": mid} {
		copies := got[name]
		if len(copies) == 0 && (name != "mid-c.pgp" || midErr == nil) {
			errs = append(errs, fmt.Errorf("%s never arrived", name))
		}
		for _, cp := range copies {
			if !bytes.Equal(cp, data) {
				errs = append(errs, fmt.Errorf("%s arrived altered: %s", name, diff(cp, data)))
			}
		}
	}
	for _, name := range sortedKeys(got) {
		if !slices.Contains([]string{"cancelled-a.pgp", "live-b.pgp", "mid-c.pgp"}, name) {
			errs = append(errs, fmt.Errorf("unexpected file %q arrived", name))
		}
	}
	return errors.Join(errs...)
}

// CheckEmpty: Receive on an empty queue returns 0, nil and never calls the sink.
func CheckEmpty(ctx context.Context, p Pair) error {
	c := &collector{}
	n, err := p.Receive(ctx, c.sink)
	if n != 0 || err != nil {
		return fmt.Errorf("Receive on an empty queue = %d, %v; want 0, nil", n, err)
	}
	if len(c.got) != 0 {
		return fmt.Errorf("Receive on an empty queue handed %d files to the sink", len(c.got))
	}
	return nil
}
