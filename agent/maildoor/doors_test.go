package maildoor

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/mailbox"
	"github.com/dibs-backup/dibs/queue"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// A go-smtp client (dibs's own Sender) submits to the SMTP door; bob's mail poller, as
// `listen = mail` runs it, fetches the file through the IMAP door, and its expunge
// collects the file from the store.
func TestSMTPToIMAP_DibsPoller(t *testing.T) {
	f := newRelay(t, fixtureOptions{})
	file := sealed(t, "alice", "bob", 50_000)
	bob := string(fp(t, "bob"))
	if err := f.sender("alice", false).Send(t.Context(), queue.Endpoint{Peer: "bob", Key: bob, Addr: addr("bob")}, queueMsg("m1", file)); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := f.waiting("bob"); !bytes.Equal(got["m1"], file) {
		t.Fatalf("store holds %d files for bob, m1 %d bytes; want m1 of %d bytes", len(got), len(got["m1"]), len(file))
	}
	got := collected{}
	n, err := f.poller("bob").Poll(t.Context(), queue.Endpoint{Key: bob}, got.sink)
	if err != nil || n != 1 {
		t.Fatalf("Poll = %d, %v; want 1, nil", n, err)
	}
	if !bytes.Equal(got["m1"], file) {
		t.Fatalf("poller got %v; want m1 unchanged", len(got["m1"]))
	}
	if w := f.waiting("bob"); len(w) != 0 {
		t.Fatalf("after the poll the store still holds %d files for bob", len(w))
	}
	if r := f.refusals(); len(r) != 0 {
		t.Fatalf("refusals: %v", r)
	}
}

// The MX role: a mail relayed without AUTH is taken from the user its envelope sender is.
func TestSMTP_MXWithoutAuth(t *testing.T) {
	f := newRelay(t, fixtureOptions{})
	file := sealed(t, "alice", "bob", 3000)
	if err := f.sender("alice", true).Send(t.Context(), queue.Endpoint{Key: string(fp(t, "bob")), Addr: addr("bob")}, queueMsg("mx1", file)); err != nil {
		t.Fatalf("Send as MX: %v", err)
	}
	if got := f.waiting("bob"); !bytes.Equal(got["mx1"], file) {
		t.Fatalf("store does not hold mx1 for bob: %v", len(got))
	}
}

// HTTP deposit → IMAP fetch, SMTP in → HTTP poll, and IMAP → nothing left for HTTP.
func TestCrossings(t *testing.T) {
	f := newRelay(t, fixtureOptions{})
	ctx := t.Context()
	bob, alice := string(fp(t, "bob")), string(fp(t, "alice"))

	// carol speaks HTTP only; she deposits for bob, who reads mail.
	fromCarol := sealed(t, "carol", "bob", 20_000)
	if err := f.httpClient("carol").Send(ctx, queue.Endpoint{Peer: "bob", Key: bob, Addr: f.httpURL}, queueMsg("h1", fromCarol)); err != nil {
		t.Fatalf("HTTP deposit: %v", err)
	}
	got := collected{}
	if n, err := f.poller("bob").Poll(ctx, queue.Endpoint{Key: bob}, got.sink); err != nil || n != 1 || !bytes.Equal(got["h1"], fromCarol) {
		t.Fatalf("IMAP poll after HTTP deposit = %d, %v, h1 %d bytes", n, err, len(got["h1"]))
	}

	// bob mails alice; alice collects over HTTP.
	fromBob := sealed(t, "bob", "alice", 30_000)
	if err := f.sender("bob", false).Send(ctx, queue.Endpoint{Key: alice, Addr: addr("alice")}, queueMsg("s1", fromBob)); err != nil {
		t.Fatalf("SMTP: %v", err)
	}
	got = collected{}
	if n, err := f.httpClient("alice").Poll(ctx, queue.Endpoint{Key: alice, Addr: f.httpURL}, got.sink); err != nil || n != 1 || !bytes.Equal(got["s1"], fromBob) {
		t.Fatalf("HTTP poll after SMTP = %d, %v, s1 %d bytes", n, err, len(got["s1"]))
	}
	// and nothing is left for alice's mailbox either.
	got = collected{}
	if n, err := f.poller("alice").Poll(ctx, queue.Endpoint{Key: alice}, got.sink); err != nil || n != 0 {
		t.Fatalf("IMAP poll after HTTP collection = %d, %v", n, err)
	}
}

