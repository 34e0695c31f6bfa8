package main

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"time"

	"github.com/dibs-backup/dibs/agent/contract"
)

var contractServerCmd = &command{
	name:     "contract_server",
	synopsis: "--listen ADDR --dir D [--tls_cert F --tls_key F] [--max_per_key N] [--max_contracts N]",
	help: `Run the peer finder in the foreground until a signal: it keeps posted contracts, one file
each in D (they survive a crash), lists them as an HTML page at / and as JSON at
/contracts.json, and drops each when its lifetime is over. A post must be signed by the key
it advertises, and only that key can withdraw it (unpost_contract). Every field is checked;
a key may have --max_per_key contracts posted, the server --max_contracts in all.`,
	required: []string{"listen", "dir"},
	flags:    withOptions((*contractServerOptions).declare, runContractServer),
}

type contractServerOptions struct {
	listen, dir         string
	cert, key           string
	maxPerKey, maxTotal int
}

func (o *contractServerOptions) declare(fs *flag.FlagSet) {
	fs.StringVar(&o.listen, "listen", "", "address to listen on, e.g. :8000 or 127.0.0.1:8000")
	fs.StringVar(&o.dir, "dir", "", "where the posted contracts are kept")
	fs.StringVar(&o.cert, "tls_cert", "", "TLS certificate (PEM); with --tls_key, serve HTTPS")
	fs.StringVar(&o.key, "tls_key", "", "TLS private key (PEM)")
	fs.IntVar(&o.maxPerKey, "max_per_key", 5, "contracts one key may have posted at once")
	fs.IntVar(&o.maxTotal, "max_contracts", 1000, "contracts the server holds at once")
}

func runContractServer(a *App, o contractServerOptions) error {
	if (o.cert == "") != (o.key == "") {
		return usagef("--tls_cert and --tls_key go together")
	}
	if o.maxPerKey < 1 || o.maxTotal < 1 {
		return usagef("--max_per_key and --max_contracts must be at least 1")
	}
	log := slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := contract.OpenServer(o.dir, contract.ServerOptions{
		MaxPerKey: o.maxPerKey, MaxContracts: o.maxTotal,
		OnError: func(err error) { log.Error("contract server", "err", err) },
	})
	if err != nil {
		return err
	}
	ln, err := listen(o.listen, o.cert, o.key)
	if err != nil {
		return err
	}
	// Requests are a few kilobytes: a client that takes longer than these is cut off
	// rather than holding a connection.
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	ctx, cancel := context.WithCancel(a.Ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if k := srv.Expire(); k > 0 {
					log.Info("expired", "contracts", k)
				}
			}
		}
	}()
	return serve(a, hs, ln, "contract server", o.dir, o.cert != "")
}
