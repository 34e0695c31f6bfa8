package mailbox

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/mailbox/mailtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/queue/queuetest"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
)

func TestMailTransport_Conformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queuetest.Pair {
		f := newFixture(t, mailtest.Options{})
		return queuetest.Pair{
			Send: func(ctx context.Context, msg queue.Message) error {
				return f.sender.Send(ctx, queue.Endpoint{Peer: "bob", Key: bobKey, Addr: bob}, msg)
			},
			Receive: func(ctx context.Context, sink queue.Sink) (int, error) {
				return f.poller.Poll(ctx, queue.Endpoint{Key: bobKey}, sink)
			},
		}
	})
}

func TestRoundTrip_BinaryByteExact(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	data := queuetest.BinaryContent()
	f.send(t, bobKey, "bin-1.pgp", data)
	f.send(t, bobKey, "empty.pgp", nil)

	msgs := f.srv.Messages(t, bob, "INBOX")
	if len(msgs) != 2 {
		t.Fatalf("INBOX holds %d mails, want 2", len(msgs))
	}
	head := string(msgs[0].Raw[:bytes.Index(msgs[0].Raw, []byte("\r\n\r\n"))])
	for _, want := range []string{"X-Dibs-Message: bin-1.pgp", "X-Dibs-Key: " + bobKey, "Subject: dibs message bin-1.pgp",
		"From: <" + alice + ">", "To: <" + bob + ">", "Message-Id: <", "Date: "} {
		if !strings.Contains(head, want) {
			t.Errorf("header lacks %q:\n%s", want, head)
		}
	}

	s := newStore()
	mustPoll(t, f.poller, bobKey, s, 2)
	if got := s.get(t, "bin-1.pgp"); !bytes.Equal(got, data) {
		t.Fatalf("received %d bytes, not the %d sent (or altered)", len(got), len(data))
	}
	if got := s.get(t, "empty.pgp"); len(got) != 0 {
		t.Fatalf("empty file arrived as %d bytes", len(got))
	}
	if left := f.srv.Messages(t, bob, "INBOX"); len(left) != 0 {
		t.Fatalf("%d mails left in INBOX after a successful poll", len(left))
	}
	mustPoll(t, f.poller, bobKey, s, 0) // an empty result set must not break anything
}

func TestPoll_OtherMailUntouchedAndUnseen(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	f.srv.Deliver(t, bob, []byte(foreignMail))
	f.send(t, otherKy, "for-other-node.pgp", []byte("not yours"))
	// A key that merely contains ours is another key too.
	f.send(t, bobKey+"FF", "longer-key.pgp", []byte("not yours either"))
	f.send(t, bobKey, "mine.pgp", []byte("yours"))

	s := newStore()
	mustPoll(t, f.poller, bobKey, s, 1)
	if got := string(s.get(t, "mine.pgp")); got != "yours" {
		t.Fatalf("got %q", got)
	}
	left := f.srv.Messages(t, bob, "INBOX")
	if len(left) != 3 {
		t.Fatalf("INBOX holds %d mails, want the 3 that are not ours", len(left))
	}
	for _, m := range left {
		if len(m.Flags) != 0 {
			t.Errorf("mail UID %d got flags %v; other mail must stay untouched", m.UID, m.Flags)
		}
	}
	if !bytes.Equal(left[0].Raw, []byte(foreignMail)) {
		t.Errorf("foreign mail changed")
	}
	// Without a key, every dibs mail is ours; the foreign one still is not.
	s2 := newStore()
	mustPoll(t, f.poller, "", s2, 2)
	if left := f.srv.Messages(t, bob, "INBOX"); len(left) != 1 || left[0].Has(imap.FlagSeen) {
		t.Fatalf("after a keyless poll INBOX holds %d mails (want only the foreign one, unseen)", len(left))
	}
}

