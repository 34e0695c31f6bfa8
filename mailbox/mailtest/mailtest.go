// Package mailtest runs an in-process mail server for tests: SMTP submission (go-smtp) that
// delivers into per-user IMAP mailboxes (go-imap's imapmemserver), both on 127.0.0.1 with
// STARTTLS (a self-signed certificate made per server) and AUTH required.
//
//	srv := mailtest.Start(t, mailtest.User{Addr: "bob@dibs.test", Password: "bob-pw"})
//	// SMTP: srv.SMTPAddr, IMAP: srv.IMAPAddr, trust srv.RootCAs (or the file srv.CAFile)
//
// Servers close in t.Cleanup.
package mailtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/mailbox/saslogin"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// User is a mail account: Addr is both its address and its login name.
type User struct {
	Addr, Password string
}

// Options change the server's defaults.
type Options struct {
	// MaxMessageBytes is the SMTP size limit, advertised with SIZE; default 64 MiB,
	// negative for none.
	MaxMessageBytes int64
	// InsecureAuth allows AUTH and LOGIN without TLS (for TLS "none" on loopback).
	InsecureAuth bool
	// SMTPAuth lists the SMTP AUTH mechanisms offered: PLAIN and/or LOGIN; default PLAIN.
	SMTPAuth []string
	// NoMove makes the IMAP server advertise only IMAP4rev1 + UIDPLUS: no MOVE.
	NoMove bool
}

// Server is a running SMTP + IMAP pair.
type Server struct {
	// SMTPAddr and IMAPAddr are host:port on 127.0.0.1.
	SMTPAddr, IMAPAddr string
	// RootCAs trusts the servers' certificate; CAFile holds it in PEM.
	RootCAs *x509.CertPool
	CAFile  string

	opt   Options
	users map[string]*account
	smtp  *smtp.Server
	imap  *imapserver.Server

	dropAfter atomic.Int64 // >= 0: drop the next IMAP body FETCH after that many bytes
	failData  atomic.Int32 // != 0: answer the next DATA with this SMTP code
	delivered atomic.Int64 // mails delivered over SMTP
}

type account struct {
	User
	box *imapmemserver.User
}

// Start starts a server with default Options for users.
func Start(t testing.TB, users ...User) *Server {
	return StartWith(t, Options{}, users...)
}

// StartWith starts a server with opt for users. Each user has an empty INBOX.
func StartWith(t testing.TB, opt Options, users ...User) *Server {
	t.Helper()
	if opt.MaxMessageBytes == 0 {
		opt.MaxMessageBytes = 64 << 20
	}
	if len(opt.SMTPAuth) == 0 {
		opt.SMTPAuth = []string{sasl.Plain}
	}
	s := &Server{opt: opt, users: map[string]*account{}}
	s.dropAfter.Store(-1)
	for _, u := range users {
		box := imapmemserver.NewUser(u.Addr, u.Password)
		if err := box.Create("INBOX", nil); err != nil {
			t.Fatalf("mailtest: create INBOX: %v", err)
		}
		s.users[strings.ToLower(u.Addr)] = &account{User: u, box: box}
	}
	cert, pemBytes, err := selfSigned()
	if err != nil {
		t.Fatalf("mailtest: certificate: %v", err)
	}
	s.RootCAs = x509.NewCertPool()
	s.RootCAs.AppendCertsFromPEM(pemBytes)
	s.CAFile = filepath.Join(t.TempDir(), "mailtest-ca.pem")
	if err := os.WriteFile(s.CAFile, pemBytes, 0o644); err != nil {
		t.Fatalf("mailtest: %v", err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	quiet := log.New(io.Discard, "", 0)

	// IMAP
	caps := imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}}
	if opt.NoMove {
		caps = imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapUIDPlus: {}}
	}
	s.imap = imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			fc, _ := c.NetConn().(*faultConn)
			return &imapSession{s: s, conn: fc}, nil, nil
		},
		Caps:         caps,
		TLSConfig:    tlsCfg,
		InsecureAuth: opt.InsecureAuth,
		Logger:       quiet,
	})
	iln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mailtest: %v", err)
	}
	s.IMAPAddr = iln.Addr().String()

	// SMTP
	s.smtp = smtp.NewServer(&backend{s: s})
	s.smtp.Domain = "mail.dibs.test"
	s.smtp.TLSConfig = tlsCfg
	s.smtp.AllowInsecureAuth = opt.InsecureAuth
	if opt.MaxMessageBytes > 0 {
		s.smtp.MaxMessageBytes = opt.MaxMessageBytes
	} else {
		s.smtp.MaxMessageBytes = 0
	}
	s.smtp.MaxRecipients = 50
	s.smtp.ReadTimeout, s.smtp.WriteTimeout = time.Minute, time.Minute
	s.smtp.ErrorLog = quiet
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		iln.Close()
		t.Fatalf("mailtest: %v", err)
	}
	s.SMTPAddr = sln.Addr().String()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.imap.Serve(&faultListener{Listener: iln, s: s}) }()
	go func() { defer wg.Done(); _ = s.smtp.Serve(sln) }()
	t.Cleanup(func() {
		s.smtp.Close()
		s.imap.Close()
		// A server closed before its Serve goroutine registered the listener would
		// otherwise accept forever.
		sln.Close()
		iln.Close()
		wg.Wait()
	})
	return s
}

