// Package transports builds the transports a node's options describe (relay protocol
// and mail), so that agent itself depends on no transport but the relay protocol it serves.
package transports

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/mailbox"
	"github.com/dibs-backup/dibs/queue"
	"github.com/dibs-backup/dibs/relay"
)

// Default builds the transports the node's options describe: the relay protocol
// client for active push, passive pull and relays, and SMTP/IMAP for mail.
// A transport whose settings are wrong reports that on every use instead.
func Default(n *agent.Node) agent.Transports {
	rc := &relay.Client{ID: n.ID, MaxFileSize: agent.OptMaxMsgSize.Get(n.Opts)}
	if ca := agent.OptRelayCAFile.Get(n.Opts); ca != "" {
		hc, err := httpClientTrusting(ca)
		if err != nil {
			broken := brokenTransport{fmt.Errorf("relayCAFile: %w", err)}
			return agent.Transports{
				Senders:     map[string]queue.Sender{agent.Active: broken, agent.Relay: broken, agent.Mail: broken},
				Pollers:     map[string]queue.Poller{agent.Passive: broken, agent.Relay: broken},
				MailPayload: mailbox.MaxPayload,
				Admin:       admin(n), // the owner hears of it by mail still
			}
		}
		rc.HTTP = hc
	}
	t := agent.Transports{
		Senders:     map[string]queue.Sender{agent.Active: rc, agent.Relay: rc},
		Pollers:     map[string]queue.Poller{agent.Passive: rc, agent.Relay: rc},
		MailPayload: mailbox.MaxPayload,
	}
	if s, err := mailbox.NewSender(smtpConfig(n)); err != nil {
		t.Senders[agent.Mail] = brokenTransport{fmt.Errorf("smtp settings: %w", err)}
	} else {
		t.Senders[agent.Mail] = s
	}
	t.Admin = admin(n)
	if agent.OptIMAPServer.Get(n.Opts) != "" {
		if p, err := mailbox.NewPoller(imapConfig(n)); err != nil {
			t.Pollers[agent.Mail] = brokenTransport{fmt.Errorf("imap settings: %w", err)}
		} else {
			t.Pollers[agent.Mail] = p
		}
	}
	return t
}

func smtpConfig(n *agent.Node) mailbox.SMTPConfig {
	o := n.Opts
	from := agent.OptDibsAdmin.Get(o)
	return mailbox.SMTPConfig{
		Server: agent.OptSMTPServer.Get(o), User: agent.OptSMTPUser.Get(o), Password: agent.OptSMTPPassword.Get(o),
		PasswordFile: agent.OptSMTPPasswordFile.Get(o), TLS: agent.OptSMTPTLS.Get(o), From: from,
		CAFile: agent.OptMailCAFile.Get(o), MaxMessageSize: agent.OptMailMaxSize.Get(o),
		Timeout: agent.OptDaemonTimeout.Get(o),
	}
}

func imapConfig(n *agent.Node) mailbox.IMAPConfig {
	o := n.Opts
	return mailbox.IMAPConfig{
		Server: agent.OptIMAPServer.Get(o), User: agent.OptIMAPUser.Get(o), Password: agent.OptIMAPPassword.Get(o),
		PasswordFile: agent.OptIMAPPasswordFile.Get(o), Mailbox: agent.OptIMAPMailbox.Get(o), TLS: agent.OptIMAPTLS.Get(o),
		CAFile: agent.OptMailCAFile.Get(o), MaxMessageSize: agent.OptMaxMsgSize.Get(o)*14/10 + 64<<10,
		Timeout: agent.OptDaemonTimeout.Get(o),
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

func (b brokenTransport) MailAdmin(context.Context, string, string) error {
	return queue.Permanent(b.err)
}

// admin mails dibsAdmin by the SMTP settings, or fails every mail with why it cannot.
func admin(n *agent.Node) agent.AdminMailer {
	s, err := mailbox.NewSender(smtpConfig(n))
	if err != nil {
		return brokenTransport{fmt.Errorf("smtp settings: %w", err)}
	}
	return adminMailer{s, agent.OptDibsAdmin.Get(n.Opts)}
}

// adminMailer mails dibsAdmin through the SMTP settings peers' mail goes by.
type adminMailer struct {
	s  *mailbox.Sender
	to string
}

var _ agent.AdminMailer = adminMailer{}

func (m adminMailer) MailAdmin(ctx context.Context, subject, body string) error {
	return m.s.SendText(ctx, m.to, subject, body)
}

// ImportMaildir takes the dibs mails addressed to n out of a Maildir into its incoming/.
func ImportMaildir(n *agent.Node, dir string) (int, error) {
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