func TestSend_OversizedIsPermanentAndNamesTheLimit(t *testing.T) {
	f := newFixture(t, mailtest.Options{MaxMessageBytes: 100 << 10})
	data := bytes.Repeat([]byte{0xAB}, 80<<10) // 80 KiB -> ~110 KiB of mail

	err := f.sender.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, testMsg("big.pgp", data))
	wantPermanent(t, err, "over the server's SIZE")
	if !strings.Contains(err.Error(), "SIZE limit of 102400") || !strings.Contains(err.Error(), "by ") ||
		!errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("error does not name the server limit: %v", err)
	}

	env, _ := compose(alice, bob, "big.pgp", bobKey, int64(len(data)), f.sender.now())
	exact := env.mailLen()
	own := newSender(t, f.srv, func(c *SMTPConfig) { c.MaxMessageSize = exact - 1 })
	err = own.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, testMsg("big.pgp", data))
	wantPermanent(t, err, "over MaxMessageSize")
	t.Logf("too large: %v", err)
	if !strings.Contains(err.Error(), "MaxMessageSize=") || !strings.Contains(err.Error(), "by 1 bytes") {
		t.Fatalf("error does not name our limit and the excess: %v", err)
	}
	if f.srv.Delivered() != 0 {
		t.Fatal("an oversized mail was delivered")
	}
	// Exactly at our own limit (and under the server's) it goes.
	small := bytes.Repeat([]byte{1}, 50<<10)
	env, _ = compose(alice, bob, "fits.pgp", bobKey, int64(len(small)), f.sender.now())
	fits := newSender(t, f.srv, func(c *SMTPConfig) { c.MaxMessageSize = env.mailLen() })
	if err := fits.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, testMsg("fits.pgp", small)); err != nil {
		t.Fatalf("mail exactly at MaxMessageSize: %v", err)
	}
}

func TestAuth_WrongPasswordIsPermanent(t *testing.T) {
	srv := mailtest.Start(t, testUsers...)
	s := newSender(t, srv, func(c *SMTPConfig) { c.Password = "wrong" })
	err := s.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, testMsg("x.pgp", []byte("x")))
	wantPermanent(t, err, "SMTP AUTH with a wrong password")
	t.Logf("smtp auth: %v", err)

	p := newPoller(t, srv, func(c *IMAPConfig) { c.Password = "wrong" })
	_, err = poll(t, p, bobKey, newStore())
	wantPermanent(t, err, "IMAP LOGIN with a wrong password")
	t.Logf("imap login: %v", err)
}

func TestServerDown_IsTemporary(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, err := NewSender(SMTPConfig{Server: addr, User: alice, Password: "pw", TLS: TLSStartTLS, From: alice})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(t.Context(), queue.Endpoint{Addr: bob}, testMsg("x.pgp", []byte("x")))
	wantTemporary(t, err, "SMTP server down")
	if !strings.HasPrefix(err.Error(), "mailbox: send x.pgp: ") {
		t.Errorf("error lacks the package and operation: %v", err)
	}
	p, err := NewPoller(IMAPConfig{Server: addr, User: bob, Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Poll(t.Context(), queue.Endpoint{}, newStore().sink)
	wantTemporary(t, err, "IMAP server down")
}

func TestSMTPReplies_5xxPermanent4xxTemporary(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	send := func(to string) error {
		return f.sender.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: to}, testMsg("r.pgp", []byte("r")))
	}
	f.srv.FailNextData(451)
	wantTemporary(t, send(bob), "451 after DATA")
	f.srv.FailNextData(554)
	wantPermanent(t, send(bob), "554 after DATA")
	wantPermanent(t, send("nobody@dibs.test"), "550 at RCPT")
	if err := send(bob); err != nil {
		t.Fatalf("after the failures: %v", err)
	}
}

func TestCleartextCredentials_RefusedToNonLoopback(t *testing.T) {
	for _, host := range []string{"mail.example.org", "192.0.2.1:25", "[2001:db8::1]:143"} {
		_, err := NewSender(SMTPConfig{Server: host, User: "u", Password: "p", TLS: TLSNone, From: alice})
		wantPermanent(t, err, "SMTP TLS=none to "+host)
		if !errors.Is(err, errCleartext) {
			t.Errorf("SMTP to %s: %v", host, err)
		}
		_, err = NewPoller(IMAPConfig{Server: host, User: "u", Password: "p", TLS: TLSNone})
		wantPermanent(t, err, "IMAP TLS=none to "+host)
	}
	// Without credentials, cleartext to anywhere is allowed.
	if _, err := NewSender(SMTPConfig{Server: "mail.example.org", TLS: TLSNone, From: alice}); err != nil {
		t.Fatal(err)
	}
	// To loopback, cleartext with credentials works end to end.
	f := newFixture(t, mailtest.Options{InsecureAuth: true})
	f.sender = newSender(t, f.srv, func(c *SMTPConfig) { c.TLS = TLSNone; c.RootCAs = nil })
	f.poller = newPoller(t, f.srv, func(c *IMAPConfig) { c.TLS = TLSNone; c.RootCAs = nil })
	f.send(t, bobKey, "clear.pgp", []byte("over loopback"))
	s := newStore()
	mustPoll(t, f.poller, bobKey, s, 1)
}