// Deliver puts raw into addr's INBOX as if it had arrived by mail.
func (s *Server) Deliver(t testing.TB, addr string, raw []byte) {
	t.Helper()
	a := s.users[strings.ToLower(addr)]
	if a == nil {
		t.Fatalf("mailtest: no user %s", addr)
	}
	if _, err := a.box.Append("INBOX", literal{bytes.NewReader(raw)}, &imap.AppendOptions{Time: time.Now()}); err != nil {
		t.Fatalf("mailtest: deliver to %s: %v", addr, err)
	}
}

// Delivered counts the mails accepted over SMTP.
func (s *Server) Delivered() int64 { return s.delivered.Load() }

// Message is one mail as the IMAP server holds it.
type Message struct {
	UID   imap.UID
	Flags []imap.Flag
	Raw   []byte
}

// Has reports whether the message carries flag.
func (m Message) Has(flag imap.Flag) bool {
	for _, f := range m.Flags {
		if strings.EqualFold(string(f), string(flag)) {
			return true
		}
	}
	return false
}

// Messages lists the mails in a mailbox of addr (read over IMAP with BODY.PEEK, so it
// changes nothing).
func (s *Server) Messages(t testing.TB, addr, mailbox string) []Message {
	t.Helper()
	a := s.users[strings.ToLower(addr)]
	if a == nil {
		t.Fatalf("mailtest: no user %s", addr)
	}
	c, err := imapclient.DialStartTLS(s.IMAPAddr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: s.RootCAs}})
	if err != nil {
		t.Fatalf("mailtest: dial IMAP: %v", err)
	}
	defer c.Close()
	if err := c.Login(a.Addr, a.Password).Wait(); err != nil {
		t.Fatalf("mailtest: login: %v", err)
	}
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("mailtest: select %s: %v", mailbox, err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	var seq imap.SeqSet
	seq.AddRange(1, 0) // 1:*
	bufs, err := c.Fetch(seq, &imap.FetchOptions{UID: true, Flags: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatalf("mailtest: fetch: %v", err)
	}
	out := make([]Message, 0, len(bufs))
	for _, b := range bufs {
		var raw []byte
		for _, v := range b.BodySection {
			raw = v.Bytes
		}
		out = append(out, Message{UID: b.UID, Flags: b.Flags, Raw: raw})
	}
	_ = c.Logout().Wait()
	return out
}

// DropNextFetch makes the IMAP server cut the connection after sending about n bytes of the
// next FETCH that returns a message body (counted on the wire, TLS included). One-shot.
func (s *Server) DropNextFetch(n int64) { s.dropAfter.Store(n) }

// FailNextData makes the SMTP server answer the next DATA with code (e.g. 451 or 554).
// One-shot.
func (s *Server) FailNextData(code int) { s.failData.Store(int32(code)) }

// --- IMAP side ---

type imapSession struct {
	*imapmemserver.UserSession // nil until login
	s                          *Server
	conn                       *faultConn
}

func (x *imapSession) Login(username, password string) error {
	a := x.s.users[strings.ToLower(username)]
	if a == nil || a.Password != password {
		return imapserver.ErrAuthFailed
	}
	x.UserSession = imapmemserver.NewUserSession(a.box)
	return nil
}

func (x *imapSession) Close() error {
	if x.UserSession == nil {
		return nil
	}
	return x.UserSession.Close()
}

func (x *imapSession) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if len(options.BodySection) > 0 && x.conn != nil {
		if n := x.s.dropAfter.Swap(-1); n >= 0 {
			x.conn.dropAfter(n)
		}
	}
	return x.UserSession.Fetch(w, numSet, options)
}

