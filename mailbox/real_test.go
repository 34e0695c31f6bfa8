package mailbox

// Tests against a real Postfix (submission, delivering over LMTP) and Dovecot (IMAP), as
// started by .ci/mail/start.sh, which prints the variables these tests read:
//
//	DIBS_TEST_SMTP        submission host:port (AUTH)
//	DIBS_TEST_SMTP_PLAIN  plain SMTP host:port without AUTH, to inject non-dibs mail (optional)
//	DIBS_TEST_IMAP        IMAP host:port
//	DIBS_TEST_MAIL_USERS  "sender@x:pw,receiver@x:pw" (the first sends, the second receives)
//	DIBS_TEST_MAIL_TLS    starttls or none
//	DIBS_TEST_MAIL_CA     PEM file of the servers' certificate (with starttls)
//
// Without DIBS_TEST_SMTP they skip, except under CI=true, where they fail: CI must run them.
// Every test works under its own random key, so that runs never see each other's mail, and
// removes what it left behind.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/queue/queuetest"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

type realServers struct {
	smtp, smtpPlain, imap string
	tls, ca               string
	from, fromPW          string
	to, toPW              string
}

func realEnv(t *testing.T) *realServers {
	t.Helper()
	r := &realServers{
		smtp: os.Getenv("DIBS_TEST_SMTP"), smtpPlain: os.Getenv("DIBS_TEST_SMTP_PLAIN"),
		imap: os.Getenv("DIBS_TEST_IMAP"), tls: os.Getenv("DIBS_TEST_MAIL_TLS"), ca: os.Getenv("DIBS_TEST_MAIL_CA"),
	}
	users := os.Getenv("DIBS_TEST_MAIL_USERS")
	if r.smtp == "" || r.imap == "" || users == "" {
		msg := "real mail servers not configured (DIBS_TEST_SMTP, DIBS_TEST_IMAP, DIBS_TEST_MAIL_USERS); " +
			"start them with .ci/mail/start.sh and source its mail.env"
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: " + msg)
		}
		t.Skip(msg)
	}
	us := strings.Split(users, ",")
	if len(us) < 2 {
		t.Fatalf("DIBS_TEST_MAIL_USERS needs two users, has %q", users)
	}
	var ok1, ok2 bool
	r.from, r.fromPW, ok1 = strings.Cut(us[0], ":")
	r.to, r.toPW, ok2 = strings.Cut(us[1], ":")
	if !ok1 || !ok2 {
		t.Fatalf("DIBS_TEST_MAIL_USERS must be addr:password,addr:password, not %q", users)
	}
	if r.tls == "" {
		r.tls = TLSNone
	}
	return r
}

func (r *realServers) sender(t *testing.T, edit func(*SMTPConfig)) *Sender {
	t.Helper()
	cfg := SMTPConfig{Server: r.smtp, User: r.from, Password: r.fromPW, TLS: r.tls, From: r.from, CAFile: r.ca,
		Timeout: time.Minute}
	if edit != nil {
		edit(&cfg)
	}
	s, err := NewSender(cfg)
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	return s
}

func (r *realServers) poller(t *testing.T, edit func(*IMAPConfig)) *Poller {
	t.Helper()
	cfg := IMAPConfig{Server: r.imap, User: r.to, Password: r.toPW, TLS: r.tls, CAFile: r.ca, Timeout: time.Minute}
	if edit != nil {
		edit(&cfg)
	}
	p, err := NewPoller(cfg)
	if err != nil {
		t.Fatalf("NewPoller: %v", err)
	}
	return p
}

// client logs in to the receiver's INBOX for inspection.
func (r *realServers) client(t *testing.T) *imapclient.Client {
	t.Helper()
	var c *imapclient.Client
	var err error
	if r.tls == TLSStartTLS {
		cfg, cerr := tlsConfig("127.0.0.1", nil, r.ca)
		if cerr != nil {
			t.Fatal(cerr)
		}
		c, err = imapclient.DialStartTLS(r.imap, &imapclient.Options{TLSConfig: cfg})
	} else {
		c, err = imapclient.DialInsecure(r.imap, nil)
	}
	if err != nil {
		t.Fatalf("IMAP: %v", err)
	}
	if err := c.Login(r.to, r.toPW).Wait(); err != nil {
		c.Close()
		t.Fatalf("IMAP login: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		c.Close()
		t.Fatalf("IMAP select: %v", err)
	}
	return c
}

// uidsWith lists the INBOX mails whose header field contains value (\Deleted ones aside).
func uidsWith(t *testing.T, c *imapclient.Client, field, value string) []imap.UID {
	t.Helper()
	sd, err := c.UIDSearch(&imap.SearchCriteria{
		Header:  []imap.SearchCriteriaHeaderField{{Key: field, Value: value}},
		NotFlag: []imap.Flag{imap.FlagDeleted},
	}, nil).Wait()
	if err != nil {
		t.Fatalf("IMAP search: %v", err)
	}
	return sd.AllUIDs()
}

// purge removes the test's own mails (those whose field contains value) when it ends.
func (r *realServers) purge(t *testing.T, field, value string) {
	t.Cleanup(func() {
		c := r.client(t)
		defer c.Close()
		uids := uidsWith(t, c, field, value)
		if len(uids) == 0 {
			return
		}
		set := imap.UIDSetNum(uids...)
		if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			t.Errorf("purge: %v", err)
		}
		if err := c.UIDExpunge(set).Close(); err != nil {
			t.Errorf("purge: %v", err)
		}
	})
}