func TestPoll_ConnectionDroppedMidFetch_NothingLost(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	data := bytes.Repeat([]byte("0123456789\r\n\x00"), 100_000) // 1.3 MB
	f.send(t, bobKey, "first.pgp", []byte("small one first"))
	f.send(t, bobKey, "dropped.pgp", data)

	// Armed at the first body FETCH; the budget runs out in the middle of the second mail.
	f.srv.DropNextFetch(300_000)
	s := newStore()
	n, err := poll(t, f.poller, bobKey, s)
	wantTemporary(t, err, "poll with the connection dropped mid-fetch")
	t.Logf("dropped: %v", err)
	if n != 1 || len(s.files) != 1 || s.files["first.pgp"] == nil {
		t.Fatalf("poll = %d; committed %d files; want only first.pgp", n, len(s.files))
	}
	if s.calls != 2 {
		t.Fatalf("sink called %d times, want 2 (one whole, one interrupted)", s.calls)
	}
	msgs := f.srv.Messages(t, bob, "INBOX")
	if len(msgs) != 1 || len(msgs[0].Flags) != 0 {
		t.Fatalf("after the drop INBOX holds %d mails (want 1, unflagged)", len(msgs))
	}
	mustPoll(t, f.poller, bobKey, s, 1)
	if !bytes.Equal(s.get(t, "dropped.pgp"), data) {
		t.Fatal("re-fetched file differs")
	}
}

func TestPoll_SinkFailure_MailStays(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	f.send(t, bobKey, "a.pgp", []byte("aaa"))
	f.send(t, bobKey, "b.pgp", []byte("bbb"))
	s := newStore()
	s.fail = errDisk
	n, err := poll(t, f.poller, bobKey, s)
	if !errors.Is(err, errDisk) || n != 0 {
		t.Fatalf("Poll with a failing sink = %d, %v; want 0 and the sink's error", n, err)
	}
	if s.calls != 1 {
		t.Fatalf("poll went on after the sink failed: %d calls", s.calls)
	}
	if got := len(f.srv.Messages(t, bob, "INBOX")); got != 2 {
		t.Fatalf("%d mails left, want 2", got)
	}
	s.fail = nil
	mustPoll(t, f.poller, bobKey, s, 2)
}

func TestPoll_BadMail_FlaggedSkippedReported(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	noAttachment := "From: alice@dibs.test\r\nTo: bob@dibs.test\r\nX-Dibs-Message: lost.pgp\r\nX-Dibs-Key: " + bobKey +
		"\r\nSubject: dibs message lost.pgp\r\n\r\nno attachment here\r\n"
	f.srv.Deliver(t, bob, []byte(noAttachment))
	// A mail whose base64 body lost its last line: X-Dibs-Size gives it away.
	whole := rawMail(t, bob, bobKey, "short.pgp", bytes.Repeat([]byte{7}, 1000))
	i := bytes.LastIndex(whole, []byte("\r\n--dibs-"))
	j := bytes.LastIndex(whole[:i], []byte("\r\n"))
	f.srv.Deliver(t, bob, append(append([]byte{}, whole[:j]...), whole[i:]...))
	f.send(t, bobKey, "good.pgp", []byte("good"))

	s := newStore()
	n, err := poll(t, f.poller, bobKey, s)
	t.Logf("bad mails: %v", err)
	if n != 1 || !errors.Is(err, ErrBadMail) || !strings.Contains(err.Error(), "2 dibs mails") {
		t.Fatalf("Poll = %d, %v; want 1 and ErrBadMail for 2 mails", n, err)
	}
	if len(s.files) != 1 || s.files["good.pgp"] == nil {
		t.Fatalf("committed %v", s.files)
	}
	msgs := f.srv.Messages(t, bob, "INBOX")
	if len(msgs) != 2 {
		t.Fatalf("INBOX holds %d mails, want the 2 bad ones", len(msgs))
	}
	for _, m := range msgs {
		if !m.Has(FlagBad) || m.Has(imap.FlagSeen) || m.Has(imap.FlagDeleted) {
			t.Errorf("bad mail UID %d has flags %v, want only %s", m.UID, m.Flags, FlagBad)
		}
	}
	mustPoll(t, f.poller, bobKey, s, 0) // skipped from now on, no error
}

