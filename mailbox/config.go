package mailbox

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// The values of SMTPConfig.TLS and IMAPConfig.TLS.
const (
	// TLSNone is a cleartext connection; with credentials only to a loopback address.
	TLSNone = "none"
	// TLSStartTLS upgrades a cleartext connection before anything else is said.
	TLSStartTLS = "starttls"
	// TLSImplicit is TLS from the first byte (SMTP submissions on 465, IMAPS on 993).
	TLSImplicit = "tls"
)

// DefaultTimeout bounds dialing and every stretch of silence on a connection.
const DefaultTimeout = 2 * time.Minute

// ErrBadMail is wrapped by the error a poll or import returns when it met mails that carry
// the dibs mark but cannot be used; see the package documentation.
var ErrBadMail = errors.New("unusable dibs mail")

// errCleartext is returned for credentials that would cross a network in clear text.
var errCleartext = errors.New("refusing to send credentials without TLS to a non-loopback server")

// secret returns the password from the first source that is set: the value itself, the
// first line of a file, or an environment variable.
func secret(pw, file, env string) (string, error) {
	switch {
	case pw != "":
		return pw, nil
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("password file: %w", err)
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		if !s.Scan() {
			if err := s.Err(); err != nil {
				return "", fmt.Errorf("password file %s: %w", file, err)
			}
			return "", fmt.Errorf("password file %s is empty", file)
		}
		return strings.TrimRight(s.Text(), "\r"), nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return "", fmt.Errorf("password environment variable %s is not set", env)
		}
		return v, nil
	}
	return "", nil
}

// checkTLSMode returns the mode with its default ("" means starttls) or an error.
func checkTLSMode(mode string) (string, error) {
	switch mode {
	case "":
		return TLSStartTLS, nil
	case TLSNone, TLSStartTLS, TLSImplicit:
		return mode, nil
	}
	return "", fmt.Errorf("TLS must be one of %s, %s, %s, not %q", TLSNone, TLSStartTLS, TLSImplicit, mode)
}

// splitServer adds defPort to server if it has no port and returns host and host:port.
func splitServer(server string, defPort string) (host, addr string, err error) {
	if server == "" {
		return "", "", errors.New("no server given")
	}
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		// No port (or a bare IPv6 address): use the default.
		host = strings.TrimSuffix(strings.TrimPrefix(server, "["), "]")
		port = defPort
	}
	if host == "" {
		return "", "", fmt.Errorf("server %q has no host", server)
	}
	return host, net.JoinHostPort(host, port), nil
}

// isLoopback reports whether host names this machine without any network in between.
// Names are not resolved: only "localhost" and loopback IP literals count.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkCleartext applies the one rule about credentials: never in clear text over a network.
func checkCleartext(mode, host, user string) error {
	if mode == TLSNone && user != "" && !isLoopback(host) {
		return fmt.Errorf("%w %s (set TLS to %s or %s)", errCleartext, host, TLSStartTLS, TLSImplicit)
	}
	return nil
}

// tlsConfig builds the client TLS configuration: roots (or the system pool) plus the
// certificates in caFile.
func tlsConfig(host string, roots *x509.CertPool, caFile string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if caFile == "" {
		cfg.RootCAs = roots
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := roots
	if pool != nil {
		pool = pool.Clone()
	} else if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// dial connects to addr. The returned connection is closed as soon as ctx is done, which
// unblocks whatever protocol step is waiting on it; stop releases that watch.
func dial(ctx context.Context, addr string, timeout time.Duration) (conn net.Conn, stop func() bool, err error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	ic := &idleConn{Conn: c, timeout: timeout}
	return ic, context.AfterFunc(ctx, func() { c.Close() }), nil
}

// idleConn fails a Read or Write that makes no progress for timeout: a server that stops
// talking is an error, however long the whole transfer takes.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// ctxErr prefers the context's error: a connection closed because ctx ended reports why.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}