// waitFor waits until at least n mails for key sit in the INBOX: Postfix delivers after Send
// returned.
func (r *realServers) waitFor(t *testing.T, key string, n int) {
	t.Helper()
	c := r.client(t)
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := len(uidsWith(t, c, HeaderKey, key))
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d mails for key %s arrived within 60 s (see the Postfix log)", got, n, key)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomKey(t *testing.T) string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReal_RoundTrip_BinaryAnd20MB(t *testing.T) {
	r := realEnv(t)
	key := randomKey(t)
	r.purge(t, HeaderKey, key)
	s, p := r.sender(t, nil), r.poller(t, nil)
	dst := queue.Endpoint{Peer: "bob", Key: key, Addr: r.to}

	bin := queuetest.BinaryContent()
	big := randomBytes(t, 20<<20)
	start := time.Now()
	for name, data := range map[string][]byte{"real-bin.pgp": bin, "real-20mb.pgp": big, "real-empty.pgp": nil} {
		if err := s.Send(t.Context(), dst, testMsg(name, data)); err != nil {
			t.Fatalf("Send %s: %v", name, err)
		}
	}
	t.Logf("sent 3 mails (20 MiB file in %d bytes of mail) in %v", MailSize(20<<20)-MailOverhead, time.Since(start))
	r.waitFor(t, key, 3)

	st := newStore()
	start = time.Now()
	n, err := p.Poll(t.Context(), queue.Endpoint{Key: key}, st.sink)
	if err != nil || n != 3 {
		t.Fatalf("Poll = %d, %v; want 3", n, err)
	}
	t.Logf("fetched them in %v", time.Since(start))
	if !bytes.Equal(st.get(t, "real-bin.pgp"), bin) {
		t.Error("binary file altered on the way")
	}
	if got := st.get(t, "real-20mb.pgp"); sha256.Sum256(got) != sha256.Sum256(big) {
		t.Errorf("20 MiB file altered: %d bytes back", len(got))
	}
	if got := st.get(t, "real-empty.pgp"); len(got) != 0 {
		t.Errorf("empty file came back with %d bytes", len(got))
	}
	c := r.client(t)
	defer c.Close()
	if left := uidsWith(t, c, HeaderKey, key); len(left) != 0 {
		t.Fatalf("%d mails left after the poll", len(left))
	}
}

// injectForeign sends a plain mail (not from dibs) to the receiver, marked by id.
func (r *realServers) injectForeign(t *testing.T, id string) {
	t.Helper()
	raw := "From: carol@dibs.test\r\nTo: " + r.to + "\r\nSubject: not for dibs\r\nMessage-ID: <" + id + "@dibs.test>\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\n\r\nA mail for a human.\r\n"
	var c *smtp.Client
	var err error
	if r.smtpPlain != "" {
		c, err = smtp.Dial(r.smtpPlain)
	} else {
		var stop func() bool
		if c, stop, err = r.sender(t, nil).connect(t.Context()); err == nil {
			defer stop()
			err = c.Auth(sasl.NewPlainClient("", r.from, r.fromPW))
		}
	}
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
	defer c.Close()
	if err := c.SendMail("carol@dibs.test", []string{r.to}, strings.NewReader(raw)); err != nil {
		t.Fatalf("inject: %v", err)
	}
}

