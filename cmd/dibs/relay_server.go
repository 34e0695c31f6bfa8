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
	"strings"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/relay"
	"github.com/dibs-backup/dibs/relay/jetstream"
)

var relayServerCmd = &command{
	name:     "relay_server",
	synopsis: "--listen ADDR (--dir D | --store nats://H:P[,H:P...]) [--allow FILE] [--tls_cert F --tls_key F] [--quota Q] [--max_size Q] [--max_age S]",
	help: `Run a store-and-forward relay for peers that cannot accept connections, in the foreground
until a signal. A depositor proves its key with a signed challenge; files go only from and to
the keys in the allow file (concatenated export_key outputs; re-read when it changes); a
recipient collects its files the same way, and a file is deleted only after it confirms the
commit. The relay never sees plaintext: files are sealed end to end.

Files wait in --dir D, or with --store in a NATS JetStream cluster (replicated, R3 on three
nodes or more; a file is acknowledged once a quorum stored it): several relay_server
processes in front of one cluster share the files, quotas and expiry, and any of them
serves any user. They need the same --allow file, --quota, --max_size and --max_age.`,
	required: []string{"listen"},
	flags:    withOptions((*relayServerOptions).declare, runRelayServer),
}

type relayServerOptions struct {
	listen, dir, allow string
	store              string // nats://host:port[,...], instead of dir
	cert, key          string // both or neither
	quota, maxSize     sizeFlag
	maxAge             int // seconds
}

func (o *relayServerOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.listen, "listen", "", "address to listen on, e.g. :8443 or 127.0.0.1:8080")
	fs.StringVar(&o.dir, "dir", "", "the relay's spool directory")
	fs.StringVar(&o.store, "store", "", "nats://HOST:PORT[,HOST:PORT...]: keep files in that NATS JetStream cluster instead of --dir (needs --allow)")
	fs.StringVar(&o.allow, "allow", "", "armored public keys of who may deposit and collect (default D/allow.asc)")
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
	switch {
	case dir != "" && o.store != "":
		return usagef("--dir and --store are two places to keep the files: give one")
	case dir == "" && o.store == "":
		return usagef("relay_server needs --dir D or --store nats://HOST:PORT")
	case o.store != "" && allow == "":
		return usagef("--store needs --allow FILE")
	case o.store != "":
		if err := checkNATSURLs(o.store); err != nil {
			return usagef("--store: %v", err)
		}
	case allow == "":
		allow = filepath.Join(dir, "allow.asc")
	}
	cert, key := o.cert, o.key
	if (cert == "") != (key == "") {
		return usagef("--tls_cert and --tls_key go together")
	}
	maxAge := o.maxAge
	if maxAge < 60 {
		return usagef("--max_age must be a number of seconds, at least 60")
	}
	if _, err := os.Stat(allow); err != nil {
		return fmt.Errorf("allow file %s: %w (put the peers' export_key outputs there)", allow, errors.Unwrap(err))
	}
	quota, maxSize := o.quota.bytes, o.maxSize.bytes
	var store interface {
		relay.Store
		Reload() error
	}
	where := dir
	if o.store != "" {
		ctx, cancel := context.WithTimeout(a.Ctx, 30*time.Second)
		js, err := jetstream.Connect(ctx, o.store, jetstream.Options{AllowFile: allow, Quota: quota,
			MaxFileSize: maxSize, MaxAge: time.Duration(maxAge) * time.Second})
		cancel()
		if err != nil {
			return err
		}
		defer js.Close()
		store, where = js, fmt.Sprintf("%s (JetStream R%d)", o.store, js.Replicas())
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		ds, err := relay.OpenDirStore(dir, relay.DirOptions{AllowFile: allow, Quota: quota, MaxFileSize: maxSize, MaxAge: time.Duration(maxAge) * time.Second})
		if err != nil {
			return err
		}
		store = ds
	}
	log := slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := relay.NewServer(store, relay.ServerOptions{
		MaxFileSize: maxSize,
		Version:     agent.SoftwareVersion,
		OnError:     func(err error) { log.Error("relay", "err", err) },
	})
	ln, err := listen(o.listen, cert, key)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)} // e.g. TLS handshake errors
	ctx, cancel := context.WithCancel(a.Ctx)
	defer cancel()
	go srv.Run(ctx) // expires files older than --max_age
	go func() {
		// The store re-reads the allow file by itself whenever it changed (it looks at
		// each request); this only says, once, that a new version does not parse (the
		// keys from before stay in force).
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		last := ""
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				msg := ""
				if err := store.Reload(); err != nil {
					msg = err.Error()
				}
				if msg != last && msg != "" {
					log.Warn("allow file unreadable, the previous keys stay in force", "err", msg)
				} else if msg != last {
					log.Info("allow file read again")
				}
				last = msg
			}
		}
	}()
	return serve(a, hs, ln, "relay", where, cert != "")
}

// checkNATSURLs checks a --store value: nats://host:port, comma-separated.
func checkNATSURLs(s string) error {
	for _, u := range strings.Split(s, ",") {
		rest, ok := strings.CutPrefix(u, "nats://")
		if !ok {
			return fmt.Errorf("%q is not nats://HOST:PORT", u)
		}
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return fmt.Errorf("%q is not nats://HOST:PORT", u)
		}
	}
	return nil
}

// listen opens the listening socket of a server command on addr (--listen), serving TLS
// when cert and key (--tls_cert, --tls_key) are given.
func listen(addr, cert, key string) (net.Listener, error) {
	var conf *tls.Config
	if cert != "" {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--tls_cert/--tls_key: %w", err)
		}
		conf = &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
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
