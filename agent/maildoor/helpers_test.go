package maildoor

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/mailbox"
	"github.com/dibs-backup/dibs/pgpmsg"
	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

const domain = "relay.test"

func addr(name string) string     { return name + "@" + domain }
func password(name string) string { return name + "-secret" }

func fp(t testing.TB, name string) pgpmsg.Fingerprint {
	return pgpmsgtest.Identity(t, name).Fingerprint()
}

// relayFixture is one relay store behind its three doors: HTTP, SMTP (STARTTLS offered)
// and IMAP (over TLS, and plain for loopback clients).
type relayFixture struct {
	t       testing.TB
	dir     string
	store   *relay.DirStore
	users   *Users
	httpURL string
	smtp    string // SMTP door, host:port
	imaps   string // IMAP door over TLS
	imap    string // IMAP door in clear text (loopback)
	roots   *x509.CertPool

	mu      sync.Mutex
	refused []string // "door reason"
}

type fixtureOptions struct {
	quota, maxFile int64
}

// usersTOML is a users file for names: each with its fixture key, name@relay.test and
// password(name), bcrypt-hashed (argon2id for "bob", to read both kinds).
func usersTOML(t testing.TB, names ...string) string {
	var b strings.Builder
	for _, n := range names {
		var hash string
		if n == "bob" {
			hash = "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0$" + argonB64(t, password(n), "saltsaltsalt")
		} else {
			h, err := bcrypt.GenerateFromPassword([]byte(password(n)), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			hash = string(h)
		}
		fmt.Fprintf(&b, "[[user]]\nname = %q\nkey = %q\nmail = %q\npassword = %q\n\n", n, fp(t, n), addr(n), hash)
	}
	return b.String()
}

func argonB64(t testing.TB, pw, salt string) string {
	return base64.RawStdEncoding.EncodeToString(argon2.IDKey([]byte(pw), []byte(salt), 1, 1024, 1, 32))
}

func newRelay(t testing.TB, o fixtureOptions) *relayFixture {
	t.Helper()
	dir := t.TempDir()
	f := &relayFixture{t: t, dir: dir}
	var allow bytes.Buffer
	for _, n := range []string{"alice", "bob", "carol"} { // carol speaks HTTP only: no user
		if err := pgpmsgtest.Key(t, n).WriteArmored(&allow); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "allow.asc"), allow.String())
	writeFile(t, filepath.Join(dir, "users.toml"), usersTOML(t, "alice", "bob"))
	var err error
	f.store, err = relay.OpenDirStore(filepath.Join(dir, "store"), relay.DirOptions{AllowFile: filepath.Join(dir, "allow.asc"),
		Quota: o.quota, MaxFileSize: o.maxFile})
	if err != nil {
		t.Fatal(err)
	}
	if f.users, err = OpenUsers(filepath.Join(dir, "users.toml")); err != nil {
		t.Fatal(err)
	}
	cert, pool := selfSigned(t)
	f.roots = pool
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	opts := Options{Store: f.store, Users: f.users, MaxFileSize: o.maxFile, TLS: tlsConf, Hostname: "mx." + domain,
		Timeout: 20 * time.Second,
		Refused: func(door, reason string, err error) {
			f.mu.Lock()
			f.refused = append(f.refused, door+" "+reason)
			f.mu.Unlock()
		}}

	hs := httptest.NewServer(relay.NewServer(f.store, relay.ServerOptions{MaxFileSize: o.maxFile}))
	t.Cleanup(hs.Close)
	f.httpURL = hs.URL

	s := NewSMTP(opts)
	sln := listen(t)
	f.smtp = sln.Addr().String()
	go s.Serve(sln)
	t.Cleanup(func() { s.Close() })

	d := NewIMAP(opts)
	iln, pln := listen(t), listen(t)
	f.imaps, f.imap = iln.Addr().String(), pln.Addr().String()
	go d.Serve(tls.NewListener(iln, tlsConf))
	go d.Serve(pln)
	t.Cleanup(func() { d.Close() })
	return f
}

