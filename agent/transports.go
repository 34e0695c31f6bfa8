package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/dibs-backup/dibs/mailbox"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

// DefaultTransports builds the transports the node's options describe: the relay
// protocol client for active push, passive pull and relays, and SMTP/IMAP for mail.
// A mail transport whose settings are wrong reports that on every use instead.
func DefaultTransports(n *Node) Transports {
	rc := &relay.Client{ID: n.ID, MaxFileSize: optMaxMsgSize.Get(n.Opts)}
	if ca := optRelayCAFile.Get(n.Opts); ca != "" {
		hc, err := httpClientTrusting(ca)
		if err != nil {
			broken := brokenTransport{fmt.Errorf("relayCAFile: %w", err)}
			return Transports{
				Senders: map[string]queue.Sender{Active: broken, Relay: broken, Mail: broken},
				Pollers: map[string]queue.Poller{Passive: broken, Relay: broken},
			}
		}
		rc.HTTP = hc
	}
	t := Transports{
		Senders: map[string]queue.Sender{Active: rc, Relay: rc},
		Pollers: map[string]queue.Poller{Passive: rc, Relay: rc},
	}
	if s, err := mailbox.NewSender(n.smtpConfig()); err != nil {
		t.Senders[Mail] = brokenTransport{fmt.Errorf("smtp settings: %w", err)}
	} else {
		t.Senders[Mail] = s
	}
	if optIMAPServer.Get(n.Opts) != "" {
		if p, err := mailbox.NewPoller(n.imapConfig()); err != nil {
			t.Pollers[Mail] = brokenTransport{fmt.Errorf("imap settings: %w", err)}
		} else {
			t.Pollers[Mail] = p
		}
	}
	return t
}

func (n *Node) smtpConfig() mailbox.SMTPConfig {
	o := n.Opts
	from := optDibsAdmin.Get(o)
	return mailbox.SMTPConfig{
		Server: optSMTPServer.Get(o), User: optSMTPUser.Get(o), Password: optSMTPPassword.Get(o),
		PasswordFile: optSMTPPasswordFile.Get(o), TLS: optSMTPTLS.Get(o), From: from,
		CAFile: optMailCAFile.Get(o), MaxMessageSize: optMailMaxSize.Get(o),
		Timeout: optDaemonTimeout.Get(o),
	}
}

func (n *Node) imapConfig() mailbox.IMAPConfig {
	o := n.Opts
	return mailbox.IMAPConfig{
		Server: optIMAPServer.Get(o), User: optIMAPUser.Get(o), Password: optIMAPPassword.Get(o),
		PasswordFile: optIMAPPasswordFile.Get(o), Mailbox: optIMAPMailbox.Get(o), TLS: optIMAPTLS.Get(o),
		CAFile: optMailCAFile.Get(o), MaxMessageSize: optMaxMsgSize.Get(o)*14/10 + 64<<10,
		Timeout: optDaemonTimeout.Get(o),
	}
}

// brokenTransport stands for a transport that could not be built: it fails every call
// with the reason, marked permanent.
type brokenTransport struct{ err error }

func (b brokenTransport) Send(context.Context, queue.Endpoint, queue.Message) error {
	return queue.Permanent(b.err)
}

func (b brokenTransport) Poll(context.Context, queue.Endpoint, queue.Sink) (int, error) {
	return 0, queue.Permanent(b.err)
}

// HelloInfo is what a daemon says of itself.
type HelloInfo = relay.HelloInfo

// Hello asks the daemon at host:port who it is (send_hello --host --port).
func (n *Node) Hello(ctx context.Context, host string, port int) (HelloInfo, error) {
	p := &Peer{Host: host, Port: port}
	c := &relay.Client{ID: n.ID}
	return c.Hello(ctx, p.DaemonURL())
}

// ImportMaildir takes the dibs mails addressed to us out of a Maildir into incoming/.
func (n *Node) ImportMaildir(dir string) (int, error) {
	return mailbox.ImportMaildir(dir, string(n.Fingerprint()), n.Sink())
}

// httpClientTrusting is an HTTP client for the relay protocol that also trusts the CA
// certificates in caFile, and takes proxies from the environment (HTTPS_PROXY, ...).
func httpClientTrusting(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true, // a custom TLSClientConfig turns HTTP/2 off otherwise
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ExpectContinueTimeout: 2 * time.Second, // a refused deposit (too large, over quota) sends no body
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}}, nil
}
