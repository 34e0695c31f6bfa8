package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/agent/maildoor"
	"github.com/dibs-backup/dibs/relay"
)

var relayServerCmd = &command{
	name:     "relay_server",
	synopsis: "--listen ADDR --dir D [--allow FILE] [--users FILE --smtp ADDR --imap ADDR] [--tls_cert F --tls_key F] [--quota Q] [--max_size Q] [--max_age S]",
	help: `Run a store-and-forward relay for peers that cannot accept connections, in the foreground
until a signal. A depositor proves its key with a signed challenge; files go only from and to
the keys in the allow file (concatenated export_key outputs; re-read when it changes); a
recipient collects its files the same way, and a file is deleted only after it confirms the
commit. The relay never sees plaintext: files are sealed end to end.

With --smtp and --imap the same store has two more doors, for the users in the users file
(TOML: key, mail, password hash; re-read when it changes): an SMTP door that takes dibs mails
for the users (as their domain's MX without AUTH, or as a submission server with AUTH over
STARTTLS or from loopback), only when the attachment is sealed to the recipient's key and
within quota and size, and an IMAP door (TLS with --tls_cert, else loopback logins only)
where each user finds its waiting files as mails in INBOX; EXPUNGE collects them. A file
deposited through any door is collected through any other. /metrics on --listen (for
loopback clients) counts files waiting per key, deposits and collections by door, refusals
by reason.`,
	required: []string{"listen", "dir"},
	flags:    withOptions((*relayServerOptions).declare, runRelayServer),
}

type relayServerOptions struct {
	listen, dir, allow string
	users, smtp, imap  string
	cert, key          string // both or neither
	quota, maxSize     sizeFlag
	maxAge             int // seconds
}

func (o *relayServerOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.listen, "listen", "", "address to listen on, e.g. :8443 or 127.0.0.1:8080")
	fs.StringVar(&o.dir, "dir", "", "the relay's spool directory")
	fs.StringVar(&o.allow, "allow", "", "armored public keys of who may deposit and collect (default D/allow.asc)")
	fs.StringVar(&o.users, "users", "", "the users of the SMTP and IMAP doors, TOML (default D/users.toml)")
	fs.StringVar(&o.smtp, "smtp", "", "also serve the SMTP door on this address, e.g. :25 or :587")
	fs.StringVar(&o.imap, "imap", "", "also serve the IMAP door on this address, e.g. :993 (TLS with --tls_cert)")
	fs.StringVar(&o.cert, "tls_cert", "", "TLS certificate (PEM); with --tls_key, serve HTTPS")
	fs.StringVar(&o.key, "tls_key", "", "TLS private key (PEM)")
	o.quota = sizeFlag{bytes: relay.DefaultQuota}
	fs.Var(&o.quota, "quota", "bytes that may wait for one recipient (default "+o.quota.String()+")")
	// A node's maxMsgSize has the same default: a relay keeps no file that its
	// recipients would refuse.
	o.maxSize = sizeFlag{bytes: relay.DefaultMaxFileSize}
	fs.Var(&o.maxSize, "max_size", "largest file taken (default "+o.maxSize.String()+")")
	fs.IntVar(&o.maxAge, "max_age", int(relay.DefaultMaxAge/time.Second), "seconds an uncollected file is kept")
}