// An IMAP client other than dibs's sees a proper mail: its size, envelope, structure and
// body are the mail mailbox.Sender would have sent; a file collected over HTTP during the
// session is expunged; a file deposited during it appears.
func TestIMAP_GenericClient(t *testing.T) {
	f := newRelay(t, fixtureOptions{})
	ctx := t.Context()
	bob := string(fp(t, "bob"))
	file := sealed(t, "carol", "bob", 10_000)
	if err := f.httpClient("carol").Send(ctx, queue.Endpoint{Key: bob, Addr: f.httpURL}, queueMsg("g1", file)); err != nil {
		t.Fatal(err)
	}
	c, err := imapclient.DialTLS(f.imaps, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: f.roots}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("bob", password("bob")).Wait(); err != nil {
		t.Fatalf("login by name: %v", err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("SELECT = %+v, %v", sel, err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, RFC822Size: true, Envelope: true,
		BodyStructure: &imap.FetchItemBodyStructure{}, Flags: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}, {Specifier: imap.PartSpecifierHeader, Peek: true}, {Part: []int{2}, Peek: true}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH: %v, %d messages", err, len(msgs))
	}
	m := msgs[0]
	var whole, header, part2 []byte
	for _, sb := range m.BodySection {
		sec, b := sb.Section, sb.Bytes
		switch {
		case sec.Specifier == imap.PartSpecifierHeader:
			header = b
		case len(sec.Part) == 1:
			part2 = b
		default:
			whole = b
		}
	}
	if int64(len(whole)) != m.RFC822Size {
		t.Errorf("BODY[] is %d bytes, RFC822.SIZE says %d", len(whole), m.RFC822Size)
	}
	name, size, att, err := mailbox.OpenMail(bytes.NewReader(whole), bob, 0)
	if err != nil || name != "g1" || size != int64(len(file)) {
		t.Fatalf("the mail served: OpenMail = %q, %d, %v", name, size, err)
	}
	if b, err := readAll(att); err != nil || !bytes.Equal(b, file) {
		t.Fatalf("the mail's attachment is not the file: %v", err)
	}
	if !bytes.HasPrefix(whole, header) || !bytes.Contains(header, []byte("X-Dibs-Key: "+bob)) {
		t.Errorf("BODY[HEADER] is not the mail's header:\n%s", header)
	}
	if !bytes.Contains(whole, part2) || len(part2) < len(file) {
		t.Errorf("BODY[2] (%d bytes) is not the attachment's base64", len(part2))
	}
	if m.Envelope == nil || m.Envelope.Subject != "dibs message g1" || len(m.Envelope.To) != 1 || m.Envelope.To[0].Mailbox != "bob" {
		t.Errorf("ENVELOPE = %+v", m.Envelope)
	}
	mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || len(mp.Children) != 2 {
		t.Fatalf("BODYSTRUCTURE = %#v", m.BodyStructure)
	}
	if att := mp.Children[1].(*imap.BodyStructureSinglePart); int(att.Size) != len(part2) {
		t.Errorf("BODYSTRUCTURE says the attachment is %d bytes, BODY[2] is %d", att.Size, len(part2))
	}
	if slices.Contains(m.Flags, imap.FlagSeen) {
		t.Errorf("BODY.PEEK set \\Seen: %v", m.Flags)
	}

	// A file deposited now shows up at the next command; the first, collected over HTTP,
	// is expunged.
	file2 := sealed(t, "alice", "bob", 500)
	if err := f.sender("alice", false).Send(ctx, queue.Endpoint{Key: bob, Addr: addr("bob")}, queueMsg("g2", file2)); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Remove(fp(t, "bob"), "g1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	sd, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: mailbox.HeaderMessage, Value: ""}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if uids := sd.AllUIDs(); len(uids) != 1 || uids[0] != m.UID+1 {
		t.Fatalf("after NOOP the mailbox holds UIDs %v; want only %d (g2)", uids, m.UID+1)
	}
	// STORE \Deleted and EXPUNGE collect it.
	if err := c.Store(imap.UIDSetNum(m.UID+1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if len(f.waiting("bob")) != 1 {
		t.Fatal("\\Deleted alone removed the file")
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	if w := f.waiting("bob"); len(w) != 0 {
		t.Fatalf("EXPUNGE left %d files", len(w))
	}
}

func readAll(r interface{ Read([]byte) (int, error) }) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

// Every refusal of the SMTP door, with its answer.
func TestSMTP_Refusals(t *testing.T) {
	f := newRelay(t, fixtureOptions{quota: 30_000, maxFile: 20_000})
	bob := fp(t, "bob")
	good := func(name string, size int) []byte {
		return rawMail(t, addr("alice"), addr("bob"), name, bob, sealed(t, "alice", "bob", size))
	}
	for _, tc := range []struct {
		name, login, from, to string
		raw                   []byte
		step, code, reason    string
	}{
		{"unknown recipient", "alice", addr("alice"), addr("nobody"), good("r1", 100), "RCPT", "550 5.1.1", "unknown_recipient"},
		{"open relay attempt, authenticated", "alice", addr("alice"), "someone@elsewhere.example", good("r2", 100), "RCPT", "550 5.7.1", "relay_denied"},
		{"open relay attempt, no AUTH", "", addr("alice"), "someone@elsewhere.example", good("r3", 100), "RCPT", "550 5.7.1", "relay_denied"},
		{"unknown sender without AUTH", "", "mallory@evil.example", addr("bob"), good("r4", 100), "MAIL", "550 5.7.1", "unknown_sender"},
		{"not encrypted to the recipient", "alice", addr("alice"), addr("bob"),
			rawMail(t, addr("alice"), addr("bob"), "r5", bob, sealed(t, "alice", "carol", 100)), "DATA", "554 5.7.1", "not_encrypted"},
		{"not an OpenPGP message", "alice", addr("alice"), addr("bob"),
			rawMail(t, addr("alice"), addr("bob"), "r6", bob, bytes.Repeat([]byte("plain text "), 50)), "DATA", "554 5.7.1", "not_encrypted"},
		{"dibs mail for another key", "alice", addr("alice"), addr("bob"),
			rawMail(t, addr("alice"), addr("bob"), "r7", fp(t, "alice"), sealed(t, "alice", "bob", 100)), "DATA", "554 5.6.0", "bad_mail"},
		{"not a dibs mail", "alice", addr("alice"), addr("bob"),
			[]byte("From: alice@relay.test\r\nTo: bob@relay.test\r\nSubject: hi\r\n\r\nhello\r\n"), "DATA", "554 5.6.0", "bad_mail"},
		{"oversized file", "alice", addr("alice"), addr("bob"), good("r8", 25_000), "DATA", "552 5.3.4", "too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.smtpClient(tc.login)
			step, err := transaction(c, tc.from, tc.to, tc.raw)
			if step != tc.step || smtpCode(err) != tc.code {
				t.Fatalf("%s: %v; want %s refused with %s", step, err, tc.step, tc.code)
			}
			if r := f.refusals(); !slices.Contains(r, "smtp "+tc.reason) {
				t.Fatalf("refusals reported: %v; want smtp %s", r, tc.reason)
			}
		})
	}
	if w := f.waiting("bob"); len(w) != 0 {
		t.Fatalf("refused mails left %d files for bob", len(w))
	}

	t.Run("over quota", func(t *testing.T) {
		for i, want := range []string{"", "", "452 4.2.2"} { // files of 14 KB and a little, quota 30 KB
			c := f.smtpClient("alice")
			name := []string{"q1", "q2", "q3"}[i]
			_, err := transaction(c, addr("alice"), addr("bob"), rawMail(t, addr("alice"), addr("bob"), name, bob, sealed(t, "alice", "bob", 14_000+i)))
			if smtpCode(err) != want {
				t.Fatalf("mail %d: %v; want %q", i+1, err, want)
			}
		}
		if r := f.refusals(); !slices.Contains(r, "smtp over_quota") {
			t.Fatalf("refusals: %v", r)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		c, err := smtpDial(f)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(plain("alice", "wrong")); smtpCode(err) != "535 5.7.8" {
			t.Fatalf("AUTH with a wrong password: %v; want 535 5.7.8", err)
		}
	})

	t.Run("second recipient", func(t *testing.T) {
		c := f.smtpClient("alice")
		if err := c.Mail(addr("alice"), nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(addr("bob"), nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(addr("alice"), nil); smtpCode(err) != "452 4.5.3" {
			t.Fatalf("second RCPT: %v; want 452 4.5.3", err)
		}
	})
}

// The IMAP door's refusals: a wrong password, and a user trying to read another's files.
func TestIMAP_Refusals(t *testing.T) {
	f := newRelay(t, fixtureOptions{})
	ctx := t.Context()
	bob := string(fp(t, "bob"))
	file := sealed(t, "carol", "bob", 1000)
	if err := f.httpClient("carol").Send(ctx, queue.Endpoint{Key: bob, Addr: f.httpURL}, queueMsg("secret-of-bob", file)); err != nil {
		t.Fatal(err)
	}
	dial := func() *imapclient.Client {
		c, err := imapclient.DialTLS(f.imaps, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: f.roots}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	var ie *imap.Error
	c := dial()
	err := c.Login(addr("bob"), "wrong").Wait()
	if !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo || ie.Code != imap.ResponseCodeAuthenticationFailed {
		t.Fatalf("LOGIN with a wrong password: %v; want NO [AUTHENTICATIONFAILED]", err)
	}
	if err := c.Login(addr("bob"), password("alice")).Wait(); err == nil {
		t.Fatal("bob logged in with alice's password")
	}
	if r := f.refusals(); !slices.Contains(r, "imap auth_failed") {
		t.Fatalf("refusals: %v", r)
	}

	a := dial()
	if err := a.Login(addr("alice"), password("alice")).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bob", addr("bob"), bob, "INBOX/bob", "../bob"} {
		_, err := a.Select(name, nil).Wait()
		if !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo {
			t.Fatalf("alice: SELECT %q = %v; want NO", name, err)
		}
	}
	sel, err := a.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 0 {
		t.Fatalf("alice's INBOX: %+v, %v; want empty (bob's file is bob's)", sel, err)
	}
	got := collected{}
	if n, err := f.poller("alice").Poll(ctx, queue.Endpoint{Key: bob}, got.sink); n != 0 || err != nil {
		t.Fatalf("alice's poller asking for bob's key took %d files (%v)", n, err)
	}
	if w := f.waiting("bob"); len(w) != 1 {
		t.Fatalf("bob's file is gone after alice's attempts: %d left", len(w))
	}
	if err := a.Create("bob", nil).Wait(); err == nil {
		t.Fatal("CREATE worked")
	}
}

// Login without TLS is for loopback clients only; from beyond, LOGIN and AUTH are refused.
func TestCleartextLoginOnlyFromLoopback(t *testing.T) {
	f := newRelay(t, fixtureOptions{})
	c, err := imapclient.DialInsecure(f.imap, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", password("alice")).Wait(); err != nil {
		t.Fatalf("loopback LOGIN in clear text: %v", err)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{{"127.0.0.1:4000", true}, {"[::1]:4000", true}, {"192.0.2.1:4000", false}, {"[2001:db8::1]:4000", false}} {
		if got := secure(fakeConn{remote: tc.addr}, false); got != tc.want {
			t.Errorf("secure(%s) = %v; want %v", tc.addr, got, tc.want)
		}
	}
	if !secure(fakeConn{remote: "192.0.2.1:4000"}, true) {
		t.Error("secure over TLS = false")
	}
}

func smtpDial(f *relayFixture) (*smtp.Client, error) {
	return smtp.DialStartTLS(f.smtp, &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1"})
}

func plain(user, pass string) sasl.Client { return sasl.NewPlainClient("", user, pass) }

// fakeConn is a connection from remote.
type fakeConn struct {
	net.Conn
	remote string
}

func (c fakeConn) RemoteAddr() net.Addr {
	a, _ := net.ResolveTCPAddr("tcp", c.remote)
	return a
}

// AUTH LOGIN works as PLAIN does; a SIZE announced over the limit is refused at MAIL; the
// same mail delivered twice (a sender retrying after a lost 250) is one file.
func TestSMTP_LoginSizeAndDuplicates(t *testing.T) {
	f := newRelay(t, fixtureOptions{maxFile: 20_000})
	c, err := smtpDial(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewLoginClient("alice", password("alice"))); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	if err := c.Mail(addr("alice"), &smtp.MailOptions{Size: 10 << 20}); smtpCode(err) != "552 5.3.4" {
		t.Fatalf("MAIL with SIZE of 10 MiB: %v; want 552 5.3.4", err)
	}
	c.Reset()
	raw := rawMail(t, addr("alice"), addr("bob"), "dup", fp(t, "bob"), sealed(t, "alice", "bob", 700))
	for i := range 2 {
		if step, err := transaction(c, addr("alice"), addr("bob"), raw); err != nil {
			t.Fatalf("delivery %d: %s: %v", i+1, step, err)
		}
	}
	if w := f.waiting("bob"); len(w) != 1 || w["dup"] == nil {
		t.Fatalf("two deliveries of one mail left %d files", len(w))
	}
}

// A client in IDLE hears of a file deposited meanwhile through another door.
func TestIMAP_IdleSeesNewFiles(t *testing.T) {
	f := newRelay(t, fixtureOptions{})
	exists := make(chan uint32, 8)
	c, err := imapclient.DialTLS(f.imaps, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: f.roots},
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				select {
				case exists <- *d.NumMessages:
				default:
				}
			}
		}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("bob", password("bob")).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	file := sealed(t, "carol", "bob", 800)
	if err := f.httpClient("carol").Send(t.Context(), queue.Endpoint{Key: string(fp(t, "bob")), Addr: f.httpURL}, queueMsg("i1", file)); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("EXISTS %d; want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no EXISTS within 10 s of a deposit")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
}
