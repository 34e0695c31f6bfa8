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
	"strconv"
	"time"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/relay"
)

func init() {
	register(&command{
		name:     "relay_server",
		synopsis: "--listen ADDR --dir D [--allow FILE] [--tls_cert F --tls_key F] [--quota Q] [--max_size Q] [--max_age S]",
		help: `Run a store-and-forward relay for peers that cannot accept connections, in the foreground
until a signal. A depositor proves its key with a signed challenge; files go only from and to
the keys in the allow file (concatenated export_key outputs; re-read when it changes); a
recipient collects its files the same way, and a file is deleted only after it confirms the
commit. The relay never sees plaintext: files are sealed end to end.`,
		flags: func(fs *flag.FlagSet) {
			fs.String("listen", "", "address to listen on, e.g. :8443 or 127.0.0.1:8080")
			fs.String("dir", "", "the relay's spool directory")
			fs.String("allow", "", "armored public keys of who may deposit and collect (default D/allow.asc)")
			fs.String("tls_cert", "", "TLS certificate (PEM); with --tls_key, serve HTTPS")
			fs.String("tls_key", "", "TLS private key (PEM)")
			sizeVarDefault(fs, "quota", "bytes that may wait for one recipient", relay.DefaultQuota)
			// A node's maxMsgSize has the same default: a relay keeps no file that its
			// recipients would refuse.
			sizeVarDefault(fs, "max_size", "largest file taken", relay.DefaultMaxFileSize)
			fs.Int("max_age", int(relay.DefaultMaxAge/time.Second), "seconds an uncollected file is kept")
		},
		run: runRelayServer,
	})
}

func runRelayServer(a *App, fs *flag.FlagSet) error {
	if err := need(fs, "listen", "dir"); err != nil {
		return err
	}
	dir := flagString(fs, "dir")
	allow := flagString(fs, "allow")
	if allow == "" {
		allow = filepath.Join(dir, "allow.asc")
	}
	cert, key := flagString(fs, "tls_cert"), flagString(fs, "tls_key")
	if (cert == "") != (key == "") {
		return usagef("--tls_cert and --tls_key go together")
	}
	maxAge, err := strconv.Atoi(flagString(fs, "max_age"))
	if err != nil || maxAge < 60 {
		return usagef("--max_age must be a number of seconds, at least 60")
	}
	if _, err := os.Stat(allow); err != nil {
		return fmt.Errorf("allow file %s: %w (put the peers' export_key outputs there)", allow, errors.Unwrap(err))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	quota := fs.Lookup("quota").Value.(*sizeFlag).bytes
	maxSize := fs.Lookup("max_size").Value.(*sizeFlag).bytes
	store, err := relay.OpenDirStore(dir, relay.DirOptions{AllowFile: allow, Quota: quota, MaxFileSize: maxSize, MaxAge: time.Duration(maxAge) * time.Second})
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := relay.NewServer(store, relay.ServerOptions{
		MaxFileSize: maxSize,
		Version:     agent.SoftwareVersion,
		OnError:     func(err error) { log.Error("relay", "err", err) },
	})
	var tlsConf *tls.Config
	if cert != "" {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return fmt.Errorf("--tls_cert/--tls_key: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", flagString(fs, "listen"))
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
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
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
	}
	fmt.Fprintf(a.Stdout, "dibs relay serving %s://%s from %s\n", scheme, ln.Addr(), dir)
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
	fmt.Fprintln(a.Stdout, "dibs relay stopped")
	return nil
}