func listen(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// refusals returns the refusals the doors reported, and forgets them.
func (f *relayFixture) refusals() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.refused
	f.refused = nil
	return r
}

// waiting is what the store holds for name: file name → bytes.
func (f *relayFixture) waiting(name string) map[string][]byte {
	f.t.Helper()
	es, err := f.store.List(fp(f.t, name))
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range es {
		rc, _, err := f.store.Open(fp(f.t, name), e.Name)
		if err != nil {
			f.t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			f.t.Fatal(err)
		}
		out[e.Name] = b
	}
	return out
}

// sender is a dibs mail sender of user name: AUTH over STARTTLS, or with mx, no AUTH
// and no TLS (a corporate server relaying to the relay as the domain's MX).
func (f *relayFixture) sender(name string, mx bool) *mailbox.Sender {
	cfg := mailbox.SMTPConfig{Server: f.smtp, User: name, Password: password(name), TLS: mailbox.TLSStartTLS,
		From: addr(name), RootCAs: f.roots, Timeout: 20 * time.Second}
	if mx {
		cfg.User, cfg.Password, cfg.TLS = "", "", mailbox.TLSNone
	}
	s, err := mailbox.NewSender(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// poller is user name's IMAP poller, over TLS.
func (f *relayFixture) poller(name string) *mailbox.Poller {
	p, err := mailbox.NewPoller(mailbox.IMAPConfig{Server: f.imaps, User: addr(name), Password: password(name),
		TLS: mailbox.TLSImplicit, RootCAs: f.roots, Timeout: 20 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *relayFixture) httpClient(name string) *relay.Client {
	return &relay.Client{ID: pgpmsgtest.Identity(f.t, name)}
}

func queueMsg(name string, data []byte) queue.Message {
	return queue.Message{Name: name, Size: int64(len(data)),
		Body: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

// collected is a queue.Sink that keeps what it is handed.
type collected map[string][]byte

func (c collected) sink(name string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	c[name] = b
	return nil
}

// sealed is a real dibs message from from to to with size bytes of payload (cached).
func sealed(t testing.TB, from, to string, size int) []byte {
	return pgpmsgtest.Sealed(t, from, to, size)
}

// rawMail frames file as a dibs mail named name for key, from one address to another.
func rawMail(t testing.TB, from, to, name string, key pgpmsg.Fingerprint, file []byte) []byte {
	m, err := mailbox.FrameFile(from, to, name, string(key), int64(len(file)), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := m.Write(&b, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// smtpClient is a go-smtp client of the SMTP door; with login, authenticated over STARTTLS.
func (f *relayFixture) smtpClient(login string) *smtp.Client {
	f.t.Helper()
	c, err := smtp.DialStartTLS(f.smtp, &tls.Config{RootCAs: f.roots, ServerName: "127.0.0.1"})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	if login != "" {
		if err := c.Auth(sasl.NewPlainClient("", login, password(login))); err != nil {
			f.t.Fatalf("AUTH %s: %v", login, err)
		}
	}
	return c
}

// smtpCode is the SMTP code and enhanced code of err: "550 5.1.1", or "" for nil.
func smtpCode(err error) string {
	if err == nil {
		return ""
	}
	se, ok := err.(*smtp.SMTPError)
	if !ok {
		return "not an SMTP error: " + err.Error()
	}
	return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

// transaction runs MAIL, RCPT, DATA with raw on c and returns the first step's error
// and which step it was.
func transaction(c *smtp.Client, from, to string, raw []byte) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "MAIL", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "RCPT", err
	}
	w, err := c.Data()
	if err != nil {
		return "DATA", err
	}
	if _, err := w.Write(raw); err != nil {
		return "DATA", err
	}
	return "DATA", w.Close()
}

func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}