func runRelayServer(a *App, o relayServerOptions) error {
	dir := o.dir
	allow := o.allow
	if allow == "" {
		allow = filepath.Join(dir, "allow.asc")
	}
	cert, key := o.cert, o.key
	if (cert == "") != (key == "") {
		return usagef("--tls_cert and --tls_key go together")
	}
	if o.users != "" && o.smtp == "" && o.imap == "" {
		return usagef("--users goes with --smtp or --imap")
	}
	maxAge := o.maxAge
	if maxAge < 60 {
		return usagef("--max_age must be a number of seconds, at least 60")
	}
	if _, err := os.Stat(allow); err != nil {
		return fmt.Errorf("allow file %s: %w (put the peers' export_key outputs there)", allow, errors.Unwrap(err))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	quota, maxSize := o.quota.bytes, o.maxSize.bytes
	store, err := relay.OpenDirStore(dir, relay.DirOptions{AllowFile: allow, Quota: quota, MaxFileSize: maxSize, MaxAge: time.Duration(maxAge) * time.Second})
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	m := newRelayMetrics(store, allow, log)
	srv := relay.NewServer(m.door(store, "http", true), relay.ServerOptions{
		MaxFileSize: maxSize,
		Version:     agent.SoftwareVersion,
		OnError:     func(err error) { log.Error("relay", "err", err) },
	})
	conf, err := tlsConfig(cert, key)
	if err != nil {
		return err
	}
	ln, err := listen(o.listen, cert, key)
	if err != nil {
		return err
	}
	var users *maildoor.Users
	if o.smtp != "" || o.imap != "" {
		if users, err = openUsers(o.users, dir); err != nil {
			ln.Close()
			return err
		}
		m.users = users
		stop, err := startMailDoors(a, o, maildoor.Options{Users: users, MaxFileSize: maxSize, TLS: conf, Hostname: hostname(),
			Refused: m.refused}, m, store)
		if err != nil {
			ln.Close()
			return err
		}
		defer stop()
	}
	hs := &http.Server{Handler: m.handler(srv), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)} // e.g. TLS handshake errors
	ctx, cancel := context.WithCancel(a.Ctx)
	defer cancel()
	go srv.Run(ctx) // expires files older than --max_age
	go func() {
		// The stores re-read the allow and users files by themselves whenever they changed
		// (they look at each request); this only says, once, that a new version does not
		// parse (the keys and users from before stay in force).
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		last := map[string]string{}
		watch := func(what string, reload func() error) {
			msg := ""
			if err := reload(); err != nil {
				msg = err.Error()
			}
			if msg != last[what] && msg != "" {
				log.Warn(what+" file unreadable, the previous version stays in force", "err", msg)
			} else if msg != last[what] {
				log.Info(what + " file read again")
			}
			last[what] = msg
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				watch("allow", store.Reload)
				if users != nil {
					watch("users", users.Reload)
				}
			}
		}
	}()
	return serve(a, hs, ln, "relay", dir, cert != "")
}

// openUsers opens the users file of the mail doors: path, or D/users.toml.
func openUsers(path, dir string) (*maildoor.Users, error) {
	if path == "" {
		path = filepath.Join(dir, "users.toml")
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("users file %s: %w (--smtp and --imap serve the users listed there; see docs/relay.md)", path, errors.Unwrap(err))
	}
	return maildoor.OpenUsers(path)
}

// startMailDoors opens the listeners of the SMTP and IMAP doors that o asks for and serves
// them; stop closes them.
func startMailDoors(a *App, o relayServerOptions, opts maildoor.Options, m *relayMetrics, store relay.Store) (stop func(), err error) {
	var closers []func()
	stop = func() {
		for _, c := range closers {
			c()
		}
	}
	if o.smtp != "" {
		ln, err := net.Listen("tcp", o.smtp)
		if err != nil {
			return nil, fmt.Errorf("--smtp: %w", err)
		}
		so := opts
		so.Store = m.door(store, "smtp", false)
		s := maildoor.NewSMTP(so)
		go s.Serve(ln)
		closers = append(closers, func() { s.Close() })
		starttls := ""
		if opts.TLS != nil {
			starttls = " (STARTTLS)"
		}
		fmt.Fprintf(a.Stdout, "dibs relay smtp door on %s%s\n", ln.Addr(), starttls)
	}
	if o.imap != "" {
		ln, err := net.Listen("tcp", o.imap)
		if err != nil {
			stop()
			return nil, fmt.Errorf("--imap: %w", err)
		}
		scheme := "imap"
		if opts.TLS != nil {
			ln, scheme = tls.NewListener(ln, opts.TLS), "imaps"
		}
		imo := opts
		imo.Store = m.door(store, "imap", false)
		d := maildoor.NewIMAP(imo)
		go d.Serve(ln)
		closers = append(closers, func() { d.Close() })
		fmt.Fprintf(a.Stdout, "dibs relay imap door on %s://%s\n", scheme, ln.Addr())
	}
	return stop, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// tlsConfig is the server TLS configuration of --tls_cert and --tls_key, or nil without.
func tlsConfig(cert, key string) (*tls.Config, error) {
	if cert == "" {
		return nil, nil
	}
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("--tls_cert/--tls_key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}, nil
}

// listen opens the listening socket of a server command on addr (--listen), serving TLS
// when cert and key (--tls_cert, --tls_key) are given.
func listen(addr, cert, key string) (net.Listener, error) {
	conf, err := tlsConfig(cert, key)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	return ln, nil
}

// serve runs hs on ln until it fails or the command is stopped (a signal), then shuts it
// down, giving requests in flight 10 s; it says when it starts serving what (dir) and
// when it stopped.
func serve(a *App, hs *http.Server, ln net.Listener, what, dir string, tls bool) error {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	fmt.Fprintf(a.Stdout, "dibs %s serving %s://%s from %s\n", what, scheme, ln.Addr(), dir)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-a.Ctx.Done():
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := hs.Shutdown(sctx); err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "dibs %s stopped\n", what)
	return nil
}