func TestReal_OtherMailUntouched_SinkFailure_WrongPassword(t *testing.T) {
	r := realEnv(t)
	key, other := randomKey(t), randomKey(t)
	foreignID := "foreign-" + strings.ToLower(key)
	r.purge(t, HeaderKey, key)
	r.purge(t, HeaderKey, other)
	r.purge(t, "Message-ID", foreignID)
	s, p := r.sender(t, nil), r.poller(t, nil)

	r.injectForeign(t, foreignID)
	if err := s.Send(t.Context(), queue.Endpoint{Key: other, Addr: r.to}, testMsg("other.pgp", []byte("o"))); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(t.Context(), queue.Endpoint{Key: key, Addr: r.to}, testMsg("mine.pgp", []byte("m"))); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, key, 1)
	r.waitFor(t, other, 1)
	c := r.client(t)
	defer c.Close()
	for range 600 {
		if len(uidsWith(t, c, "Message-ID", foreignID)) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	st := newStore()
	st.fail = errDisk
	if n, err := p.Poll(t.Context(), queue.Endpoint{Key: key}, st.sink); !errors.Is(err, errDisk) || n != 0 {
		t.Fatalf("Poll with a failing sink = %d, %v", n, err)
	}
	st.fail = nil
	if n, err := p.Poll(t.Context(), queue.Endpoint{Key: key}, st.sink); err != nil || n != 1 {
		t.Fatalf("Poll after the sink failure = %d, %v; want 1", n, err)
	}

	// The foreign mail and the other key's mail are still there, with no flag set.
	for _, probe := range [][2]string{{"Message-ID", foreignID}, {HeaderKey, other}} {
		uids := uidsWith(t, c, probe[0], probe[1])
		if len(uids) != 1 {
			t.Fatalf("mail with %s %s: %d found, want 1", probe[0], probe[1], len(uids))
		}
		bufs, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{Flags: true, UID: true}).Collect()
		if err != nil || len(bufs) != 1 {
			t.Fatalf("fetch flags: %v", err)
		}
		if len(bufs[0].Flags) != 0 {
			t.Errorf("mail with %s %s got flags %v", probe[0], probe[1], bufs[0].Flags)
		}
	}

	bad := r.sender(t, func(c *SMTPConfig) { c.Password = "wrong" })
	wantPermanent(t, bad.Send(t.Context(), queue.Endpoint{Key: key, Addr: r.to}, testMsg("x.pgp", nil)), "SMTP wrong password")
	badP := r.poller(t, func(c *IMAPConfig) { c.Password = "wrong" })
	_, err := badP.Poll(t.Context(), queue.Endpoint{Key: key}, st.sink)
	wantPermanent(t, err, "IMAP wrong password")
	wantPermanent(t, s.Send(t.Context(), queue.Endpoint{Key: key, Addr: "nobody@dibs.test"}, testMsg("x.pgp", nil)),
		"unknown recipient")
	own := r.sender(t, func(c *SMTPConfig) { c.MaxMessageSize = 100 << 10 })
	wantPermanent(t, own.Send(t.Context(), queue.Endpoint{Key: key, Addr: r.to}, testMsg("x.pgp", make([]byte, 100<<10))),
		"over MaxMessageSize")
}

func TestReal_DoneMailbox(t *testing.T) {
	r := realEnv(t)
	key := randomKey(t)
	r.purge(t, HeaderKey, key)
	done := "dibs-test-done"
	p := r.poller(t, func(c *IMAPConfig) { c.DoneMailbox = done })
	if err := r.sender(t, nil).Send(t.Context(), queue.Endpoint{Key: key, Addr: r.to}, testMsg("d.pgp", []byte("d"))); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, key, 1)
	if n, err := p.Poll(t.Context(), queue.Endpoint{Key: key}, newStore().sink); n != 1 || err != nil {
		t.Fatalf("Poll = %d, %v", n, err)
	}
	c := r.client(t)
	defer c.Close()
	if _, err := c.Select(done, nil).Wait(); err != nil {
		t.Fatalf("select %s: %v", done, err)
	}
	uids := uidsWith(t, c, HeaderKey, key)
	if len(uids) != 1 {
		t.Fatalf("%s holds %d of our mails, want 1", done, len(uids))
	}
	set := imap.UIDSetNum(uids...)
	_ = c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close()
	_ = c.UIDExpunge(set).Close()
}

// TestReal_Conformance runs the transport suite through Postfix and Dovecot. Postfix delivers
// asynchronously, so Receive first waits until every mail sent and not yet taken is in the
// INBOX.
func TestReal_Conformance(t *testing.T) {
	r := realEnv(t)
	queuetest.Run(t, func(t *testing.T) queuetest.Pair {
		key := randomKey(t)
		r.purge(t, HeaderKey, key)
		s, p := r.sender(t, nil), r.poller(t, nil)
		var mu sync.Mutex
		pending := 0
		return queuetest.Pair{
			Send: func(ctx context.Context, msg queue.Message) error {
				err := s.Send(ctx, queue.Endpoint{Key: key, Addr: r.to}, msg)
				if err == nil {
					mu.Lock()
					pending++
					mu.Unlock()
				}
				return err
			},
			Receive: func(ctx context.Context, sink queue.Sink) (int, error) {
				mu.Lock()
				want := pending
				mu.Unlock()
				if ctx.Err() == nil && want > 0 {
					r.waitFor(t, key, want)
				}
				n, err := p.Poll(ctx, queue.Endpoint{Key: key}, sink)
				mu.Lock()
				pending = max(0, pending-n)
				mu.Unlock()
				return n, err
			},
		}
	})
}