type faultListener struct {
	net.Listener
	s *Server
}

func (l *faultListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := &faultConn{Conn: c}
	fc.budget.Store(-1)
	return fc, nil
}

// faultConn closes itself once a byte budget is spent.
type faultConn struct {
	net.Conn
	budget atomic.Int64 // -1: unlimited
}

func (c *faultConn) dropAfter(n int64) { c.budget.Store(n) }

func (c *faultConn) Write(p []byte) (int, error) {
	b := c.budget.Load()
	if b < 0 {
		return c.Conn.Write(p)
	}
	if int64(len(p)) <= b {
		c.budget.Store(b - int64(len(p)))
		return c.Conn.Write(p)
	}
	n, _ := c.Conn.Write(p[:b])
	c.Conn.Close()
	return n, errors.New("mailtest: connection dropped by fault injection")
}

// --- SMTP side ---

type backend struct{ s *Server }

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{s: b.s}, nil }

type smtpSession struct {
	s      *Server
	authed bool
	rcpts  []*account
}

func (x *smtpSession) AuthMechanisms() []string { return x.s.opt.SMTPAuth }

func (x *smtpSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		a := x.s.users[strings.ToLower(user)]
		if a == nil || a.Password != pass {
			return smtp.ErrAuthFailed
		}
		x.authed = true
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return saslogin.NewServer(check), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (x *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if !x.authed {
		return smtp.ErrAuthRequired
	}
	return nil
}

func (x *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	a := x.s.users[strings.ToLower(to)]
	if a == nil {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user " + to}
	}
	x.rcpts = append(x.rcpts, a)
	return nil
}

func (x *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r) // capped by MaxMessageBytes
	if err != nil {
		return err
	}
	if code := x.s.failData.Swap(0); code != 0 {
		return &smtp.SMTPError{Code: int(code), EnhancedCode: smtp.EnhancedCode{int(code) / 100, 0, 0},
			Message: "mailtest: injected failure"}
	}
	for _, a := range x.rcpts {
		if _, err := a.box.Append("INBOX", literal{bytes.NewReader(raw)}, &imap.AppendOptions{Time: time.Now()}); err != nil {
			return err
		}
		x.s.delivered.Add(1)
	}
	return nil
}

func (x *smtpSession) Reset()        { x.rcpts = nil }
func (x *smtpSession) Logout() error { return nil }

type literal struct{ *bytes.Reader }

func (l literal) Size() int64 { return l.Reader.Size() }

// selfSigned makes an ECDSA certificate for 127.0.0.1 and localhost.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "mailtest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost", "mail.dibs.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pemBytes, nil
}
