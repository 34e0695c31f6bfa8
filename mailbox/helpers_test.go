package mailbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/mailbox/mailtest"
	"github.com/dibs-backup/dibs/queue"
)

const (
	alice   = "alice@dibs.test"
	bob     = "bob@dibs.test"
	bobKey  = "B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0B0"
	otherKy = "C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0"
)

var testUsers = []mailtest.User{{Addr: alice, Password: "alice-pw"}, {Addr: bob, Password: "bob-pw"}}

// fixture is one mail server with a sender (alice) and a poller (bob's INBOX).
type fixture struct {
	srv    *mailtest.Server
	sender *Sender
	poller *Poller
}

func newFixture(t testing.TB, opt mailtest.Options) *fixture {
	t.Helper()
	srv := mailtest.StartWith(t, opt, testUsers...)
	return &fixture{srv: srv, sender: newSender(t, srv, nil), poller: newPoller(t, srv, nil)}
}

func newSender(t testing.TB, srv *mailtest.Server, edit func(*SMTPConfig)) *Sender {
	t.Helper()
	cfg := SMTPConfig{Server: srv.SMTPAddr, User: alice, Password: "alice-pw", TLS: TLSStartTLS,
		From: alice, RootCAs: srv.RootCAs, Timeout: 20 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	s, err := NewSender(cfg)
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	return s
}

func newPoller(t testing.TB, srv *mailtest.Server, edit func(*IMAPConfig)) *Poller {
	t.Helper()
	cfg := IMAPConfig{Server: srv.IMAPAddr, User: bob, Password: "bob-pw", TLS: TLSStartTLS,
		RootCAs: srv.RootCAs, Timeout: 20 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	p, err := NewPoller(cfg)
	if err != nil {
		t.Fatalf("NewPoller: %v", err)
	}
	return p
}

func testMsg(name string, data []byte) queue.Message {
	return queue.Message{Name: name, Size: int64(len(data)),
		Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

func (f *fixture) send(t testing.TB, key, name string, data []byte) {
	t.Helper()
	if err := f.sender.Send(t.Context(), queue.Endpoint{Peer: "bob", Key: key, Addr: bob}, testMsg(name, data)); err != nil {
		t.Fatalf("Send %s: %v", name, err)
	}
}

// store is a Sink that behaves like queue.Spool.Put: it commits a file only when it read
// it whole without error, and can be told to fail.
type store struct {
	mu    sync.Mutex
	files map[string][]byte
	calls int
	fail  error
}

func newStore() *store { return &store{files: map[string][]byte{}} }

func (s *store) sink(name string, r io.Reader) error {
	data, err := io.ReadAll(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if err != nil {
		return err
	}
	if s.fail != nil {
		return s.fail
	}
	if !queue.ValidName(name) {
		return fmt.Errorf("bad name %q", name)
	}
	s.files[name] = data
	return nil
}

func (s *store) get(t testing.TB, name string) []byte {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.files[name]
	if !ok {
		names := []string{}
		for n := range s.files {
			names = append(names, n)
		}
		t.Fatalf("%s not received; have %v", name, names)
	}
	return d
}

func poll(t testing.TB, p *Poller, key string, s *store) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	return p.Poll(ctx, queue.Endpoint{Key: key}, s.sink)
}

func mustPoll(t testing.TB, p *Poller, key string, s *store, want int) {
	t.Helper()
	n, err := poll(t, p, key, s)
	if err != nil || n != want {
		t.Fatalf("Poll = %d, %v; want %d, nil", n, err, want)
	}
}

func wantPermanent(t testing.TB, err error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got nil error", what)
	}
	if !queue.IsPermanent(err) {
		t.Fatalf("%s: error is temporary, want permanent: %v", what, err)
	}
}

func wantTemporary(t testing.TB, err error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got nil error", what)
	}
	if queue.IsPermanent(err) {
		t.Fatalf("%s: error is permanent, want temporary: %v", what, err)
	}
}

// rawMail composes a dibs mail as Send would, for tests that deliver by hand.
func rawMail(t testing.TB, to, key, name string, data []byte) []byte {
	t.Helper()
	env, err := compose(alice, to, name, key, int64(len(data)), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := env.writeMail(&b, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if int64(b.Len()) != env.mailLen() {
		t.Fatalf("composed %d bytes, mailLen says %d", b.Len(), env.mailLen())
	}
	return b.Bytes()
}

const foreignMail = "From: carol@example.org\r\nTo: bob@dibs.test\r\nSubject: lunch?\r\n" +
	"Message-ID: <lunch@example.org>\r\nDate: Mon, 2 Jan 2006 15:04:05 +0000\r\n\r\nNoon at the usual place.\r\n"

var errDisk = errors.New("disk full (test)")