func TestPoll_OversizedMail_FlaggedNotFetched(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	f.send(t, bobKey, "huge.pgp", bytes.Repeat([]byte{1}, 200<<10))
	f.send(t, bobKey, "ok.pgp", []byte("ok"))
	p := newPoller(t, f.srv, func(c *IMAPConfig) { c.MaxMessageSize = 100 << 10 })
	s := newStore()
	n, err := poll(t, p, bobKey, s)
	if n != 1 || !errors.Is(err, ErrBadMail) || !strings.Contains(err.Error(), "MaxMessageSize=102400") {
		t.Fatalf("Poll = %d, %v", n, err)
	}
	if s.calls != 1 {
		t.Fatalf("sink called %d times; the oversized mail must not reach it", s.calls)
	}
}

func TestPoll_DoneMailbox(t *testing.T) {
	for _, noMove := range []bool{false, true} {
		f := newFixture(t, mailtest.Options{NoMove: noMove})
		p := newPoller(t, f.srv, func(c *IMAPConfig) { c.DoneMailbox = "dibs-done" })
		f.srv.Deliver(t, bob, []byte(foreignMail))
		f.send(t, bobKey, "kept.pgp", []byte("keep a copy"))
		s := newStore()
		mustPoll(t, p, bobKey, s, 1)
		mustPoll(t, p, bobKey, s, 0) // the mailbox exists now
		if done := f.srv.Messages(t, bob, "dibs-done"); len(done) != 1 {
			t.Fatalf("noMove=%v: dibs-done holds %d mails, want 1", noMove, len(done))
		}
		inbox := f.srv.Messages(t, bob, "INBOX")
		if len(inbox) != 1 || !bytes.Equal(inbox[0].Raw, []byte(foreignMail)) || len(inbox[0].Flags) != 0 {
			t.Fatalf("noMove=%v: INBOX should hold only the untouched foreign mail, has %d", noMove, len(inbox))
		}
	}
}

func TestSend_LOGINWhenPLAINIsNotOffered(t *testing.T) {
	f := newFixture(t, mailtest.Options{SMTPAuth: []string{sasl.Login}})
	f.send(t, bobKey, "login.pgp", []byte("via LOGIN"))
	bad := newSender(t, f.srv, func(c *SMTPConfig) { c.Password = "nope" })
	err := bad.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, testMsg("x.pgp", nil))
	wantPermanent(t, err, "LOGIN with a wrong password")
}

func TestCredentials_FromFileAndEnv(t *testing.T) {
	f := newFixture(t, mailtest.Options{})
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("alice-pw\nignored second line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.sender = newSender(t, f.srv, func(c *SMTPConfig) { c.Password = ""; c.PasswordFile = pwFile })
	t.Setenv("DIBS_TEST_BOB_PW", "bob-pw")
	f.poller = newPoller(t, f.srv, func(c *IMAPConfig) { c.Password = ""; c.PasswordEnv = "DIBS_TEST_BOB_PW" })
	f.send(t, bobKey, "cred.pgp", []byte("x"))
	mustPoll(t, f.poller, bobKey, newStore(), 1)

	if _, err := NewPoller(IMAPConfig{Server: f.srv.IMAPAddr, User: bob, PasswordEnv: "DIBS_TEST_UNSET_VAR"}); err == nil {
		t.Fatal("unset password variable accepted")
	}
	if _, err := NewSender(SMTPConfig{Server: f.srv.SMTPAddr, User: alice, From: alice,
		PasswordFile: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("missing password file accepted")
	}
}

func TestSend_TLSRequiresTrustedCertificate(t *testing.T) {
	srv := mailtest.Start(t, testUsers...)
	s := newSender(t, srv, func(c *SMTPConfig) { c.RootCAs = nil }) // system roots do not know it
	err := s.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, testMsg("x.pgp", nil))
	wantTemporary(t, err, "untrusted certificate")
	t.Logf("untrusted: %v", err)
	// The CA file makes it trusted.
	s = newSender(t, srv, func(c *SMTPConfig) { c.RootCAs = nil; c.CAFile = srv.CAFile })
	if err := s.Send(t.Context(), queue.Endpoint{Key: bobKey, Addr: bob}, testMsg("x.pgp", nil)); err != nil {
		t.Fatalf("with CAFile: %v", err)
	}
}

// One bad mail is reported as one mail, not "1 dibs mails".
func TestBadMails_OneIsSingular(t *testing.T) {
	var b badMails
	b.add("m1", errors.New("no attachment"))
	if err := b.err("left in place"); err == nil || !strings.Contains(err.Error(), ": 1 dibs mail left in place (first: m1: no attachment)") {
		t.Errorf("one bad mail: %v", err)
	}
}
